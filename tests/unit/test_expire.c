/* SPDX-License-Identifier: ISC */
/* Expiry timing and the wording of held-for durations (docs/notices.md "Expiry"). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "services/expire.h"
#include "services/notice.h"

static void test_period(void **state)
{
    assert_int_equal(expire_period(2), 1);              /* at least a second: max_hold = 2s */
    assert_int_equal(expire_period(1), 1);
    assert_int_equal(expire_period(25), 2);             /* a tenth */
    assert_int_equal(expire_period(3000), 300);
    assert_int_equal(expire_period(3600), 300);         /* at most 5 minutes */
    assert_int_equal(expire_period(5 * 86400), 300);
}

static void test_duration_words(void **state)
{
    static const struct { time_t seconds; const char *words; } cases[] = {
        {5 * 86400, "5 days"}, {86400, "1 day"}, {2, "2 seconds"}, {1, "1 second"},
        {90, "90 seconds"}, {120, "2 minutes"}, {7200, "2 hours"}, {14 * 86400, "2 weeks"},
        {36 * 3600, "36 hours"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        notice_format_duration(cases[i].seconds, out, sizeof out);
        assert_string_equal(out, cases[i].words);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_period),
        cmocka_unit_test(test_duration_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
