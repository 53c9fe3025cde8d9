/* SPDX-License-Identifier: ISC */
/* For the targets that need files: one private path under /tmp per fuzzer process, removed
 * (with everything below it) when the run ends, so `make fuzz-check` leaves nothing behind. */
#ifndef ODMR_FUZZ_TMP_H
#define ODMR_FUZZ_TMP_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char fuzz_tmp[96];

static inline int fuzz_tmp_remove_entry(const char *path, const struct stat *st, int flag,
                                        struct FTW *ftw)
{
    return remove(path);
}

static inline void fuzz_tmp_remove(void)
{
    nftw(fuzz_tmp, fuzz_tmp_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* "/tmp/fuzz-NAME-PID", the same on every call. */
static inline const char *fuzz_tmp_path(const char *name)
{
    if (fuzz_tmp[0] == '\0') {
        snprintf(fuzz_tmp, sizeof fuzz_tmp, "/tmp/fuzz-%s-%d", name, (int)getpid());
        atexit(fuzz_tmp_remove);
    }
    return fuzz_tmp;
}

#endif
