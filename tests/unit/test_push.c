/* SPDX-License-Identifier: ISC */
/* The reversed session (push) against a scripted fake customer: a socketpair, odmrd's end on a
 * bufferevent running push_start(), the customer's end driven by a thread with blocking I/O
 * that records everything it receives and answers from a per-test script (docs/push.md). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "services/push.h"
#include "store/queue.h"
#include "store/queue_fs.h"

#define TMP_SPOOL_TEMPLATE "/tmp/odmr-push-XXXXXX"
#include "tmp_spool.h"


/* ---- storing messages ---- */

struct trcpt {
    const char *address, *domain, *notify, *orcpt;
};

struct tmsg {
    const struct trcpt *rcpts;
    size_t rcpt_count;
    const char *body;
    enum queue_body_type type;
    bool smtputf8;
    const char *ret, *envid;
};

static void store(struct queue *q, const struct tmsg *t, char *id)
{
    struct queue_envelope env;
    struct queue_rcpt rcpts[8];
    memset(&env, 0, sizeof env);
    memset(rcpts, 0, sizeof rcpts);
    env.sender = "alice@sender.example";
    env.helo = "mx.sender.example";
    env.client_addr = "192.0.2.7";
    env.protocol = "ESMTP";
    env.body = t->type;
    env.smtputf8 = t->smtputf8;
    env.ret = (char *)t->ret;
    env.envid = (char *)t->envid;
    env.rcpts = rcpts;
    env.rcpt_count = t->rcpt_count;
    for (size_t i = 0; i < t->rcpt_count; i++) {
        rcpts[i].address = (char *)t->rcpts[i].address;
        rcpts[i].domain = (char *)t->rcpts[i].domain;
        rcpts[i].notify = (char *)t->rcpts[i].notify;
        rcpts[i].orcpt = (char *)t->rcpts[i].orcpt;
    }
    struct queue_writer *w;
    assert_int_equal(queue_put(q, &env, &w), 0);
    assert_int_equal(queue_write(w, t->body, strlen(t->body)), 0);
    assert_int_equal(queue_fs_commit_sync(w), 0);
    if (id != NULL)
        strcpy(id, env.id);
}

/* ---- the fake customer ---- */

enum { MAX_REPLIES = 16, MAX_BODIES = 8 };

struct fake {
    int fd;
    /* script */
    const char *greeting;            /* NULL: close at once */
    const char *ehlo;                /* full EHLO reply, CRLF lines */
    bool no_ehlo;                    /* answer EHLO 502 (HELO fallback) */
    bool silent_after_greeting;      /* never answers: timeout */
    const char *rcpt_replies[MAX_REPLIES];   /* in order; NULL: "250 2.1.5 ok" */
    const char *dot_replies[MAX_REPLIES];    /* in order; NULL: "250 2.0.0 queued" */
    bool drop_in_data;               /* close after the first data line */
    void (*on_mail)(struct fake *f); /* called at each MAIL */
    /* record */
    char transcript[64 << 10];       /* commands only */
    size_t tlen;
    char bodies[MAX_BODIES][8192];   /* data as received (still stuffed), without the dot */
    size_t body_count;
    unsigned rcpts_seen, dots_seen, mails_seen;
    bool pipelined;                  /* RCPT was already buffered when MAIL was read */
    /* reader */
    char buf[16384];
    size_t blen;
};

static ssize_t fill_buf(struct fake *f)
{
    ssize_t n = read(f->fd, f->buf + f->blen, sizeof f->buf - f->blen);
    if (n > 0)
        f->blen += (size_t)n;
    return n;
}

/* One line including its CRLF into out; false at EOF. */
static bool read_line(struct fake *f, char *out, size_t outlen)
{
    for (;;) {
        char *lf = memchr(f->buf, '\n', f->blen);
        if (lf != NULL) {
            size_t n = (size_t)(lf - f->buf) + 1;
            assert_true(n < outlen);
            memcpy(out, f->buf, n);
            out[n] = '\0';
            memmove(f->buf, f->buf + n, f->blen - n);
            f->blen -= n;
            return true;
        }
        if (fill_buf(f) <= 0)
            return false;
    }
}

static bool read_exact(struct fake *f, char *out, size_t n)
{
    while (f->blen < n) {
        if (fill_buf(f) <= 0)
            return false;
    }
    memcpy(out, f->buf, n);
    memmove(f->buf, f->buf + n, f->blen - n);
    f->blen -= n;
    return true;
}

static void say(struct fake *f, const char *text)
{
    size_t len = strlen(text);
    assert_int_equal(write(f->fd, text, len), (ssize_t)len);
    if (len < 2 || text[len - 1] != '\n')
        assert_int_equal(write(f->fd, "\r\n", 2), 2);
}

static void record(struct fake *f, const char *line)
{
    size_t n = strlen(line);
    if (f->tlen + n < sizeof f->transcript) {
        memcpy(f->transcript + f->tlen, line, n);
        f->tlen += n;
        f->transcript[f->tlen] = '\0';
    }
}

static const char *next_reply(const char *const *list, unsigned *seen, const char *dflt)
{
    unsigned i = (*seen)++;
    return i < MAX_REPLIES && list[i] != NULL ? list[i] : dflt;
}

/* Reads the data up to the lone dot. false: dropped or EOF. */
static bool take_data(struct fake *f)
{
    char line[2048];
    char *body = f->bodies[f->body_count < MAX_BODIES ? f->body_count : MAX_BODIES - 1];
    size_t len = 0;
    body[0] = '\0';
    while (read_line(f, line, sizeof line)) {
        if (f->drop_in_data)
            return false;
        if (strcmp(line, ".\r\n") == 0) {
            f->body_count++;
            return true;
        }
        size_t n = strlen(line);
        if (len + n < 8192) {
            memcpy(body + len, line, n + 1);
            len += n;
        }
    }
    return false;
}

static bool take_bdat(struct fake *f, const char *line)
{
    unsigned long n = strtoul(line + 5, NULL, 10);
    char *body = f->bodies[f->body_count < MAX_BODIES ? f->body_count : MAX_BODIES - 1];
    assert_true(n < 8192);
    if (!read_exact(f, body, n))
        return false;
    body[n] = '\0';
    f->body_count++;
    return true;
}

static bool has_prefix(const char *line, const char *prefix)
{
    return strncasecmp(line, prefix, strlen(prefix)) == 0;
}

/* One command; false when the session is over. */
static bool serve_command(struct fake *f, const char *line)
{
    record(f, line);
    if (has_prefix(line, "EHLO")) {
        say(f, f->no_ehlo ? "502 5.5.1 what?" : f->ehlo);
    } else if (has_prefix(line, "HELO")) {
        say(f, "250 customer.example");
    } else if (has_prefix(line, "MAIL")) {
        f->mails_seen++;
        f->pipelined = f->pipelined || memmem(f->buf, f->blen, "RCPT", 4) != NULL;
        if (f->on_mail != NULL)
            f->on_mail(f);
        say(f, "250 2.1.0 ok");
    } else if (has_prefix(line, "RCPT")) {
        say(f, next_reply(f->rcpt_replies, &f->rcpts_seen, "250 2.1.5 ok"));
    } else if (has_prefix(line, "DATA")) {
        say(f, "354 go ahead");
        if (!take_data(f))
            return false;
        say(f, next_reply(f->dot_replies, &f->dots_seen, "250 2.0.0 queued"));
    } else if (has_prefix(line, "BDAT")) {
        if (!take_bdat(f, line))
            return false;
        say(f, next_reply(f->dot_replies, &f->dots_seen, "250 2.0.0 queued"));
    } else if (has_prefix(line, "RSET")) {
        say(f, "250 2.0.0 reset");
    } else if (has_prefix(line, "QUIT")) {
        say(f, "221 2.0.0 bye");
        return false;
    } else {
        say(f, "500 5.5.1 unknown");
    }
    return true;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    char line[2048];
    if (f->greeting != NULL) {
        say(f, f->greeting);
        if (f->silent_after_greeting) {
            while (read_line(f, line, sizeof line))
                record(f, line);
        } else {
            while (read_line(f, line, sizeof line) && serve_command(f, line))
                ;
        }
    }
    close(f->fd);
    return NULL;
}

static const char ehlo_full[] = "250-customer.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                                "250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n"
                                "250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n";
static const char ehlo_plain[] = "250-customer.example\r\n250 ENHANCEDSTATUSCODES\r\n";

static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof *f);
    f->greeting = "220 customer.example ESMTP";
    f->ehlo = ehlo_full;
}

/* ---- running a push ---- */

struct run {
    struct event_base *base;
    struct queue *q;
    struct push_result result;
    int done_calls;
};

static void on_done(void *arg, const struct push_result *r)
{
    struct run *run = arg;
    run->result = *r;
    run->done_calls++;
    event_base_loopbreak(run->base);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    fail_msg("push did not finish in time");
}

static struct run *run_new(void)
{
    struct run *run = calloc(1, sizeof *run);
    char err[256];
    run->base = event_base_new();
    run->q = queue_open_fs(spool, run->base, 2, err, sizeof err);
    if (run->q == NULL)
        fail_msg("queue_open_fs: %s", err);
    return run;
}

static void run_free(struct run *run)
{
    queue_close(run->q);
    event_base_free(run->base);
    free(run);
}

static void run_push(struct run *run, struct fake *f, const char *const *domains, size_t n,
                     enum push_profile profile, bool tls, time_t timeout)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    f->fd = sv[1];
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, fake_main, f), 0);
    struct bufferevent *bev = bufferevent_socket_new(run->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    struct push_request req = {
        .base = run->base,
        .bev = bev,
        .tls_active = tls,
        .queue = run->q,
        .domains = domains,
        .domain_count = n,
        .hostname = "provider.example",
        .session_id = "T1",
        .profile = profile,
    };
    push_default_timeouts(&req.timeouts);
    if (timeout > 0)
        req.timeouts.greeting = req.timeouts.command = timeout;
    struct push_service *pushes = push_service_new(256);   /* [odmr] push_open_files default */
    assert_non_null(pushes);
    assert_int_equal(push_start(pushes, &req, on_done, run), 0);
    struct event *guard = evtimer_new(run->base, on_guard, NULL);
    struct timeval limit = {20, 0};
    evtimer_add(guard, &limit);
    event_base_dispatch(run->base);
    event_free(guard);
    /* libevent finalizes a freed bufferevent (closes the fd) on the next loop iteration. */
    event_base_loop(run->base, EVLOOP_NONBLOCK);
    push_service_free(pushes);
    pthread_join(thread, NULL);
    assert_int_equal(run->done_calls, 1);
}

static const char *const dom_a[] = {"a.example"};

static bool queued(struct queue *q, const char *id)
{
    struct queue_message *m;
    if (queue_message_open(q, id, &m) != 0)
        return false;
    queue_message_close(m);
    return true;
}

static void expect_rcpt(struct queue *q, const char *id, size_t i, enum queue_rcpt_state state,
                        unsigned attempts, const char *reply_part)
{
    struct queue_message *m;
    assert_int_equal(queue_message_open(q, id, &m), 0);
    assert_int_equal(m->env.rcpts[i].state, state);
    assert_int_equal(m->env.rcpts[i].attempts, attempts);
    if (reply_part != NULL) {
        assert_non_null(m->env.rcpts[i].last_reply);
        assert_non_null(strstr(m->env.rcpts[i].last_reply, reply_part));
    }
    queue_message_close(m);
}

static int count_notice(const char *id, void *arg)
{
    struct queue_message *m;
    struct queue *q = ((void **)arg)[0];
    size_t *n = ((void **)arg)[1];
    assert_int_equal(queue_message_open(q, id, &m), 0);
    /* A failed notice: from <>, to the original sender, filed under the sender's domain. */
    assert_string_equal(m->env.sender, "");
    assert_int_equal(m->env.rcpt_count, 1);
    assert_string_equal(m->env.rcpts[0].address, "alice@sender.example");
    queue_message_close(m);
    (*n)++;
    return 0;
}

static void expect_notices(struct queue *q, size_t expected)
{
    size_t n = 0;
    void *arg[2] = {q, &n};
    assert_int_equal(queue_list_domain(q, "sender.example", count_notice, arg), 0);
    assert_int_equal(n, expected);
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* RFC 5321 4.5.2, written out independently of the engine. */
static void stuff(const char *in, char *out)
{
    bool start = true;
    for (; *in != '\0'; in++) {
        if (start && *in == '.')
            *out++ = '.';
        *out++ = *in;
        start = *in == '\n';
    }
    *out = '\0';
}

/* ---- tests ---- */

static const struct trcpt bob_a[] = {{"bob@a.example", "a.example", "SUCCESS,FAILURE",
                                      "rfc822;bob@a.example"}};
static const char body1[] = "Subject: one\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n";
static const char body2[] = "Subject: two\r\n\r\nno final newline";
static const char body3[] = ".\r\n";

static void store_three(struct queue *q, char ids[3][QUEUE_ID_MAX])
{
    const struct tmsg m1 = {bob_a, 1, body1, QUEUE_BODY_8BITMIME, false, "HDRS", "ENV1"};
    const struct tmsg m2 = {bob_a, 1, body2, QUEUE_BODY_7BIT, false, NULL, NULL};
    const struct tmsg m3 = {bob_a, 1, body3, QUEUE_BODY_7BIT, true, "FULL", NULL};
    store(q, &m1, ids[0]);
    store(q, &m2, ids[1]);
    store(q, &m3, ids[2]);
}

static void check_bodies(const struct fake *f)
{
    char expect[4096];
    assert_int_equal(f->body_count, 3);
    stuff(body1, expect);
    assert_string_equal(f->bodies[0], expect);
    stuff(body2, expect);
    strcat(expect, "\r\n");   /* the CRLF the body lacked, before the dot */
    assert_string_equal(f->bodies[1], expect);
    assert_string_equal(f->bodies[2], "..\r\n");
}

static void test_delivers_in_order_with_dsn(void **state)
{
    struct run *run = run_new();
    char ids[3][QUEUE_ID_MAX];
    store_three(run->q, ids);
    struct fake f;
    fake_init(&f);
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);

    assert_true(run->result.clean);
    assert_int_equal(run->result.messages, 3);
    assert_int_equal(run->result.delivered, 3);
    assert_string_equal(run->result.reason, "");
    check_bodies(&f);
    char size1[160];
    snprintf(size1, sizeof size1, "MAIL FROM:<alice@sender.example> SIZE=%zu BODY=8BITMIME "
             "RET=HDRS ENVID=ENV1\r\n", strlen(body1));
    assert_non_null(strstr(f.transcript, "EHLO provider.example\r\n"));
    assert_non_null(strstr(f.transcript, size1));
    assert_non_null(strstr(f.transcript, " SMTPUTF8 RET=FULL\r\n"));
    assert_int_equal(count_of(f.transcript,
                              "RCPT TO:<bob@a.example> NOTIFY=SUCCESS,FAILURE "
                              "ORCPT=rfc822;bob@a.example\r\n"), 3);
    assert_non_null(strstr(f.transcript, "QUIT\r\n"));
    /* compat: no PIPELINING, no BDAT, no STARTTLS even though advertised */
    assert_false(f.pipelined);
    assert_null(strstr(f.transcript, "BDAT"));
    assert_null(strstr(f.transcript, "STARTTLS"));
    for (int i = 0; i < 3; i++)
        assert_false(queued(run->q, ids[i]));
    run_free(run);
}

static void test_no_dsn_params_without_dsn(void **state)
{
    struct run *run = run_new();
    char ids[3][QUEUE_ID_MAX];
    const struct tmsg m = {bob_a, 1, body1, QUEUE_BODY_7BIT, false, "HDRS", "ENV1"};
    store(run->q, &m, ids[0]);
    struct fake f;
    fake_init(&f);
    f.ehlo = ehlo_plain;
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_int_equal(run->result.delivered, 1);
    assert_non_null(strstr(f.transcript, "MAIL FROM:<alice@sender.example>\r\n"));
    assert_non_null(strstr(f.transcript, "RCPT TO:<bob@a.example>\r\n"));
    assert_false(queued(run->q, ids[0]));
    /* RFC 3461 5.2.2 (b): NOTIFY=SUCCESS toward a customer without DSN: a relayed notice. */
    expect_notices(run->q, 1);
    run_free(run);
}

static void test_helo_fallback_and_line_per_write(void **state)
{
    struct run *run = run_new();
    char ids[3][QUEUE_ID_MAX];
    store_three(run->q, ids);   /* the first needs 8BITMIME: fails without EHLO */
    struct fake f;
    fake_init(&f);
    f.no_ehlo = true;
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, true, 0);
    assert_non_null(strstr(f.transcript, "HELO provider.example\r\n"));
    assert_int_equal(run->result.failed, 2);   /* 8BITMIME and SMTPUTF8 */
    assert_int_equal(run->result.delivered, 1);
    assert_int_equal(f.body_count, 1);
    /* Failed with their notices committed: nothing left of them. The delivered one asked for
     * NOTIFY=SUCCESS from a customer without DSN: a relayed notice (RFC 3461 5.2.2 b). */
    assert_false(queued(run->q, ids[0]));
    assert_false(queued(run->q, ids[2]));
    expect_notices(run->q, 3);
    assert_false(queued(run->q, ids[1]));
    run_free(run);
}

static const struct trcpt three_a[] = {
    {"r1@a.example", "a.example", NULL, NULL},
    {"r2@a.example", "a.example", NULL, NULL},
    {"r3@a.example", "a.example", NULL, NULL},
};

static void test_outcomes_per_rcpt_and_after_dot(void **state)
{
    struct run *run = run_new();
    char id1[QUEUE_ID_MAX], id2[QUEUE_ID_MAX], id3[QUEUE_ID_MAX];
    const struct tmsg m1 = {three_a, 3, "x\r\n", QUEUE_BODY_7BIT, false, NULL, NULL};
    const struct tmsg m2 = {three_a, 1, "y\r\n", QUEUE_BODY_7BIT, false, NULL, NULL};
    store(run->q, &m1, id1);
    store(run->q, &m2, id2);
    store(run->q, &m2, id3);
    struct fake f;
    fake_init(&f);
    f.rcpt_replies[0] = "250 2.1.5 ok";
    f.rcpt_replies[1] = "450 4.2.1 busy";
    f.rcpt_replies[2] = "550 5.1.1 unknown user";
    f.dot_replies[0] = "250 2.0.0 ok";
    f.dot_replies[1] = "451 4.3.0 try later";
    f.dot_replies[2] = "554 5.6.0 rejected content";
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    expect_rcpt(run->q, id1, 0, QUEUE_RCPT_DONE, 1, "250");
    expect_rcpt(run->q, id1, 1, QUEUE_RCPT_PENDING, 1, "450 4.2.1 busy");
    expect_rcpt(run->q, id1, 2, QUEUE_RCPT_BOUNCED, 1, "550 5.1.1 unknown user");
    expect_rcpt(run->q, id2, 0, QUEUE_RCPT_PENDING, 1, "451 4.3.0");
    assert_false(queued(run->q, id3));   /* 554 after the dot: notified, then removed */
    expect_notices(run->q, 2);
    assert_int_equal(run->result.delivered, 1);
    assert_int_equal(run->result.deferred, 2);
    assert_int_equal(run->result.failed, 2);
    /* A deferred message is not retried in the same session. */
    assert_int_equal(f.mails_seen, 3);
    run_free(run);
}

static void test_all_rcpts_refused_means_rset(void **state)
{
    struct run *run = run_new();
    char id[QUEUE_ID_MAX];
    const struct tmsg m = {three_a, 2, "x\r\n", QUEUE_BODY_7BIT, false, NULL, NULL};
    store(run->q, &m, id);
    struct fake f;
    fake_init(&f);
    f.rcpt_replies[0] = "550 5.1.1 no";
    f.rcpt_replies[1] = "450 4.2.1 later";
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_null(strstr(f.transcript, "DATA"));
    assert_non_null(strstr(f.transcript, "RSET\r\n"));
    expect_rcpt(run->q, id, 0, QUEUE_RCPT_BOUNCED, 1, "550");
    expect_rcpt(run->q, id, 1, QUEUE_RCPT_PENDING, 1, "450");
    expect_notices(run->q, 1);
    run_free(run);
}

static void test_452_sends_the_rest_in_a_second_transaction(void **state)
{
    struct run *run = run_new();
    char id[QUEUE_ID_MAX];
    const struct tmsg m = {three_a, 3, "x\r\n", QUEUE_BODY_7BIT, false, NULL, NULL};
    store(run->q, &m, id);
    struct fake f;
    fake_init(&f);
    f.rcpt_replies[0] = "250 2.1.5 ok";
    f.rcpt_replies[1] = "452 4.5.3 too many recipients";
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_int_equal(f.mails_seen, 2);
    assert_int_equal(f.body_count, 2);
    assert_int_equal(count_of(f.transcript, "RCPT TO:<r1@a.example>"), 1);
    assert_int_equal(count_of(f.transcript, "RCPT TO:<r2@a.example>"), 2);
    assert_int_equal(count_of(f.transcript, "RCPT TO:<r3@a.example>"), 1);
    assert_int_equal(run->result.delivered, 3);
    assert_false(queued(run->q, id));
    run_free(run);
}

static void test_greeting_eof_keeps_everything(void **state)
{
    struct run *run = run_new();
    char ids[3][QUEUE_ID_MAX];
    store_three(run->q, ids);
    struct fake f;
    fake_init(&f);
    f.greeting = NULL;
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_false(run->result.clean);
    assert_non_null(strstr(run->result.reason, "eof"));
    for (int i = 0; i < 3; i++)
        expect_rcpt(run->q, ids[i], 0, QUEUE_RCPT_PENDING, 0, NULL);
    run_free(run);
}

static void test_refusing_greeting_gets_quit(void **state)
{
    struct run *run = run_new();
    char ids[3][QUEUE_ID_MAX];
    store_three(run->q, ids);
    struct fake f;
    fake_init(&f);
    f.greeting = "554 5.3.2 not now";
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_false(run->result.clean);
    assert_non_null(strstr(run->result.reason, "refused"));
    assert_string_equal(f.transcript, "QUIT\r\n");
    expect_rcpt(run->q, ids[0], 0, QUEUE_RCPT_PENDING, 0, NULL);
    run_free(run);
}

static void test_disconnect_mid_data_keeps_pending(void **state)
{
    struct run *run = run_new();
    char id[QUEUE_ID_MAX];
    const struct tmsg m = {bob_a, 1, body1, QUEUE_BODY_7BIT, false, NULL, NULL};
    store(run->q, &m, id);
    struct fake f;
    fake_init(&f);
    f.drop_in_data = true;
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_false(run->result.clean);
    assert_int_equal(run->result.delivered, 0);
    expect_rcpt(run->q, id, 0, QUEUE_RCPT_PENDING, 1, NULL);
    run_free(run);
}

static void test_8bitmime_to_customer_without_it_fails(void **state)
{
    struct run *run = run_new();
    char id[QUEUE_ID_MAX];
    const struct tmsg m = {bob_a, 1, body1, QUEUE_BODY_8BITMIME, false, NULL, NULL};
    store(run->q, &m, id);
    struct fake f;
    fake_init(&f);
    f.ehlo = ehlo_plain;
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_null(strstr(f.transcript, "MAIL"));
    assert_true(run->result.clean);
    assert_int_equal(run->result.failed, 1);
    assert_false(queued(run->q, id));
    expect_notices(run->q, 1);
    run_free(run);
}

static const struct trcpt mixed[] = {
    {"x@a.example", "a.example", NULL, NULL},
    {"y@b.example", "b.example", NULL, NULL},
    {"z@a.example", "a.example", NULL, NULL},
};

static void test_only_atrn_domain_recipients_are_sent(void **state)
{
    struct run *run = run_new();
    char id[QUEUE_ID_MAX];
    const struct tmsg m = {mixed, 3, "x\r\n", QUEUE_BODY_7BIT, false, NULL, NULL};
    store(run->q, &m, id);
    struct fake f;
    fake_init(&f);
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_null(strstr(f.transcript, "b.example"));
    assert_int_equal(count_of(f.transcript, "RCPT TO:"), 2);
    expect_rcpt(run->q, id, 0, QUEUE_RCPT_DONE, 1, NULL);
    expect_rcpt(run->q, id, 1, QUEUE_RCPT_PENDING, 0, NULL);
    expect_rcpt(run->q, id, 2, QUEUE_RCPT_DONE, 1, NULL);
    run_free(run);
}

static void test_two_atrn_domains_one_transaction(void **state)
{
    struct run *run = run_new();
    char id[QUEUE_ID_MAX];
    const struct tmsg m = {mixed, 3, "x\r\n", QUEUE_BODY_7BIT, false, NULL, NULL};
    store(run->q, &m, id);
    struct fake f;
    fake_init(&f);
    static const char *const both[] = {"a.example", "b.example"};
    run_push(run, &f, both, 2, PUSH_PROFILE_COMPAT, false, 0);
    assert_int_equal(f.mails_seen, 1);
    assert_int_equal(count_of(f.transcript, "RCPT TO:"), 3);
    assert_false(queued(run->q, id));
    run_free(run);
}

static int count_id(const char *id, void *arg)
{
    (*(size_t *)arg)++;
    return 0;
}

static char arrival_spool[64];

/* Stores a message from the customer's thread through a second (tool) handle on the spool. */
static void store_during_session(struct fake *f)
{
    if (f->mails_seen != 1)
        return;
    char err[256];
    struct queue *tool = queue_open_fs(arrival_spool, NULL, 0, err, sizeof err);
    assert_non_null(tool);
    const struct tmsg m = {bob_a, 1, "late\r\n", QUEUE_BODY_7BIT, false, NULL, NULL};
    store(tool, &m, NULL);
    queue_close(tool);
}

static void test_mail_arriving_during_the_session_goes_before_quit(void **state)
{
    struct run *run = run_new();
    char id[QUEUE_ID_MAX];
    const struct tmsg m = {bob_a, 1, "early\r\n", QUEUE_BODY_7BIT, false, NULL, NULL};
    store(run->q, &m, id);
    strcpy(arrival_spool, spool);
    struct fake f;
    fake_init(&f);
    f.on_mail = store_during_session;
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_int_equal(f.mails_seen, 2);
    assert_string_equal(f.bodies[0], "early\r\n");
    assert_string_equal(f.bodies[1], "late\r\n");
    assert_int_equal(run->result.delivered, 2);
    size_t left = 0;
    assert_int_equal(queue_list_all(run->q, count_id, &left), 0);
    assert_int_equal(left, 0);
    run_free(run);
}

static void test_timeout_keeps_everything(void **state)
{
    struct run *run = run_new();
    char ids[3][QUEUE_ID_MAX];
    store_three(run->q, ids);
    struct fake f;
    fake_init(&f);
    f.silent_after_greeting = true;
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 1);
    assert_false(run->result.clean);
    assert_non_null(strstr(run->result.reason, "timeout"));
    assert_non_null(strstr(f.transcript, "EHLO"));
    expect_rcpt(run->q, ids[0], 0, QUEUE_RCPT_PENDING, 0, NULL);
    run_free(run);
}

static void test_fast_profile_pipelines_with_bdat(void **state)
{
    struct run *run = run_new();
    char ids[3][QUEUE_ID_MAX];
    store_three(run->q, ids);
    struct fake f;
    fake_init(&f);
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_FAST, false, 0);
    assert_true(run->result.clean);
    assert_int_equal(run->result.delivered, 3);
    assert_int_equal(count_of(f.transcript, " LAST\r\n"), 3);
    assert_null(strstr(f.transcript, "DATA"));
    assert_true(f.pipelined);
    assert_string_equal(f.bodies[0], body1);   /* BDAT: no stuffing */
    assert_string_equal(f.bodies[1], body2);
    for (int i = 0; i < 3; i++)
        assert_false(queued(run->q, ids[i]));
    run_free(run);
}

static void test_nothing_queued_quits_after_ehlo(void **state)
{
    struct run *run = run_new();
    struct fake f;
    fake_init(&f);
    run_push(run, &f, dom_a, 1, PUSH_PROFILE_COMPAT, false, 0);
    assert_true(run->result.clean);
    assert_string_equal(f.transcript, "EHLO provider.example\r\nQUIT\r\n");
    run_free(run);
}

int main(void)
{
    evthread_use_pthreads();   /* before any event_base: queue workers call event_active() */
    log_init("test_push", LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delivers_in_order_with_dsn, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_no_dsn_params_without_dsn, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_helo_fallback_and_line_per_write, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_outcomes_per_rcpt_and_after_dot, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_all_rcpts_refused_means_rset, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_452_sends_the_rest_in_a_second_transaction,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_greeting_eof_keeps_everything, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_refusing_greeting_gets_quit, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_disconnect_mid_data_keeps_pending, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_8bitmime_to_customer_without_it_fails, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_only_atrn_domain_recipients_are_sent, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_two_atrn_domains_one_transaction, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_mail_arriving_during_the_session_goes_before_quit,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_timeout_keeps_everything, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_fast_profile_pipelines_with_bdat, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_nothing_queued_quits_after_ehlo, setup_spool,
                                        teardown_spool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
