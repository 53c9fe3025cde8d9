/* SPDX-License-Identifier: ISC */
/* The SMTP / LMTP client engine (RFC 5321, RFC 2033), asynchronous over a libevent bufferevent.
 * It knows nothing about the queue: the caller hands it transactions (MAIL FROM + params, RCPTs +
 * params, a body source) and gets every reply back. Used by the reversed ODMR session (push),
 * the notice relay (services/notice_relay.c), later odmr-client's hand-off to the local MTA.
 *
 * Life cycle: smtp_client_new() takes the bufferevent, waits for the greeting, sends EHLO (LHLO
 * for LMTP; HELO when EHLO gets a 5xx) and calls ready(). The caller then queues transactions
 * with smtp_client_send(); each one ends with txn_done(). smtp_client_quit() sends QUIT after the
 * queued transactions. closed() is called exactly once at the end (QUIT answered, EOF, timeout,
 * protocol error, smtp_client_abort()); only after it may the caller smtp_client_free(). A
 * transaction cut short by the end gets txn_done() first, with the replies it did receive.
 * No callback is ever called from inside an smtp_client_* call.
 *
 * Incremental transactions (what odmr-client's relay needs to pass every verdict back as it
 * comes; Dovecot's smtp_client_transaction_add_rcpt() is the model): smtp_client_open() queues
 * a transaction whose recipients and body are not all known yet, smtp_client_add_rcpt() adds a
 * recipient (sent at once with PIPELINING, else after the reply before it), and rcpt_done() of
 * the transaction reports each recipient once its verdict is known: its RCPT reply, or code 0
 * when it was not sent (MAIL refused: mail_reply says why; the session ended).
 * smtp_client_rcpts_done() closes the recipient list (with PIPELINING and without CHUNKING the
 * DATA goes at once, RFC 2920 3.1, and its 354 waits for the body); smtp_client_data() gives
 * the body; txn_done() follows as for smtp_client_send(), which is open + every recipient +
 * data in one call. smtp_client_cancel() abandons an open transaction (RSET, RFC 5321 4.1.1.5;
 * or the connection is dropped when the server already waits for the message data). */
#ifndef ODMR_ENGINES_SMTP_CLIENT_H
#define ODMR_ENGINES_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "lib/reply.h"

struct bufferevent;
struct event_base;
struct evbuffer;
struct smtp_client;

enum smtp_client_flag {
    SMTP_CLIENT_LMTP = 1 << 0,           /* LHLO, and one reply per accepted RCPT after data */
    SMTP_CLIENT_USE_PIPELINING = 1 << 1, /* RFC 2920, when advertised */
    SMTP_CLIENT_USE_CHUNKING = 1 << 2,   /* RFC 3030 BDAT, when advertised */
    SMTP_CLIENT_LINE_PER_WRITE = 1 << 3, /* one line per write, each drained before the next
                                            (over TLS: one line per TLS record) */
    SMTP_CLIENT_FAST_ON_REQUEST = 1 << 4, /* the server advertises X-ODMR-FAST (odmr-client):
                                            drop LINE_PER_WRITE, use PIPELINING and CHUNKING
                                            when advertised (docs/client.md) */
    SMTP_CLIENT_STRICT_CRLF = 1 << 5,    /* replies must end in CRLF (RFC 5321 2.3.8); without
                                            it a bare LF is tolerated (docs/push.md) */
    SMTP_CLIENT_STARTTLS = 1 << 6,       /* RFC 3207: STARTTLS when advertised (tls_ctx); if
                                            refused, go on in clear (opportunistic, RFC 7435) */
    SMTP_CLIENT_STARTTLS_REQUIRED = 1 << 7, /* STARTTLS or nothing: not advertised, refused or
                                            failed ends the session before MAIL */
};

struct smtp_client_timeouts {   /* seconds; RFC 5321 4.5.3.2 */
    time_t greeting, command, data_init, data_block, data_end;
};

/* What the server advertised in its EHLO reply. */
struct smtp_client_ext {
    bool esmtp;                 /* EHLO/LHLO was accepted (false after the HELO fallback) */
    bool pipelining, eightbitmime, smtputf8, dsn, chunking, binarymime, starttls,
        enhancedstatuscodes, size;
    bool odmr_fast;             /* X-ODMR-FAST: our own customer program asks for the fast
                                   reversed-session profile */
    uint64_t size_max;          /* SIZE n; 0 = no limit given */
};

/* struct smtp_client_reply: lib/reply.h (the one reply type of every client side); reply
 * bounds (line length, lines per reply): lib/reply_reader.h */

/* Message octets: CRLF lines, not dot-stuffed (the engine stuffs for DATA). Either an fd read
 * with pread() from offset, or a read callback; length is required either way (BDAT). */
struct smtp_client_body {
    int fd;                     /* -1 when read is used */
    off_t offset;
    uint64_t length;
    ssize_t (*read)(void *arg, void *buf, size_t len);   /* bytes, 0 at the end, -1 error */
    void *read_arg;
};

struct smtp_client_rcpt {
    const char *address;        /* forward-path without brackets */
    const char *params;         /* " NOTIFY=..." (leading space) or NULL */
    struct smtp_client_reply reply;        /* RCPT reply; code 0 = not sent */
    struct smtp_client_reply data_reply;   /* reply after the data: the same for every
                                              accepted RCPT with SMTP, its own with LMTP */
};

struct smtp_client_txn {
    const char *mail_from;      /* reverse-path without brackets, "" for <> */
    const char *mail_params;    /* " SIZE=... BODY=..." (leading space) or NULL */
    struct smtp_client_rcpt *rcpts;
    size_t rcpt_count;
    struct smtp_client_body body;
    void *user;                 /* for the caller */
    /* incremental use: called once per recipient, in order, when its verdict is known */
    void (*rcpt_done)(void *user, struct smtp_client_txn *txn, size_t index);
    /* results */
    struct smtp_client_reply mail_reply;
    struct smtp_client_reply data_reply;   /* 354 to DATA, or the 5xx/4xx refusing it */
    size_t accepted;            /* RCPTs answered 2xx */
    bool data_sent;             /* the final dot / BDAT LAST went out: an unanswered one means
                                   the outcome is unknown */
    /* engine-private */
    struct smtp_client_txn *next;
    size_t rcpts_written, rcpts_reported, replies_pending, data_replies;
    bool stop_rcpts, body_done, rcpts_closed, body_set, cancelled, incremental;
    int phase;
};

enum smtp_client_end {
    SMTP_CLIENT_END_QUIT,       /* our QUIT was answered (or EOF after it) */
    SMTP_CLIENT_END_EOF,        /* the server closed the connection */
    SMTP_CLIENT_END_TIMEOUT,
    SMTP_CLIENT_END_PROTOCOL,   /* malformed, over-long or unexpected reply */
    SMTP_CLIENT_END_REFUSED,    /* greeting not 2xx, or EHLO and HELO refused */
    SMTP_CLIENT_END_ERROR,      /* socket/TLS error, body read error, out of memory */
    SMTP_CLIENT_END_ABORTED,    /* smtp_client_abort() */
};

struct smtp_client_callbacks {
    void (*ready)(void *arg, const struct smtp_client_ext *ext,
                  const struct smtp_client_reply *greeting);
    void (*txn_done)(void *arg, struct smtp_client_txn *txn);
    void (*closed)(void *arg, enum smtp_client_end how, const char *reason);
};

struct smtp_client_config {
    const char *helo_name;
    unsigned flags;             /* enum smtp_client_flag */
    struct smtp_client_timeouts timeouts;
    const char *log_id;         /* session id for debug logs, or NULL */
    struct ssl_ctx_st *tls_ctx; /* for STARTTLS: the caller's context decides verification */
    const char *tls_name;       /* SNI and the name the certificate must carry, or NULL */
};

/* Takes ownership of bev (freed by smtp_client_free). NULL on out of memory (bev not freed). */
struct smtp_client *smtp_client_new(struct event_base *base, struct bufferevent *bev,
                                    const struct smtp_client_config *cfg,
                                    const struct smtp_client_callbacks *cb, void *arg);
/* Optional, for logs: sent(arg) gets every command line as it is written (without its CRLF),
 * seen(arg) every reply as it is read. */
void smtp_client_trace(struct smtp_client *c, void (*sent)(void *arg, const char *line),
                       void (*seen)(void *arg, const struct smtp_client_reply *reply));
/* Queues a transaction (caller-owned until its txn_done). 0, or -1 after quit/close. */
int smtp_client_send(struct smtp_client *c, struct smtp_client_txn *txn);
/* Incremental: queues txn with the txn->rcpt_count recipients it holds so far (maybe none). */
int smtp_client_open(struct smtp_client *c, struct smtp_client_txn *txn);
/* Sends the recipient the caller put at txn->rcpts[txn->rcpt_count - 1]. 0, or -1 when the
 * recipient list is closed (its rcpt_done() still comes, with code 0). */
int smtp_client_add_rcpt(struct smtp_client *c, struct smtp_client_txn *txn);
/* No more recipients. */
void smtp_client_rcpts_done(struct smtp_client *c, struct smtp_client_txn *txn);
/* The body (closes the recipient list). */
void smtp_client_data(struct smtp_client *c, struct smtp_client_txn *txn,
                      const struct smtp_client_body *body);
/* Abandons an open transaction before its data: RSET; when the server already waits for the
 * data (DATA sent), the session is aborted instead (no dot: nothing is delivered). */
void smtp_client_cancel(struct smtp_client *c, struct smtp_client_txn *txn);

/* RFC 5321 4.5.2 dot-stuffing of message data, the only one in the tree: a line starting with
 * "." gets another "." in front, whatever the pieces the data comes in. */
struct smtp_dot_stuffer {
    bool at_line_start;      /* the next octet starts a line (the data so far is empty or
                                ends with LF) */
};
void smtp_dot_stuff_begin(struct smtp_dot_stuffer *s);
void smtp_dot_stuff(struct smtp_dot_stuffer *s, struct evbuffer *out, const char *buf,
                    size_t len);
/* RFC 5321 4.1.1.4: CRLF . CRLF ends the data; a CRLF is added first when the data lacks it. */
void smtp_dot_stuff_end(struct smtp_dot_stuffer *s, struct evbuffer *out);

/* Sends QUIT once every queued transaction is done. */
void smtp_client_quit(struct smtp_client *c);
/* QUIT written at once when no reply is awaited (a transaction still open ends with the
 * session), without waiting for its reply: the caller's loop is over (best effort, plain
 * sockets only). */
void smtp_client_quit_now(struct smtp_client *c);
/* Ends now without QUIT (closed() follows from the loop). */
void smtp_client_abort(struct smtp_client *c, const char *reason);
/* True once the session is ending (closed() is on its way): send() would fail. */
bool smtp_client_ended(const struct smtp_client *c);
/* Transactions queued or in flight. */
size_t smtp_client_pending(const struct smtp_client *c);
const struct smtp_client_ext *smtp_client_extensions(const struct smtp_client *c);
/* STARTTLS done: the session runs over TLS. */
bool smtp_client_tls_active(const struct smtp_client *c);
void smtp_client_free(struct smtp_client *c);

const char *smtp_client_end_name(enum smtp_client_end how);

#endif
