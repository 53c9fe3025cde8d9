/* SPDX-License-Identifier: ISC */
/* Changing the users file (odmrctl user ...): every change rewrites the file atomically
 * (temp file in the same directory with the old file's mode, and owner when run as root; fsync,
 * rename, fsync of the directory) and is checked by loading the result before it replaces the
 * old file. The old file must load too: a line odmrctl cannot parse is never rewritten.
 * Comments and other lines are kept byte for byte.
 * A change holds an exclusive flock(2) on the directory of the file while it runs. */
#ifndef ODMR_STORE_USERDB_WRITE_H
#define ODMR_STORE_USERDB_WRITE_H

#include <stdbool.h>
#include <stddef.h>

#include "store/userdb.h"

enum userdb_change_status {
    USERDB_CHANGED = 0,
    USERDB_EXISTS,        /* user add: the name is taken */
    USERDB_NO_SUCH_USER,
    USERDB_INVALID,       /* bad name, domain, password, or the result would not load */
    USERDB_IO_ERROR,
    USERDB_BROKEN,        /* the file as it is does not load (or has a NUL): nothing changed */
};

struct userdb_new_user {
    const char *name;
    const char *domains;        /* comma-separated */
    const char *password;
    bool cram;                  /* store the CRAM-MD5 secret (plaintext-equivalent) */
    enum odmr_profile profile;
};

enum userdb_change_status userdb_add_user(const char *path, const struct userdb_new_user *user,
                                          char *err, size_t errlen);
enum userdb_change_status userdb_delete_user(const char *path, const char *name, char *err,
                                             size_t errlen);
enum userdb_change_status userdb_set_password(const char *path, const char *name,
                                              const char *password, char *err, size_t errlen);

#endif
