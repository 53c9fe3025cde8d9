/* SPDX-License-Identifier: ISC */
/* libFuzzer target: whole SMTP and LMTP server sessions (engines/smtp_server.c). The input is
 * what a client sends; it goes over a bufferevent pair into a session made by
 * smtp_server_adopt(), or over a socketpair into one made by smtp_server_accept() (the read
 * path of a real connection), line by line (the loop run to idle after each line) or in pieces. The
 * hooks play a small service: recipients in example.org/example.net accepted, full.example
 * 452, down.example 421, others 550 (synchronously, or asynchronously on a later loop turn like
 * odmr-client's relay); data counted; the end of data answered 250 or 452, synchronously or
 * from the loop; senders refuse@ and diskfull@ make data_begin and data_write fail.
 *   byte 0: LMTP, CHUNKING offered, async end of data, async RCPT, piece feed, small limits,
 *           server shutdown before the client's EOF, STARTTLS offered (and an extra EHLO line)
 *   byte 1: piece size (1-64; x128 over a socket: more than libevent's 4096-octet read, so
 *           read_more() takes the rest); 0x40: a socketpair and smtp_server_accept(); 0x80:
 *           the client's EOF follows its last byte at once, before the loop runs (a half-close
 *           while a hook's answer may still be pending)
 * Checks: no crash, leak or livelock; every reply line is RFC 5321 4.2 grammar (3 digits,
 * 2xx-5xx, SP or "-", text of HT and printable ASCII, CRLF, at most 512 octets, the same code
 * on every line of a reply); the greeting is 220; nothing follows a 221 or 421; at most one
 * final reply per line sent (LMTP: one per recipient after the data; plus a 421 that closes);
 * the hooks see only what the engine promises (RCPT checked inside a transaction, data only
 * between a data_begin that said yes and its data_end or data_abort, for a transaction with
 * recipients, never over max_message_size, no hook answer pending when the session is freed);
 * after the client's EOF the session is gone. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engines/smtp_server.h"
#include "fuzz_loop.h"
#include "fuzz_tmp.h"
#include "platform/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    F_LMTP = 1, F_CHUNKING = 2, F_ASYNC_END = 4, F_ASYNC_RCPT = 8, F_PIECES = 16, F_SMALL = 32,
    F_SHUTDOWN = 64, F_TLS = 128,
};

struct pending {                 /* a hook's answer, given from the loop */
    struct event *ev;
    struct smtp_session *s;
    bool armed, rcpt, pause;     /* pause: a service verb's held reply (AUTH's "wait") */
    struct smtp_reply reply;
};

struct replies {                 /* the client's view of what the server wrote */
    char line[1024];
    size_t len;
    int code;                    /* of the reply being read, 0 between replies */
    bool greeted, ended, tls;    /* ended: a 221 or 421 was read */
    unsigned finals;             /* final replies in this step, 421 not counted */
};

struct run {
    struct fuzz_loop loop;
    struct smtp_server *server;
    struct bufferevent *client;
    struct smtp_session *session;   /* NULL once freed; SESSION_UNSEEN until a hook sees it */
    int client_fd;                  /* socketpair mode: the client's end, else -1 */
    struct smtp_limits limits;
    unsigned flags, extra_finals;   /* LMTP replies after the data, this step */
    bool eof_sent;
    bool message_open;              /* data_begin said yes; no data_end/data_abort yet */
    uint64_t octets;
    struct pending pending;
    struct replies rp;
};

/* An accepted session (socketpair mode) is known to the target from its first hook call. */
static long unseen_session;
#define SESSION_UNSEEN ((struct smtp_session *)&unseen_session)

static void check_session(struct run *run, struct smtp_session *s)
{
    if (run->session == SESSION_UNSEEN)
        run->session = s;
    FUZZ_CHECK(s == run->session);
}

static SSL_CTX *tls_context(void)
{
    static SSL_CTX *ctx;
    const char *dir = fuzz_tmp_path("tls");
    char cert[128], key[128], err[256];
    if (ctx != NULL)
        return ctx;
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    if (tls_ensure_self_signed(cert, key, "mx.example", err, sizeof err) < 0 ||
        (ctx = tls_server_context(cert, key, NULL, err, sizeof err)) == NULL)
        __builtin_trap();
    return ctx;
}

/* ---- the hooks ---- */

static void rcpt_verdict(const char *domain, struct smtp_reply *reply)
{
    if (strcmp(domain, "example.org") == 0 || strcmp(domain, "example.net") == 0)
        reply_set(reply, 250, "2.1.5", "OK");
    else if (strcmp(domain, "full.example") == 0)
        reply_set(reply, 452, "4.2.2", "Mailbox full");
    else if (strcmp(domain, "down.example") == 0)
        reply_set(reply, 421, "4.3.0", "Target gone");
    else
        reply_set(reply, 550, "5.7.1", "Relay denied");
}

static void check_rcpt_allowed(struct run *run, struct smtp_session *s)
{
    const struct smtp_transaction *t = smtp_session_transaction(s);
    check_session(run, s);
    FUZZ_CHECK(!run->pending.armed && t->active && t->sender != NULL);
    FUZZ_CHECK(t->rcpt_count < run->limits.max_recipients);
}

static void hook_rcpt(void *ctx, struct smtp_session *s, const struct smtp_path_command *rcpt,
                      const char *domain, struct smtp_reply *reply)
{
    check_rcpt_allowed(ctx, s);
    rcpt_verdict(domain, reply);
}

static void answer_later(struct run *run, struct smtp_session *s, bool rcpt)
{
    run->pending.s = s;
    run->pending.rcpt = rcpt;
    run->pending.pause = false;
    run->pending.armed = true;
    event_active(run->pending.ev, EV_TIMEOUT, 0);
}

static void hook_rcpt_async(void *ctx, struct smtp_session *s,
                            const struct smtp_path_command *rcpt, const char *domain)
{
    struct run *run = ctx;
    check_rcpt_allowed(run, s);
    rcpt_verdict(domain, &run->pending.reply);
    answer_later(run, s, true);
}

static bool sender_is(const struct smtp_session *s, const char *prefix)
{
    return strncmp(smtp_session_transaction(s)->sender, prefix, strlen(prefix)) == 0;
}

static int hook_data_begin(void *ctx, struct smtp_session *s, struct smtp_reply *reply)
{
    struct run *run = ctx;
    const struct smtp_transaction *t = smtp_session_transaction(s);
    check_session(run, s);
    FUZZ_CHECK(t->active && t->rcpt_count > 0 && !run->pending.armed);
    run->octets = 0;
    if (!sender_is(s, "refuse@")) {
        run->message_open = true;
        return 0;
    }
    reply_set(reply, 554, "5.3.0", "No data today");
    return -1;
}

static int hook_data_write(void *ctx, struct smtp_session *s, const char *data, size_t len)
{
    struct run *run = ctx;
    run->octets += len;
    check_session(run, s);
    FUZZ_CHECK(run->message_open);   /* octets only for an open message */
    FUZZ_CHECK(len > 0 && run->octets <= run->limits.max_message_size);
    if (!sender_is(s, "diskfull@"))
        return 0;
    errno = ENOSPC;
    return -1;
}

/* A refused message is answered once per recipient in LMTP too (RFC 2033 4.2). */
static void hook_data_abort(void *ctx, struct smtp_session *s)
{
    struct run *run = ctx;
    run->message_open = false;
    if (run->flags & F_LMTP)
        run->extra_finals += (unsigned)smtp_session_transaction(s)->rcpt_count;
}

static void hook_data_end(void *ctx, struct smtp_session *s)
{
    struct run *run = ctx;
    const struct smtp_transaction *t = smtp_session_transaction(s);
    check_session(run, s);
    FUZZ_CHECK(t->rcpt_count > 0 && !run->pending.armed && run->message_open);
    run->message_open = false;
    if (run->flags & F_LMTP)
        run->extra_finals += (unsigned)t->rcpt_count - 1;
    struct smtp_reply *reply = &run->pending.reply;
    if (run->octets % 3 == 2)
        reply_set(reply, 452, "4.3.1", "Try again");
    else
        reply_set(reply, 250, "2.0.0", "Queued %llu octets", (unsigned long long)run->octets);
    if (run->flags & F_ASYNC_END)
        answer_later(run, s, false);
    else
        smtp_session_data_done(s, reply);
}

static void hook_closed(void *ctx, struct smtp_session *s)
{
    struct run *run = ctx;
    check_session(run, s);
    if (run->pending.armed && run->pending.pause) {   /* a held reply may be dropped */
        event_del(run->pending.ev);
        run->pending.armed = false;
    }
    FUZZ_CHECK(!run->pending.armed);
    run->session = NULL;
}

static void on_pending(evutil_socket_t fd, short what, void *arg)
{
    struct run *run = arg;
    struct pending *p = &run->pending;
    FUZZ_CHECK(p->armed && p->s == run->session);
    p->armed = false;
    if (p->pause) {
        if (!smtp_session_paused(p->s))
            return;   /* closing (shutdown): nothing after its 421 */
        reply_send(smtp_session_output(p->s), 535, "5.7.8", "Held reply");
        smtp_session_resume(p->s);
    } else if (p->rcpt)
        smtp_session_rcpt_done(p->s, &p->reply);
    else
        smtp_session_data_done(p->s, &p->reply);
}

/* ---- the client's side: every reply line checked ---- */

static void check_line(struct run *run, const char *l, size_t len)
{
    struct replies *rp = &run->rp;
    if (getenv("FUZZ_VERBOSE") != NULL)   /* to check where a seed goes */
        fprintf(stderr, "S: %.*s", (int)len, l);
    FUZZ_CHECK(!rp->ended);   /* nothing after 221 / 421 */
    FUZZ_CHECK(len >= 5 && len <= 512 && l[len - 2] == '\r' && l[len - 1] == '\n');
    FUZZ_CHECK(l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '5' && l[2] >= '0' &&
               l[2] <= '9');
    FUZZ_CHECK(len == 5 || l[3] == ' ' || l[3] == '-');
    for (size_t i = 4; i < len - 2; i++)
        FUZZ_CHECK(l[i] == '\t' || (l[i] >= 32 && l[i] <= 126));
    int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    FUZZ_CHECK(rp->code == 0 || rp->code == code);
    FUZZ_CHECK(rp->greeted || code == 220);
    if (len > 5 && l[3] == '-') {
        rp->code = code;
        return;
    }
    rp->code = 0;
    rp->ended = code == 221 || code == 421;
    rp->finals += code != 421;
    /* A 220 after the greeting is STARTTLS's: TLS records follow, not replies. */
    rp->tls = rp->greeted && code == 220;
    rp->greeted = true;
}

static void on_client_read(struct bufferevent *bev, void *arg)
{
    struct run *run = arg;
    struct replies *rp = &run->rp;
    struct evbuffer *in = bufferevent_get_input(bev);
    char c;
    while (!rp->tls && evbuffer_remove(in, &c, 1) == 1) {
        FUZZ_CHECK(rp->len < sizeof rp->line);
        rp->line[rp->len++] = c;
        if (c == '\n') {
            check_line(run, rp->line, rp->len);
            rp->len = 0;
        }
    }
    evbuffer_drain(in, evbuffer_get_length(in));
}

/* ---- the session ---- */

/* ---- service verbs: AUTH with continuation lines ("secret" succeeds, "*" cancels, "wait"
 * holds the reply until the loop's next turn, anything else asks for more), ATRN hands the
 * connection on (detach) ---- */

static void auth_line(void *ctx, struct smtp_session *s, const char *text)
{
    struct run *run = ctx;
    check_session(run, s);
    if (text != NULL && strcmp(text, "secret") == 0) {
        smtp_session_release_lines(s);
        smtp_session_set_authenticated(s);
        reply_send(smtp_session_output(s), 235, "2.7.0", "OK");
    } else if (text == NULL || strcmp(text, "*") == 0) {
        smtp_session_release_lines(s);
        reply_send(smtp_session_output(s), 501, "5.0.0", "Cancelled");
    } else if (strcmp(text, "wait") == 0 && !run->pending.armed) {
        smtp_session_release_lines(s);
        smtp_session_pause(s);
        answer_later(run, s, false);
        run->pending.pause = true;
    } else {
        reply_send(smtp_session_output(s), 334, NULL, "more");
    }
}

static void cmd_auth(void *ctx, struct smtp_session *s, const char *arg)
{
    check_session(ctx, s);
    FUZZ_CHECK(!smtp_session_authenticated(s) && smtp_session_esmtp(s));
    smtp_session_take_lines(s, auth_line, ctx, 128);
    reply_send(smtp_session_output(s), 334, NULL, "go on");
}

static void cmd_atrn(void *ctx, struct smtp_session *s, const char *arg)
{
    struct run *run = ctx;
    struct smtp_detached d;
    check_session(run, s);
    FUZZ_CHECK(!run->pending.armed && !run->message_open);
    reply_send(smtp_session_output(s), 250, "2.0.0", "Turning");
    FUZZ_CHECK(smtp_session_detach(s, &d) == 0 && d.bev != NULL);
    run->session = NULL;
    bufferevent_free(d.bev);
    smtp_server_detached_end(run->server, &d);
}

static const struct smtp_server_command service_verbs[] = {
    {"AUTH", SMTP_CMD_SMTP | SMTP_CMD_PRE_AUTH | SMTP_CMD_NOT_AFTER_AUTH | SMTP_CMD_NEEDS_ESMTP |
             SMTP_CMD_NO_TXN, cmd_auth},
    {"ATRN", SMTP_CMD_SMTP | SMTP_CMD_NO_TXN, cmd_atrn},
};

static const struct smtp_server_hooks hooks = {
    .check_rcpt = hook_rcpt, .data_begin = hook_data_begin, .data_write = hook_data_write,
    .data_abort = hook_data_abort, .data_end = hook_data_end, .session_closed = hook_closed,
};
static const struct smtp_server_hooks async_hooks = {
    .data_begin = hook_data_begin, .data_write = hook_data_write, .data_abort = hook_data_abort,
    .data_end = hook_data_end, .check_rcpt_async = hook_rcpt_async, .session_closed = hook_closed,
};

static struct smtp_server *server_new(struct run *run)
{
    static const char *const extra[] = {"X-ODMR-FAST", NULL};
    bool small = run->flags & F_SMALL;
    run->limits = (struct smtp_limits){
        .max_message_size = small ? 4096 : 1 << 20, .max_recipients = small ? 3 : 100,
        .max_line_length = 1000, .max_errors = small ? 5 : 20,
        .max_junk_commands = small ? 5 : 100, .command_timeout = 300, .data_timeout = 300,
        .min_data_rate = 500};
    struct smtp_server_settings set = {
        .mode = run->flags & F_LMTP ? SMTP_SERVER_LMTP : SMTP_SERVER_SMTP,
        .hostname = "mx.example", .role = "fuzz",
        .tls = run->flags & F_TLS ? tls_context() : NULL, .limits = run->limits,
        .hooks = run->flags & F_ASYNC_RCPT ? &async_hooks : &hooks, .hooks_ctx = run,
        .max_sessions = 4, .ehlo_extra = run->flags & F_TLS ? extra : NULL,
        .chunking = run->flags & F_CHUNKING};
    struct smtp_server *server = smtp_server_new(run->loop.base, &set);
    for (size_t i = 0; server && i < sizeof service_verbs / sizeof service_verbs[0]; i++)
        smtp_server_register(server, &service_verbs[i]);
    return server;
}

/* A real connection: a socketpair, smtp_server_accept(), the client's end read by a socket
 * bufferevent and written with send(). */
static bool connect_socket(struct run *run)
{
    int sv[2];
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    peer.sin_addr.s_addr = htonl(0xc0000201);   /* 192.0.2.1 */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return false;
    smtp_server_accept(run->server, sv[0], (struct sockaddr *)&peer, sizeof peer);
    run->client_fd = sv[1];
    run->client = bufferevent_socket_new(run->loop.base, sv[1], BEV_OPT_CLOSE_ON_FREE);
    if (run->client == NULL)
        close(sv[1]);
    run->session = smtp_server_session_count(run->server) == 1 ? SESSION_UNSEEN : NULL;
    return run->client != NULL && run->session != NULL;
}

static bool connect_pair(struct run *run)
{
    struct bufferevent *pair[2];
    if (!fuzz_pair(&run->loop, pair))
        return false;
    run->client = pair[1];
    run->session = smtp_server_adopt(run->server, pair[0], "192.0.2.1", false);
    if (run->session == NULL)
        bufferevent_free(pair[0]);
    return run->session != NULL;
}

static bool start(struct run *run, bool socket_mode)
{
    run->client_fd = -1;
    if (!fuzz_loop_init(&run->loop))
        return false;
    run->pending.ev = event_new(run->loop.base, -1, 0, on_pending, run);
    run->server = server_new(run);
    if (run->pending.ev == NULL || run->server == NULL ||
        !(socket_mode ? connect_socket(run) : connect_pair(run)))
        return false;
    bufferevent_setcb(run->client, on_client_read, NULL, NULL, run);
    bufferevent_enable(run->client, EV_READ | EV_WRITE);
    return true;
}

static void send_bytes(struct run *run, const uint8_t *data, size_t n)
{
    if (run->client_fd < 0) {
        bufferevent_write(run->client, data, n);
        return;
    }
    for (unsigned tries = 0; n > 0 && tries < 100; tries++) {
        ssize_t sent = send(run->client_fd, data, n, MSG_NOSIGNAL);
        if (sent > 0) {
            data += sent;
            n -= (size_t)sent;
        } else if (sent < 0 && errno == EAGAIN) {
            fuzz_loop_idle(&run->loop);   /* the socket is full: let the server read */
        } else {
            return;   /* the server closed its end */
        }
    }
}

static void send_eof(struct run *run)
{
    if (run->client_fd >= 0)
        shutdown(run->client_fd, SHUT_WR);
    else
        bufferevent_flush(run->client, EV_WRITE, BEV_FINISHED);
    run->eof_sent = true;
}

/* One piece of the client's stream (and its EOF when last), then the loop to idle; in line
 * mode the replies it caused are counted. */
static void step(struct run *run, const uint8_t *piece, size_t n, bool line_mode, bool last)
{
    run->rp.finals = 0;
    run->extra_finals = 0;
    send_bytes(run, piece, n);
    if (last)
        send_eof(run);
    fuzz_loop_idle(&run->loop);
    /* One reply per command; a BDAT chunk's end and the next command may share a line. */
    unsigned allowed = 1 + run->extra_finals + ((run->flags & F_CHUNKING) != 0);
    if (line_mode && !run->rp.tls)
        FUZZ_CHECK(run->rp.finals <= allowed);
}

static void on_idle(void *arg)
{
}

static void finish(struct run *run)
{
    if (run->session != NULL && (run->flags & F_SHUTDOWN)) {
        smtp_server_shutdown(run->server, on_idle, run);
        fuzz_loop_idle(&run->loop);
    }
    if (run->session != NULL && !run->eof_sent) {
        send_eof(run);
        fuzz_loop_idle(&run->loop);
    }
    FUZZ_CHECK(run->session == NULL && !run->pending.armed);
    FUZZ_CHECK(smtp_server_session_count(run->server) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct run run;
    if (size < 2)
        return 0;
    memset(&run, 0, sizeof run);
    run.flags = data[0];
    if (start(&run, data[1] & 0x40)) {
        fuzz_loop_idle(&run.loop);   /* the greeting */
        bool line_mode = !(run.flags & F_PIECES), early_eof = data[1] & 0x80;
        for (size_t off = 2; off < size && run.session != NULL;) {
            size_t piece = (1 + (data[1] & 0x3f)) * (run.client_fd >= 0 ? 128 : 1);
            size_t n = fuzz_next_piece(data, size, off, line_mode, piece);
            off += n;
            step(&run, data + off - n, n, line_mode, early_eof && off == size);
        }
        finish(&run);
    }
    if (run.server != NULL)
        smtp_server_free(run.server);
    if (run.client != NULL)
        bufferevent_free(run.client);
    if (run.pending.ev != NULL)
        event_free(run.pending.ev);
    if (run.loop.base != NULL)
        fuzz_loop_idle(&run.loop);
    fuzz_loop_free(&run.loop);
    return 0;
}
