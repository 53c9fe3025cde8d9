/* SPDX-License-Identifier: ISC */
/* The server secret file: made once (0600, 32 octets), then the same on every load; a file of
 * the wrong mode or size is refused, never replaced. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/server_secret.h"

static char dir[64], file[128];

static int setup(void **state)
{
    strcpy(dir, "/tmp/odmr-secret-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/%s", dir, SERVER_SECRET_FILE);
    return 0;
}

static int teardown(void **state)
{
    unlink(file);
    rmdir(dir);
    return 0;
}

static void test_made_once_then_kept(void **state)
{
    unsigned char a[SERVER_SECRET_LEN], b[SERVER_SECRET_LEN], zero[SERVER_SECRET_LEN] = {0};
    char err[256];
    struct stat st;
    assert_int_equal(server_secret_load(dir, a, err, sizeof err), 0);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, SERVER_SECRET_LEN);
    assert_memory_not_equal(a, zero, sizeof a);
    assert_int_equal(server_secret_load(dir, b, err, sizeof err), 0);
    assert_memory_equal(a, b, sizeof a);
}

static void test_bad_mode_refused(void **state)
{
    unsigned char a[SERVER_SECRET_LEN];
    char err[256];
    assert_int_equal(server_secret_load(dir, a, err, sizeof err), 0);
    assert_int_equal(chmod(file, 0644), 0);
    assert_int_equal(server_secret_load(dir, a, err, sizeof err), -1);
    assert_non_null(strstr(err, "chmod 600"));
}

static void test_bad_size_refused(void **state)
{
    unsigned char a[SERVER_SECRET_LEN];
    char err[256];
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "short", 5), 5);
    close(fd);
    assert_int_equal(server_secret_load(dir, a, err, sizeof err), -1);
    assert_non_null(strstr(err, "32 octets"));
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_size, 5);   /* never replaced */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_made_once_then_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_mode_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_size_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
