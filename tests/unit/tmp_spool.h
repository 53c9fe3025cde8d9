/* SPDX-License-Identifier: ISC */
/* A fresh spool directory under /tmp for each test (cmocka setup/teardown), removed whole
 * afterwards. Define TMP_SPOOL_TEMPLATE ("/tmp/odmr-NAME-XXXXXX") before including. */
#ifndef ODMR_TESTS_TMP_SPOOL_H
#define ODMR_TESTS_TMP_SPOOL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char spool[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup_spool(void **state)
{
    strcpy(spool, TMP_SPOOL_TEMPLATE);
    assert_non_null(mkdtemp(spool));
    return 0;
}

static int teardown_spool(void **state)
{
    nftw(spool, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

#endif
