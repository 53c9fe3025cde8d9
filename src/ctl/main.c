/* SPDX-License-Identifier: ISC */
/* odmrctl: the provider's admin tool (docs/odmrctl.md).
 *
 * Usage: odmrctl [-c CONFIG] COMMAND ...
 * One table maps each command to its handler and its usage text; the handler gets the loaded
 * configuration and argv starting at the command name. Exit codes come from <sysexits.h>. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ctl/ctl_queue.h"
#include "ctl/ctl_tls.h"
#include "ctl/ctl_user.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/paths.h"
#include "lib/version.h"
#include "store/userdb.h"

static int check_config(const struct config *cfg, int argc, char **argv);

static const struct ctl_command {
    const char *name;
    int (*run)(const struct config *cfg, int argc, char **argv);
    const char *usage;
} commands[] = {
    {"user", ctl_user_main,
     "user add NAME DOMAIN[,DOMAIN...] [--no-cram] [--profile compat|fast]  (password on stdin)\n"
     "  user del NAME\n"
     "  user passwd NAME  (password on stdin)\n"
     "  user list"},
    {"queue", ctl_queue_main,
     "queue list [--ids|--json] [DOMAIN] | queue show ID | queue cat ID | queue summary\n"
     "  queue hold|release ID...|--domain DOMAIN|-\n"
     "  queue requeue|bounce ID...|-\n"
     "  queue delete ID...|--domain DOMAIN|--older-than DURATION|-  (-: ids on stdin)"},
    {"tls", ctl_tls_main, "tls pin [CERT-FILE]  (the pin customers give odmr-client --pin; "
                          "default: [tls] cert)"},
    {"check-config", check_config, "check-config  (like odmrd -t: configuration and users file)"},
};
enum { COMMAND_COUNT = sizeof commands / sizeof commands[0] };

static int usage(FILE *out)
{
    fprintf(out, "usage: odmrctl [-c CONFIG] COMMAND ...\n"
                 "       odmrctl -h|--help | -V|--version\ncommands:\n");
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        fprintf(out, "  %s\n", commands[i].usage);
    fprintf(out, "Without -c: %s if it exists, else the embedded defaults.\n",
            paths_default_config() ? paths_default_config() : "./odmrd.conf");
    fprintf(out, "Exit codes: 0 ok, 64 usage, 65 bad data, 66 no input file or spool, 67 no such\n"
                 "user, 71 cannot become the spool's owner, 74 I/O error, 75 domain being\n"
                 "delivered (try again), 78 configuration error (odmrctl(8), docs/odmrctl.md).\n");
    return out == stdout ? EX_OK : EX_USAGE;
}

static int check_config(const struct config *cfg, int argc, char **argv)
{
    char err[512];
    if (argc != 1)
        return usage(stderr);
    struct userdb *db = userdb_load(cfg->users, err, sizeof err);
    if (db == NULL) {
        fprintf(stderr, "odmrctl: %s\n", err);
        return EX_CONFIG;
    }
    printf("config ok (%s, %zu users in %s)\n", cfg->path ? cfg->path : "embedded defaults",
           userdb_user_count(db), cfg->users);
    userdb_free(db);
    return EX_OK;
}

static const struct ctl_command *find_command(const char *name)
{
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    char err[512];
    log_init("odmrctl", LOG_LEVEL_WARN);
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "+c:hV", longs, NULL)) != -1) {
        if (opt == 'c') {
            config_path = optarg;
        } else if (opt == 'V') {
            version_print("odmrctl");
            return EX_OK;
        } else {
            return usage(opt == 'h' ? stdout : stderr);
        }
    }
    if (optind >= argc)
        return usage(stderr);
    const struct ctl_command *command = find_command(argv[optind]);
    if (command == NULL) {
        fprintf(stderr, "odmrctl: unknown command \"%s\"\n", argv[optind]);
        return usage(stderr);
    }
    const char *fallback = paths_default_config() ? paths_default_config() : "odmrd.conf";
    if (config_path == NULL && access(fallback, F_OK) == 0)
        config_path = fallback;
    struct config cfg;
    if (config_load(&cfg, config_path, err, sizeof err) != 0) {
        fprintf(stderr, "odmrctl: %s\n", err);
        return EX_CONFIG;
    }
    int code = command->run(&cfg, argc - optind, argv + optind);
    config_free(&cfg);
    return code;
}
