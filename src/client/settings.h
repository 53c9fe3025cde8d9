/* SPDX-License-Identifier: ISC */
/* odmr-client settings: one table of every setting, filled from the config file (-c FILE, INI
 * through inih) and from the command line. Flags override the file wherever they stand on the
 * command line: the file is read first, the flags are applied over it. docs/client.md lists
 * every key. Errors are one line: "FILE:LINE: message" for the file, "--flag: message" for a
 * flag; the caller exits 64 (EX_USAGE) with it. */
#ifndef ODMR_CLIENT_SETTINGS_H
#define ODMR_CLIENT_SETTINGS_H

#include <stddef.h>
#include <stdio.h>

#include "client/client.h"

enum settings_result {
    SETTINGS_OK = 0,
    SETTINGS_ERROR = -1,    /* err holds the message */
    SETTINGS_HELP = 1,      /* --help was given: print the usage, exit 0 */
};

/* The defaults: STARTTLS, factor 1, the RFC 5321 4.5.3.2 timeouts, no pins. */
void settings_init(struct client_options *o);
/* Frees every string (and the password, cleared first). */
void settings_free(struct client_options *o);

/* The whole command line: -c FILE loaded first, then the other flags in order. */
enum settings_result settings_from_command_line(struct client_options *o, int argc, char **argv,
                                                char *err, size_t errlen);
/* A config file; relative paths in it are relative to its directory. */
int settings_load_file(struct client_options *o, const char *path, char *err, size_t errlen);
/* The same from an open stream; name is used in messages, base_dir for relative paths (NULL:
 * the current directory). */
int settings_load_stream(struct client_options *o, FILE *in, const char *name,
                         const char *base_dir, char *err, size_t errlen);
/* One flag by its long name (without "--"), as if it were on the command line. */
int settings_apply_flag(struct client_options *o, const char *flag, const char *value, char *err,
                        size_t errlen);

/* After loading: required settings, refused combinations, then the password file is read
 * (it must be mode 0600 or stricter, docs/client.md). */
int settings_check(struct client_options *o, char *err, size_t errlen);
int settings_read_password(struct client_options *o, char *err, size_t errlen);
/* Key i of the config file's table (NULL past its end); *refused: a key that is refused when
 * present (the password). For the tests that keep the documented example complete. */
const char *settings_table_key(size_t i, bool *refused);

#endif
