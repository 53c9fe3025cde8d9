/* SPDX-License-Identifier: ISC */
/* store/queue_fs_entry: index entries, version 2 (per-recipient flags) and version 1. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/queue_fs_entry.h"

static int parse(const char *text, struct queue_fs_entry *e)
{
    char *copy = strdup(text);
    int rc = queue_fs_entry_parse(copy, strlen(copy), e);
    free(copy);
    return rc;
}

static void test_version_1_still_reads(void **state)
{
    struct queue_fs_entry e;
    assert_int_equal(parse("ODMRD 1\nrcpt 2 pending 3 1795925358 =451%20later\nend\n", &e), 0);
    assert_int_equal(e.count, 1);
    assert_int_equal(e.lines[0].index, 2);
    assert_int_equal(e.lines[0].state, QUEUE_RCPT_PENDING);
    assert_int_equal(e.lines[0].attempts, 3);
    assert_int_equal(e.lines[0].last_attempt, 1795925358);
    assert_false(e.lines[0].warned);
    assert_string_equal(e.lines[0].reply, "451 later");
    queue_fs_entry_free(&e);
    /* a version 1 line with a flags field is damaged, and so is the reverse */
    assert_int_equal(parse("ODMRD 1\nrcpt 0 pending 1 2 w -\nend\n", &e), EBADMSG);
    assert_int_equal(parse("ODMRD 2\nrcpt 0 pending 1 2 -\nend\n", &e), EBADMSG);
}

static void test_version_2_flags(void **state)
{
    struct queue_fs_entry e;
    assert_int_equal(parse("ODMRD 2\nrcpt 0 pending 0 0 w -\nrcpt 1 done 1 5 - =250\nend\n", &e),
                     0);
    assert_int_equal(e.count, 2);
    assert_true(e.lines[0].warned);
    assert_null(e.lines[0].reply);
    assert_false(e.lines[1].warned);
    assert_int_equal(e.lines[1].state, QUEUE_RCPT_DONE);
    queue_fs_entry_free(&e);
    assert_int_equal(parse("ODMRD 2\nrcpt 0 pending 0 0 x -\nend\n", &e), EBADMSG);
    assert_int_equal(parse("ODMRD 3\nend\n", &e), EBADMSG);
}

static void test_format_round_trip(void **state)
{
    struct queue_rcpt rcpts[2] = {
        {.address = "a@x.example", .domain = "x.example", .attempts = 2, .last_attempt = 7,
         .warned = true, .last_reply = "451 wait"},
        {.address = "b@y.example", .domain = "y.example"},
    };
    struct queue_envelope env = {.rcpt_count = 2, .rcpts = rcpts};
    struct queue_text t = {0};
    assert_int_equal(queue_fs_entry_format(&t, &env, "x.example"), 0);
    assert_int_equal(queue_text_append(&t, "", 1), 0);
    assert_string_equal(t.data, "ODMRD 2\nrcpt 0 pending 2 7 w =451%20wait\nend\n");
    struct queue_fs_entry e;
    assert_int_equal(parse(t.data, &e), 0);
    rcpts[0].warned = false;
    rcpts[0].last_reply = NULL;
    assert_int_equal(queue_fs_entry_apply(&env, "x.example", &e), 0);
    assert_true(rcpts[0].warned);
    assert_string_equal(rcpts[0].last_reply, "451 wait");
    free(rcpts[0].last_reply);
    queue_fs_entry_free(&e);
    queue_text_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_1_still_reads),
        cmocka_unit_test(test_version_2_flags),
        cmocka_unit_test(test_format_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
