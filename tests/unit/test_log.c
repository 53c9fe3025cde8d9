/* SPDX-License-Identifier: ISC */
/* log_quote(): logfmt values, bare when simple, else in double quotes (lib/log.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "lib/log.h"

static void test_values(void **state)
{
    static const struct { const char *in; size_t len; const char *out; } cases[] = {
        {"alice@example.org", 17, "alice@example.org"},
        {"", 0, ""},
        {"<>", 2, "<>"},
        {"451 4.3.0 try later", 19, "\"451 4.3.0 try later\""},
        {"say \"hi\"", 8, "\"say \\\"hi\\\"\""},
        {"back\\slash", 10, "\"back\\\\slash\""},
        {"a=b", 3, "\"a=b\""},
        {"line\r\nbreak", 11, "\"line\\x0d\\x0abreak\""},
        {"nul\0x", 5, "\"nul\\x00x\""},
        {"caf\xc3\xa9", 5, "\"caf\\xc3\\xa9\""},
        {"tab\there", 8, "\"tab\\x09here\""},
    };
    char out[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(log_quote(out, sizeof out, cases[i].in, cases[i].len), cases[i].out);
}

/* A value cut to fit keeps its closing quote and never ends inside an escape. */
static void test_cut(void **state)
{
    char out[8];
    assert_string_equal(log_quote(out, sizeof out, "a b c d e f", 11), "\"a b c\"");
    assert_string_equal(log_quote(out, sizeof out, "a\x01\x02\x03", 4), "\"a\\x01\"");
    assert_string_equal(log_quote(out, sizeof out, "abcdefghij", 10), "abcdefg");
    char tiny[2];
    assert_string_equal(log_quote(tiny, sizeof tiny, "a b", 3), "a");
    assert_int_equal(strlen(log_quote(out, 1, "abc", 3)), 0);
}

/* Inside a value the caller quotes: the same escapes, no quotes of its own. */
static void test_escape(void **state)
{
    char out[64];
    assert_string_equal(log_escape(out, sizeof out, "535 \"x\" a\\b\nc", 13),
                        "535 \\\"x\\\" a\\\\b\\x0ac");
    assert_string_equal(log_escape(out, 6, "ab\x01" "cd", 5), "ab");
    assert_string_equal(log_escape(out, sizeof out, "plain", 5), "plain");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_cut),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
