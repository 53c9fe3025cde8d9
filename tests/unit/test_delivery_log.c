/* SPDX-License-Identifier: ISC */
/* The dsn= and status of the per-recipient delivery line (services/delivery_log.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "services/delivery_log.h"

static void test_dsn(void **state)
{
    static const struct { enum delivery_status status; const char *reply, *dsn; } cases[] = {
        {DELIVERY_SENT, "250 2.0.0 Ok", "2.0.0"},
        {DELIVERY_SENT, "250 ok", "2.0.0"},
        {DELIVERY_SENT, NULL, "2.0.0"},
        {DELIVERY_DEFERRED, "451 4.3.0 try later", "4.3.0"},
        {DELIVERY_DEFERRED, "not attempted", "4.0.0"},
        {DELIVERY_DEFERRED, "451 5.3.0 class differs from the code", "4.0.0"},
        {DELIVERY_BOUNCED, "550 5.1.1 no such user", "5.1.1"},
        {DELIVERY_BOUNCED, "550-5.7.1 first line", "5.7.1"},
        {DELIVERY_BOUNCED, "550 5.1234.1 detail too long", "5.0.0"},
        {DELIVERY_BOUNCED, "550 5.1.1x", "5.0.0"},
        {DELIVERY_EXPIRED, "expired: held 2 seconds", "5.4.7"},
    };
    char out[16];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(delivery_dsn(out, sizeof out, cases[i].status, cases[i].reply),
                            cases[i].dsn);
}

static void test_status_of(void **state)
{
    assert_int_equal(delivery_status_of(QUEUE_RCPT_DONE), DELIVERY_SENT);
    assert_int_equal(delivery_status_of(QUEUE_RCPT_PENDING), DELIVERY_DEFERRED);
    assert_int_equal(delivery_status_of(QUEUE_RCPT_FAILED), DELIVERY_BOUNCED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dsn),
        cmocka_unit_test(test_status_of),
    };
    return cmocka_run_group_tests_name("delivery_log", tests, NULL, NULL);
}
