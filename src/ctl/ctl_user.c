/* odmrctl user: manage the users file (docs/users.md). Passwords come from stdin, never from
 * the command line (where ps would show them). */
#include "ctl/ctl_user.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "lib/smtp_grammar.h"
#include "store/userdb.h"
#include "store/userdb_write.h"

static int usage(void)
{
    fprintf(stderr, "usage: odmrctl user add NAME DOMAIN[,DOMAIN...] [--no-cram] [--profile compat|fast]\n"
                    "       odmrctl user del NAME\n"
                    "       odmrctl user passwd NAME\n"
                    "       odmrctl user list\n"
                    "The password is read from standard input (one line).\n");
    return EX_USAGE;
}

static int exit_code(enum userdb_change_status st, const char *err)
{
    static const int codes[] = {
        [USERDB_CHANGED] = EX_OK,       [USERDB_EXISTS] = EX_DATAERR,
        [USERDB_NO_SUCH_USER] = EX_NOUSER, [USERDB_INVALID] = EX_DATAERR,
        [USERDB_IO_ERROR] = EX_IOERR,
    };
    if (st != USERDB_CHANGED)
        fprintf(stderr, "odmrctl: %s\n", err);
    return codes[st];
}

static char *read_password(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n <= 0) {
        free(line);
        return NULL;
    }
    line[strcspn(line, "\r\n")] = '\0';
    return line;
}

static int wipe_and_free(char *password, int code)
{
    if (password) {
        memset(password, 0, strlen(password));
        free(password);
    }
    return code;
}

static bool domains_valid(const char *list)
{
    char copy[4096];
    char *save = NULL;
    snprintf(copy, sizeof copy, "%s", list);
    for (char *d = strtok_r(copy, ",", &save); d; d = strtok_r(NULL, ",", &save))
        if (!smtp_domain_valid(d, false)) {
            fprintf(stderr, "odmrctl: \"%s\" is not a domain name\n", d);
            return false;
        }
    return list[0] != '\0' && list[strlen(list) - 1] != ',';
}

static int parse_add_options(int argc, char **argv, struct userdb_new_user *u)
{
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--no-cram") == 0)
            u->cram = false;
        else if (strcmp(argv[i], "--profile") == 0 && i + 1 < argc &&
                 (strcmp(argv[i + 1], "compat") == 0 || strcmp(argv[i + 1], "fast") == 0))
            u->profile = strcmp(argv[++i], "fast") == 0 ? ODMR_PROFILE_FAST : ODMR_PROFILE_COMPAT;
        else
            return -1;
    }
    return 0;
}

static int user_add(const struct config *cfg, int argc, char **argv)
{
    struct userdb_new_user u = {.cram = true, .profile = ODMR_PROFILE_COMPAT};
    char err[512];
    if (argc < 4 || parse_add_options(argc, argv, &u) != 0)
        return usage();
    if (!domains_valid(argv[3]))
        return EX_DATAERR;
    u.name = argv[2];
    u.domains = argv[3];
    char *password = read_password();
    if (password == NULL || password[0] == '\0') {
        fprintf(stderr, "odmrctl: no password on standard input\n");
        return wipe_and_free(password, EX_DATAERR);
    }
    u.password = password;
    int code = exit_code(userdb_add_user(cfg->users, &u, err, sizeof err), err);
    if (code == EX_OK)
        printf("added user %s for %s\n", u.name, u.domains);
    return wipe_and_free(password, code);
}

static int user_del(const struct config *cfg, int argc, char **argv)
{
    char err[512];
    if (argc != 3)
        return usage();
    int code = exit_code(userdb_delete_user(cfg->users, argv[2], err, sizeof err), err);
    if (code == EX_OK)
        printf("deleted user %s\n", argv[2]);
    return code;
}

static int user_passwd(const struct config *cfg, int argc, char **argv)
{
    char err[512];
    if (argc != 3)
        return usage();
    char *password = read_password();
    if (password == NULL || password[0] == '\0') {
        fprintf(stderr, "odmrctl: no password on standard input\n");
        return wipe_and_free(password, EX_DATAERR);
    }
    int code = exit_code(userdb_set_password(cfg->users, argv[2], password, err, sizeof err), err);
    if (code == EX_OK)
        printf("changed the password of %s\n", argv[2]);
    return wipe_and_free(password, code);
}

static int user_list(const struct config *cfg, int argc, char **argv)
{
    char err[512];
    if (argc != 2)
        return usage();
    struct userdb *db = userdb_load(cfg->users, err, sizeof err);
    if (db == NULL) {
        fprintf(stderr, "odmrctl: %s\n", err);
        return EX_CONFIG;
    }
    printf("%-20s %-8s %-40s %s\n", "USER", "PROFILE", "DOMAINS", "MECHANISMS");
    for (size_t i = 0; i < userdb_user_count(db); i++) {
        const struct odmr_user *u = userdb_user_at(db, i);
        char domains[1024] = "";
        for (size_t j = 0; j < u->domain_count; j++)
            snprintf(domains + strlen(domains), sizeof domains - strlen(domains), "%s%s",
                     j ? "," : "", u->domains[j]);
        printf("%-20s %-8s %-40s %s%s\n", u->name,
               u->profile == ODMR_PROFILE_FAST ? "fast" : "compat", domains,
               u->scram_iterations ? "SCRAM-SHA-256 PLAIN LOGIN" : "PLAIN LOGIN",
               u->cram_enabled ? " CRAM-MD5" : "");
    }
    userdb_free(db);
    return EX_OK;
}

static const struct {
    const char *name;
    int (*run)(const struct config *cfg, int argc, char **argv);
} user_commands[] = {
    {"add", user_add}, {"del", user_del}, {"passwd", user_passwd}, {"list", user_list},
};

int ctl_user_main(const struct config *cfg, int argc, char **argv)
{
    if (argc < 2)
        return usage();
    for (size_t i = 0; i < sizeof user_commands / sizeof user_commands[0]; i++)
        if (strcmp(argv[1], user_commands[i].name) == 0)
            return user_commands[i].run(cfg, argc, argv);
    return usage();
}
