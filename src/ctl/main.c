/* odmrctl: the provider's admin tool (docs/odmrctl.md). */
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ctl/ctl_queue.h"
#include "ctl/ctl_user.h"
#include "lib/config.h"
#include "store/userdb.h"

static int usage(FILE *out)
{
    fprintf(out, "usage: odmrctl [-c CONFIG] COMMAND ...\n"
                 "  user add NAME DOMAIN[,DOMAIN...] [--no-cram] [--profile compat|fast]\n"
                 "  user del NAME | user passwd NAME | user list\n"
                 "  queue list [--ids] [DOMAIN] | queue show ID | queue cat ID | queue delete ID\n"
                 "  check-config\n"
                 "Without -c: ./odmrd.conf if it exists, else the embedded defaults.\n"
                 "Exit codes: 0 ok, 64 usage, 65 bad data, 67 no such user, 74 I/O error,\n"
                 "78 configuration error.\n");
    return out == stdout ? EX_OK : EX_USAGE;
}

static int check_config(const struct config *cfg, int argc, char **argv)
{
    char err[512];
    struct userdb *db = userdb_load(cfg->users, err, sizeof err);
    if (db == NULL) {
        fprintf(stderr, "odmrctl: %s\n", err);
        return EX_CONFIG;
    }
    printf("config ok: %zu users\n", userdb_user_count(db));
    userdb_free(db);
    return EX_OK;
}

static const struct {
    const char *name;
    int (*run)(const struct config *cfg, int argc, char **argv);
} commands[] = {
    {"user", ctl_user_main},
    {"queue", ctl_queue_main},
    {"check-config", check_config},
};

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    char err[512];
    int opt;
    while ((opt = getopt(argc, argv, "+c:h")) != -1) {
        if (opt == 'c')
            config_path = optarg;
        else
            return usage(opt == 'h' ? stdout : stderr);
    }
    if (optind >= argc)
        return usage(stderr);
    if (config_path == NULL && access("odmrd.conf", F_OK) == 0)
        config_path = "odmrd.conf";
    struct config cfg;
    if (config_load(&cfg, config_path, err, sizeof err) != 0) {
        fprintf(stderr, "odmrctl: %s\n", err);
        return EX_CONFIG;
    }
    int code = -1;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[optind], commands[i].name) == 0)
            code = commands[i].run(&cfg, argc - optind, argv + optind);
    config_free(&cfg);
    return code < 0 ? usage(stderr) : code;
}
