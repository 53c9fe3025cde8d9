/* SPDX-License-Identifier: ISC */
/* services/notice_relay: the back-off and the relay address. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <string.h>

#include "services/notice_relay.h"

static void test_backoff_doubles_up_to_the_ceiling(void **state)
{
    assert_int_equal(notice_relay_backoff(300, 3600, 0), 300);
    assert_int_equal(notice_relay_backoff(300, 3600, 1), 300);
    assert_int_equal(notice_relay_backoff(300, 3600, 2), 600);
    assert_int_equal(notice_relay_backoff(300, 3600, 4), 2400);
    assert_int_equal(notice_relay_backoff(300, 3600, 5), 3600);
    assert_int_equal(notice_relay_backoff(300, 3600, 4000000000u), 3600);
    assert_int_equal(notice_relay_backoff(1, 2, 3), 2);
    assert_int_equal(notice_relay_backoff(600, 60, 1), 60);   /* the ceiling wins */
}

static void test_resolve(void **state)
{
    struct sockaddr_storage a;
    socklen_t len = 0;
    char err[200];
    assert_int_equal(notice_relay_resolve("127.0.0.1:25", &a, &len, err, sizeof err), 0);
    assert_int_equal(a.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&a)->sin_port), 25);
    assert_int_equal(notice_relay_resolve("[::1]:2525", &a, &len, err, sizeof err), 0);
    assert_int_equal(a.ss_family, AF_INET6);
    const char *bad[] = {"127.0.0.1", "127.0.0.1:", ":25", "127.0.0.1:smtp", "[]:25"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(notice_relay_resolve(bad[i], &a, &len, err, sizeof err), -1);
        assert_non_null(strstr(err, "[bounce] relay"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubles_up_to_the_ceiling),
        cmocka_unit_test(test_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
