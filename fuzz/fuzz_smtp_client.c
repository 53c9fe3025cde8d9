/* SPDX-License-Identifier: ISC */
/* libFuzzer target: the SMTP/LMTP client engine (engines/smtp_client.c, the push toward the
 * customer's MTA) against a fuzzed server. The input is the server's side of a whole session
 * (greeting, EHLO reply and its capabilities, MAIL/RCPT/DATA/BDAT/QUIT replies), fed over a
 * bufferevent pair to the real engine, line by line or in pieces, the loop run to idle between
 * pieces; the engine's transactions read their bodies from a small fake message source.
 *   byte 0: engine flags (LMTP, PIPELINING, CHUNKING, LINE_PER_WRITE, FAST_ON_REQUEST), how the
 *           session ends (server EOF or smtp_client_abort), QUIT requested, line or piece feed
 *   byte 1: transactions (0-3), recipients each (1-4), queued before or after ready(), one
 *           transaction sent again from its txn_done (as the push does after a 452),
 *           incremental transactions (smtp_client_open, each further recipient added from the
 *           verdict of the one before, the body given after the last one's), the recipient
 *           list closed with the last recipient (DATA may go before the body)
 *   byte 2: body (short with dot lines, empty, no final CRLF, 200 KiB, read error, early end,
 *           read from a file descriptor), piece size
 * Checks: no crash, leak or livelock; closed() exactly once and last; txn_done exactly once per
 * queued transaction, before closed(); every recipient's outcome coherent when reported
 * (replies in 200..599, never an answer to a RCPT not sent, a data reply only for an accepted
 * recipient, accepted = the 2xx RCPT replies, a 2xx after the data only once the whole body
 * was read and sent); incremental: rcpt_done() exactly once per recipient, in order, before
 * txn_done(), with the reply txn_done() then shows; the engine's reply texts bounded. */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engines/smtp_client.h"
#include "fuzz_loop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { TXN_MAX = 3, RCPT_MAX = 4, BIG_BODY = 200 << 10 };

enum body_kind { BODY_SHORT, BODY_EMPTY, BODY_NO_CRLF, BODY_BIG, BODY_ERROR, BODY_EARLY_END,
                 BODY_FD, BODY_KINDS };

static const char short_body[] = "Subject: fuzz\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n";
static const char no_crlf_body[] = "Subject: fuzz\r\n\r\nno line end";

struct source {
    enum body_kind kind;
    uint64_t pos, length;
};

struct run;

struct ftxn {
    struct smtp_client_txn txn;
    struct smtp_client_rcpt rcpts[RCPT_MAX];
    struct source src;
    unsigned done_calls, sends;
    struct run *run;
    size_t full_count, reported;   /* incremental: recipients in all, verdicts so far */
    int verdicts[RCPT_MAX];
    bool open;                     /* incremental, the body not given yet */
};

struct run {
    struct fuzz_loop loop;
    struct smtp_client *client;
    struct bufferevent *server;   /* the fuzzed server's end */
    struct ftxn txns[TXN_MAX];
    unsigned txn_count, rcpt_count, closed_calls, ready_calls;
    bool queue_in_ready, resend, quit, incremental, early_close;
    uint64_t received;            /* octets the engine wrote */
};

static ssize_t source_read(void *arg, void *buf, size_t len)
{
    struct source *s = arg;
    if (s->kind == BODY_ERROR)
        return -1;
    /* Early end: half the promised length, then 0 (a spool file cut short). */
    uint64_t left = (s->kind == BODY_EARLY_END ? s->length / 2 : s->length) - s->pos;
    size_t n = left < len ? (size_t)left : len;
    char *out = buf;
    for (size_t i = 0; i < n; i++) {
        uint64_t at = s->pos + i;
        if (s->kind == BODY_NO_CRLF)
            out[i] = no_crlf_body[at];
        else if (s->kind == BODY_BIG)
            out[i] = at % 80 == 78 ? '\r' : at % 80 == 79 ? '\n' : at % 80 == 0 ? '.' : 'x';
        else
            out[i] = short_body[at % (sizeof short_body - 1)];
    }
    s->pos += n;
    return (ssize_t)n;
}

/* A file descriptor body (the push reads spooled messages with pread()): made once. */
static int body_fd(void)
{
    static int fd = -1;
    if (fd < 0) {
        fd = memfd_create("fuzz-body", 0);
        if (fd < 0 || write(fd, short_body, sizeof short_body - 1) != sizeof short_body - 1)
            __builtin_trap();
    }
    return fd;
}

static void body_setup(struct ftxn *t, enum body_kind kind)
{
    static const uint64_t lengths[BODY_KINDS] = {
        [BODY_SHORT] = sizeof short_body - 1, [BODY_EMPTY] = 0,
        [BODY_NO_CRLF] = sizeof no_crlf_body - 1, [BODY_BIG] = BIG_BODY,
        [BODY_ERROR] = sizeof short_body - 1, [BODY_EARLY_END] = sizeof short_body - 1,
        [BODY_FD] = sizeof short_body - 1};
    t->src = (struct source){kind, 0, lengths[kind]};
    t->txn.body = (struct smtp_client_body){-1, 0, lengths[kind], source_read, &t->src};
    if (kind == BODY_FD)
        t->txn.body.fd = body_fd();
}

static void txn_setup(struct ftxn *t, unsigned index, unsigned rcpts, enum body_kind kind)
{
    static const char *const addresses[RCPT_MAX] = {"a@example.org", "b@example.org",
                                                    "c@example.net", "d@example.com"};
    memset(t, 0, sizeof *t);
    t->txn.mail_from = index == 1 ? "" : "sender@example.com";
    t->txn.mail_params = index == 2 ? " SIZE=100 BODY=8BITMIME" : NULL;
    for (unsigned i = 0; i < rcpts; i++) {
        t->rcpts[i].address = addresses[i];
        t->rcpts[i].params = i == 1 ? " NOTIFY=NEVER" : NULL;
    }
    t->txn.rcpts = t->rcpts;
    t->txn.rcpt_count = rcpts;
    t->txn.user = t;
    t->full_count = rcpts;
    body_setup(t, kind);
}

static void check_reply(const struct smtp_client_reply *r)
{
    FUZZ_CHECK(r->code == 0 || (r->code >= 200 && r->code <= 599));
    FUZZ_CHECK(strnlen(r->text, sizeof r->text) < sizeof r->text);
    FUZZ_CHECK(r->code != 0 || r->text[0] == '\0');
}

/* Incremental: the next recipient joins on this one's verdict, the body after the last. */
static void on_rcpt_done(void *user, struct smtp_client_txn *txn, size_t index)
{
    struct ftxn *t = user;
    struct run *run = t->run;
    FUZZ_CHECK(index == t->reported && index < txn->rcpt_count && t->done_calls < t->sends);
    check_reply(&txn->rcpts[index].reply);
    t->verdicts[t->reported++] = txn->rcpts[index].reply.code;
    if (!t->open)
        return;
    if (txn->rcpt_count < t->full_count) {
        txn->rcpt_count++;
        if (smtp_client_add_rcpt(run->client, txn) == 0 && txn->rcpt_count == t->full_count &&
            run->early_close)
            smtp_client_rcpts_done(run->client, txn);
    } else if (index + 1 == t->full_count) {
        t->open = false;
        smtp_client_data(run->client, txn, &txn->body);
    }
}

/* One recipient as reported to the caller (push.c's judge() reads exactly these fields). */
static void check_rcpt(const struct ftxn *t, size_t i, size_t *accepted)
{
    const struct smtp_client_rcpt *r = &t->txn.rcpts[i];
    check_reply(&r->reply);
    check_reply(&r->data_reply);
    FUZZ_CHECK(i < t->txn.rcpts_written || r->reply.code == 0);
    if (r->reply.code >= 200 && r->reply.code < 300)
        ++*accepted;
    else
        FUZZ_CHECK(r->data_reply.code == 0);
    /* Delivered (2xx after the data): the whole body was read and its end sent. */
    if (r->data_reply.code >= 200 && r->data_reply.code < 300)
        FUZZ_CHECK(t->txn.data_sent && (t->src.kind == BODY_FD || t->src.pos == t->src.length));
}

static void on_txn_done(void *arg, struct smtp_client_txn *txn)
{
    struct run *run = arg;
    struct ftxn *t = txn->user;
    size_t accepted = 0;
    FUZZ_CHECK(run->closed_calls == 0 && t->done_calls < t->sends);
    t->done_calls++;
    FUZZ_CHECK(txn->next == NULL && txn->rcpts_written <= txn->rcpt_count);
    check_reply(&txn->mail_reply);
    check_reply(&txn->data_reply);
    for (size_t i = 0; i < txn->rcpt_count; i++)
        check_rcpt(t, i, &accepted);
    if (txn->rcpt_done != NULL) {
        FUZZ_CHECK(t->reported == txn->rcpt_count);
        for (size_t i = 0; i < txn->rcpt_count; i++)
            FUZZ_CHECK(t->verdicts[i] == txn->rcpts[i].reply.code);
    }
    FUZZ_CHECK(accepted == txn->accepted);
    if (txn->mail_reply.code == 0)   /* replies come in command order (RFC 2920 3.1) */
        FUZZ_CHECK(txn->accepted == 0);
    /* Sent again once, as push.c does with the recipients after a 452; QUIT after that. */
    if (run->resend && t == &run->txns[0] && t->sends == 1 && !smtp_client_ended(run->client)) {
        body_setup(t, t->src.kind);
        t->reported = 0;
        t->open = false;
        txn->rcpt_count = t->full_count;
        t->sends++;
        if (smtp_client_send(run->client, txn) != 0)
            t->sends--;
    }
    bool all_done = true;
    for (unsigned i = 0; i < run->txn_count; i++)
        all_done = all_done && run->txns[i].done_calls == run->txns[i].sends;
    if (run->quit && run->resend && all_done)
        smtp_client_quit(run->client);
}

static int queue_one(struct run *run, struct ftxn *t)
{
    if (!run->incremental)
        return smtp_client_send(run->client, &t->txn);
    t->run = run;
    t->txn.rcpt_done = on_rcpt_done;
    t->txn.rcpt_count = 1;
    t->open = true;
    if (smtp_client_open(run->client, &t->txn) != 0) {
        t->txn.rcpt_count = t->full_count;
        return -1;
    }
    if (run->early_close && t->full_count == 1)
        smtp_client_rcpts_done(run->client, &t->txn);
    return 0;
}

static void queue_txns(struct run *run)
{
    for (unsigned i = 0; i < run->txn_count; i++) {
        run->txns[i].sends++;
        if (queue_one(run, &run->txns[i]) != 0)
            run->txns[i].sends--;
    }
    if (run->quit && (!run->resend || run->txn_count == 0))
        smtp_client_quit(run->client);
}

static void on_ready(void *arg, const struct smtp_client_ext *ext,
                     const struct smtp_client_reply *greeting)
{
    struct run *run = arg;
    FUZZ_CHECK(run->ready_calls++ == 0 && run->closed_calls == 0);
    FUZZ_CHECK(greeting->code >= 200 && greeting->code < 300);
    check_reply(greeting);
    if (run->queue_in_ready)
        queue_txns(run);
}

/* FUZZ_VERBOSE=1: what each transaction got, to check that a seed goes where it should. */
static void show(const struct run *run, enum smtp_client_end how, const char *reason)
{
    fprintf(stderr, "closed: %s (%s)\n", smtp_client_end_name(how), reason);
    for (unsigned i = 0; i < run->txn_count; i++) {
        const struct smtp_client_txn *t = &run->txns[i].txn;
        fprintf(stderr, "txn %u: sends=%u mail=%d data=%d sent=%d rcpts", i,
                run->txns[i].sends, t->mail_reply.code, t->data_reply.code, t->data_sent);
        for (size_t j = 0; j < t->rcpt_count; j++)
            fprintf(stderr, " %d/%d", t->rcpts[j].reply.code, t->rcpts[j].data_reply.code);
        fprintf(stderr, "\n");
    }
}

static void on_closed(void *arg, enum smtp_client_end how, const char *reason)
{
    struct run *run = arg;
    FUZZ_CHECK(run->closed_calls++ == 0);
    if (getenv("FUZZ_VERBOSE") != NULL)
        show(run, how, reason);
    FUZZ_CHECK(smtp_client_end_name(how) != NULL && strlen(reason) < 160);
    for (unsigned i = 0; i < run->txn_count; i++)
        FUZZ_CHECK(run->txns[i].done_calls == run->txns[i].sends);
}

/* What the engine writes: counted and dropped (the fuzzed replies do not depend on it). */
static void on_server_read(struct bufferevent *bev, void *arg)
{
    struct run *run = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    run->received += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static bool start(struct run *run, const uint8_t *data)
{
    struct bufferevent *pair[2];
    unsigned flags = data[0] & 0x1f;
    run->txn_count = data[1] & 3;
    run->rcpt_count = 1 + (data[1] >> 2 & 3);
    run->queue_in_ready = data[1] & 0x10;
    run->resend = data[1] & 0x20;
    run->quit = data[0] & 0x40;
    run->incremental = data[1] & 0x40;
    run->early_close = data[1] & 0x80;
    for (unsigned i = 0; i < run->txn_count; i++)
        txn_setup(&run->txns[i], i, run->rcpt_count - (i == 2 && run->rcpt_count > 1),
                  (enum body_kind)((data[2] + i) % BODY_KINDS));
    if (!fuzz_loop_init(&run->loop) || !fuzz_pair(&run->loop, pair))
        return false;
    run->server = pair[1];
    bufferevent_setcb(run->server, on_server_read, NULL, NULL, run);
    bufferevent_enable(run->server, EV_READ | EV_WRITE);
    /* No timeouts: the loop never waits (a 0 disables the engine's timer). */
    struct smtp_client_config cfg = {.helo_name = "client.example", .flags = flags,
                                     .timeouts = {0, 0, 0, 0, 0}, .log_id = "fuzz"};
    struct smtp_client_callbacks cb = {on_ready, on_txn_done, on_closed};
    run->client = smtp_client_new(run->loop.base, pair[0], &cfg, &cb, run);
    if (run->client == NULL) {
        bufferevent_free(pair[0]);
        return false;
    }
    if (!run->queue_in_ready)
        queue_txns(run);
    return true;
}

/* The server's stream, piece by piece, the engine running to idle after each. */
static void feed(struct run *run, const uint8_t *data, size_t size, bool line_mode,
                 size_t piece)
{
    for (size_t off = 0; off < size && run->closed_calls == 0;) {
        size_t n = fuzz_next_piece(data, size, off, line_mode, piece);
        bufferevent_write(run->server, data + off, n);
        off += n;
        fuzz_loop_idle(&run->loop);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct run run;
    if (size < 3)
        return 0;
    memset(&run, 0, sizeof run);
    if (start(&run, data)) {
        feed(&run, data + 3, size - 3, !(data[0] & 0x80), 1 + (data[2] >> 3));
        if (run.closed_calls == 0 && (data[0] & 0x20))
            bufferevent_flush(run.server, EV_WRITE, BEV_FINISHED);   /* the server's EOF */
        else if (run.closed_calls == 0)
            smtp_client_abort(run.client, "fuzz input consumed");
        fuzz_loop_idle(&run.loop);
        FUZZ_CHECK(run.closed_calls == 1);
        /* Memory stayed bounded: what was written is commands and bodies, nothing repeated. */
        FUZZ_CHECK(run.received <= (uint64_t)(run.txn_count + 1) * 2 * (BIG_BODY + 8192) + 4096);
        smtp_client_free(run.client);
    }
    if (run.server != NULL)
        bufferevent_free(run.server);
    if (run.loop.base != NULL)
        fuzz_loop_idle(&run.loop);   /* the pair's deferred frees */
    fuzz_loop_free(&run.loop);
    return 0;
}
