/* SPDX-License-Identifier: ISC */
/* odmrctl user: manage the users file (docs/users.md). Passwords come from stdin, never from
 * the command line (where ps would show them). */
#include "ctl/ctl_user.h"

#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

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
        [USERDB_IO_ERROR] = EX_IOERR,   [USERDB_BROKEN] = EX_CONFIG,
    };
    if (st != USERDB_CHANGED)
        fprintf(stderr, "odmrctl: %s\n", err);
    return codes[st];
}

/* Strips the line's LF or CRLF; false when what is left has a NUL, which would cut the
 * password short everywhere it is used as a C string. */
static bool strip_line_end(char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    line[len] = '\0';
    return strlen(line) == len;
}

/* One line from stdin, newline stripped. On a terminal, prompt and switch echo off. NULL after
 * printing the reason: nothing read, or a NUL octet in the password. */
static char *read_password(void)
{
    struct termios saved, quiet;
    bool terminal = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (terminal) {
        fprintf(stderr, "Password: ");
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (terminal) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        fputc('\n', stderr);
    }
    if (n > 0 && strip_line_end(line, (size_t)n))
        return line;
    fprintf(stderr, "odmrctl: %s\n", n <= 0 ? "no password on standard input"
                                             : "the password contains a NUL octet; refused");
    if (line != NULL)
        OPENSSL_cleanse(line, cap);
    free(line);
    return NULL;
}

static int wipe_and_free(char *password, int code)
{
    if (password) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
    return code;
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
    u.name = argv[2];
    u.domains = argv[3];
    char *password = read_password();
    if (password == NULL)
        return EX_DATAERR;
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
    if (password == NULL)
        return EX_DATAERR;
    int code = exit_code(userdb_set_password(cfg->users, argv[2], password, err, sizeof err), err);
    if (code == EX_OK)
        printf("changed the password of %s\n", argv[2]);
    return wipe_and_free(password, code);
}

/* What odmrd's AUTH can verify for this user (src/platform/sasl.c): SCRAM and PLAIN/LOGIN
 * from the SCRAM verifier or the CRAM secret, CRAM-MD5 only from the CRAM secret, EXTERNAL
 * from a client certificate subject. */
static const char *mechanisms(const struct odmr_user *u, char *out, size_t outlen)
{
    bool scram = u->scram_iterations > 0 || u->cram_enabled, password = scram;
    snprintf(out, outlen, "%s%s%s%s", scram ? "SCRAM-SHA-256 " : "",
             password ? "PLAIN LOGIN " : "", u->cram_enabled ? "CRAM-MD5 " : "",
             u->tls_subject != NULL ? "EXTERNAL " : "");
    size_t len = strlen(out);
    if (len == 0)
        snprintf(out, outlen, "(none: cannot log in)");
    else
        out[len - 1] = '\0';
    return out;
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
        char domains[1024] = "", mechs[128];
        for (size_t j = 0; j < u->domain_count; j++)
            snprintf(domains + strlen(domains), sizeof domains - strlen(domains), "%s%s",
                     j ? "," : "", u->domains[j]);
        printf("%-20s %-8s %-40s %s\n", u->name,
               u->profile == ODMR_PROFILE_FAST ? "fast" : "compat", domains,
               mechanisms(u, mechs, sizeof mechs));
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
