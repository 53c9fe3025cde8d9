/* SPDX-License-Identifier: ISC */
/* The SMTP/LMTP server engine (RFC 5321, RFC 2033): one per listening role. It owns the
 * connection, the line reader, the command table with its flags and the limits; the service
 * using it (intake, odmr-client's receiving side) decides recipients and where message data
 * goes, through hooks; a service without mail transactions (the ODMR port) registers its own
 * verbs (AUTH, ATRN) and may detach the connection to hand it on (docs/architecture.md). */
#ifndef ODMR_ENGINES_SMTP_SERVER_H
#define ODMR_ENGINES_SMTP_SERVER_H

#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "lib/peer_count.h"
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

/* Command flags, checked in one place before any handler runs (smtp_server_cmds.c
 * command_allowed()), in this order; the first rule that fails answers. */
enum smtp_command_flag {
    SMTP_CMD_SMTP = 1 << 0,           /* allowed on an SMTP server (else 500 5.5.1) */
    SMTP_CMD_LMTP = 1 << 1,           /* allowed on an LMTP server (else 500 5.5.1) */
    SMTP_CMD_MAIL_SERVICE = 1 << 2,   /* mail service: 502 5.5.1 on a server without hooks */
    SMTP_CMD_PRE_TLS = 1 << 3,        /* allowed before STARTTLS when require_tls (else 530) */
    SMTP_CMD_NOT_AFTER_AUTH = 1 << 4, /* refused once authenticated (503 5.5.1) */
    SMTP_CMD_PRE_AUTH = 1 << 5,       /* allowed before AUTH when require_auth (else 530) */
    SMTP_CMD_PRE_GREETING = 1 << 6,   /* allowed before EHLO/HELO/LHLO (else 503 5.5.1) */
    SMTP_CMD_NEEDS_ESMTP = 1 << 7,    /* an ESMTP extension's verb: not after HELO (503) */
    SMTP_CMD_NO_TXN = 1 << 8,         /* not inside a mail transaction (503) */
    SMTP_CMD_NEEDS_MAIL = 1 << 9,     /* only after MAIL (503) */
    SMTP_CMD_NEEDS_RCPT = 1 << 10,    /* only after an accepted RCPT (503) */
    SMTP_CMD_JUNK = 1 << 11,          /* counts toward max_junk_commands */
    SMTP_CMD_IF_TLS = 1 << 12,        /* only when the server has TLS (else 502 5.5.1) */
    SMTP_CMD_IF_CHUNKING = 1 << 13,   /* only when CHUNKING is offered (else 502 5.5.1) */
};

/* A verb a service adds to the table (AUTH, ATRN). The engine checks flags first. */
typedef void (*smtp_command_fn)(void *ctx, struct smtp_session *s, const char *arg);
struct smtp_server_command {
    const char *verb;
    unsigned flags;
    smtp_command_fn handler;
};

/* A line taken by a service (smtp_session_take_lines): an AUTH exchange's responses. text is
 * NULL when the line was over the limit (it was skipped). */
typedef void (*smtp_line_fn)(void *ctx, struct smtp_session *s, const char *text);

/* A connection handed on by smtp_session_detach(): the caller owns bev (callbacks cleared,
 * no timeouts; its output buffer may still hold the detaching command's reply); octets the client sent after the detaching
 * command are still in bev's input buffer, none was taken. The session's slot (max_sessions,
 * the peer's count) stays taken until smtp_server_detached_end(peer_key). */
struct smtp_detached {
    struct bufferevent *bev;
    bool tls_active;
    char id[24];                 /* the session's, for its end line */
    char peer_key[PEER_KEY_MAX];
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
    /* Optional: EHLO keywords of the service's own verbs (AUTH ..., ATRN), at most max lines
     * of at most 200 octets in lines[i]; returns how many. */
    size_t (*ehlo_keywords)(void *ctx, struct smtp_session *s, char lines[][200], size_t max);
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
    /* No mail transactions (the ODMR port): MAIL, RCPT, DATA, BDAT, VRFY, EXPN, HELP are
     * 502 and only ENHANCEDSTATUSCODES, STARTTLS and ehlo_keywords are advertised. */
    bool no_mail;
    bool require_tls;            /* verbs without SMTP_CMD_PRE_TLS need STARTTLS first */
    bool require_auth;           /* verbs without SMTP_CMD_PRE_AUTH need AUTH first */
    /* Optional: sessions per address not yet authenticated, over the limit 421 4.7.0. */
    struct peer_count *unauthenticated;
    unsigned max_unauthenticated_per_address;
    const char *greeting;        /* the 220 text after the hostname; NULL: "ESMTP odmrd" */
    const char *log_prefix;      /* NULL: "session" (session.start, session.end ...) */
    char id_letter;              /* of session ids; 0: 'S' (SMTP) or 'L' (LMTP) */
};

enum { SMTP_SERVER_EHLO_EXTRA_MAX = 4 };

struct smtp_server;

struct smtp_server *smtp_server_new(struct event_base *base,
                                    const struct smtp_server_settings *settings);
/* Adds a service verb to the table (REGISTERED_MAX of them); 0, or -1 when full. */
int smtp_server_register(struct smtp_server *server, const struct smtp_server_command *cmd);
/* Takes ownership of fd (a new connection). */
void smtp_server_accept(struct smtp_server *server, evutil_socket_t fd,
                        const struct sockaddr *peer, int peer_len);
/* The same on an implicit-TLS port: the handshake comes first (a refused client is closed
 * without a reply: nothing can be said before a handshake). */
void smtp_server_accept_tls(struct smtp_server *server, evutil_socket_t fd,
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
/* Sessions, detached connections included. */
size_t smtp_server_session_count(const struct smtp_server *server);
/* A detached connection has ended: its slot and its peer's count are free again, and the
 * session's end is logged. */
void smtp_server_detached_end(struct smtp_server *server, const struct smtp_detached *d);
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

/* For service verbs. */
struct evbuffer *smtp_session_output(struct smtp_session *s);
/* An error reply: sent and counted toward max_errors (at the limit 421 and close). */
void smtp_session_error(struct smtp_session *s, int code, const char *enhanced,
                        const char *text);
/* Closes once what is queued has been sent (by the server: a protocol error). */
void smtp_session_close(struct smtp_session *s);
bool smtp_session_tls_active(const struct smtp_session *s);
struct bufferevent *smtp_session_bev(struct smtp_session *s);
bool smtp_session_authenticated(const struct smtp_session *s);
bool smtp_session_esmtp(const struct smtp_session *s);
/* AUTH succeeded: SMTP_CMD_PRE_AUTH no longer applies, the session leaves the
 * unauthenticated count. */
void smtp_session_set_authenticated(struct smtp_session *s);
/* Octets received and not yet taken (a pipelining check before a turnaround). */
bool smtp_session_input_pending(const struct smtp_session *s);
/* Every following line goes to fn (lines up to max_len octets) instead of being a command,
 * until smtp_session_release_lines(): SASL continuation lines (RFC 4954 4). */
void smtp_session_take_lines(struct smtp_session *s, smtp_line_fn fn, void *ctx,
                             size_t max_len);
void smtp_session_release_lines(struct smtp_session *s);
/* Holds the session (no reading, no command deadline: the service owes a reply, e.g. after an
 * AUTH failure's delay) until smtp_session_resume(). The session may still end meanwhile (the
 * client leaves, shutdown): session_closed tells the service. */
void smtp_session_pause(struct smtp_session *s);
void smtp_session_resume(struct smtp_session *s);
/* Still paused: false once the session began to close (shutdown's 421, a timeout) while the
 * reply was held; the held reply must then not be written. */
bool smtp_session_paused(const struct smtp_session *s);
/* From a command handler only: hands the connection on (struct smtp_detached) and ends the
 * session without a reply and without session_closed. 0, or -1 (nothing changed). */
int smtp_session_detach(struct smtp_session *s, struct smtp_detached *out);

#endif
