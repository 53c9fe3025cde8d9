/* SPDX-License-Identifier: ISC */
/* The SMTP/LMTP client engine (engines/smtp_client.c) against a scripted server over a
 * bufferevent pair: incremental transactions with a verdict per RCPT (mixed 250/450/550),
 * LMTP's replies per recipient after the data (RFC 2033 4.2), PIPELINING or one command at a
 * time (RFC 2920), BDAT with the whole body as one chunk (RFC 3030), the batch API the push
 * uses, dot-stuffing (RFC 5321 4.5.2) at every split position of a body, and STARTTLS
 * (RFC 3207) offered or not, refused, required, or with bytes injected behind its 220. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/smtp_client.h"
#include "lib/log.h"
#include "platform/tls.h"

#include <unistd.h>

enum { MAX_RCPTS = 8 };

/* ---- the scripted server ---- */

struct server {
    struct bufferevent *bev;
    const char *caps;            /* EHLO keywords, "\r\n"-separated lines "250-X" */
    bool lmtp;
    /* what it saw */
    char commands[4096];         /* every command line, '\n'-joined */
    size_t max_batch;            /* most command lines found in one read */
    struct evbuffer *data;       /* the raw data octets (stuffed) of the last message */
    char accepted[MAX_RCPTS][64];
    size_t accepted_count;
    /* state */
    bool in_data;
    uint64_t bdat_left;
    bool bdat_last;
    /* STARTTLS */
    SSL_CTX *tls_ctx;            /* the server's, or NULL: STARTTLS not offered */
    const char *starttls_reply;  /* "220 2.0.0 go" unless set */
    bool tls;
};

/* A recipient's fate by its local part: ok 250, tmp 450, bad 550; after the data (LMTP) lfail
 * gets 452, the others 250. */
static int rcpt_code(const char *line)
{
    if (strstr(line, "<tmp") != NULL)
        return 450;
    if (strstr(line, "<bad") != NULL)
        return 550;
    return 250;
}

static void say(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
    va_end(ap);
}

static void end_of_message(struct server *s)
{
    if (!s->lmtp) {
        say(s, "250 2.0.0 queued\r\n");
    } else {
        for (size_t i = 0; i < s->accepted_count; i++)
            say(s, strstr(s->accepted[i], "lfail") ? "452 4.2.2 %s full\r\n"
                                                   : "250 2.0.0 %s delivered\r\n",
                s->accepted[i]);
    }
    s->accepted_count = 0;
}

static void server_read(struct bufferevent *bev, void *arg);

/* RFC 3207: 220 (then the handshake, server side), or the scripted refusal or injection. */
static void starttls(struct server *s)
{
    const char *reply = s->starttls_reply != NULL ? s->starttls_reply : "220 2.0.0 go\r\n";
    say(s, "%s", reply);
    if (strncmp(reply, "220", 3) != 0)
        return;
    struct event_base *base = bufferevent_get_base(s->bev);
    struct bufferevent *tls = tls_start_server(base, s->bev, s->tls_ctx);
    assert_non_null(tls);
    s->bev = tls;
    s->tls = true;
    bufferevent_setcb(tls, server_read, NULL, NULL, s);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void command(struct server *s, const char *line)
{
    size_t used = strlen(s->commands);
    snprintf(s->commands + used, sizeof s->commands - used, "%s%s", used ? "\n" : "", line);
    if (strncmp(line, "EHLO", 4) == 0 || strncmp(line, "LHLO", 4) == 0) {
        say(s, "250-test.example\r\n%s%s250 ENHANCEDSTATUSCODES\r\n", s->caps,
            s->tls_ctx != NULL && !s->tls ? "250-STARTTLS\r\n" : "");
    } else if (strcmp(line, "STARTTLS") == 0) {
        starttls(s);
    } else if (strncmp(line, "MAIL", 4) == 0) {
        s->accepted_count = 0;
        say(s, strstr(line, "<refused") ? "553 5.7.1 no\r\n" : "250 2.1.0 ok\r\n");
    } else if (strncmp(line, "RCPT", 4) == 0) {
        int code = rcpt_code(line);
        if (code == 250 && s->accepted_count < MAX_RCPTS)
            snprintf(s->accepted[s->accepted_count++], 64, "%.60s", line + 9);
        say(s, "%d %s\r\n", code, code == 250 ? "2.1.5 ok" : "5.1.1 no");
    } else if (strcmp(line, "DATA") == 0) {
        s->in_data = true;
        evbuffer_drain(s->data, evbuffer_get_length(s->data));
        say(s, "354 go\r\n");
    } else if (strncmp(line, "BDAT ", 5) == 0) {
        char *end;
        s->bdat_left = strtoull(line + 5, &end, 10);
        s->bdat_last = strcmp(end, " LAST") == 0;
        if (s->bdat_left == 0 && s->bdat_last)
            end_of_message(s);
    } else if (strcmp(line, "RSET") == 0) {
        say(s, "250 2.0.0 reset\r\n");
    } else if (strcmp(line, "QUIT") == 0) {
        say(s, "221 2.0.0 bye\r\n");
    } else {
        say(s, "500 5.5.1 what\r\n");
    }
}

/* Message data up to CRLF . CRLF (kept stuffed, with the terminator). */
static bool take_data(struct server *s, struct evbuffer *in)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n.\r\n", 5, NULL);
    if (evbuffer_get_length(s->data) == 0 && evbuffer_get_length(in) >= 3) {
        char first[3];
        evbuffer_copyout(in, first, 3);
        if (memcmp(first, ".\r\n", 3) == 0)
            end.pos = -2;   /* an empty message */
    }
    if (end.pos == -1)
        return false;
    size_t n = end.pos == -2 ? 3 : (size_t)end.pos + 5;
    evbuffer_remove_buffer(in, s->data, n);
    s->in_data = false;
    end_of_message(s);
    return true;
}

static bool take_bdat(struct server *s, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in) < s->bdat_left ? evbuffer_get_length(in)
                                                      : (size_t)s->bdat_left;
    evbuffer_remove_buffer(in, s->data, n);
    s->bdat_left -= n;
    if (s->bdat_left != 0)
        return false;
    if (s->bdat_last)
        end_of_message(s);
    else
        say(s, "250 2.0.0 chunk\r\n");
    s->bdat_last = false;
    return true;
}

static void server_read(struct bufferevent *bev, void *arg)
{
    struct server *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t batch = 0;
    for (;;) {
        if (s->in_data && !take_data(s, in))
            break;
        if (s->bdat_left != 0 && !take_bdat(s, in))
            break;
        if (s->in_data || s->bdat_left != 0)
            continue;
        char *line = evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF_STRICT);
        if (line == NULL)
            break;
        batch++;
        command(s, line);
        free(line);
    }
    if (batch > s->max_batch)
        s->max_batch = batch;
}

/* ---- the client under test ---- */

struct run {
    struct event_base *base;
    struct server server;
    struct smtp_client *client;
    bool ready;
    int closed_how;
    unsigned txn_done;
    /* incremental: the verdicts in the order they came */
    int verdicts[MAX_RCPTS];
    size_t verdict_count;
    const char *more[MAX_RCPTS];   /* recipients to add from rcpt_done, one by one */
    size_t more_count, more_next;
    struct smtp_client_txn *txn;
    struct smtp_client_body body;
    const char *body_text;
    size_t body_pos, read_piece;
};

static void on_ready(void *arg, const struct smtp_client_ext *ext,
                     const struct smtp_client_reply *greeting)
{
    struct run *r = arg;
    r->ready = true;
}

static void on_txn_done(void *arg, struct smtp_client_txn *txn)
{
    struct run *r = arg;
    r->txn_done++;
    smtp_client_quit(r->client);
}

static void on_closed(void *arg, enum smtp_client_end how, const char *reason)
{
    struct run *r = arg;
    r->closed_how = (int)how;
    event_base_loopbreak(r->base);
}

static const struct smtp_client_callbacks callbacks = {on_ready, on_txn_done, on_closed};

/* The body in pieces of at most read_piece octets: every boundary the engine must carry. */
static ssize_t read_body(void *arg, void *buf, size_t len)
{
    struct run *r = arg;
    size_t left = strlen(r->body_text) - r->body_pos;
    size_t n = left < len ? left : len;
    if (n > r->read_piece)
        n = r->read_piece;
    memcpy(buf, r->body_text + r->body_pos, n);
    r->body_pos += n;
    return (ssize_t)n;
}

static void start(struct run *r, const char *caps, unsigned flags)
{
    struct bufferevent *pair[2];
    memset(r, 0, sizeof *r);
    r->closed_how = -1;
    r->read_piece = 1 << 20;
    r->base = event_base_new();
    assert_non_null(r->base);
    assert_int_equal(bufferevent_pair_new(r->base, BEV_OPT_CLOSE_ON_FREE |
                                                       BEV_OPT_DEFER_CALLBACKS, pair), 0);
    r->server.bev = pair[1];
    r->server.caps = caps;
    r->server.lmtp = flags & SMTP_CLIENT_LMTP;
    r->server.data = evbuffer_new();
    bufferevent_setcb(pair[1], server_read, NULL, NULL, &r->server);
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    say(&r->server, "220 test.example ESMTP\r\n");
    const struct smtp_client_config cfg = {
        .helo_name = "client.example", .flags = flags,
        .timeouts = {5, 5, 5, 5, 5},
    };
    r->client = smtp_client_new(r->base, pair[0], &cfg, &callbacks, r);
    assert_non_null(r->client);
}

static void run_to(struct run *r, enum smtp_client_end how)
{
    event_base_dispatch(r->base);
    assert_int_equal(r->closed_how, how);
}

static void run_to_end(struct run *r)
{
    run_to(r, SMTP_CLIENT_END_QUIT);
}

static void finish(struct run *r)
{
    smtp_client_free(r->client);
    bufferevent_free(r->server.bev);
    evbuffer_free(r->server.data);
    event_base_loop(r->base, EVLOOP_NONBLOCK);   /* libevent frees bufferevents from the loop */
    event_base_free(r->base);
}

static void set_body(struct run *r, const char *text, size_t piece)
{
    r->body_text = text;
    r->body_pos = 0;
    r->read_piece = piece;
    r->body = (struct smtp_client_body){.fd = -1, .length = strlen(text), .read = read_body,
                                        .read_arg = r};
}

static char *server_data(struct run *r)
{
    size_t n = evbuffer_get_length(r->server.data);
    char *out = malloc(n + 1);
    evbuffer_remove(r->server.data, out, n);
    out[n] = '\0';
    return out;
}

/* ---- incremental transactions ---- */

struct itxn {
    struct smtp_client_txn txn;
    struct smtp_client_rcpt rcpts[MAX_RCPTS];
    struct run *run;
};

/* Each verdict as it comes; the next recipient is added from here, the data after the last. */
static void on_rcpt_done(void *user, struct smtp_client_txn *txn, size_t index)
{
    struct itxn *x = user;
    struct run *r = x->run;
    assert_int_equal(index, r->verdict_count);
    r->verdicts[r->verdict_count++] = txn->rcpts[index].reply.code;
    if (r->more_next < r->more_count) {
        txn->rcpts[txn->rcpt_count++].address = r->more[r->more_next++];
        assert_int_equal(smtp_client_add_rcpt(r->client, txn), 0);
    } else {
        smtp_client_data(r->client, txn, &r->body);
    }
}

static void open_incremental(struct run *r, struct itxn *x, const char *sender,
                             const char *const *rcpts, size_t count)
{
    memset(x, 0, sizeof *x);
    x->run = r;
    x->txn.mail_from = sender;
    x->txn.rcpts = x->rcpts;
    x->txn.user = x;
    x->txn.rcpt_done = on_rcpt_done;
    x->rcpts[0].address = rcpts[0];
    x->txn.rcpt_count = 1;
    for (size_t i = 1; i < count; i++)
        r->more[r->more_count++] = rcpts[i];
    assert_int_equal(smtp_client_open(r->client, &x->txn), 0);
}

static void check_incremental(const char *caps, unsigned flags)
{
    static const char *const rcpts[] = {"ok1@x.example", "tmp@x.example", "bad@x.example",
                                        "ok2@x.example"};
    struct run r;
    struct itxn x;
    start(&r, caps, flags);
    set_body(&r, "Subject: t\r\n\r\nhello\r\n", 1 << 20);
    open_incremental(&r, &x, "s@y.example", rcpts, 4);
    run_to_end(&r);
    const int want[] = {250, 450, 550, 250};
    assert_int_equal(r.verdict_count, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(r.verdicts[i], want[i]);
        assert_int_equal(x.rcpts[i].reply.code, want[i]);
        assert_int_equal(x.rcpts[i].data_reply.code, want[i] == 250 ? 250 : 0);
    }
    assert_int_equal(x.txn.accepted, 2);
    assert_int_equal(r.txn_done, 1);
    char *data = server_data(&r);
    assert_string_equal(data, strstr(caps, "CHUNKING") ? "Subject: t\r\n\r\nhello\r\n"
                                                       : "Subject: t\r\n\r\nhello\r\n.\r\n");
    free(data);
    finish(&r);
}

static void test_incremental_verdicts_per_rcpt(void **state)
{
    check_incremental("", 0);
    check_incremental("250-PIPELINING\r\n", SMTP_CLIENT_USE_PIPELINING);
    check_incremental("250-PIPELINING\r\n250-CHUNKING\r\n",
                      SMTP_CLIENT_USE_PIPELINING | SMTP_CLIENT_USE_CHUNKING);
}

/* A refused MAIL is the verdict on every recipient: none is sent without PIPELINING. */
static void test_incremental_mail_refused(void **state)
{
    static const char *const rcpts[] = {"ok1@x.example"};
    struct run r;
    struct itxn x;
    start(&r, "", 0);
    set_body(&r, "x\r\n", 1 << 20);
    open_incremental(&r, &x, "refused@y.example", rcpts, 1);
    run_to_end(&r);
    assert_int_equal(x.txn.mail_reply.code, 553);
    assert_int_equal(r.verdict_count, 1);
    assert_int_equal(r.verdicts[0], 0);
    assert_null(strstr(r.server.commands, "RCPT"));
    assert_null(strstr(r.server.commands, "DATA"));
    finish(&r);
}

/* Given up after its verdict: RSET, nothing delivered, the session goes on. */
static void cancel_on_verdict(void *user, struct smtp_client_txn *txn, size_t index)
{
    struct itxn *x = user;
    x->run->verdicts[x->run->verdict_count++] = txn->rcpts[index].reply.code;
    smtp_client_cancel(x->run->client, txn);
}

static void test_incremental_cancel_sends_rset(void **state)
{
    for (int pipelined = 0; pipelined < 2; pipelined++) {
        static const char *const rcpts[] = {"ok1@x.example"};
        struct run r;
        struct itxn x;
        start(&r, pipelined ? "250-PIPELINING\r\n" : "",
              pipelined ? SMTP_CLIENT_USE_PIPELINING : 0);
        open_incremental(&r, &x, "s@y.example", rcpts, 1);
        x.txn.rcpt_done = cancel_on_verdict;
        run_to_end(&r);
        assert_string_equal(r.server.commands, "EHLO client.example\nMAIL FROM:<s@y.example>\n"
                                               "RCPT TO:<ok1@x.example>\nRSET\nQUIT");
        assert_int_equal(r.verdicts[0], 250);
        assert_int_equal(x.rcpts[0].data_reply.code, 0);
        assert_int_equal(evbuffer_get_length(r.server.data), 0);
        finish(&r);
    }
}

/* The recipient list closed with the last RCPT: with PIPELINING the DATA goes along and its
 * 354 waits for the body, given only after the verdict (odmr-client's relay). */
static void give_body(evutil_socket_t fd, short what, void *arg)
{
    struct itxn *x = arg;
    assert_int_equal(x->txn.data_reply.code, 354);   /* the 354 came first */
    smtp_client_data(x->run->client, &x->txn, &x->run->body);
}

static void body_on_verdict(void *user, struct smtp_client_txn *txn, size_t index)
{
    struct itxn *x = user;
    struct timeval later = {0, 50000};
    x->run->verdicts[x->run->verdict_count++] = txn->rcpts[index].reply.code;
    event_base_once(x->run->base, -1, EV_TIMEOUT, give_body, x, &later);
}

static void test_incremental_data_before_body(void **state)
{
    static const char *const rcpts[] = {"ok1@x.example"};
    struct run r;
    struct itxn x;
    start(&r, "250-PIPELINING\r\n", SMTP_CLIENT_USE_PIPELINING);
    set_body(&r, ".x\r\n", 1 << 20);
    open_incremental(&r, &x, "s@y.example", rcpts, 1);
    x.txn.rcpt_done = body_on_verdict;
    smtp_client_rcpts_done(r.client, &x.txn);
    run_to_end(&r);
    assert_int_equal(r.server.max_batch, 3);   /* MAIL, RCPT, DATA in one write */
    assert_string_equal(r.server.commands, "EHLO client.example\nMAIL FROM:<s@y.example>\n"
                                           "RCPT TO:<ok1@x.example>\nDATA\nQUIT");
    char *data = server_data(&r);
    assert_string_equal(data, "..x\r\n.\r\n");
    free(data);
    assert_int_equal(x.rcpts[0].data_reply.code, 250);
    finish(&r);
}

/* ---- LMTP: one reply per accepted recipient after the data ---- */

static void test_lmtp_replies_per_recipient(void **state)
{
    static const char *const rcpts[] = {"ok1@x.example", "bad@x.example", "lfail@x.example",
                                        "ok2@x.example"};
    struct run r;
    struct itxn x;
    start(&r, "250-PIPELINING\r\n", SMTP_CLIENT_LMTP | SMTP_CLIENT_USE_PIPELINING);
    set_body(&r, "a\r\n", 1 << 20);
    open_incremental(&r, &x, "s@y.example", rcpts, 4);
    run_to_end(&r);
    assert_non_null(strstr(r.server.commands, "LHLO client.example"));
    const int rcpt_want[] = {250, 550, 250, 250}, data_want[] = {250, 0, 452, 250};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(x.rcpts[i].reply.code, rcpt_want[i]);
        assert_int_equal(x.rcpts[i].data_reply.code, data_want[i]);
    }
    assert_non_null(strstr(x.rcpts[2].data_reply.text, "lfail@x.example"));
    assert_non_null(strstr(x.rcpts[3].data_reply.text, "ok2@x.example"));
    finish(&r);
}

/* ---- PIPELINING or not: the batch API (the push) ---- */

static void batch(struct run *r, struct smtp_client_txn *txn, struct smtp_client_rcpt *rc,
                  size_t count)
{
    static const char *const addrs[] = {"ok1@x.example", "tmp@x.example", "bad@x.example",
                                        "ok2@x.example"};
    memset(txn, 0, sizeof *txn);
    memset(rc, 0, count * sizeof *rc);
    for (size_t i = 0; i < count; i++)
        rc[i].address = addrs[i % 4];
    txn->mail_from = "s@y.example";
    txn->rcpts = rc;
    txn->rcpt_count = count;
    txn->body = r->body;
    assert_int_equal(smtp_client_send(r->client, txn), 0);
}

static void test_pipelining_or_one_at_a_time(void **state)
{
    for (int pipelined = 0; pipelined < 2; pipelined++) {
        struct run r;
        struct smtp_client_txn txn;
        struct smtp_client_rcpt rc[4];
        start(&r, pipelined ? "250-PIPELINING\r\n" : "",
              pipelined ? SMTP_CLIENT_USE_PIPELINING : 0);
        set_body(&r, "b\r\n", 1 << 20);
        batch(&r, &txn, rc, 4);
        run_to_end(&r);
        /* MAIL, 4 RCPT and DATA in one write with PIPELINING; else one at a time. */
        assert_int_equal(r.server.max_batch, pipelined ? 6 : 1);
        assert_string_equal(r.server.commands,
                            "EHLO client.example\nMAIL FROM:<s@y.example>\n"
                            "RCPT TO:<ok1@x.example>\nRCPT TO:<tmp@x.example>\n"
                            "RCPT TO:<bad@x.example>\nRCPT TO:<ok2@x.example>\nDATA\nQUIT");
        assert_int_equal(txn.accepted, 2);
        assert_int_equal(rc[3].data_reply.code, 250);
        finish(&r);
    }
}

/* ---- BDAT: the whole body as one chunk, its exact octets ---- */

static void test_bdat_chunk_sizes(void **state)
{
    static const size_t sizes[] = {1, 2, 511, 65536, 300000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char *body = malloc(sizes[k] + 1);
        for (size_t i = 0; i < sizes[k]; i++)
            body[i] = i % 50 == 48 ? '\r' : i % 50 == 49 ? '\n' : i % 50 == 0 ? '.' : 'a';
        body[sizes[k]] = '\0';
        struct run r;
        struct smtp_client_txn txn;
        struct smtp_client_rcpt rc[1];
        start(&r, "250-PIPELINING\r\n250-CHUNKING\r\n",
              SMTP_CLIENT_USE_PIPELINING | SMTP_CLIENT_USE_CHUNKING);
        set_body(&r, body, 7000);
        batch(&r, &txn, rc, 1);
        run_to_end(&r);
        char want[64];
        snprintf(want, sizeof want, "BDAT %zu LAST", sizes[k]);
        assert_non_null(strstr(r.server.commands, want));
        assert_null(strstr(r.server.commands, "DATA"));
        char *data = server_data(&r);
        assert_string_equal(data, body);   /* no stuffing, no dot */
        assert_int_equal(rc[0].data_reply.code, 250);
        free(data);
        free(body);
        finish(&r);
    }
}

/* ---- dot-stuffing ---- */

/* The reference: a '.' at the start of a line (after LF, or first) gets another. */
static void reference_stuff(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '.' && (i == 0 || in[i - 1] == '\n'))
            out[o++] = '.';
        out[o++] = in[i];
    }
    if (len == 0 || in[len - 1] == '\n') {
        memcpy(out + o, ".\r\n", 4);
    } else {
        memcpy(out + o, "\r\n.\r\n", 6);
    }
}

static void stuff_in_pieces(const char *body, size_t len, size_t a, size_t b, char *out)
{
    struct evbuffer *buf = evbuffer_new();
    struct smtp_dot_stuffer s;
    smtp_dot_stuff_begin(&s);
    smtp_dot_stuff(&s, buf, body, a);
    smtp_dot_stuff(&s, buf, body + a, b - a);
    smtp_dot_stuff(&s, buf, body + b, len - b);
    smtp_dot_stuff_end(&s, buf);
    size_t n = evbuffer_get_length(buf);
    evbuffer_remove(buf, out, n);
    out[n] = '\0';
    evbuffer_free(buf);
}

/* Every pair of split positions of bodies with leading dots, dot-only lines and CRLFs split
 * between CR and LF. */
static void test_dot_stuffing_every_split(void **state)
{
    static const char *const bodies[] = {
        ".a\r\n..b\r\n.\r\nc.d\r\n.\r\n",
        "x\r\n.\r\n.\r\n..\r\n.",
        ".",
        "",
        "no dots\r\nat all",
        "\r\n.\r\n\r\n..x",
    };
    for (size_t k = 0; k < sizeof bodies / sizeof bodies[0]; k++) {
        const char *body = bodies[k];
        size_t len = strlen(body);
        char want[128], got[128];
        reference_stuff(body, len, want);
        for (size_t a = 0; a <= len; a++)
            for (size_t b = a; b <= len; b++) {
                stuff_in_pieces(body, len, a, b, got);
                if (strcmp(got, want) != 0)
                    fail_msg("body %zu split at %zu and %zu", k, a, b);
            }
    }
}

/* The same through the engine's DATA, the body read in pieces of every size. */
static void test_dot_stuffing_through_data(void **state)
{
    static const char body[] = ".a\r\n..b\r\nc\r\n.\r\n.d";
    char want[128];
    reference_stuff(body, strlen(body), want);
    for (size_t piece = 1; piece <= sizeof body; piece++) {
        struct run r;
        struct smtp_client_txn txn;
        struct smtp_client_rcpt rc[1];
        start(&r, "", 0);
        set_body(&r, body, piece);
        batch(&r, &txn, rc, 1);
        run_to_end(&r);
        char *data = server_data(&r);
        assert_string_equal(data, want);
        free(data);
        finish(&r);
    }
}

/* ---- STARTTLS ---- */

static SSL_CTX *server_ctx;
static SSL_CTX *client_ctx;

static int tls_setup(void **state)
{
    char dir[] = "/tmp/odmr-smtp-client-XXXXXX", cert[64], key[64], err[200];
    assert_non_null(mkdtemp(dir));
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    assert_int_equal(tls_ensure_self_signed(cert, key, "test.example", err, sizeof err), 1);
    server_ctx = tls_server_context(cert, key, NULL, err, sizeof err);
    client_ctx = SSL_CTX_new(TLS_client_method());
    unlink(cert);
    unlink(key);
    rmdir(dir);
    return server_ctx != NULL && client_ctx != NULL ? 0 : -1;
}

static int tls_teardown(void **state)
{
    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx);
    return 0;
}

struct tls_case {
    bool offered;
    const char *reply;       /* the server's reply to STARTTLS (NULL: 220) */
    unsigned flags;
    int end;                 /* how the session ends */
    const char *commands;    /* what the server saw */
    bool tls;
};

static void check_tls_case(const struct tls_case *k)
{
    struct run r;
    struct smtp_client_txn txn;
    struct smtp_client_rcpt rc[1];
    struct bufferevent *pair[2];
    memset(&r, 0, sizeof r);
    r.closed_how = -1;
    r.base = event_base_new();
    assert_int_equal(bufferevent_pair_new(r.base, BEV_OPT_CLOSE_ON_FREE |
                                                      BEV_OPT_DEFER_CALLBACKS, pair), 0);
    r.server = (struct server){.bev = pair[1], .caps = "250-PIPELINING\r\n",
                               .data = evbuffer_new(),
                               .tls_ctx = k->offered ? server_ctx : NULL,
                               .starttls_reply = k->reply};
    bufferevent_setcb(pair[1], server_read, NULL, NULL, &r.server);
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    say(&r.server, "220 test.example ESMTP\r\n");
    const struct smtp_client_config cfg = {
        .helo_name = "client.example", .flags = k->flags | SMTP_CLIENT_USE_PIPELINING,
        .timeouts = {5, 5, 5, 5, 5}, .tls_ctx = client_ctx, .tls_name = "test.example",
    };
    r.client = smtp_client_new(r.base, pair[0], &cfg, &callbacks, &r);
    set_body(&r, "secret\r\n", 1 << 20);
    batch(&r, &txn, rc, 1);
    run_to(&r, k->end);
    assert_string_equal(r.server.commands, k->commands);
    assert_int_equal(smtp_client_tls_active(r.client), k->tls);
    assert_int_equal(r.txn_done, 1);
    assert_int_equal(rc[0].data_reply.code, k->end == SMTP_CLIENT_END_QUIT ? 250 : 0);
    finish(&r);
}

#define SESSION "MAIL FROM:<s@y.example>\nRCPT TO:<ok1@x.example>\nDATA\nQUIT"

static void test_starttls(void **state)
{
    static const struct tls_case cases[] = {
        /* offered and wanted: the whole transaction under TLS, EHLO again after it */
        {true, NULL, SMTP_CLIENT_STARTTLS, SMTP_CLIENT_END_QUIT,
         "EHLO client.example\nSTARTTLS\nEHLO client.example\n" SESSION, true},
        {true, NULL, SMTP_CLIENT_STARTTLS_REQUIRED, SMTP_CLIENT_END_QUIT,
         "EHLO client.example\nSTARTTLS\nEHLO client.example\n" SESSION, true},
        /* not offered: opportunistic goes on in clear, required never sends MAIL */
        {false, NULL, SMTP_CLIENT_STARTTLS, SMTP_CLIENT_END_QUIT,
         "EHLO client.example\n" SESSION, false},
        {false, NULL, SMTP_CLIENT_STARTTLS_REQUIRED, SMTP_CLIENT_END_REFUSED,
         "EHLO client.example", false},
        /* offered, not asked for */
        {true, NULL, 0, SMTP_CLIENT_END_QUIT, "EHLO client.example\n" SESSION, false},
        /* refused: the same two answers */
        {true, "454 4.7.0 not now\r\n", SMTP_CLIENT_STARTTLS, SMTP_CLIENT_END_QUIT,
         "EHLO client.example\nSTARTTLS\n" SESSION, false},
        {true, "454 4.7.0 not now\r\n", SMTP_CLIENT_STARTTLS_REQUIRED,
         SMTP_CLIENT_END_REFUSED, "EHLO client.example\nSTARTTLS", false},
        /* RFC 3207 5: a reply injected behind the 220 ends the session, nothing more sent */
        {true, "220 2.0.0 go\r\n250 2.0.0 injected\r\n", SMTP_CLIENT_STARTTLS,
         SMTP_CLIENT_END_PROTOCOL, "EHLO client.example\nSTARTTLS", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_tls_case(&cases[i]);
}

int main(void)
{
    log_init("test", LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incremental_verdicts_per_rcpt),
        cmocka_unit_test(test_incremental_mail_refused),
        cmocka_unit_test(test_incremental_cancel_sends_rset),
        cmocka_unit_test(test_incremental_data_before_body),
        cmocka_unit_test(test_lmtp_replies_per_recipient),
        cmocka_unit_test(test_pipelining_or_one_at_a_time),
        cmocka_unit_test(test_bdat_chunk_sizes),
        cmocka_unit_test(test_dot_stuffing_every_split),
        cmocka_unit_test(test_dot_stuffing_through_data),
        cmocka_unit_test(test_starttls),
    };
    return cmocka_run_group_tests(tests, tls_setup, tls_teardown);
}
