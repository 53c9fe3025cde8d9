/* SPDX-License-Identifier: ISC */
/* The SMTP server engine's hook contract for BDAT (RFC 3030): the octets of a chunk the engine
 * refuses (no transaction: 503; data_begin said no) are read and dropped, never handed to
 * data_write (found by fuzz/fuzz_smtp_server.c: intake's data_write would have written to a
 * queue writer that does not exist). A client over a bufferevent pair, the loop run to idle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <string.h>

#include "engines/smtp_server.h"
#include "lib/log.h"

struct fixture {
    bool refuse_data;        /* data_begin answers 452 */
    unsigned begins, writes, ends;
    char replies[4096];      /* what the client read */
};

static void hook_rcpt(void *ctx, struct smtp_session *s, const struct smtp_path_command *rcpt,
                      const char *domain, struct smtp_reply *reply)
{
}

static int hook_data_begin(void *ctx, struct smtp_session *s, struct smtp_reply *reply)
{
    struct fixture *f = ctx;
    f->begins++;
    if (!f->refuse_data)
        return 0;
    reply_set(reply, 452, "4.3.1", "Insufficient system storage");
    return -1;
}

static int hook_data_write(void *ctx, struct smtp_session *s, const char *data, size_t len)
{
    struct fixture *f = ctx;
    f->writes++;
    return 0;
}

static void hook_data_end(void *ctx, struct smtp_session *s)
{
    struct fixture *f = ctx;
    struct smtp_reply reply;
    f->ends++;
    smtp_session_data_done(s, reply_set(&reply, 250, "2.0.0", "Queued"));
}

static const struct smtp_server_hooks hooks = {
    .check_rcpt = hook_rcpt, .data_begin = hook_data_begin, .data_write = hook_data_write,
    .data_end = hook_data_end,
};

/* Sends input as the client, runs the loop until nothing is left to do, keeps the replies. */
static void converse(struct fixture *f, const char *input)
{
    struct event_base *base = event_base_new();
    struct bufferevent *pair[2];
    assert_int_equal(bufferevent_pair_new(base, BEV_OPT_CLOSE_ON_FREE, pair), 0);
    struct smtp_server_settings set = {
        .mode = SMTP_SERVER_SMTP, .hostname = "mx.example", .role = "smtp",
        .limits = {1 << 20, 100, 1000, 20, 100, 300, 300}, .hooks = &hooks, .hooks_ctx = f,
        .max_sessions = 1, .chunking = true};
    struct smtp_server *server = smtp_server_new(base, &set);
    assert_non_null(smtp_server_adopt(server, pair[0], "192.0.2.1", false));
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    bufferevent_write(pair[1], input, strlen(input));
    for (int i = 0; i < 100; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    struct evbuffer *in = bufferevent_get_input(pair[1]);
    size_t n = evbuffer_remove(in, f->replies, sizeof f->replies - 1);
    f->replies[n] = '\0';
    smtp_server_free(server);
    bufferevent_free(pair[1]);
    event_base_free(base);
}

static void test_bdat_without_transaction(void **state)
{
    struct fixture f = {0};
    converse(&f, "EHLO client.example\r\nBDAT 5\r\nhelloQUIT\r\n");
    assert_non_null(strstr(f.replies, "\r\n503 5.5.1 BDAT needs MAIL and RCPT first\r\n221 "));
    assert_int_equal(f.begins, 0);
    assert_int_equal(f.writes, 0);
}

static void test_bdat_refused_by_data_begin(void **state)
{
    struct fixture f = {.refuse_data = true};
    converse(&f, "EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\n"
                 "RCPT TO:<b@example.org>\r\nBDAT 5 LAST\r\nhelloQUIT\r\n");
    assert_non_null(strstr(f.replies, "\r\n452 4.3.1 Insufficient system storage\r\n221 "));
    assert_int_equal(f.begins, 1);
    assert_int_equal(f.writes, 0);
    assert_int_equal(f.ends, 0);
}

static void test_bdat_accepted(void **state)
{
    struct fixture f = {0};
    converse(&f, "EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\n"
                 "RCPT TO:<b@example.org>\r\nBDAT 5 LAST\r\nhelloQUIT\r\n");
    assert_non_null(strstr(f.replies, "\r\n250 2.0.0 Queued\r\n221 "));
    assert_int_equal(f.writes, 1);
    assert_int_equal(f.ends, 1);
}

int main(void)
{
    log_init("test", LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bdat_without_transaction),
        cmocka_unit_test(test_bdat_refused_by_data_begin),
        cmocka_unit_test(test_bdat_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
