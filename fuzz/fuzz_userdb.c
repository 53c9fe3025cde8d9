/* SPDX-License-Identifier: ISC */
/* libFuzzer target: the users file loader. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "fuzz_tmp.h"
#include "store/userdb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_tmp_path("users");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return 0;
    ssize_t written = write(fd, data, size);
    close(fd);
    if (written != (ssize_t)size)
        return 0;
    char err[512];
    struct userdb *db = userdb_load(path, err, sizeof err);
    if (db != NULL) {
        for (size_t i = 0; i < userdb_user_count(db); i++) {
            const struct odmr_user *u = userdb_user_at(db, i);
            if (userdb_find_user(db, u->name) == NULL)
                __builtin_trap();
        }
        userdb_free(db);
    }
    return 0;
}
