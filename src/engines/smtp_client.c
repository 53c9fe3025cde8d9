/* SPDX-License-Identifier: ISC */
/* SMTP / LMTP client engine (see smtp_client.h).
 *
 * Outgoing text goes through one staging buffer: commands and body octets are appended there
 * and moved into the bufferevent's output either wholesale, or -- with LINE_PER_WRITE -- one
 * line at a time, the next only after the output has drained (write callback, low watermark 0).
 * bufferevent_openssl hands the output to SSL_write() as it finds it, so an output buffer that
 * never holds more than one line gives at most one line per TLS record.
 *
 * Every command written pushes an "expect" onto a FIFO; replies are matched to it in order
 * (RFC 2920 3.1: replies come in command order). What a reply means is decided by the table
 * expect_rules[] (one handler per command kind). Which command may be written next is decided
 * by the per-transaction phase table phase_steps[]. */
#include "engines/smtp_client.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lib/reply_reader.h"
#include "lib/log.h"
#include "platform/tls.h"

enum {
    PUMP_CHUNK = 64 << 10,   /* body octets read per step */
    PUMP_HIGH = 256 << 10,   /* stop reading the body while this much waits to be written */
    WRITE_LOW = 64 << 10,    /* refill when the output drops to this */
};

enum expect_kind { EX_GREETING, EX_EHLO, EX_HELO, EX_STARTTLS, EX_MAIL, EX_RCPT, EX_DATA, EX_DOT,
                   EX_BDAT, EX_RSET, EX_QUIT };

enum timeout_kind { TO_GREETING, TO_COMMAND, TO_DATA_INIT, TO_DATA_END };

/* TX_WAIT_BODY: DATA answered 354 before the caller gave the body (incremental use). */
enum txn_phase { TX_MAIL, TX_RCPT, TX_DATA, TX_WAIT_354, TX_WAIT_BODY, TX_BODY, TX_SENT };

/* ST_TLS: the TLS handshake after STARTTLS's 220 (RFC 3207 4.2). */
enum client_state { ST_GREETING, ST_HELLO, ST_TLS, ST_READY, ST_QUITTING, ST_ENDING };

struct expect {
    enum expect_kind kind;
    struct smtp_client_txn *txn;
    size_t index;            /* RCPT: which recipient */
    unsigned remaining;      /* replies still due (LMTP after the data); 0 = not yet known */
};

struct smtp_client {
    struct event_base *base;
    struct bufferevent *bev;
    struct smtp_client_config cfg;
    char *helo_name;
    struct smtp_client_callbacks cb;
    void *arg;
    void (*command_sent)(void *arg, const char *line);
    void (*reply_seen)(void *arg, const struct smtp_client_reply *reply);
    enum client_state state;
    struct smtp_client_ext ext;
    bool pipelining, chunking, lmtp, line_mode, fast_on_request, tls_active;
    /* replies */
    struct reply_reader reader;
    struct smtp_client_reply cur;   /* the reply being assembled */
    struct smtp_client_reply greeting;
    struct expect *expects;
    size_t expect_head, expect_count, expect_cap;
    /* transactions: head..tail not yet reported; wtxn the first not yet fully written */
    struct smtp_client_txn *head, *tail, *wtxn;
    bool quit_requested, refused;
    bool finished;           /* closed() was called: nothing more happens */
    /* body being sent */
    struct smtp_client_txn *pumping;
    uint64_t pumped;
    bool stuff;
    struct smtp_dot_stuffer stuffer;
    struct evbuffer *staged;
    /* events */
    struct event *timer, *kick;
    enum smtp_client_end end_how;
    char end_reason[160];
};

/* ---- small helpers ---- */

static time_t timeout_value(const struct smtp_client *c, enum timeout_kind k)
{
    const struct smtp_client_timeouts *t = &c->cfg.timeouts;
    const time_t values[] = {[TO_GREETING] = t->greeting, [TO_COMMAND] = t->command,
                             [TO_DATA_INIT] = t->data_init, [TO_DATA_END] = t->data_end};
    return values[k];
}

static void reply_copy(struct smtp_client_reply *dst, const struct smtp_client_reply *src)
{
    *dst = *src;
}

static bool is_2xx(int code)
{
    return code >= 200 && code < 300;
}

static void kick(struct smtp_client *c)
{
    event_active(c->kick, EV_WRITE, 0);
}

/* Stops all processing; finish() runs from the kick event, outside every caller's call. */
static void end_session(struct smtp_client *c, enum smtp_client_end how, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void end_session(struct smtp_client *c, enum smtp_client_end how, const char *fmt, ...)
{
    if (c->state == ST_ENDING)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->end_reason, sizeof c->end_reason, fmt, ap);
    va_end(ap);
    c->end_how = how;
    c->state = ST_ENDING;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    event_del(c->timer);
    kick(c);
}

/* ---- output ---- */

/* Moves staged text to the connection: everything, or in line mode one line once the output
 * buffer is empty (so that each line is its own SSL_write, its own TLS record). */
static void flush_staged(struct smtp_client *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t staged = evbuffer_get_length(c->staged);
    if (staged == 0)
        return;
    if (!c->line_mode) {
        evbuffer_add_buffer(out, c->staged);
        return;
    }
    if (evbuffer_get_length(out) != 0)
        return;
    struct evbuffer_ptr lf = evbuffer_search(c->staged, "\n", 1, NULL);
    size_t n = lf.pos >= 0 ? (size_t)lf.pos + 1 : staged;
    if (lf.pos < 0 && c->pumping != NULL && staged < PUMP_HIGH)
        return;   /* a partial line: wait for the rest of it */
    evbuffer_remove_buffer(c->staged, out, n);
}

static int push_expect(struct smtp_client *c, enum expect_kind kind, struct smtp_client_txn *txn,
                       size_t index)
{
    if (c->expect_count == c->expect_cap) {
        size_t cap = c->expect_cap != 0 ? c->expect_cap * 2 : 16;
        struct expect *grown = malloc(cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        for (size_t i = 0; i < c->expect_count; i++)
            grown[i] = c->expects[(c->expect_head + i) % c->expect_cap];
        free(c->expects);
        c->expects = grown;
        c->expect_cap = cap;
        c->expect_head = 0;
    }
    struct expect *e = &c->expects[(c->expect_head + c->expect_count) % c->expect_cap];
    *e = (struct expect){kind, txn, index, 0};
    c->expect_count++;
    if (txn != NULL)
        txn->replies_pending++;
    return 0;
}

static struct expect *head_expect(struct smtp_client *c)
{
    return c->expect_count != 0 ? &c->expects[c->expect_head] : NULL;
}

static void pop_expect(struct smtp_client *c)
{
    struct expect *e = head_expect(c);
    if (e->txn != NULL)
        e->txn->replies_pending--;
    c->expect_head = (c->expect_head + 1) % c->expect_cap;
    c->expect_count--;
}

/* Writes a command and records the reply it waits for. */
static void command(struct smtp_client *c, enum expect_kind kind, struct smtp_client_txn *txn,
                    size_t index, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void command(struct smtp_client *c, enum expect_kind kind, struct smtp_client_txn *txn,
                    size_t index, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 2) {
        end_session(c, SMTP_CLIENT_END_ERROR, "command line too long");
        return;
    }
    if (c->command_sent != NULL)
        c->command_sent(c->arg, line);
    memcpy(line + n, "\r\n", 2);
    evbuffer_add(c->staged, line, (size_t)n + 2);
    if (push_expect(c, kind, txn, index) != 0)
        end_session(c, SMTP_CLIENT_END_ERROR, "out of memory");
}

/* ---- message body ---- */

/* RFC 5321 4.5.2: a line starting with "." gets one more "." in front. memchr finds the line
 * starts; whether the piece before ended a line is carried across calls. */
void smtp_dot_stuff_begin(struct smtp_dot_stuffer *s)
{
    s->at_line_start = true;
}

void smtp_dot_stuff(struct smtp_dot_stuffer *s, struct evbuffer *out, const char *buf,
                    size_t len)
{
    const char *from = buf, *end = buf + len, *p = buf;
    if (len == 0)
        return;
    if (s->at_line_start && buf[0] == '.')
        evbuffer_add(out, ".", 1);
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL && ++p < end) {
        if (*p == '.') {
            evbuffer_add(out, from, (size_t)(p - from));
            evbuffer_add(out, ".", 1);
            from = p;
        }
    }
    evbuffer_add(out, from, (size_t)(end - from));
    s->at_line_start = end[-1] == '\n';
}

void smtp_dot_stuff_end(struct smtp_dot_stuffer *s, struct evbuffer *out)
{
    if (s->at_line_start)   /* after a line end, or nothing at all: an empty message */
        evbuffer_add(out, ".\r\n", 3);
    else
        evbuffer_add(out, "\r\n.\r\n", 5);
    smtp_dot_stuff_begin(s);
}

static ssize_t body_read(struct smtp_client *c, char *buf, size_t len)
{
    const struct smtp_client_body *b = &c->pumping->body;
    if (b->fd < 0)
        return b->read(b->read_arg, buf, len);
    ssize_t n;
    do
        n = pread(b->fd, buf, len, b->offset + (off_t)c->pumped);
    while (n < 0 && errno == EINTR);
    return n;
}

static void start_body(struct smtp_client *c, struct smtp_client_txn *txn, bool stuff)
{
    c->pumping = txn;
    c->pumped = 0;
    c->stuff = stuff;
    smtp_dot_stuff_begin(&c->stuffer);
    txn->phase = TX_BODY;
}

/* The whole body is staged: the terminator (DATA) and the reply(ies) to wait for. */
static void end_body(struct smtp_client *c)
{
    struct smtp_client_txn *txn = c->pumping;
    if (c->stuff) {
        smtp_dot_stuff_end(&c->stuffer, c->staged);
        if (push_expect(c, EX_DOT, txn, 0) != 0)
            end_session(c, SMTP_CLIENT_END_ERROR, "out of memory");
    }
    txn->data_sent = true;
    txn->phase = TX_SENT;
    c->pumping = NULL;
}

/* Reads body octets into the staging buffer until it holds PUMP_HIGH or the body is done. */
static void pump_body(struct smtp_client *c)
{
    char buf[PUMP_CHUNK];
    while (c->pumping != NULL && c->state != ST_ENDING &&
           evbuffer_get_length(c->staged) < PUMP_HIGH) {
        uint64_t left = c->pumping->body.length - c->pumped;
        if (left == 0) {
            end_body(c);
            break;
        }
        ssize_t n = body_read(c, buf, left < sizeof buf ? (size_t)left : sizeof buf);
        if (n <= 0) {
            /* Cannot finish the data without sending a truncated message: hang up. */
            end_session(c, SMTP_CLIENT_END_ERROR, "message body read error: %s",
                        n < 0 ? strerror(errno) : "short read");
            return;
        }
        if (c->stuff)
            smtp_dot_stuff(&c->stuffer, c->staged, buf, (size_t)n);
        else
            evbuffer_add(c->staged, buf, (size_t)n);
        c->pumped += (uint64_t)n;
    }
}

/* ---- writing transactions: one step per phase ---- */

/* A transaction given up before its data: RSET (RFC 5321 4.1.1.5), unless nothing is open on
 * the server (MAIL not sent, or refused). */
static void step_cancelled(struct smtp_client *c, struct smtp_client_txn *txn)
{
    if (txn->phase != TX_MAIL && (txn->mail_reply.code == 0 || is_2xx(txn->mail_reply.code)))
        command(c, EX_RSET, txn, 0, "RSET");
    txn->phase = TX_SENT;
}

static bool step_mail(struct smtp_client *c, struct smtp_client_txn *txn)
{
    if (txn->cancelled) {
        step_cancelled(c, txn);
        return true;
    }
    command(c, EX_MAIL, txn, 0, "MAIL FROM:<%s>%s", txn->mail_from,
            txn->mail_params != NULL ? txn->mail_params : "");
    txn->phase = TX_RCPT;
    return true;
}

static bool step_rcpt(struct smtp_client *c, struct smtp_client_txn *txn)
{
    if (txn->cancelled) {
        step_cancelled(c, txn);
        return true;
    }
    if (txn->stop_rcpts || txn->rcpts_written == txn->rcpt_count) {
        if (!txn->rcpts_closed)
            return false;   /* more recipients may come (smtp_client_add_rcpt) */
        txn->phase = TX_DATA;
        return true;
    }
    const struct smtp_client_rcpt *r = &txn->rcpts[txn->rcpts_written];
    command(c, EX_RCPT, txn, txn->rcpts_written, "RCPT TO:<%s>%s", r->address,
            r->params != NULL ? r->params : "");
    txn->rcpts_written++;
    return true;
}

static bool step_data(struct smtp_client *c, struct smtp_client_txn *txn)
{
    if (txn->cancelled) {
        step_cancelled(c, txn);
        return true;
    }
    /* Only DATA may go before the body is known (its 354 then waits for it): BDAT needs the
     * size, and without PIPELINING the replies so far decide. */
    if (!txn->body_set && (c->chunking || !c->pipelining))
        return false;
    /* Without pipelining the replies are known: no DATA after a refused MAIL, and RSET instead
     * of DATA when every RCPT was refused. Pipelined, DATA is already on its way with the
     * RCPTs (RFC 2920 3.1) and the server refuses it itself. */
    if (!c->pipelining && !is_2xx(txn->mail_reply.code)) {
        txn->phase = TX_SENT;
    } else if (!c->pipelining && txn->accepted == 0) {
        command(c, EX_RSET, txn, 0, "RSET");
        txn->phase = TX_SENT;
    } else if (c->chunking) {
        /* RFC 3030 2: one chunk, BDAT <size> LAST, the octets as they are (no stuffing). */
        command(c, EX_BDAT, txn, 0, "BDAT %" PRIu64 " LAST", txn->body.length);
        start_body(c, txn, false);
    } else {
        command(c, EX_DATA, txn, 0, "DATA");
        txn->phase = TX_WAIT_354;
    }
    return true;
}

static bool step_wait(struct smtp_client *c, struct smtp_client_txn *txn)
{
    return false;   /* waiting for 354, or the body is being sent */
}

static bool step_sent(struct smtp_client *c, struct smtp_client_txn *txn)
{
    c->wtxn = txn->next;
    return true;
}

static bool (*const phase_steps[])(struct smtp_client *, struct smtp_client_txn *) = {
    [TX_MAIL] = step_mail,     [TX_RCPT] = step_rcpt, [TX_DATA] = step_data,
    [TX_WAIT_354] = step_wait, [TX_WAIT_BODY] = step_wait, [TX_BODY] = step_wait,
    [TX_SENT] = step_sent,
};

/* RFC 2920 3.1: with PIPELINING commands go out without waiting, up to DATA; without it, one
 * command at a time. */
static bool may_write(const struct smtp_client *c)
{
    return c->state == ST_READY && c->pumping == NULL && (c->pipelining || c->expect_count == 0);
}

static void maybe_quit(struct smtp_client *c)
{
    if (c->state == ST_READY && c->quit_requested && c->head == NULL && c->expect_count == 0) {
        command(c, EX_QUIT, NULL, 0, "QUIT");
        c->state = ST_QUITTING;
    }
}

static void rearm_timer(struct smtp_client *c)
{
    const struct expect *e = head_expect(c);
    static const enum timeout_kind kinds[] = {
        [EX_GREETING] = TO_GREETING, [EX_EHLO] = TO_COMMAND, [EX_HELO] = TO_COMMAND,
        [EX_STARTTLS] = TO_COMMAND,
        [EX_MAIL] = TO_COMMAND,      [EX_RCPT] = TO_COMMAND, [EX_DATA] = TO_DATA_INIT,
        [EX_DOT] = TO_DATA_END,      [EX_BDAT] = TO_DATA_END, [EX_RSET] = TO_COMMAND,
        [EX_QUIT] = TO_COMMAND,
    };
    time_t seconds = 0;
    if (c->state == ST_ENDING || c->state == ST_TLS)
        return;   /* ST_TLS: the handshake's timer, set when it began */
    if (c->pumping != NULL || evbuffer_get_length(c->staged) != 0)
        seconds = c->cfg.timeouts.data_block;   /* RFC 5321 4.5.3.2.5: each data write */
    else if (e != NULL)
        seconds = timeout_value(c, kinds[e->kind]);
    if (seconds <= 0) {
        event_del(c->timer);
        return;
    }
    struct timeval tv = {seconds, 0};
    event_add(c->timer, &tv);
}

static void complete_head_txns(struct smtp_client *c);
static void report_all_rcpts(struct smtp_client *c);

static void advance(struct smtp_client *c)
{
    while (c->wtxn != NULL && may_write(c) && phase_steps[c->wtxn->phase](c, c->wtxn))
        ;
    report_all_rcpts(c);
    complete_head_txns(c);
    if (c->state == ST_ENDING)
        return;
    maybe_quit(c);
    pump_body(c);
    flush_staged(c);
    rearm_timer(c);
}

/* ---- completing transactions ---- */

/* Is recipient i's verdict known: its RCPT reply came, or it will never be sent? */
static bool rcpt_settled(const struct smtp_client *c, const struct smtp_client_txn *txn,
                         size_t i)
{
    if (c->state == ST_ENDING)
        return true;
    if (i < txn->rcpts_written)
        return txn->rcpts[i].reply.code != 0;
    return txn->stop_rcpts || txn->cancelled || txn->phase > TX_RCPT;
}

/* rcpt_done() for every recipient newly settled, in order (incremental transactions). */
static void report_rcpts(struct smtp_client *c, struct smtp_client_txn *txn)
{
    while (txn->rcpt_done != NULL && txn->rcpts_reported < txn->rcpt_count &&
           rcpt_settled(c, txn, txn->rcpts_reported)) {
        size_t i = txn->rcpts_reported++;
        txn->rcpt_done(txn->user, txn, i);
    }
}

static void report_all_rcpts(struct smtp_client *c)
{
    for (struct smtp_client_txn *t = c->head; t != NULL; t = t->next)
        report_rcpts(c, t);
}

static void complete_head_txns(struct smtp_client *c)
{
    while (c->state != ST_ENDING && c->head != NULL && c->head->phase == TX_SENT &&
           c->head->replies_pending == 0) {
        struct smtp_client_txn *txn = c->head;
        report_rcpts(c, txn);
        if (c->state == ST_ENDING || txn->replies_pending != 0)
            break;   /* a rcpt_done() ended the session or sent a command of this txn */
        if (c->wtxn == txn)
            c->wtxn = txn->next;
        c->head = txn->next;
        if (c->head == NULL)
            c->tail = NULL;
        txn->next = NULL;
        c->cb.txn_done(c->arg, txn);
    }
}

/* ---- reply handlers: the table ---- */

static void on_greeting(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
    reply_copy(&c->greeting, r);
    if (!is_2xx(r->code)) {
        /* RFC 5321 3.1: after a 554 greeting the client should send QUIT. */
        c->refused = true;
        command(c, EX_QUIT, NULL, 0, "QUIT");
        c->state = ST_QUITTING;
        return;
    }
    c->state = ST_HELLO;
    command(c, EX_EHLO, NULL, 0, "%s %s", c->lmtp ? "LHLO" : "EHLO", c->helo_name);
}

static void become_ready(struct smtp_client *c)
{
    c->state = ST_READY;
    if (c->fast_on_request && c->ext.odmr_fast) {
        c->pipelining = c->chunking = true;
        c->line_mode = false;
        bufferevent_setwatermark(c->bev, EV_WRITE, WRITE_LOW, 0);
    }
    c->pipelining = c->pipelining && c->ext.pipelining;
    c->chunking = c->chunking && c->ext.chunking;
    c->cb.ready(c->arg, &c->ext, &c->greeting);
}

/* RFC 3207 4: STARTTLS when the server offers it and we were asked to; required, never a
 * MAIL in clear. */
static void after_hello(struct smtp_client *c)
{
    unsigned flags = c->cfg.flags;
    bool required = flags & SMTP_CLIENT_STARTTLS_REQUIRED;
    if (!c->tls_active && c->ext.starttls && c->cfg.tls_ctx != NULL &&
        (flags & (SMTP_CLIENT_STARTTLS | SMTP_CLIENT_STARTTLS_REQUIRED))) {
        command(c, EX_STARTTLS, NULL, 0, "STARTTLS");
        return;
    }
    if (required && !c->tls_active)
        end_session(c, SMTP_CLIENT_END_REFUSED, "STARTTLS required but not offered");
    else
        become_ready(c);
}

static void on_ehlo(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
    if (is_2xx(r->code)) {
        c->ext.esmtp = true;
        after_hello(c);
    } else if (r->code >= 500 && !c->lmtp) {
        /* RFC 5321 3.2: a server that does not know EHLO gets HELO. */
        memset(&c->ext, 0, sizeof c->ext);
        command(c, EX_HELO, NULL, 0, "HELO %s", c->helo_name);
    } else {
        end_session(c, SMTP_CLIENT_END_REFUSED, "%s refused: %d", c->lmtp ? "LHLO" : "EHLO",
                    r->code);
    }
}

static void on_helo(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
    if (is_2xx(r->code))
        after_hello(c);
    else
        end_session(c, SMTP_CLIENT_END_REFUSED, "HELO refused: %d", r->code);
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

/* The connection continues through a TLS filter; EHLO again once the handshake is done. */
static void start_tls(struct smtp_client *c)
{
    SSL *ssl = SSL_new(c->cfg.tls_ctx);
    if (ssl != NULL && c->cfg.tls_name != NULL) {
        SSL_set_tlsext_host_name(ssl, c->cfg.tls_name);
        SSL_set1_host(ssl, c->cfg.tls_name);
    }
    struct bufferevent *tls = ssl == NULL ? NULL
        : bufferevent_openssl_filter_new(c->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (tls == NULL) {
        if (ssl != NULL)
            SSL_free(ssl);
        end_session(c, SMTP_CLIENT_END_ERROR, "cannot start TLS");
        return;
    }
    c->bev = tls;
    c->state = ST_TLS;
    bufferevent_setcb(tls, on_read, on_write, on_event, c);
    bufferevent_setwatermark(tls, EV_WRITE, WRITE_LOW, 0);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    struct timeval tv = {timeout_value(c, TO_COMMAND), 0};
    event_add(c->timer, &tv);
}

static void on_starttls(struct smtp_client *c, struct expect *e,
                        const struct smtp_client_reply *r)
{
    if (r->code != 220 && (c->cfg.flags & SMTP_CLIENT_STARTTLS_REQUIRED)) {
        end_session(c, SMTP_CLIENT_END_REFUSED, "STARTTLS refused: %d", r->code);
    } else if (r->code != 220) {
        become_ready(c);   /* RFC 3207 4: the client may go on without TLS (opportunistic) */
    } else if (evbuffer_get_length(bufferevent_get_input(c->bev)) != 0) {
        /* RFC 3207 5: nothing may come between the 220 and the handshake; bytes there would
         * be taken for the server's words under TLS (command injection, CVE-2011-0411). */
        end_session(c, SMTP_CLIENT_END_PROTOCOL, "data after the 220 to STARTTLS");
    } else {
        start_tls(c);
    }
}

/* RFC 3207 4.2: after the handshake nothing learned before counts: EHLO again. */
static void tls_established(struct smtp_client *c)
{
    c->tls_active = true;
    c->state = ST_HELLO;
    memset(&c->ext, 0, sizeof c->ext);
    event_del(c->timer);
    command(c, EX_EHLO, NULL, 0, "%s %s", c->lmtp ? "LHLO" : "EHLO", c->helo_name);
    advance(c);
}

static void on_mail(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
    reply_copy(&e->txn->mail_reply, r);
    if (!is_2xx(r->code))
        e->txn->stop_rcpts = true;
    report_rcpts(c, e->txn);
}

static void on_rcpt(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
    struct smtp_client_txn *txn = e->txn;
    reply_copy(&txn->rcpts[e->index].reply, r);
    if (is_2xx(r->code))
        txn->accepted++;
    /* RFC 5321 4.5.3.1.10: 452 = too many recipients; send the rest in a later transaction.
     * (An incremental caller gets the 452 as that recipient's verdict and decides itself.) */
    if (r->code == 452 && !txn->incremental)
        txn->stop_rcpts = true;
    report_rcpts(c, txn);
}

static void apply_data_refusal(struct smtp_client_txn *txn, const struct smtp_client_reply *r)
{
    for (size_t i = 0; i < txn->rcpt_count; i++) {
        if (is_2xx(txn->rcpts[i].reply.code))
            reply_copy(&txn->rcpts[i].data_reply, r);
    }
}

static void on_data(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
    struct smtp_client_txn *txn = e->txn;
    reply_copy(&txn->data_reply, r);
    if (r->code == 354 && txn->accepted > 0 && !txn->body_set) {
        txn->phase = TX_WAIT_BODY;
    } else if (r->code == 354 && txn->accepted > 0) {
        start_body(c, txn, true);
    } else if (r->code == 354) {
        /* Pipelined DATA accepted although every RCPT was refused: end it empty, at once. */
        evbuffer_add(c->staged, ".\r\n", 3);
        if (push_expect(c, EX_DOT, txn, 0) != 0)
            end_session(c, SMTP_CLIENT_END_ERROR, "out of memory");
        txn->phase = TX_SENT;
    } else if (is_2xx(r->code)) {
        end_session(c, SMTP_CLIENT_END_PROTOCOL, "DATA answered %d instead of 354", r->code);
    } else {
        apply_data_refusal(txn, r);
        txn->phase = TX_SENT;
    }
}

/* After the data: one reply (SMTP), or one per accepted RCPT in RCPT order (RFC 2033 4.2). */
static void on_final(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
    struct smtp_client_txn *txn = e->txn;
    if (e->remaining == 0)
        e->remaining = c->lmtp && txn->accepted > 1 ? (unsigned)txn->accepted : 1;
    e->remaining--;
    reply_copy(&txn->data_reply, r);
    for (size_t i = 0; i < txn->rcpt_count; i++) {
        struct smtp_client_rcpt *rc = &txn->rcpts[i];
        if (!is_2xx(rc->reply.code) || rc->data_reply.code != 0)
            continue;
        reply_copy(&rc->data_reply, r);
        if (c->lmtp)
            break;
    }
    if (e->remaining == 0)
        txn->data_replies++;
}

static void on_rset(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
}

static void on_quit(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r)
{
    if (c->refused)
        end_session(c, SMTP_CLIENT_END_REFUSED, "greeting refused: %.100s", c->greeting.text);
    else
        end_session(c, SMTP_CLIENT_END_QUIT, "QUIT answered %d", r->code);
}

struct expect_rule {
    const char *name;
    void (*handle)(struct smtp_client *c, struct expect *e, const struct smtp_client_reply *r);
    bool multi;   /* may need several replies (LMTP after the data) */
};

static const struct expect_rule expect_rules[] = {
    [EX_GREETING] = {"greeting", on_greeting, false},
    [EX_EHLO] = {"EHLO", on_ehlo, false},
    [EX_HELO] = {"HELO", on_helo, false},
    [EX_STARTTLS] = {"STARTTLS", on_starttls, false},
    [EX_MAIL] = {"MAIL", on_mail, false},
    [EX_RCPT] = {"RCPT", on_rcpt, false},
    [EX_DATA] = {"DATA", on_data, false},
    [EX_DOT] = {"end of data", on_final, true},
    [EX_BDAT] = {"BDAT", on_final, true},
    [EX_RSET] = {"RSET", on_rset, false},
    [EX_QUIT] = {"QUIT", on_quit, false},
};

/* ---- reading replies ---- */

struct ext_rule {
    const char *keyword;
    size_t offset;
};

#define EXT(field) offsetof(struct smtp_client_ext, field)
static const struct ext_rule ext_rules[] = {
    {"PIPELINING", EXT(pipelining)},   {"8BITMIME", EXT(eightbitmime)},
    {"SMTPUTF8", EXT(smtputf8)},       {"DSN", EXT(dsn)},
    {"CHUNKING", EXT(chunking)},       {"BINARYMIME", EXT(binarymime)},
    {"STARTTLS", EXT(starttls)},       {"ENHANCEDSTATUSCODES", EXT(enhancedstatuscodes)},
    {"SIZE", EXT(size)},               {"X-ODMR-FAST", EXT(odmr_fast)},
};

/* One EHLO keyword line (RFC 5321 4.1.1.1: ehlo-line = ehlo-keyword *( SP ehlo-param )). */
static void parse_ehlo_line(struct smtp_client *c, const char *text)
{
    size_t klen = strcspn(text, " ");
    for (size_t i = 0; i < sizeof ext_rules / sizeof ext_rules[0]; i++) {
        if (strlen(ext_rules[i].keyword) != klen || strncasecmp(text, ext_rules[i].keyword, klen))
            continue;
        *(bool *)((char *)&c->ext + ext_rules[i].offset) = true;
    }
    /* RFC 1870 4: SIZE [number]; 0 or none means no fixed limit. */
    if (klen == 4 && strncasecmp(text, "SIZE", 4) == 0 && text[4] == ' ')
        c->ext.size_max = strtoull(text + 5, NULL, 10);
}

/* Keeps one reply line (lib/reply_reader.c checked the grammar and the bounds): the whole
 * line, lines joined with '\n'; EHLO keywords are taken as they come. */
static void take_reply_line(struct smtp_client *c, const struct reply_line *l)
{
    reply_reader_keep(&c->cur, l);
    const struct expect *e = head_expect(c);
    if (e != NULL && e->kind == EX_EHLO && l->index > 0 && l->len > 4)
        parse_ehlo_line(c, l->text);
}

static void dispatch_reply(struct smtp_client *c)
{
    struct smtp_client_reply r = c->cur;
    memset(&c->cur, 0, sizeof c->cur);
    struct expect *e = head_expect(c);
    if (e == NULL) {
        /* RFC 5321 3.8: a server shutting down may say 421 at any time, then close. */
        end_session(c, r.code == 421 ? SMTP_CLIENT_END_EOF : SMTP_CLIENT_END_PROTOCOL,
                    "unexpected reply %d", r.code);
        return;
    }
    const struct expect_rule *rule = &expect_rules[e->kind];
    if (c->reply_seen != NULL)
        c->reply_seen(c->arg, &r);
    if (c->cfg.log_id != NULL) {
        char quoted[200];
        log_debug("smtp_client.reply", " session=%s cmd=%s reply=%s", c->cfg.log_id, rule->name,
                  log_quote(quoted, sizeof quoted, r.text, strlen(r.text)));
    }
    rule->handle(c, e, &r);
    if (!rule->multi || e->remaining == 0)
        pop_expect(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct smtp_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (c->state != ST_ENDING && c->state != ST_TLS) {   /* ST_TLS: in is the filter's now */
        struct reply_line l;
        enum reply_status st = reply_reader_next(&c->reader, in, &l);
        if (st == REPLY_AGAIN)
            break;
        if (st != REPLY_LINE) {
            end_session(c, SMTP_CLIENT_END_PROTOCOL, "%s", reply_status_name(st));
            return;
        }
        take_reply_line(c, &l);
        if (l.last) {
            dispatch_reply(c);
            complete_head_txns(c);
        }
    }
    if (c->state != ST_ENDING)
        advance(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct smtp_client *c = arg;
    if (c->state != ST_ENDING)
        advance(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct smtp_client *c = arg;
    if ((what & BEV_EVENT_CONNECTED) && c->state == ST_TLS) {
        tls_established(c);
    } else if ((what & BEV_EVENT_ERROR) && c->state == ST_TLS) {
        char why[120];
        ERR_error_string_n(bufferevent_get_openssl_error(bev), why, sizeof why);
        end_session(c, SMTP_CLIENT_END_ERROR, "TLS handshake failed: %s", why);
    } else if (what & BEV_EVENT_EOF) {
        if (c->state == ST_QUITTING)
            end_session(c, c->refused ? SMTP_CLIENT_END_REFUSED : SMTP_CLIENT_END_QUIT,
                        "closed after QUIT");
        else
            end_session(c, SMTP_CLIENT_END_EOF, "connection closed by the server");
    } else if (what & BEV_EVENT_TIMEOUT) {
        end_session(c, SMTP_CLIENT_END_TIMEOUT, "connection timeout");
    } else if (what & BEV_EVENT_ERROR) {
        end_session(c, SMTP_CLIENT_END_ERROR, "connection error: %s",
                    strerror(EVUTIL_SOCKET_ERROR()));
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    const struct expect *e = head_expect(c);
    end_session(c, SMTP_CLIENT_END_TIMEOUT, "timeout %s",
                c->state == ST_TLS                 ? "TLS handshake"
                : c->pumping != NULL || e == NULL ? "sending the message data"
                                                  : expect_rules[e->kind].name);
}

/* Ends: every transaction still held is handed back, then closed(); c may be freed in it. */
static void finish(struct smtp_client *c)
{
    c->finished = true;   /* a call from the callbacks below must not start anything */
    report_all_rcpts(c);
    while (c->head != NULL) {
        struct smtp_client_txn *txn = c->head;
        c->head = txn->next;
        txn->next = NULL;
        c->cb.txn_done(c->arg, txn);
    }
    c->tail = c->wtxn = NULL;
    c->cb.closed(c->arg, c->end_how, c->end_reason);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    if (c->finished)
        return;
    if (c->state == ST_ENDING)
        finish(c);
    else
        on_read(c->bev, c);   /* takes any reply already buffered, then advances */
}

/* ---- public ---- */

struct smtp_client *smtp_client_new(struct event_base *base, struct bufferevent *bev,
                                    const struct smtp_client_config *cfg,
                                    const struct smtp_client_callbacks *cb, void *arg)
{
    struct smtp_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->base = base;
    c->bev = bev;
    c->cfg = *cfg;
    c->cb = *cb;
    c->arg = arg;
    c->lmtp = cfg->flags & SMTP_CLIENT_LMTP;
    c->pipelining = cfg->flags & SMTP_CLIENT_USE_PIPELINING;
    c->chunking = cfg->flags & SMTP_CLIENT_USE_CHUNKING;
    c->line_mode = cfg->flags & SMTP_CLIENT_LINE_PER_WRITE;
    c->fast_on_request = cfg->flags & SMTP_CLIENT_FAST_ON_REQUEST;
    c->helo_name = strdup(cfg->helo_name != NULL ? cfg->helo_name : "localhost");
    c->staged = evbuffer_new();
    c->timer = event_new(base, -1, 0, on_timeout, c);
    c->kick = event_new(base, -1, 0, on_kick, c);
    /* docs/push.md: a bare LF line end is tolerated (fetchmail relays its MTA line by line). */
    reply_reader_init(&c->reader, !(cfg->flags & SMTP_CLIENT_STRICT_CRLF));
    if (c->helo_name == NULL || c->staged == NULL || c->timer == NULL || c->kick == NULL ||
        push_expect(c, EX_GREETING, NULL, 0) != 0) {
        c->bev = NULL;
        smtp_client_free(c);
        return NULL;
    }
    c->cfg.helo_name = c->helo_name;
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_set_timeouts(bev, NULL, NULL);   /* our own timer, per step */
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_setwatermark(bev, EV_WRITE, c->line_mode ? 0 : WRITE_LOW, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    rearm_timer(c);
    /* Bytes may already be buffered (the greeting arriving with the turnaround). */
    kick(c);
    return c;
}

static void clear_rcpt_replies(struct smtp_client_rcpt *r)
{
    memset(&r->reply, 0, sizeof r->reply);
    memset(&r->data_reply, 0, sizeof r->data_reply);
}

static int enqueue(struct smtp_client *c, struct smtp_client_txn *txn, bool incremental)
{
    if (c->state == ST_ENDING || c->state == ST_QUITTING || c->quit_requested)
        return -1;
    txn->next = NULL;
    txn->rcpts_written = txn->rcpts_reported = txn->replies_pending = txn->data_replies = 0;
    txn->accepted = 0;
    txn->stop_rcpts = txn->body_done = txn->data_sent = txn->cancelled = false;
    txn->incremental = incremental;
    txn->rcpts_closed = txn->body_set = !incremental;
    txn->phase = TX_MAIL;
    memset(&txn->mail_reply, 0, sizeof txn->mail_reply);
    memset(&txn->data_reply, 0, sizeof txn->data_reply);
    for (size_t i = 0; i < txn->rcpt_count; i++)
        clear_rcpt_replies(&txn->rcpts[i]);
    if (c->tail != NULL)
        c->tail->next = txn;
    else
        c->head = txn;
    c->tail = txn;
    if (c->wtxn == NULL)
        c->wtxn = txn;
    kick(c);
    return 0;
}

int smtp_client_send(struct smtp_client *c, struct smtp_client_txn *txn)
{
    return enqueue(c, txn, false);
}

int smtp_client_open(struct smtp_client *c, struct smtp_client_txn *txn)
{
    return enqueue(c, txn, true);
}

int smtp_client_add_rcpt(struct smtp_client *c, struct smtp_client_txn *txn)
{
    if (txn->rcpts_closed || txn->cancelled || c->state == ST_ENDING) {
        txn->rcpt_count--;
        return -1;
    }
    clear_rcpt_replies(&txn->rcpts[txn->rcpt_count - 1]);
    kick(c);
    return 0;
}

void smtp_client_rcpts_done(struct smtp_client *c, struct smtp_client_txn *txn)
{
    txn->rcpts_closed = true;
    kick(c);
}

void smtp_client_data(struct smtp_client *c, struct smtp_client_txn *txn,
                      const struct smtp_client_body *body)
{
    txn->body = *body;
    txn->body_set = txn->rcpts_closed = true;
    if (txn->phase == TX_WAIT_BODY)
        start_body(c, txn, true);
    kick(c);
}

void smtp_client_cancel(struct smtp_client *c, struct smtp_client_txn *txn)
{
    if (txn->phase == TX_WAIT_354 || txn->phase == TX_WAIT_BODY) {
        /* RFC 5321 4.1.1.4: inside the data only the final dot ends it; without it nothing
         * is delivered. */
        end_session(c, SMTP_CLIENT_END_ABORTED, "message abandoned after DATA");
        return;
    }
    if (txn->phase >= TX_BODY)
        return;   /* the data is on its way: its outcome comes with txn_done() */
    txn->cancelled = txn->rcpts_closed = true;
    kick(c);
}

void smtp_client_quit(struct smtp_client *c)
{
    c->quit_requested = true;
    if (c->state != ST_ENDING)
        kick(c);
}

void smtp_client_trace(struct smtp_client *c, void (*sent)(void *arg, const char *line),
                       void (*seen)(void *arg, const struct smtp_client_reply *reply))
{
    c->command_sent = sent;
    c->reply_seen = seen;
}

void smtp_client_quit_now(struct smtp_client *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->state != ST_READY || c->pumping != NULL || c->expect_count != 0 ||
        evbuffer_get_length(c->staged) != 0 || evbuffer_get_length(out) != 0 ||
        bufferevent_get_underlying(c->bev) != NULL)
        return;
    evbuffer_add(out, "QUIT\r\n", 6);
    (void)evbuffer_write(out, bufferevent_getfd(c->bev));
    c->state = ST_QUITTING;
}

void smtp_client_abort(struct smtp_client *c, const char *reason)
{
    end_session(c, SMTP_CLIENT_END_ABORTED, "%s", reason);
}

bool smtp_client_ended(const struct smtp_client *c)
{
    return c->state == ST_ENDING;
}

size_t smtp_client_pending(const struct smtp_client *c)
{
    size_t n = 0;
    for (const struct smtp_client_txn *t = c->head; t != NULL; t = t->next)
        n++;
    return n;
}

bool smtp_client_tls_active(const struct smtp_client *c)
{
    return c->tls_active;
}

const struct smtp_client_ext *smtp_client_extensions(const struct smtp_client *c)
{
    return &c->ext;
}

void smtp_client_free(struct smtp_client *c)
{
    if (c == NULL)
        return;
    if (c->bev != NULL)
        tls_bufferevent_close(c->bev);
    if (c->timer != NULL)
        event_free(c->timer);
    if (c->kick != NULL)
        event_free(c->kick);
    if (c->staged != NULL)
        evbuffer_free(c->staged);
    reply_reader_free(&c->reader);
    free(c->expects);
    free(c->helo_name);
    free(c);
}

const char *smtp_client_end_name(enum smtp_client_end how)
{
    static const char *const names[] = {
        [SMTP_CLIENT_END_QUIT] = "quit",         [SMTP_CLIENT_END_EOF] = "eof",
        [SMTP_CLIENT_END_TIMEOUT] = "timeout",   [SMTP_CLIENT_END_PROTOCOL] = "protocol",
        [SMTP_CLIENT_END_REFUSED] = "refused",   [SMTP_CLIENT_END_ERROR] = "error",
        [SMTP_CLIENT_END_ABORTED] = "aborted",
    };
    return (unsigned)how <= SMTP_CLIENT_END_ABORTED ? names[how] : "unknown";
}
