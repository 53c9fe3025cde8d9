/* SPDX-License-Identifier: ISC */
/* SMTP/LMTP server engine: connection, states, command table, limits, DATA. */
#include "engines/smtp_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include "lib/linereader.h"
#include "lib/log.h"
#include "lib/peer_count.h"
#include "platform/admission.h"
#include "platform/deadline.h"
#include "platform/listen.h"
#include "platform/tls.h"
#include "services/metrics.h"   /* the one service every layer may call, like lib/log */

/* RFC 5321 4.5.3.1.4: command line at most 512 octets including CRLF. OUTPUT_HIGH_WATER: a
 * client that sends commands without reading the replies is read no further until they have
 * left (no command, not even EHLO, can make the replies pile up). */
enum { COMMAND_LINE_MAX = 512, STAGE_SIZE = 32768, INPUT_HIGH_WATER = 256 * 1024,
       OUTPUT_HIGH_WATER = 64 * 1024, CLOSE_FLUSH_MAX = 30 /* seconds for the last reply */,
       READ_MORE = 64 * 1024 };

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
};

static const char *const state_names[] = {
    [STATE_GREETING] = "greeting", [STATE_READY] = "ready",   [STATE_MAIL] = "mail",
    [STATE_RCPT] = "rcpt",         [STATE_DATA] = "data",     [STATE_COMMITTING] = "committing",
    [STATE_CLOSING] = "closing",   [STATE_RCPT_WAIT] = "rcpt_wait",
    [STATE_CHUNK] = "chunk",
};

struct smtp_server {
    struct event_base *base;
    struct smtp_server_settings settings;
    struct smtp_session *sessions;   /* doubly linked */
    size_t session_count;
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
    char id[24];
    char peer[64];
    char helo[SMTP_DOMAIN_MAX + 1];
    bool esmtp;
    bool tls_active;
    bool peer_gone;          /* the connection failed while a hook worked */
    bool input_ended;        /* the client ended its sending side (FIN, close_notify) */
    bool ended_in_txn;       /* ... while a mail transaction was open */
    bool quit_received;
    bool closed_by_server;   /* we ended it: limits, timeout, protocol error, a hook's 421 */
    bool close_after_reply;  /* a hook answered 421 (RFC 5321 3.8): close once it is sent */
    bool output_blocked;     /* input waits until the replies have drained */
    struct deadline deadline;   /* per command, message, TLS handshake; the closing flush */
    char peer_key[PEER_KEY_MAX];   /* counted in settings.peers; "" = not counted */
    unsigned errors;
    unsigned junk_commands;
    struct smtp_transaction txn;
    struct data_state *data;
    void *user;
    struct smtp_txn_rcpt pending_rcpt;   /* waiting for smtp_session_rcpt_done() */
};

/* ---- small helpers ---- */

static struct evbuffer *output(struct smtp_session *s)
{
    return bufferevent_get_output(s->bev);
}

static const struct smtp_limits *limits(const struct smtp_session *s)
{
    return &s->server->settings.limits;
}

static const struct smtp_server_hooks *hooks(const struct smtp_session *s)
{
    return s->server->settings.hooks;
}

static void *hooks_ctx(const struct smtp_session *s)
{
    return s->server->settings.hooks_ctx;
}

static bool is_lmtp(const struct smtp_session *s)
{
    return s->server->settings.mode == SMTP_SERVER_LMTP;
}

/* One transition function, so every state change is logged in one place. */
static void enter_state(struct smtp_session *s, enum session_state next)
{
    log_debug("session.state", " session=%s from=%s to=%s", s->id, state_names[s->state],
              state_names[next]);
    s->state = next;
}

/* The bufferevent's read timeout is data_timeout only, the per-block inactivity timeout inside
 * DATA/BDAT; commands have their deadline (update_deadline), which octets do not restart. */
static void set_io_timeouts(struct smtp_session *s, bool data)
{
    struct timeval tv = {data ? limits(s)->data_timeout : limits(s)->command_timeout, 0};
    bufferevent_set_timeouts(s->bev, data ? &tv : NULL, &tv);
}

static void transaction_clear(struct smtp_transaction *t)
{
    free(t->sender);
    free(t->ret);
    free(t->envid);
    for (size_t i = 0; i < t->rcpt_count; i++) {
        free(t->rcpts[i].address);
        free(t->rcpts[i].domain);
        free(t->rcpts[i].notify);
        free(t->rcpts[i].orcpt);
    }
    free(t->rcpts);
    memset(t, 0, sizeof *t);
}

static void abort_message(struct smtp_session *s)
{
    if (s->data == NULL)
        return;
    if (hooks(s)->data_abort != NULL)
        hooks(s)->data_abort(hooks_ctx(s), s);
    free(s->data);
    s->data = NULL;
}

/* A hook's answer is awaited: the hook's owner still holds a pointer to the session. */
static bool awaiting_hook(const struct smtp_session *s)
{
    return s->state == STATE_COMMITTING || s->state == STATE_RCPT_WAIT;
}

static void reset_transaction(struct smtp_session *s)
{
    abort_message(s);
    transaction_clear(&s->txn);
    if (s->state == STATE_MAIL || s->state == STATE_RCPT || s->state == STATE_DATA)
        enter_state(s, STATE_READY);
}

static void free_rcpt(struct smtp_txn_rcpt *r);

/* ---- session lifetime ---- */

static void session_free(struct smtp_session *s)
{
    struct smtp_server *server = s->server;
    if (hooks(s)->session_closed != NULL)
        hooks(s)->session_closed(hooks_ctx(s), s);
    abort_message(s);
    transaction_clear(&s->txn);
    free_rcpt(&s->pending_rcpt);
    line_reader_free(&s->reader);
    deadline_free(&s->deadline);
    peer_count_release(server->settings.peers, s->peer_key);
    if (s->bev)
        tls_bufferevent_close(s->bev);
    if (s->prev)
        s->prev->next = s->next;
    else
        server->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    server->session_count--;
    metrics_session_closed(server->settings.role);
    log_info("session.end", " session=%s role=%s", s->id, server->settings.role);
    free(s);
    if (server->shutting_down && server->session_count == 0 && server->on_idle)
        server->on_idle(server->on_idle_arg);
}

static void on_event(struct bufferevent *bev, short events, void *arg);

static void on_flushed_then_close(struct bufferevent *bev, void *arg)
{
    struct smtp_session *s = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        session_free(s);
}

/* Sends what is queued, then closes. A session waiting for its commit is freed by the
 * commit callback instead (the store still holds a pointer to it). */
static void close_after_flush(struct smtp_session *s)
{
    s->closed_by_server = !s->quit_received;
    abort_message(s);
    if (awaiting_hook(s)) {
        s->peer_gone = true;
        return;
    }
    enter_state(s, STATE_CLOSING);
    bufferevent_disable(s->bev, EV_READ);
    /* The last reply gets at most CLOSE_FLUSH_MAX seconds (the command timeout if shorter) to
     * leave, on a timer of our own: a client that is gone or never reads again (or a TLS
     * client that never finished its handshake, when a bufferevent's timeouts do not run) no
     * longer keeps the session forever. A write error ends it at once (on_event). EV_WRITE
     * again: a write timeout may just have disabled it. */
    bufferevent_setcb(s->bev, NULL, on_flushed_then_close, on_event, s);
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    bufferevent_enable(s->bev, EV_WRITE);
    deadline_start(&s->deadline, DEADLINE_CLOSE, limits(s)->command_timeout < CLOSE_FLUSH_MAX
                   ? limits(s)->command_timeout : CLOSE_FLUSH_MAX, 0);
    /* Freed from the (deferred) write callback, never from inside this call: the caller
     * (process_input) still uses s, and a TLS bufferevent may have flushed the reply already. */
    bufferevent_trigger(s->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

static void count_error(struct smtp_session *s)
{
    if (++s->errors < limits(s)->max_errors)
        return;
    log_warn("session.too_many_errors", " session=%s peer=%s errors=%u", s->id, s->peer,
             s->errors);
    reply_send(output(s), 421, "4.7.0", "%s Too many errors, closing the connection",
               s->server->settings.hostname);
    close_after_flush(s);
}

/* A hook's reply. RFC 5321 3.8: after a 421 the server closes the connection; a hook answers
 * 421 when it can serve nothing more (odmr-client: its local target is gone). */
static void write_hook_reply(struct smtp_session *s, const struct smtp_reply *reply)
{
    reply_write(output(s), reply);
    if (reply->code == 421)
        s->close_after_reply = true;
}

static void reply_error(struct smtp_session *s, int code, const char *enhanced, const char *text)
{
    reply_send(output(s), code, enhanced, "%s", text);
    count_error(s);
}

/* ---- EHLO / HELO / LHLO ---- */

static void remember_helo(struct smtp_session *s, const char *arg)
{
    snprintf(s->helo, sizeof s->helo, "%s", arg);
}

static bool check_helo_argument(struct smtp_session *s, const char *arg)
{
    if (arg[0] != '\0' && smtp_helo_valid(arg))
        return true;
    reply_error(s, 501, "5.5.4", "Syntax: EHLO domain-or-address-literal");
    return false;
}

static void send_ehlo_reply(struct smtp_session *s)
{
    char first[300], size[48];
    const char *lines[12];
    size_t n = 0;
    snprintf(first, sizeof first, "%s Hello %s", s->server->settings.hostname, s->helo);
    snprintf(size, sizeof size, "SIZE %llu",
             (unsigned long long)limits(s)->max_message_size);
    lines[n++] = first;
    lines[n++] = "PIPELINING";
    lines[n++] = size;
    lines[n++] = "8BITMIME";
    lines[n++] = "SMTPUTF8";
    lines[n++] = "ENHANCEDSTATUSCODES";
    if (!s->server->settings.no_dsn)
        lines[n++] = "DSN";
    if (s->server->settings.tls != NULL && !s->tls_active && !is_lmtp(s))
        lines[n++] = "STARTTLS";
    if (s->server->settings.chunking)
        lines[n++] = "CHUNKING";
    const char *const *extra = s->server->settings.ehlo_extra;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && i < SMTP_SERVER_EHLO_EXTRA_MAX; i++)
        lines[n++] = extra[i];
    reply_send_lines(output(s), 250, lines, n);
}

static void greet_extended(struct smtp_session *s, const char *arg)
{
    if (!check_helo_argument(s, arg))
        return;
    reset_transaction(s);
    remember_helo(s, arg);
    s->esmtp = true;
    enter_state(s, STATE_READY);
    send_ehlo_reply(s);
}

static void cmd_ehlo(struct smtp_session *s, const char *arg)
{
    /* RFC 2033 4.1: an LMTP server answers EHLO and HELO with 500. */
    if (is_lmtp(s)) {
        reply_error(s, 500, "5.5.1", "This is LMTP: use LHLO");
        return;
    }
    greet_extended(s, arg);
}

static void cmd_lhlo(struct smtp_session *s, const char *arg)
{
    if (!is_lmtp(s)) {
        reply_error(s, 500, "5.5.1", "Command unrecognized");
        return;
    }
    greet_extended(s, arg);
}

static void cmd_helo(struct smtp_session *s, const char *arg)
{
    if (is_lmtp(s)) {
        reply_error(s, 500, "5.5.1", "This is LMTP: use LHLO");
        return;
    }
    if (!check_helo_argument(s, arg))
        return;
    reset_transaction(s);
    remember_helo(s, arg);
    s->esmtp = false;
    enter_state(s, STATE_READY);
    reply_send(output(s), 250, NULL, "%s", s->server->settings.hostname);
}

/* ---- MAIL parameters (RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN) ---- */

typedef int (*param_handler)(struct smtp_session *s, const struct smtp_param *p);

static int param_size(struct smtp_session *s, const struct smtp_param *p)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(p->value, &end, 10);
    if (!p->has_value || p->value[0] < '0' || p->value[0] > '9' || *end != '\0' ||
        errno != 0 || strlen(p->value) > 20) {
        reply_error(s, 501, "5.5.4", "Syntax: SIZE=number");
        return -1;
    }
    /* RFC 1870 6.1: refuse at MAIL when the declared size is over our limit. */
    if (value > limits(s)->max_message_size) {
        reply_error(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
        return -1;
    }
    s->txn.declared_size = value;
    return 0;
}

static int param_body(struct smtp_session *s, const struct smtp_param *p)
{
    if (p->has_value && strcasecmp(p->value, "7BIT") == 0) {
        s->txn.body = SMTP_BODY_7BIT;
        return 0;
    }
    if (p->has_value && strcasecmp(p->value, "8BITMIME") == 0) {
        s->txn.body = SMTP_BODY_8BITMIME;
        return 0;
    }
    reply_error(s, 555, "5.5.4", "Unsupported BODY type (7BIT or 8BITMIME)");
    return -1;
}

static int param_smtputf8(struct smtp_session *s, const struct smtp_param *p)
{
    if (p->has_value) {
        reply_error(s, 555, "5.5.4", "SMTPUTF8 takes no value");
        return -1;
    }
    s->txn.smtputf8 = true;
    return 0;
}

static int param_ret(struct smtp_session *s, const struct smtp_param *p)
{
    if (s->txn.ret != NULL || !p->has_value ||
        (strcasecmp(p->value, "FULL") != 0 && strcasecmp(p->value, "HDRS") != 0)) {
        reply_error(s, 501, "5.5.4", "Syntax: RET=FULL or RET=HDRS (RFC 3461 4.3)");
        return -1;
    }
    s->txn.ret = strdup(p->value);
    return 0;
}

/* RFC 3461 4.4: ENVID is xtext, at most 100 characters. */
static int param_envid(struct smtp_session *s, const struct smtp_param *p)
{
    if (s->txn.envid != NULL || !p->has_value || strlen(p->value) > 100 ||
        !smtp_xtext_valid(p->value)) {
        reply_error(s, 501, "5.5.4", "Syntax: ENVID=xtext of at most 100 characters (RFC 3461 4.4)");
        return -1;
    }
    s->txn.envid = strdup(p->value);
    return 0;
}

struct param_entry {
    const char *keyword;
    param_handler handler;
};

static const struct param_entry mail_params[] = {
    {"SIZE", param_size}, {"BODY", param_body},   {"SMTPUTF8", param_smtputf8},
    {"RET", param_ret},   {"ENVID", param_envid},
};

static int apply_params(struct smtp_session *s, const struct smtp_path_command *cmd,
                        const struct param_entry *table, size_t table_len,
                        int (*rcpt_handler)(struct smtp_session *, const struct smtp_param *,
                                            struct smtp_txn_rcpt *),
                        struct smtp_txn_rcpt *rcpt)
{
    for (size_t i = 0; i < cmd->param_count; i++) {
        const struct smtp_param *p = &cmd->params[i];
        /* RFC 5321 4.1.1.11: no service extensions after HELO. */
        if (!s->esmtp) {
            reply_error(s, 555, "5.5.4", "Parameters need EHLO");
            return -1;
        }
        size_t j;
        for (j = 0; j < table_len; j++)
            if (strcasecmp(p->keyword, table[j].keyword) == 0)
                break;
        int rc;
        if (j < table_len)
            rc = table[j].handler(s, p);
        else if (rcpt_handler)
            rc = rcpt_handler(s, p, rcpt);
        else
            rc = 1;
        if (rc > 0) {
            reply_error(s, 555, "5.5.4", "Unsupported parameter");
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void report_parse_error(struct smtp_session *s, enum smtp_parse_status status,
                               const char *why)
{
    char text[200];
    snprintf(text, sizeof text, "Syntax error: %s", why ? why : "bad address");
    if (status == SMTP_PARSE_TOO_MANY)
        reply_error(s, 501, "5.5.4", text);
    else
        reply_error(s, 501, status == SMTP_PARSE_TOO_LONG ? "5.5.2" : "5.1.7", text);
}

static char *mailbox_text(const struct smtp_mailbox *m)
{
    size_t n = strlen(m->local) + strlen(m->domain) + 2;
    char *text = malloc(n);
    if (text == NULL)
        return NULL;
    if (m->domain[0] != '\0')
        snprintf(text, n, "%s@%s", m->local, m->domain);
    else
        snprintf(text, n, "%s", m->local);
    return text;
}

/* The check_mail hook (intake: disk space). true when it refused MAIL (the reply is sent). */
static bool mail_refused_by_hook(struct smtp_session *s)
{
    struct smtp_reply verdict = {0};
    if (hooks(s)->check_mail == NULL)
        return false;
    hooks(s)->check_mail(hooks_ctx(s), s, &verdict);
    if (verdict.code == 0 || reply_class(verdict.code) == 2)
        return false;
    write_hook_reply(s, &verdict);
    return true;
}

static void cmd_mail(struct smtp_session *s, const char *arg)
{
    struct smtp_path_command cmd;
    const char *why = NULL;
    if (s->state != STATE_READY) {
        reply_error(s, 503, "5.5.1", s->state == STATE_GREETING ? "Send EHLO first"
                                                                  : "Nested MAIL command");
        return;
    }
    enum smtp_parse_status status = smtp_parse_mail_from(arg, s->esmtp, &cmd, &why);
    if (status != SMTP_PARSE_OK) {
        report_parse_error(s, status, why);
        return;
    }
    transaction_clear(&s->txn);
    if (apply_params(s, &cmd, mail_params, sizeof mail_params / sizeof mail_params[0], NULL,
                     NULL) != 0) {
        transaction_clear(&s->txn);
        return;
    }
    /* RFC 6531 3.5: a UTF-8 address needs the SMTPUTF8 parameter. */
    if (!cmd.null_path && cmd.mailbox.needs_smtputf8 && !s->txn.smtputf8) {
        transaction_clear(&s->txn);
        reply_error(s, 553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8");
        return;
    }
    if (mail_refused_by_hook(s)) {
        transaction_clear(&s->txn);
        return;
    }
    s->txn.sender = cmd.null_path ? strdup("") : mailbox_text(&cmd.mailbox);
    s->txn.active = true;
    enter_state(s, STATE_MAIL);
    reply_send(output(s), 250, "2.1.0", "Sender OK");
}

/* ---- RCPT parameters (RFC 3461 4.1 NOTIFY, 4.2 ORCPT) ---- */

static bool notify_valid(const char *value)
{
    char copy[SMTP_PARAM_VALUE_MAX + 1];
    char *save = NULL;
    bool never = false, other = false;
    snprintf(copy, sizeof copy, "%s", value);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcasecmp(tok, "NEVER") == 0)
            never = true;
        else if (strcasecmp(tok, "SUCCESS") == 0 || strcasecmp(tok, "FAILURE") == 0 ||
                 strcasecmp(tok, "DELAY") == 0)
            other = true;
        else
            return false;
    }
    /* RFC 3461 4.1: NEVER must appear alone. */
    return never != other && value[strlen(value) - 1] != ',' && value[0] != ',';
}

/* RFC 3461 4.2: ORCPT=addr-type ";" xtext, addr-type an atom such as rfc822 or utf-8. */
static bool orcpt_valid(const char *value)
{
    const char *semi = strchr(value, ';');
    if (semi == NULL || semi == value || semi[1] == '\0' || strlen(value) > 500)
        return false;
    for (const char *p = value; p < semi; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-'))
            return false;
    return strncasecmp(value, "utf-8;", 6) == 0 || smtp_xtext_valid(semi + 1);
}

static int rcpt_param(struct smtp_session *s, const struct smtp_param *p,
                      struct smtp_txn_rcpt *rcpt)
{
    if (strcasecmp(p->keyword, "NOTIFY") == 0) {
        if (rcpt->notify || !p->has_value || !notify_valid(p->value)) {
            reply_error(s, 501, "5.5.4", "Syntax: NOTIFY=NEVER or SUCCESS,FAILURE,DELAY (RFC 3461 4.1)");
            return -1;
        }
        rcpt->notify = strdup(p->value);
        return 0;
    }
    if (strcasecmp(p->keyword, "ORCPT") == 0) {
        if (rcpt->orcpt || !p->has_value || !orcpt_valid(p->value)) {
            reply_error(s, 501, "5.5.4", "Syntax: ORCPT=addr-type;xtext (RFC 3461 4.2)");
            return -1;
        }
        rcpt->orcpt = strdup(p->value);
        return 0;
    }
    return 1;
}

static int add_recipient(struct smtp_session *s, struct smtp_txn_rcpt *rcpt)
{
    struct smtp_transaction *t = &s->txn;
    if (t->rcpt_count == t->rcpt_capacity) {
        size_t cap = t->rcpt_capacity ? t->rcpt_capacity * 2 : 8;
        struct smtp_txn_rcpt *grown = realloc(t->rcpts, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        t->rcpts = grown;
        t->rcpt_capacity = cap;
    }
    t->rcpts[t->rcpt_count++] = *rcpt;
    return 0;
}

static void free_rcpt(struct smtp_txn_rcpt *r)
{
    free(r->address);
    free(r->domain);
    free(r->notify);
    free(r->orcpt);
}

static bool rcpt_allowed_now(struct smtp_session *s)
{
    if ((s->state == STATE_MAIL || s->state == STATE_RCPT) && s->data == NULL)
        return true;
    reply_error(s, 503, "5.5.1", "Need MAIL before RCPT");
    return false;
}

/* check_rcpt_async: stop reading (later pipelined commands wait in the buffer) until
 * smtp_session_rcpt_done(). */
static void start_async_rcpt(struct smtp_session *s, const struct smtp_path_command *cmd,
                             struct smtp_txn_rcpt *rcpt)
{
    rcpt->address = mailbox_text(&cmd->mailbox);
    s->pending_rcpt = *rcpt;
    enter_state(s, STATE_RCPT_WAIT);
    bufferevent_disable(s->bev, EV_READ);
    hooks(s)->check_rcpt_async(hooks_ctx(s), s, cmd, s->pending_rcpt.domain);
}

static void process_input(struct smtp_session *s);

static void settle_async_rcpt(struct smtp_session *s, const struct smtp_reply *reply)
{
    struct smtp_txn_rcpt rcpt = s->pending_rcpt;
    memset(&s->pending_rcpt, 0, sizeof s->pending_rcpt);
    enter_state(s, s->txn.rcpt_count > 0 ? STATE_RCPT : STATE_MAIL);
    if (reply_class(reply->code) != 2 || rcpt.address == NULL) {
        free_rcpt(&rcpt);
        write_hook_reply(s, reply);
        if (reply_class(reply->code) == 5)
            count_error(s);
        return;
    }
    if (add_recipient(s, &rcpt) != 0) {
        free_rcpt(&rcpt);
        reply_send(output(s), 452, "4.3.1", "Out of memory");
        return;
    }
    enter_state(s, STATE_RCPT);
    write_hook_reply(s, reply);
}

/* The connection failed while a hook worked (RCPT check, store): nothing can be answered
 * any more; the outcome stays in the hook's own log. Returns true when the session is gone. */
static bool free_if_peer_gone(struct smtp_session *s)
{
    if (!s->peer_gone)
        return false;
    s->state = STATE_CLOSING;
    session_free(s);
    return true;
}

/* After a hook's reply: the commands that waited in the input buffer go on, and reading
 * again unless the client has ended its input (its end is then handled by process_input). */
static void resume_after_hook(struct smtp_session *s)
{
    if (s->server->shutting_down) {
        reply_send(output(s), 421, "4.3.2", "%s Service shutting down",
                   s->server->settings.hostname);
        close_after_flush(s);
        return;
    }
    if (!s->input_ended)
        bufferevent_enable(s->bev, EV_READ);
    process_input(s);
}

void smtp_session_rcpt_done(struct smtp_session *s, const struct smtp_reply *reply)
{
    if (free_if_peer_gone(s))
        return;
    settle_async_rcpt(s, reply);
    if (s->state == STATE_CLOSING)
        return;   /* too many errors */
    resume_after_hook(s);
}

static void cmd_rcpt(struct smtp_session *s, const char *arg)
{
    struct smtp_path_command cmd;
    struct smtp_txn_rcpt rcpt = {0};
    struct smtp_reply verdict = {0};
    const char *why = NULL;
    if (!rcpt_allowed_now(s))
        return;
    /* RFC 5321 4.5.3.1.8 / 3.3: "452 too many recipients" lets the client retry the rest. */
    if (s->txn.rcpt_count >= limits(s)->max_recipients) {
        reply_send(output(s), 452, "4.5.3", "Too many recipients");
        return;
    }
    enum smtp_parse_status status = smtp_parse_rcpt_to(arg, s->esmtp, &cmd, &why);
    if (status != SMTP_PARSE_OK) {
        report_parse_error(s, status, why);
        return;
    }
    if (cmd.mailbox.needs_smtputf8 && !s->txn.smtputf8) {
        reply_error(s, 553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8 on MAIL");
        return;
    }
    if (apply_params(s, &cmd, NULL, 0, rcpt_param, &rcpt) != 0) {
        free_rcpt(&rcpt);
        return;
    }
    rcpt.domain = strdup(cmd.mailbox.domain);
    smtp_domain_lower(rcpt.domain);
    if (hooks(s)->check_rcpt_async != NULL) {
        start_async_rcpt(s, &cmd, &rcpt);
        return;
    }
    hooks(s)->check_rcpt(hooks_ctx(s), s, &cmd, rcpt.domain, &verdict);
    if (verdict.code != 0 && reply_class(verdict.code) != 2) {
        free_rcpt(&rcpt);
        write_hook_reply(s, &verdict);
        if (reply_class(verdict.code) == 5)
            count_error(s);
        return;
    }
    rcpt.address = mailbox_text(&cmd.mailbox);
    if (add_recipient(s, &rcpt) != 0) {
        free_rcpt(&rcpt);
        reply_send(output(s), 452, "4.3.1", "Out of memory");
        return;
    }
    enter_state(s, STATE_RCPT);
    reply_send(output(s), 250, "2.1.5", "Recipient OK");
}

/* ---- DATA ---- */

static void cmd_data(struct smtp_session *s, const char *arg)
{
    struct smtp_reply refusal = {0};
    if (arg[0] != '\0') {
        reply_error(s, 501, "5.5.4", "DATA takes no argument");
        return;
    }
    if (s->state != STATE_RCPT || s->data != NULL) {
        reply_error(s, 503, "5.5.1", s->data != NULL       ? "DATA after BDAT is not allowed"
                                     : s->state == STATE_MAIL ? "Need RCPT before DATA"
                                                              : "Need MAIL and RCPT before DATA");
        return;
    }
    s->data = calloc(1, sizeof *s->data);
    if (s->data == NULL) {
        reply_send(output(s), 452, "4.3.1", "Out of memory");
        return;
    }
    s->data->previous_line_crlf = true;
    if (hooks(s)->data_begin(hooks_ctx(s), s, &refusal) != 0) {
        free(s->data);
        s->data = NULL;
        write_hook_reply(s, &refusal);
        return;
    }
    enter_state(s, STATE_DATA);
    line_reader_set_limit(&s->reader, limits(s)->max_line_length);
    set_io_timeouts(s, true);
    reply_send(output(s), 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

static void flush_stage(struct smtp_session *s)
{
    struct data_state *d = s->data;
    if (d->staged == 0)
        return;
    if (d->storage_errno == 0 && !d->too_big &&
        hooks(s)->data_write(hooks_ctx(s), s, d->stage, d->staged) != 0)
        d->storage_errno = errno ? errno : EIO;
    d->staged = 0;
}

static void stage_octets(struct smtp_session *s, const char *data, size_t len)
{
    struct data_state *d = s->data;
    d->octets += len;
    deadline_add_octets(&s->deadline, len);
    if (d->octets > limits(s)->max_message_size)
        d->too_big = true;
    /* A refused BDAT chunk is read and dropped: data_begin never opened a message for it. */
    if (d->too_big || d->storage_errno != 0 || d->refusal.code != 0)
        return;
    while (len > 0) {
        size_t room = sizeof d->stage - d->staged;
        size_t n = len < room ? len : room;
        memcpy(d->stage + d->staged, data, n);
        d->staged += n;
        data += n;
        len -= n;
        if (d->staged == sizeof d->stage)
            flush_stage(s);
    }
}

/* The verdict on a complete message that must not be stored; NULL when it is good. */
static const struct smtp_reply *message_rejection(struct smtp_session *s, struct smtp_reply *r)
{
    struct data_state *d = s->data;
    if (d->bad_line_ending)
        return reply_set(r, 550, "5.6.0",
                         "Bare CR or LF in message data is not allowed (RFC 5321 2.3.8)");
    if (d->line_too_long)
        return reply_set(r, 550, "5.5.2", "Message line longer than %u octets (RFC 5321 4.5.3.1.6)",
                         limits(s)->max_line_length);
    if (d->too_big)
        return reply_set(r, 552, "5.3.4", "Message size exceeds fixed maximum message size");
    if (d->storage_errno != 0)
        return reply_set(r, 452, "4.3.1", "Insufficient system storage");
    return NULL;
}

static void send_data_reply(struct smtp_session *s, const struct smtp_reply *reply)
{
    /* RFC 2033 4.2: LMTP answers DATA once per accepted recipient, in RCPT order. */
    size_t count = is_lmtp(s) ? s->txn.rcpt_count : 1;
    metrics_count_intake_reply(s->server->settings.role, reply->code, count);
    for (size_t i = 0; i < count; i++)
        write_hook_reply(s, reply);
}

static void process_input(struct smtp_session *s);

static void finish_data_phase(struct smtp_session *s)
{
    transaction_clear(&s->txn);
    line_reader_set_limit(&s->reader, COMMAND_LINE_MAX);
    set_io_timeouts(s, false);
    enter_state(s, STATE_READY);
}

static void end_of_data(struct smtp_session *s)
{
    struct smtp_reply rejection;
    flush_stage(s);
    const struct smtp_reply *verdict = message_rejection(s, &rejection);
    if (verdict != NULL) {
        log_info("message.rejected", " session=%s peer=%s code=%d reason=%s", s->id, s->peer,
                 verdict->code, verdict->enhanced);
        send_data_reply(s, verdict);
        abort_message(s);
        finish_data_phase(s);
        return;
    }
    free(s->data);
    s->data = NULL;
    enter_state(s, STATE_COMMITTING);
    bufferevent_disable(s->bev, EV_READ);
    hooks(s)->data_end(hooks_ctx(s), s);
}

void smtp_session_data_done(struct smtp_session *s, const struct smtp_reply *reply)
{
    if (free_if_peer_gone(s))
        return;
    send_data_reply(s, reply);
    finish_data_phase(s);
    resume_after_hook(s);
}

/* One line of message data. RFC 5321 4.1.1.4: the data ends with CRLF "." CRLF; only a "."
 * line with CRLF after a line that itself ended in CRLF counts (no SMTP smuggling through
 * bare LF or CR); RFC 5321 4.5.2: a leading dot is removed. */
static void data_line(struct smtp_session *s, const struct line *line)
{
    struct data_state *d = s->data;
    bool crlf = !line->bare_lf;
    if (line->len == 1 && line->text[0] == '.' && crlf && !line->bare_cr &&
        d->previous_line_crlf) {
        end_of_data(s);
        return;
    }
    if (line->bare_lf || line->bare_cr)
        d->bad_line_ending = true;
    d->previous_line_crlf = crlf;
    const char *text = line->text;
    size_t len = line->len;
    if (len > 0 && text[0] == '.') {
        text++;
        len--;
    }
    stage_octets(s, text, len);
    stage_octets(s, "\r\n", 2);
}

/* ---- the other commands ---- */

static bool count_junk(struct smtp_session *s)
{
    if (++s->junk_commands <= limits(s)->max_junk_commands)
        return true;
    reply_send(output(s), 421, "4.7.0", "%s Too many commands without mail, closing",
               s->server->settings.hostname);
    close_after_flush(s);
    return false;
}

static void cmd_rset(struct smtp_session *s, const char *arg)
{
    if (!count_junk(s))
        return;
    reset_transaction(s);
    reply_send(output(s), 250, "2.0.0", "Reset OK");
}

static void cmd_noop(struct smtp_session *s, const char *arg)
{
    if (count_junk(s))
        reply_send(output(s), 250, "2.0.0", "OK");
}

static void cmd_quit(struct smtp_session *s, const char *arg)
{
    s->quit_received = true;
    reply_send(output(s), 221, "2.0.0", "%s Bye", s->server->settings.hostname);
    close_after_flush(s);
}

/* RFC 5321 3.5.3: 252 when the server will not verify but will accept mail. */
static void cmd_vrfy(struct smtp_session *s, const char *arg)
{
    if (count_junk(s))
        reply_send(output(s), 252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_expn(struct smtp_session *s, const char *arg)
{
    if (count_junk(s))
        reply_send(output(s), 502, "5.5.1", "EXPN not available");
}

static void cmd_help(struct smtp_session *s, const char *arg)
{
    if (count_junk(s))
        reply_send(output(s), 214, "2.0.0",
                   "Commands: %s MAIL RCPT DATA RSET NOOP VRFY HELP QUIT%s\nSee RFC 5321",
                   is_lmtp(s) ? "LHLO" : "EHLO HELO", s->server->settings.tls ? " STARTTLS" : "");
}

/* RFC 5321 4.5.3.2: server timeouts are per command, not per octet. A command line must come
 * whole within command_timeout from when the server was ready for it (line_taken: the last one
 * was just taken); a message (DATA, or BDAT chunks and the lines between) within data_timeout +
 * octets/min_data_rate s, data_timeout staying the per-block timeout (4.5.3.2.6) as well. */
static void update_deadline(struct smtp_session *s, bool line_taken)
{
    const struct smtp_limits *l = limits(s);
    enum deadline_kind kind = deadline_kind(&s->deadline);
    if (s->state == STATE_CLOSING)
        return;   /* the close deadline runs */
    if (awaiting_hook(s))   /* a hook works: the server is not ready */
        deadline_stop(&s->deadline);
    else if (s->data != NULL || s->state == STATE_DATA || s->state == STATE_CHUNK) {
        if (kind != DEADLINE_MESSAGE)   /* min_data_rate 0: none, only the per-block timeout */
            deadline_start(&s->deadline, l->min_data_rate ? DEADLINE_MESSAGE : DEADLINE_NONE,
                           l->data_timeout, l->min_data_rate);
    } else if (kind == DEADLINE_HANDSHAKE && !tls_handshake_done(s->bev)) {
        return;   /* STARTTLS: the handshake deadline runs until the handshake is done */
    } else if (line_taken || kind != DEADLINE_COMMAND) {
        deadline_start(&s->deadline, DEADLINE_COMMAND, l->command_timeout, 0);
    }
}

static void on_deadline(void *arg, enum deadline_kind kind)
{
    struct smtp_session *s = arg;
    if (kind == DEADLINE_HANDSHAKE && tls_handshake_done(s->bev)) {
        update_deadline(s, true);   /* EHLO is due within command_timeout from now */
        return;
    }
    log_info("session.timeout", " session=%s peer=%s state=%s deadline=%s", s->id, s->peer,
             state_names[s->state], deadline_kind_name(kind));
    s->closed_by_server = s->closed_by_server || kind != DEADLINE_CLOSE;
    if (kind == DEADLINE_HANDSHAKE || kind == DEADLINE_CLOSE) {
        session_free(s);   /* nothing can be said without TLS up, or it cannot leave */
        return;
    }
    reply_send(output(s), 421, "4.4.2", "%s Timeout, closing", s->server->settings.hostname);
    close_after_flush(s);   /* a message under way is dropped (state=data above) */
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);

/* Hands s->bev (new, adopted, or the TLS layer after STARTTLS) to the session's callbacks. */
static void start_reading(struct smtp_session *s)
{
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    bufferevent_setwatermark(s->bev, EV_READ, 0, INPUT_HIGH_WATER);
    set_io_timeouts(s, false);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    update_deadline(s, true);
}

/* RFC 3207 4.2: after 220 the server forgets everything from before, and input sent before
 * the handshake must never be taken as a command (CVE-2011-0411 class). */
static void cmd_starttls(struct smtp_session *s, const char *arg)
{
    if (s->server->settings.tls == NULL || is_lmtp(s)) {
        reply_error(s, 502, "5.5.1", "STARTTLS not available");
        return;
    }
    if (s->tls_active) {
        reply_error(s, 503, "5.5.1", "TLS already active");
        return;
    }
    if (arg[0] != '\0') {
        reply_error(s, 501, "5.5.4", "STARTTLS takes no argument");
        return;
    }
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
        log_warn("starttls.pipelined", " session=%s peer=%s", s->id, s->peer);
        reply_send(output(s), 554, "5.5.0", "Pipelined data after STARTTLS; closing");
        close_after_flush(s);
        return;
    }
    reply_send(output(s), 220, "2.0.0", "Ready to start TLS");
    struct bufferevent *tls = tls_start_server(s->server->base, s->bev, s->server->settings.tls);
    if (tls == NULL) {
        close_after_flush(s);
        return;
    }
    s->bev = tls;
    start_reading(s);
    reset_transaction(s);
    s->helo[0] = '\0';
    s->esmtp = false;
    s->tls_active = true;
    enter_state(s, STATE_GREETING);
    deadline_start(&s->deadline, DEADLINE_HANDSHAKE, limits(s)->tls_handshake_timeout
                   ? limits(s)->tls_handshake_timeout : limits(s)->command_timeout, 0);
}

typedef void (*command_handler)(struct smtp_session *s, const char *arg);

/* The command table: the protocol rules that depend on state live in the handlers'
 * first lines; everything unknown is 500 (RFC 5321 4.2.4). */
struct command_entry {
    const char *verb;
    command_handler handler;
};

static void cmd_bdat(struct smtp_session *s, const char *arg);

static const struct command_entry commands[] = {
    {"EHLO", cmd_ehlo}, {"HELO", cmd_helo}, {"LHLO", cmd_lhlo},         {"MAIL", cmd_mail},
    {"RCPT", cmd_rcpt}, {"DATA", cmd_data}, {"RSET", cmd_rset},         {"NOOP", cmd_noop},
    {"QUIT", cmd_quit}, {"VRFY", cmd_vrfy}, {"EXPN", cmd_expn},         {"HELP", cmd_help},
    {"STARTTLS", cmd_starttls}, {"BDAT", cmd_bdat},
};

static const struct command_entry *find_command(const char *verb, size_t len)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strlen(commands[i].verb) == len && strncasecmp(commands[i].verb, verb, len) == 0)
            return &commands[i];
    return NULL;
}

static void command_line(struct smtp_session *s, const struct line *line)
{
    /* RFC 5321 2.3.8: lines end with CRLF only; NUL is never valid in a command. */
    if (line->bare_lf || line->bare_cr || memchr(line->text, '\0', line->len) != NULL) {
        reply_error(s, 500, "5.5.2", "Command line must end with CRLF and contain no CR, LF or NUL");
        return;
    }
    const char *verb = line->text;
    size_t verb_len = strcspn(verb, " ");
    const char *arg = verb + verb_len;
    while (*arg == ' ')
        arg++;
    const struct command_entry *entry = find_command(verb, verb_len);
    if (entry == NULL) {
        reply_error(s, 500, "5.5.1", "Command unrecognized");
        return;
    }
    entry->handler(s, arg);
}

/* ---- BDAT (RFC 3030) ---- */

/* RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF, chunk-size = 1*DIGIT. */
static int parse_bdat(const char *arg, uint64_t *size, bool *last)
{
    char *end;
    if (*arg < '0' || *arg > '9' || strspn(arg, "0123456789") > 19)
        return -1;
    errno = 0;
    *size = strtoull(arg, &end, 10);
    *last = false;
    if (errno != 0)
        return -1;
    if (*end == '\0')
        return 0;
    if (strcasecmp(end, " LAST") != 0)
        return -1;
    *last = true;
    return 0;
}

/* The first BDAT of a transaction opens the message; a refusal is kept in *d and sent after
 * the chunk has been read (RFC 3030 2: the octets are always consumed). */
static struct data_state *open_chunked_message(struct smtp_session *s)
{
    struct data_state *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    s->data = d;
    if (s->state != STATE_RCPT)
        reply_set(&d->refusal, 503, "5.5.1", "BDAT needs MAIL and RCPT first");
    else if (hooks(s)->data_begin(hooks_ctx(s), s, &d->refusal) == 0)
        d->refusal.code = 0;
    return d;
}

static void cmd_bdat(struct smtp_session *s, const char *arg)
{
    uint64_t size;
    bool last;
    if (!s->server->settings.chunking) {
        reply_error(s, 500, "5.5.1", "Command unrecognized");
        return;
    }
    if (parse_bdat(arg, &size, &last) != 0) {
        /* RFC 3030 2: without a valid size the chunk cannot be skipped: close. */
        reply_send(output(s), 501, "5.5.4", "Syntax: BDAT chunk-size [LAST]; closing");
        close_after_flush(s);
        return;
    }
    struct data_state *d = s->data ? s->data : open_chunked_message(s);
    if (d == NULL) {
        reply_send(output(s), 452, "4.3.1", "Out of memory; closing");
        close_after_flush(s);
        return;
    }
    d->chunk_left = size;
    d->chunk_last = last;
    enter_state(s, STATE_CHUNK);
    set_io_timeouts(s, true);
}

static void end_of_chunk(struct smtp_session *s)
{
    struct data_state *d = s->data;
    flush_stage(s);
    if (d->refusal.code != 0) {
        struct smtp_reply refusal = d->refusal;
        bool opened = refusal.code != 503;
        if (opened)
            abort_message(s);
        free(s->data);
        s->data = NULL;
        enter_state(s, s->txn.rcpt_count > 0 ? STATE_RCPT
                       : s->txn.active         ? STATE_MAIL
                                               : (s->helo[0] ? STATE_READY : STATE_GREETING));
        set_io_timeouts(s, false);
        write_hook_reply(s, &refusal);
        if (!s->close_after_reply)
            count_error(s);
        return;
    }
    if (d->chunk_last) {
        enter_state(s, STATE_DATA);
        end_of_data(s);
        return;
    }
    enter_state(s, STATE_RCPT);
    set_io_timeouts(s, false);
    reply_send(output(s), 250, "2.0.0", "%llu octets received",
               (unsigned long long)d->octets);
}

/* Takes the octets of the current chunk out of the input: no lines, no dot-stuffing. */
static void read_chunk(struct smtp_session *s, struct evbuffer *in)
{
    char buf[16384];
    struct data_state *d = s->data;
    while (d->chunk_left > 0 && evbuffer_get_length(in) > 0) {
        size_t want = d->chunk_left < sizeof buf ? (size_t)d->chunk_left : sizeof buf;
        int n = evbuffer_remove(in, buf, want);
        if (n <= 0)
            break;
        d->chunk_left -= (uint64_t)n;
        stage_octets(s, buf, (size_t)n);
    }
    if (d->chunk_left == 0)
        end_of_chunk(s);
}

/* Everything the client sent before ending its input has been processed: the session closes
 * once the replies have left (the closing timer bounds that), as ended by the client. A
 * transaction it did not finish is dropped. Nothing to do when a close is already under way. */
static void close_at_end_of_input(struct smtp_session *s)
{
    if (s->state == STATE_CLOSING)
        return;
    if (s->state == STATE_DATA || s->state == STATE_CHUNK)
        log_info("message.aborted", " session=%s peer=%s reason=disconnect", s->id, s->peer);
    close_after_flush(s);
    s->closed_by_server = false;
}

static void process_input(struct smtp_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    struct line line;
    update_deadline(s, false);
    while (s->state != STATE_COMMITTING && s->state != STATE_CLOSING &&
           s->state != STATE_RCPT_WAIT) {
        if (s->close_after_reply) {
            close_after_flush(s);
            break;
        }
        if (evbuffer_get_length(output(s)) >= OUTPUT_HIGH_WATER) {
            s->output_blocked = true;   /* on_write() goes on once the replies have left */
            break;
        }
        if (s->state == STATE_CHUNK) {
            read_chunk(s, in);
            update_deadline(s, false);
            if (s->state == STATE_CHUNK)
                break;
            continue;
        }
        enum line_status status = line_reader_next(&s->reader, in, &line);
        if (status == LINE_AGAIN)
            break;
        if (status == LINE_TOO_LONG) {
            if (s->state == STATE_DATA) {
                s->data->line_too_long = true;
                s->data->previous_line_crlf = !line.bare_lf;
            } else
                reply_error(s, 500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.4: 512 octets)");
            update_deadline(s, true);
            continue;
        }
        if (s->state == STATE_DATA)
            data_line(s, &line);
        else
            command_line(s, &line);
        update_deadline(s, true);
    }
    if (s->state == STATE_DATA && s->data != NULL)
        flush_stage(s);
    if (s->input_ended && !awaiting_hook(s) && !s->output_blocked)
        close_at_end_of_input(s);
}

/* libevent 2.1 reads at most 4096 octets per read callback (EVBUFFER_MAX_READ; 2.2 makes it
 * settable): a 100 KiB message took 25 callbacks, each with an ioctl, a readv and an
 * epoll_wait. On a plain socket one more read here takes what else is waiting, straight into
 * the input buffer and never past its high-water mark. The socket bufferevent keeps its
 * input's end frozen except while it reads itself, hence the unfreeze. EOF and errors are left
 * for the bufferevent's own next read to report. */
static void read_more(struct smtp_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    evutil_socket_t fd = bufferevent_getfd(s->bev);
    size_t have = evbuffer_get_length(in);
    if (s->tls_active || fd < 0 || have >= INPUT_HIGH_WATER)
        return;
    size_t want = INPUT_HIGH_WATER - have < READ_MORE ? INPUT_HIGH_WATER - have : READ_MORE;
    struct evbuffer_iovec v[2];
    struct iovec iov[2];
    evbuffer_unfreeze(in, 0);
    int n = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
    size_t room = 0;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len < want - room ? v[i].iov_len : want - room;
        room += iov[i].iov_len;
    }
    ssize_t got = n > 0 ? readv(fd, iov, n) : -1;
    if (got > 0) {
        size_t left = (size_t)got;
        int used = 0;
        for (; used < n && left > 0; used++) {
            v[used].iov_len = iov[used].iov_len < left ? iov[used].iov_len : left;
            left -= v[used].iov_len;
        }
        evbuffer_commit_space(in, v, used);
    }
    evbuffer_freeze(in, 0);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    read_more(arg);
    process_input(arg);
}

/* The output has drained (write low watermark 0): input held back for it goes on. Only then,
 * so a TLS bufferevent calling back from inside a write never re-enters process_input(). */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct smtp_session *s = arg;
    if (!s->output_blocked)
        return;
    s->output_blocked = false;
    process_input(s);
}

/* Replies the client has earned and not yet been sent: a hook's answer to come, commands
 * held back until earlier replies drain, replies still in the output buffer. */
static bool replies_owed(struct smtp_session *s)
{
    return tls_can_write(s->bev) &&
           (awaiting_hook(s) || s->output_blocked || evbuffer_get_length(output(s)) > 0);
}

/* The client ended its sending side (a FIN, or a TLS close_notify: either end may close its
 * writing direction first and still read; docs/architecture.md, "the client half-closes"),
 * or reading failed. RFC 5321 4.1.1.5: treated as if QUIT had been received, so what it sent
 * before still gets its replies: a pending hook's answer, then the pipelined commands already
 * received (4.1.1.10: QUIT gets its 221 before the close), then the session closes after the
 * flush. A write error (on_event) or the closing timer ends it if the socket takes no more. */
static void input_ended(struct smtp_session *s)
{
    s->input_ended = true;
    s->ended_in_txn = s->txn.active;
    bufferevent_disable(s->bev, EV_READ);
    if (!awaiting_hook(s) && !s->output_blocked)
        close_at_end_of_input(s);
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
    struct smtp_session *s = arg;
    if (events & BEV_EVENT_TIMEOUT) {
        log_info("session.timeout", " session=%s peer=%s state=%s", s->id, s->peer,
                 state_names[s->state]);
        if (s->state == STATE_CLOSING) {
            session_free(s);
            return;
        }
        reply_send(output(s), 421, "4.4.2", "%s Timeout, closing", s->server->settings.hostname);
        close_after_flush(s);
        return;
    }
    if (!(events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    if (!(events & BEV_EVENT_WRITING) && replies_owed(s)) {
        input_ended(s);
        return;
    }
    if (s->state == STATE_DATA)
        log_info("message.aborted", " session=%s peer=%s reason=disconnect", s->id, s->peer);
    abort_message(s);
    if (awaiting_hook(s)) {
        s->peer_gone = true;
        return;
    }
    session_free(s);
}

/* ---- server ---- */

struct smtp_server *smtp_server_new(struct event_base *base,
                                    const struct smtp_server_settings *settings)
{
    struct smtp_server *server = calloc(1, sizeof *server);
    if (server == NULL)
        return NULL;
    server->base = base;
    server->settings = *settings;
    return server;
}

static struct smtp_session *session_new(struct smtp_server *server, evutil_socket_t fd)
{
    struct smtp_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->bev = bufferevent_socket_new(server->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (s->bev == NULL) {
        free(s);
        return NULL;
    }
    s->server = server;
    if (deadline_init(&s->deadline, server->base, on_deadline, s) != 0) {
        bufferevent_free(s->bev);
        free(s);
        return NULL;
    }
    snprintf(s->id, sizeof s->id, "%c%lx", server->settings.mode == SMTP_SERVER_LMTP ? 'L' : 'S',
             ++server->next_id);
    line_reader_init(&s->reader, COMMAND_LINE_MAX);
    s->next = server->sessions;
    if (s->next)
        s->next->prev = s;
    server->sessions = s;
    server->session_count++;
    metrics_session_opened(server->settings.role);
    return s;
}

/* RFC 5321 3.8: over max_sessions (421 4.3.2) or the address's share (421 4.7.0), refused. */
static bool admit(struct smtp_server *server, evutil_socket_t fd, const char *peer_text,
                  const char *key)
{
    const struct smtp_server_settings *c = &server->settings;
    const struct admission_rule rules[] = {
        {server->shutting_down || server->session_count >= c->max_sessions, NULL, 0,
         "max_sessions", "421 4.3.2 Too many sessions, try again later\r\n"},
        {false, c->peers, c->max_sessions_per_address, "max_sessions_per_address",
         "421 4.7.0 Too many connections from your address, try again later\r\n"},
    };
    const char *reason = admission_check(fd, key, rules, 2, true);
    if (reason != NULL)
        log_warn("session.refused", " peer=%s role=%s reason=%s", peer_text, c->role, reason);
    return reason == NULL;
}

void smtp_server_accept(struct smtp_server *server, evutil_socket_t fd,
                        const struct sockaddr *peer, int peer_len)
{
    char peer_text[64], key[PEER_KEY_MAX];
    listen_peer_text(peer, peer_len, peer_text, sizeof peer_text);
    listen_peer_key(peer, peer_len, key, sizeof key);
    if (!admit(server, fd, peer_text, key))
        return;
    evutil_make_socket_nonblocking(fd);
    listen_set_nodelay(fd);
    struct smtp_session *s = session_new(server, fd);
    if (s == NULL) {
        peer_count_release(server->settings.peers, key);
        evutil_closesocket(fd);
        return;
    }
    snprintf(s->peer_key, sizeof s->peer_key, "%s", key);
    snprintf(s->peer, sizeof s->peer, "%s", peer_text);
    log_info("session.start", " session=%s role=%s peer=%s", s->id, server->settings.role,
             s->peer);
    start_reading(s);
    reply_send(output(s), 220, NULL, "%s %s odmrd", server->settings.hostname,
               server->settings.mode == SMTP_SERVER_LMTP ? "LMTP" : "ESMTP");
}

struct smtp_session *smtp_server_adopt(struct smtp_server *server, struct bufferevent *bev,
                                       const char *peer, bool tls_active)
{
    struct smtp_session *s = session_new(server, -1);
    if (s == NULL)
        return NULL;
    bufferevent_free(s->bev);
    s->bev = bev;
    s->tls_active = tls_active;
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    log_info("session.start", " session=%s role=%s peer=%s adopted=1", s->id,
             server->settings.role, s->peer);
    start_reading(s);
    reply_send(output(s), 220, NULL, "%s ESMTP odmr-client", server->settings.hostname);
    return s;
}

void smtp_server_shutdown(struct smtp_server *server, void (*on_idle)(void *), void *arg)
{
    server->shutting_down = true;
    server->on_idle = on_idle;
    server->on_idle_arg = arg;
    struct smtp_session *next;
    for (struct smtp_session *s = server->sessions; s; s = next) {
        next = s->next;
        if (awaiting_hook(s) || s->state == STATE_CLOSING)
            continue;   /* the hook's answer or the flush closes it */
        if (s->state == STATE_DATA)
            log_info("message.aborted", " session=%s peer=%s reason=shutdown", s->id, s->peer);
        reply_send(output(s), 421, "4.3.2", "%s Service shutting down",
                   server->settings.hostname);
        close_after_flush(s);
    }
    if (server->session_count == 0 && on_idle)
        on_idle(arg);
}

size_t smtp_server_session_count(const struct smtp_server *server)
{
    return server->session_count;
}

void smtp_server_free(struct smtp_server *server)
{
    while (server->sessions)
        session_free(server->sessions);
    free(server);
}

/* ---- accessors for hooks ---- */

const struct smtp_transaction *smtp_session_transaction(const struct smtp_session *s)
{
    return &s->txn;
}

bool smtp_session_data_follows(const struct smtp_session *s)
{
    char head[5];
    if (s->reader.skipping ||
        evbuffer_copyout(bufferevent_get_input(s->bev), head, sizeof head) != sizeof head)
        return false;
    return strncasecmp(head, "DATA\r", 5) == 0 || strncasecmp(head, "BDAT ", 5) == 0;
}

const char *smtp_session_id(const struct smtp_session *s)
{
    return s->id;
}

const char *smtp_session_peer(const struct smtp_session *s)
{
    return s->peer;
}

const char *smtp_session_helo(const struct smtp_session *s)
{
    return s->helo;
}

/* RFC 3848 protocol names for the Received header's "with" clause. */
const char *smtp_session_protocol(const struct smtp_session *s)
{
    if (is_lmtp(s))
        return "LMTP";
    if (!s->esmtp)
        return "SMTP";
    return s->tls_active ? "ESMTPS" : "ESMTP";
}

void *smtp_session_user(const struct smtp_session *s)
{
    return s->user;
}

void smtp_session_set_user(struct smtp_session *s, void *user)
{
    s->user = user;
}

bool smtp_session_closed_by_server(const struct smtp_session *s)
{
    return s->closed_by_server;
}

bool smtp_session_left_mid_transaction(const struct smtp_session *s)
{
    return s->ended_in_txn && !s->quit_received;
}
