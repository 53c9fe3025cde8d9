/* SPDX-License-Identifier: ISC */
/* The SMTP server engine's own declarations, shared by its three files and nothing else:
 * smtp_server.c (sessions, I/O, deadlines, detach), smtp_server_cmds.c (the command table, its
 * flags and the command handlers), smtp_server_data.c (DATA and BDAT message octets). */
#ifndef ODMR_ENGINES_SMTP_SERVER_INTERNAL_H
#define ODMR_ENGINES_SMTP_SERVER_INTERNAL_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "engines/smtp_server.h"
#include "lib/linereader.h"
#include "lib/peer_count.h"
#include "platform/deadline.h"
#include "platform/listen.h"

/* RFC 5321 4.5.3.1.4: command line at most 512 octets including CRLF. OUTPUT_HIGH_WATER: a
 * client that sends commands without reading the replies is read no further until they have
 * left (no command, not even EHLO, can make the replies pile up). */
enum { COMMAND_LINE_MAX = 512, STAGE_SIZE = 32768, INPUT_HIGH_WATER = 256 * 1024,
       OUTPUT_HIGH_WATER = 64 * 1024, CLOSE_FLUSH_MAX = 30 /* seconds for the last reply */,
       READ_MORE = 64 * 1024, REGISTERED_MAX = 8,
       EVBUFFER_READ_CAP = 4096 /* libevent 2.1's EVBUFFER_MAX_READ: most one read takes */ };

enum session_state {
    STATE_GREETING,     /* before EHLO/HELO/LHLO */
    STATE_READY,        /* after EHLO, no transaction */
    STATE_MAIL,         /* MAIL accepted */
    STATE_RCPT,         /* at least one RCPT accepted */
    STATE_DATA,         /* receiving message octets */
    STATE_COMMITTING,   /* final dot seen, waiting for the store */
    STATE_CLOSING,      /* flushing the last reply */
    STATE_RCPT_WAIT,    /* check_rcpt_async under way: not reading */
    STATE_CHUNK,        /* reading the octets of a BDAT chunk (RFC 3030) */
    STATE_PAUSED,       /* a service verb holds its reply back (smtp_session_pause) */
    STATE_DETACHED,     /* the connection was handed on (smtp_session_detach) */
};

/* Log events, with the server's prefix ("session", "odmr"). */
enum session_event { SEV_START, SEV_END, SEV_TIMEOUT, SEV_REFUSED, SEV_COUNT };

struct smtp_server {
    struct event_base *base;
    struct smtp_server_settings settings;
    struct smtp_server_command registered[REGISTERED_MAX];
    size_t registered_count;
    char events[SEV_COUNT][32];
    struct smtp_session *sessions;   /* doubly linked */
    size_t session_count;
    size_t detached_count;           /* handed on, still counted (smtp_server_detached_end) */
    unsigned long next_id;
    bool shutting_down;
    void (*on_idle)(void *);
    void *on_idle_arg;
};

struct data_state {
    uint64_t octets;
    bool previous_line_crlf;   /* the line before ended with CRLF (end of data needs it) */
    bool bad_line_ending;      /* bare LF or CR seen: RFC 5321 2.3.8, rejected */
    bool too_big;
    bool line_too_long;
    int storage_errno;
    uint64_t chunk_left;       /* BDAT: octets of the current chunk still to read */
    struct smtp_reply refusal; /* BDAT refused: sent once the chunk has been read */
    bool chunk_last;           /* BDAT ... LAST */
    size_t staged;
    char stage[STAGE_SIZE];
};

struct smtp_session {
    struct smtp_server *server;
    struct smtp_session *prev, *next;
    struct bufferevent *bev;
    struct line_reader reader;
    enum session_state state;
    enum session_state paused_from;   /* STATE_PAUSED: the state to go back to */
    char id[24];
    char peer[64];
    char helo[SMTP_DOMAIN_MAX + 1];
    bool esmtp;
    bool tls_active;
    bool authenticated;      /* smtp_session_set_authenticated() */
    bool unauthenticated_counted;   /* counted in settings.unauthenticated */
    bool peer_gone;          /* the connection failed while a hook worked */
    bool processing;         /* process_input() is on the stack (a hook may answer inside it) */
    bool free_deferred;      /* freed while processing: process_input() frees it on return */
    bool input_ended;        /* the client ended its sending side (FIN, close_notify) */
    bool ended_in_txn;       /* ... while a mail transaction was open */
    bool quit_received;
    bool closed_by_server;   /* we ended it: limits, timeout, protocol error, a hook's 421 */
    bool close_after_reply;  /* a hook answered 421 (RFC 5321 3.8): close once it is sent */
    bool output_blocked;     /* input waits until the replies have drained */
    struct event *send_event;   /* plain socket: replies are written by send_replies() */
    struct evbuffer_cb_entry *output_watch;   /* ... which this schedules as replies come */
    struct deadline deadline;   /* per command, message, TLS handshake; the closing flush */
    char peer_key[PEER_KEY_MAX];   /* counted in settings.peers; "" = not counted */
    unsigned errors;
    unsigned junk_commands;
    struct smtp_transaction txn;
    struct data_state *data;
    void *user;
    struct smtp_txn_rcpt pending_rcpt;   /* waiting for smtp_session_rcpt_done() */
    smtp_line_fn line_taker;             /* smtp_session_take_lines(): lines go there */
    void *line_taker_ctx;
};

static inline struct evbuffer *output(struct smtp_session *s)
{
    return bufferevent_get_output(s->bev);
}

static inline const struct smtp_limits *limits(const struct smtp_session *s)
{
    return &s->server->settings.limits;
}

static inline const struct smtp_server_hooks *hooks(const struct smtp_session *s)
{
    return s->server->settings.hooks;
}

static inline void *hooks_ctx(const struct smtp_session *s)
{
    return s->server->settings.hooks_ctx;
}

static inline bool is_lmtp(const struct smtp_session *s)
{
    return s->server->settings.mode == SMTP_SERVER_LMTP;
}

/* smtp_server.c */
void enter_state(struct smtp_session *s, enum session_state next);
void set_io_timeouts(struct smtp_session *s, bool data);
void transaction_clear(struct smtp_transaction *t);
void free_rcpt(struct smtp_txn_rcpt *r);
void abort_message(struct smtp_session *s);
bool awaiting_hook(const struct smtp_session *s);
void reset_transaction(struct smtp_session *s);
void close_after_flush(struct smtp_session *s);
void smtp_session_end_direct_replies(struct smtp_session *s);
void count_error(struct smtp_session *s);
void write_hook_reply(struct smtp_session *s, const struct smtp_reply *reply);
void reply_error(struct smtp_session *s, int code, const char *enhanced, const char *text);
bool free_if_peer_gone(struct smtp_session *s);
void resume_after_hook(struct smtp_session *s);
void start_reading(struct smtp_session *s);
time_t handshake_timeout(const struct smtp_session *s);
void process_input(struct smtp_session *s);

/* smtp_server_cmds.c */
void command_line(struct smtp_session *s, const struct line *line);
const struct smtp_server_command *find_registered(const struct smtp_server *server,
                                                  const char *verb, size_t len);

/* smtp_server_data.c */
void cmd_data(struct smtp_session *s, const char *arg);
void cmd_bdat(struct smtp_session *s, const char *arg);
void flush_stage(struct smtp_session *s);
void data_line(struct smtp_session *s, const struct line *line);
bool data_take_plain_lines(struct smtp_session *s, struct evbuffer *in, size_t limit);
void read_chunk(struct smtp_session *s, struct evbuffer *in);

#endif
