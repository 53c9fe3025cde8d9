/* SPDX-License-Identifier: ISC */
/* odmrctl queue list --json: every string a value from the network can reach is escaped so the
 * document is valid JSON and valid UTF-8 (RFC 8259 7, RFC 3629 4). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../src/ctl/ctl_queue_json.c"

int ctl_queue_open_error(const char *id, int rc)   /* ctl_queue_ops.c's, not linked here */
{
    return rc;
}

/* json_string(s) as text. */
static char *encode(const char *s)
{
    static char out[512];
    FILE *saved = stdout, *f = tmpfile();
    assert_non_null(f);
    stdout = f;
    json_string(s);
    fflush(f);
    stdout = saved;
    rewind(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    return out;
}

static void test_quotes_backslashes_and_controls(void **state)
{
    assert_string_equal(encode("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_string_equal(encode("tab\there\r\n\x1b\x7f"),
                        "\"tab\\u0009here\\u000d\\u000a\\u001b\\u007f\"");
    assert_string_equal(encode(NULL), "null");
    assert_string_equal(encode(""), "\"\"");
}

static void test_utf8_passes_and_invalid_octets_become_code_points(void **state)
{
    assert_string_equal(encode("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xab"),
                        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xab\"");
    assert_string_equal(encode("\xff\xfe"), "\"\\u00ff\\u00fe\"");
    assert_string_equal(encode("\xc3"), "\"\\u00c3\"");                  /* cut short */
    assert_string_equal(encode("\xc0\xaf"), "\"\\u00c0\\u00af\"");       /* overlong '/' */
    assert_string_equal(encode("\xed\xa0\x80"), "\"\\u00ed\\u00a0\\u0080\"");   /* surrogate */
    assert_string_equal(encode("\xf4\x90\x80\x80"), "\"\\u00f4\\u0090\\u0080\\u0080\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quotes_backslashes_and_controls),
        cmocka_unit_test(test_utf8_passes_and_invalid_octets_become_code_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
