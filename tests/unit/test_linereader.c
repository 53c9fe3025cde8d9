/* SPDX-License-Identifier: ISC */
/* Line reader: whole and one byte at a time, at the exact limit. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <string.h>

#include "lib/linereader.h"

struct expected_line {
    enum line_status status;
    const char *text;
    bool bare_lf;
    bool bare_cr;
};

struct case_ {
    const char *name;
    const char *input;
    size_t input_len;
    size_t limit;
    struct expected_line lines[6];
    size_t line_count;
};

#define IN(s) s, sizeof(s) - 1

static const struct case_ cases[] = {
    {"crlf", IN("EHLO a\r\nQUIT\r\n"), 512,
     {{LINE_OK, "EHLO a", false, false}, {LINE_OK, "QUIT", false, false}}, 2},
    {"bare lf", IN("a\nb\r\n"), 512,
     {{LINE_OK, "a", true, false}, {LINE_OK, "b", false, false}}, 2},
    {"bare cr inside", IN("a\rb\r\n"), 512, {{LINE_OK, "a\rb", false, true}}, 1},
    {"cr cr lf", IN("a\r\r\n"), 512, {{LINE_OK, "a\r", false, true}}, 1},
    {"empty line", IN("\r\n"), 512, {{LINE_OK, "", false, false}}, 1},
    /* limit includes CRLF: 8 octets = 6 text + CRLF fits */
    {"exactly at limit", IN("123456\r\nx\r\n"), 8,
     {{LINE_OK, "123456", false, false}, {LINE_OK, "x", false, false}}, 2},
    {"one over limit", IN("1234567\r\nx\r\n"), 8,
     {{LINE_TOO_LONG, NULL, false, false}, {LINE_OK, "x", false, false}}, 2},
    {"long without lf then line", IN("123456789012345\r\nok\r\n"), 8,
     {{LINE_TOO_LONG, NULL, false, false}, {LINE_OK, "ok", false, false}}, 2},
    {"incomplete", IN("abc"), 512, {{LINE_AGAIN, NULL, false, false}}, 1},
    {"nul kept", IN("a\0b\r\n"), 512, {{LINE_OK, "a", false, false}}, 1},
};

static void check_case(const struct case_ *c, bool byte_at_a_time)
{
    struct line_reader reader;
    struct evbuffer *in = evbuffer_new();
    struct line line;
    size_t fed = 0, got = 0;
    line_reader_init(&reader, c->limit);
    while (got < c->line_count) {
        enum line_status st = line_reader_next(&reader, in, &line);
        if (st == LINE_AGAIN && fed < c->input_len) {
            size_t n = byte_at_a_time ? 1 : c->input_len - fed;
            evbuffer_add(in, c->input + fed, n);
            fed += n;
            continue;
        }
        const struct expected_line *want = &c->lines[got++];
        assert_int_equal(st, want->status);
        if (st == LINE_OK) {
            assert_string_equal(line.text, want->text);
            assert_int_equal(line.bare_lf, want->bare_lf);
            assert_int_equal(line.bare_cr, want->bare_cr);
        }
    }
    line_reader_free(&reader);
    evbuffer_free(in);
}

static void test_all_whole(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case: %s\n", cases[i].name);
        check_case(&cases[i], false);
    }
}

static void test_all_bytewise(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i], true);
}

static void test_nul_length(void **state)
{
    struct line_reader reader;
    struct evbuffer *in = evbuffer_new();
    struct line line;
    line_reader_init(&reader, 512);
    evbuffer_add(in, "a\0b\r\n", 5);
    assert_int_equal(line_reader_next(&reader, in, &line), LINE_OK);
    assert_int_equal(line.len, 3);
    line_reader_free(&reader);
    evbuffer_free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_whole),
        cmocka_unit_test(test_all_bytewise),
        cmocka_unit_test(test_nul_length),
    };
    return cmocka_run_group_tests_name("linereader", tests, NULL, NULL);
}
