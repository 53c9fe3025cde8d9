/* SPDX-License-Identifier: ISC */
/* Per-address session counters (lib/peer_count) and the address key (platform/listen). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "lib/peer_count.h"
#include "platform/listen.h"

static void test_limit_per_address(void **state)
{
    struct peer_count *pc = peer_count_new(16);
    assert_non_null(pc);
    for (int i = 0; i < 3; i++)
        assert_true(peer_count_take(pc, "192.0.2.1", 3));
    assert_false(peer_count_take(pc, "192.0.2.1", 3));
    assert_true(peer_count_take(pc, "192.0.2.2", 3));
    assert_int_equal(peer_count_get(pc, "192.0.2.1"), 3);
    assert_int_equal(peer_count_addresses(pc), 2);
    peer_count_release(pc, "192.0.2.1");
    assert_true(peer_count_take(pc, "192.0.2.1", 3));
    assert_true(peer_count_take(pc, "192.0.2.9", 0));   /* 0: no limit */
    peer_count_free(pc);
}

static void test_empty_key_is_exempt(void **state)
{
    struct peer_count *pc = peer_count_new(1);
    for (int i = 0; i < 10; i++)
        assert_true(peer_count_take(pc, "", 1));
    assert_int_equal(peer_count_addresses(pc), 0);
    peer_count_release(pc, "");
    peer_count_release(pc, "198.51.100.7");   /* unknown: ignored */
    peer_count_free(pc);
}

static void test_bounded_capacity(void **state)
{
    struct peer_count *pc = peer_count_new(4);
    char key[32];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "10.0.0.%d", i);
        assert_true(peer_count_take(pc, key, 5));
    }
    assert_false(peer_count_take(pc, "10.0.0.99", 5));   /* table full: refused, not grown */
    assert_true(peer_count_take(pc, "10.0.0.1", 5));      /* a known address still counts */
    peer_count_release(pc, "10.0.0.2");
    assert_true(peer_count_take(pc, "10.0.0.99", 5));
    peer_count_free(pc);
}

/* Many addresses come and go: every count survives the backward-shift deletions. */
static void test_churn_keeps_counts(void **state)
{
    enum { N = 500 };
    struct peer_count *pc = peer_count_new(N);
    char key[32];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            snprintf(key, sizeof key, "2001:db8:%x::/64", i);
            for (int k = 0; k <= i % 3; k++)
                assert_true(peer_count_take(pc, key, 0));
        }
        for (int i = 0; i < N; i += 2) {
            snprintf(key, sizeof key, "2001:db8:%x::/64", i);
            for (int k = 0; k <= i % 3; k++)
                peer_count_release(pc, key);
        }
        for (int i = 0; i < N; i++) {
            snprintf(key, sizeof key, "2001:db8:%x::/64", i);
            assert_int_equal(peer_count_get(pc, key), i % 2 ? (unsigned)(i % 3 + 1) : 0);
        }
        for (int i = 1; i < N; i += 2) {
            snprintf(key, sizeof key, "2001:db8:%x::/64", i);
            for (int k = 0; k <= i % 3; k++)
                peer_count_release(pc, key);
        }
        assert_int_equal(peer_count_addresses(pc), 0);
    }
    peer_count_free(pc);
}

static void test_address_keys(void **state)
{
    char key[PEER_KEY_MAX];
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(25)};
    inet_pton(AF_INET, "192.0.2.33", &v4.sin_addr);
    listen_peer_key((struct sockaddr *)&v4, sizeof v4, key, sizeof key);
    assert_string_equal(key, "192.0.2.33");

    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &v6.sin6_addr);
    listen_peer_key((struct sockaddr *)&v6, sizeof v6, key, sizeof key);
    assert_string_equal(key, "2001:db8:1:2::/64");

    inet_pton(AF_INET6, "::ffff:192.0.2.34", &v6.sin6_addr);   /* v4-mapped: the IPv4 address */
    listen_peer_key((struct sockaddr *)&v6, sizeof v6, key, sizeof key);
    assert_string_equal(key, "192.0.2.34");

    struct sockaddr_un un = {.sun_family = AF_UNIX};
    listen_peer_key((struct sockaddr *)&un, sizeof un, key, sizeof key);
    assert_string_equal(key, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_per_address),
        cmocka_unit_test(test_empty_key_is_exempt),
        cmocka_unit_test(test_bounded_capacity),
        cmocka_unit_test(test_churn_keeps_counts),
        cmocka_unit_test(test_address_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
