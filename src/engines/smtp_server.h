/* SPDX-License-Identifier: ISC */
/* The SMTP/LMTP server engine (RFC 5321, RFC 2033): one per listening role. It owns the
 * connection, the line reader, the command table and the limits; the service using it
 * (intake, later the customer side of a reversed ODMR session) decides recipients and
 * where message data goes, through hooks. */
#ifndef ODMR_ENGINES_SMTP_SERVER_H
#define ODMR_ENGINES_SMTP_SERVER_H

#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "lib/reply.h"
#include "lib/smtp_grammar.h"

struct smtp_session;
struct bufferevent;
struct peer_count;

enum smtp_server_mode { SMTP_SERVER_SMTP, SMTP_SERVER_LMTP };
enum smtp_body_type { SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

struct smtp_limits {
    uint64_t max_message_size;
    unsigned max_recipients;
    unsigned max_line_length;   /* DATA text line including CRLF */
    unsigned max_errors;
    unsigned max_junk_commands;
    time_t command_timeout;     /* a whole command line (RFC 5321 4.5.3.2.7), not per octet */
    time_t data_timeout;        /* DATA/BDAT: per block of data (inactivity) ... */
    unsigned min_data_rate;     /* ... and the whole message within data_timeout + octets /
                                 * min_data_rate seconds; 0: no whole-message deadline */
    time_t tls_handshake_timeout;   /* STARTTLS handshake; 0: command_timeout */
};

struct smtp_txn_rcpt {
    char *address;      /* local@domain as received (no brackets) */
    char *domain;       /* lower-case */
    char *notify;       /* RFC 3461 NOTIFY or NULL */
    char *orcpt;        /* RFC 3461 ORCPT or NULL */
};

struct smtp_transaction {
    bool active;                 /* MAIL accepted */
    char *sender;                /* "" for <> */
    enum smtp_body_type body;
    bool smtputf8;
    char *ret;                   /* RFC 3461 RET or NULL */
    char *envid;                 /* RFC 3461 ENVID or NULL */
    uint64_t declared_size;
    struct smtp_txn_rcpt *rcpts;
    size_t rcpt_count;
    size_t rcpt_capacity;
};

struct smtp_server_hooks {
    /* RCPT policy. Leave reply->code 0 (or set 250) to accept. */
    void (*check_rcpt)(void *ctx, struct smtp_session *s, const struct smtp_path_command *rcpt,
                       const char *domain_lower, struct smtp_reply *reply);
    /* DATA: prepare to store a message. Return 0 to answer 354, else set reply. */
    int (*data_begin)(void *ctx, struct smtp_session *s, struct smtp_reply *reply);
    /* Message octets (CRLF, unstuffed). Return -1 on a storage error (errno set). */
    int (*data_write)(void *ctx, struct smtp_session *s, const char *data, size_t len);
    /* Optional. The message is rejected or the session ended: drop what was stored. */
    void (*data_abort)(void *ctx, struct smtp_session *s);
    /* Final dot seen and the message is good: make it durable, then call
     * smtp_session_data_done() (now or later, from the event loop). */
    void (*data_end)(void *ctx, struct smtp_session *s);
    /* Optional, used instead of check_rcpt when set: the verdict on a recipient comes later.
     * The session stops reading until the service calls smtp_session_rcpt_done() (now or
     * later, from the event loop) with the reply to send: 2xx accepts the recipient, anything
     * else refuses it (odmr-client relays RCPT to its local MTA and answers with its reply). */
    void (*check_rcpt_async)(void *ctx, struct smtp_session *s,
                             const struct smtp_path_command *rcpt, const char *domain_lower);
    /* Optional: the service's word on MAIL, after its parameters were taken (the transaction
     * holds SIZE). Leave reply->code 0 (or 2xx) to accept; anything else refuses MAIL. */
    void (*check_mail)(void *ctx, struct smtp_session *s, struct smtp_reply *reply);
    /* Optional: the session is about to be freed (QUIT, EOF, timeout, error). A reply of 421
     * from any hook (RFC 5321 3.8) closes the session once it has been sent. */
    void (*session_closed)(void *ctx, struct smtp_session *s);
};

struct smtp_server_settings {
    enum smtp_server_mode mode;
    const char *hostname;
    const char *role;            /* for logs: "smtp", "lmtp" */
    SSL_CTX *tls;                /* STARTTLS offered when set (SMTP mode only) */
    struct smtp_limits limits;
    const struct smtp_server_hooks *hooks;
    void *hooks_ctx;
    unsigned max_sessions;
    /* Optional: sessions per client address (platform/listen.h listen_peer_key), shared with
     * other servers; over max_sessions_per_address a new connection gets 421 4.7.0. */
    struct peer_count *peers;
    unsigned max_sessions_per_address;
    /* Optional NULL-terminated list of extra EHLO keywords (e.g. "X-ODMR-FAST"), at most
     * SMTP_SERVER_EHLO_EXTRA_MAX of them. */
    const char *const *ehlo_extra;
    bool chunking;               /* offer CHUNKING (RFC 3030 BDAT) */
    bool no_dsn;                 /* leave DSN out of the EHLO reply (odmr-client toward a
                                    target without DSN: RFC 3461 5.2.2, the provider then
                                    writes the relayed notices) */
};

enum { SMTP_SERVER_EHLO_EXTRA_MAX = 4 };

struct smtp_server;

struct smtp_server *smtp_server_new(struct event_base *base,
                                    const struct smtp_server_settings *settings);
/* Takes ownership of fd (a new connection). */
void smtp_server_accept(struct smtp_server *server, evutil_socket_t fd,
                        const struct sockaddr *peer, int peer_len);
/* Takes ownership of an established connection (plain or TLS) and serves SMTP on it: sends
 * the 220 greeting at once. The customer side of a reversed ODMR session (RFC 2645 5.3) uses
 * this on the connection it opened. tls_active: the connection is already TLS. NULL on error
 * (bev not freed). */
struct smtp_session *smtp_server_adopt(struct smtp_server *server, struct bufferevent *bev,
                                       const char *peer, bool tls_active);
/* Graceful stop: idle sessions get 421 and close; a session inside DATA gets 421 and its
 * message is dropped; a session waiting for a commit finishes it first. on_idle runs once no
 * session is left. */
void smtp_server_shutdown(struct smtp_server *server, void (*on_idle)(void *), void *arg);
size_t smtp_server_session_count(const struct smtp_server *server);
void smtp_server_free(struct smtp_server *server);

/* For hooks. */
const struct smtp_transaction *smtp_session_transaction(const struct smtp_session *s);
const char *smtp_session_id(const struct smtp_session *s);
const char *smtp_session_peer(const struct smtp_session *s);
const char *smtp_session_helo(const struct smtp_session *s);
const char *smtp_session_protocol(const struct smtp_session *s);   /* "ESMTPS", "LMTP" ... */
void *smtp_session_user(const struct smtp_session *s);
void smtp_session_set_user(struct smtp_session *s, void *user);
/* True when the server ended the session itself (error or junk limit, timeout, protocol error,
 * shutdown, a hook's 421), false after QUIT or when the client closed the connection; for
 * session_closed hooks. */
bool smtp_session_closed_by_server(const struct smtp_session *s);
/* True when the client ended its input while a mail transaction was open and sent no QUIT:
 * the transaction's last reply is still written, but may never have reached it. */
bool smtp_session_left_mid_transaction(const struct smtp_session *s);
/* The outcome of data_end: reply is sent (once per recipient in LMTP). */
void smtp_session_data_done(struct smtp_session *s, const struct smtp_reply *reply);
/* Does the next command already buffered start with DATA or BDAT (a peek, nothing is taken)?
 * check_rcpt_async may then pipeline its own DATA behind the RCPT it relays (RFC 2920). */
bool smtp_session_data_follows(const struct smtp_session *s);
/* The verdict of check_rcpt_async: 2xx accepts the recipient; the reply is sent as given. */
void smtp_session_rcpt_done(struct smtp_session *s, const struct smtp_reply *reply);

#endif
