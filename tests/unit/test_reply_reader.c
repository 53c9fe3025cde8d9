/* SPDX-License-Identifier: ISC */
/* SMTP reply reader (lib/reply_reader.c): table-driven, each case fed whole and one byte at a
 * time, in both modes (CRLF only; bare LF tolerated as the push does), at the exact limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>

#include "lib/reply_reader.h"

struct case_ {
    const char *name;
    const char *input;
    bool allow_bare_lf;
    enum reply_status end;   /* what the last call returns */
    int code;                /* code of the last line read, if any */
    size_t lines;            /* REPLY_LINE results before the end */
};

static const struct case_ cases[] = {
    {"one line", "220 mx ready\r\n", false, REPLY_AGAIN, 220, 1},
    {"code only", "250\r\n", false, REPLY_AGAIN, 250, 1},
    {"empty continuation", "250-\r\n250 x\r\n", false, REPLY_AGAIN, 250, 2},
    {"multi-line", "250-a\r\n250-b\r\n250 c\r\n", false, REPLY_AGAIN, 250, 3},
    {"two replies", "250 a\r\n354 go\r\n", false, REPLY_AGAIN, 354, 2},
    {"bare lf strict", "220 x\n", false, REPLY_MALFORMED, 0, 0},
    {"bare lf tolerated", "220 x\n250 y\r\n", true, REPLY_AGAIN, 250, 2},
    {"bare cr", "220 a\rb\r\n", true, REPLY_MALFORMED, 0, 0},
    {"first digit 1", "150 x\r\n", false, REPLY_MALFORMED, 0, 0},
    {"first digit 6", "650 x\r\n", false, REPLY_MALFORMED, 0, 0},
    {"second digit 6", "260 x\r\n", false, REPLY_MALFORMED, 0, 0},
    {"letter", "2x0 x\r\n", false, REPLY_MALFORMED, 0, 0},
    {"no separator", "250x\r\n", false, REPLY_MALFORMED, 0, 0},
    {"two digits", "25 x\r\n", false, REPLY_MALFORMED, 0, 0},
    {"code changes", "250-a\r\n251 b\r\n", false, REPLY_CODE_CHANGED, 250, 1},
    {"incomplete", "250 ok", false, REPLY_AGAIN, 0, 0},
};

/* Feeds len octets of input (whole or one at a time) and reads until the reader stops. */
static enum reply_status run_case(const char *input, size_t len, bool allow_bare_lf,
                                  bool bytewise, size_t *lines, int *code)
{
    struct reply_reader r;
    struct evbuffer *in = evbuffer_new();
    enum reply_status st = REPLY_AGAIN;
    reply_reader_init(&r, allow_bare_lf);
    *lines = 0;
    *code = 0;
    for (size_t fed = 0; fed < len;) {
        size_t n = bytewise ? 1 : len - fed;
        evbuffer_add(in, input + fed, n);
        fed += n;
        struct reply_line l;
        while ((st = reply_reader_next(&r, in, &l)) == REPLY_LINE) {
            (*lines)++;
            *code = l.code;
        }
        if (st != REPLY_AGAIN)
            break;
    }
    reply_reader_free(&r);
    evbuffer_free(in);
    return st;
}

static void test_table(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct case_ *c = &cases[i];
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            size_t lines;
            int code;
            enum reply_status st = run_case(c->input, strlen(c->input), c->allow_bare_lf,
                                            bytewise, &lines, &code);
            if (st != c->end || lines != c->lines || code != c->code)
                fail_msg("%s (bytewise %d): status %d lines %zu code %d", c->name, bytewise,
                         (int)st, lines, code);
        }
    }
}

static void test_nul(void **state)
{
    static const char text[] = "220 a\0b\r\n";
    size_t lines;
    int code;
    for (int bytewise = 0; bytewise < 2; bytewise++)
        assert_int_equal(run_case(text, sizeof text - 1, true, bytewise, &lines, &code),
                         REPLY_MALFORMED);
}

/* RFC 5321 4.5.3.1.5: 512 octets including CRLF fit, 513 do not; the over-long line is known
 * before its end arrives. */
static void test_line_limit(void **state)
{
    char line[REPLY_LINE_MAX + 2];
    size_t lines;
    int code;
    memset(line, 'x', sizeof line);
    memcpy(line, "250 ", 4);
    memcpy(line + REPLY_LINE_MAX - 2, "\r\n", 2);
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        assert_int_equal(run_case(line, REPLY_LINE_MAX, false, bytewise, &lines, &code),
                         REPLY_AGAIN);
        assert_int_equal(lines, 1);
    }
    memset(line, 'x', sizeof line);
    memcpy(line, "250 ", 4);
    memcpy(line + REPLY_LINE_MAX - 1, "\r\n", 2);
    for (int bytewise = 0; bytewise < 2; bytewise++)
        assert_int_equal(run_case(line, REPLY_LINE_MAX + 1, false, bytewise, &lines, &code),
                         REPLY_TOO_LONG);
    /* No LF at all: reported once the limit is passed, not at the (never coming) end. */
    memset(line, 'x', sizeof line);
    memcpy(line, "250 ", 4);
    assert_int_equal(run_case(line, sizeof line, false, false, &lines, &code), REPLY_TOO_LONG);
}

/* 100 lines in one reply are read; the 101st is an error. */
static void test_lines_limit(void **state)
{
    static char text[(REPLY_LINES_MAX + 2) * 12];
    size_t n = 0, lines;
    int code;
    for (int i = 0; i < REPLY_LINES_MAX - 1; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "250-%03d\r\n", i);
    size_t before_last = n;
    n += (size_t)snprintf(text + n, sizeof text - n, "250 end\r\n");
    assert_int_equal(run_case(text, n, false, false, &lines, &code), REPLY_AGAIN);
    assert_int_equal(lines, REPLY_LINES_MAX);
    n = before_last + (size_t)snprintf(text + before_last, sizeof text - before_last,
                                       "250-099\r\n250 end\r\n");
    assert_int_equal(run_case(text, n, false, false, &lines, &code), REPLY_TOO_MANY_LINES);
    assert_int_equal(lines, REPLY_LINES_MAX);
}

static void test_status_names(void **state)
{
    for (int st = REPLY_AGAIN; st <= REPLY_TOO_MANY_LINES; st++)
        assert_non_null(reply_status_name((enum reply_status)st));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_line_limit),
        cmocka_unit_test(test_lines_limit),
        cmocka_unit_test(test_status_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
