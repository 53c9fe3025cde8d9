/* SPDX-License-Identifier: ISC */
/* The reversed session: smtp_server hooks that relay to the local target. */
#include "client/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "engines/smtp_server.h"
#include "lib/log.h"

enum { RELAY_MAX_RECIPIENTS = 1000, RELAY_MAX_LINE = 64 << 10 };

struct relay {
    struct event_base *base;
    const struct client_options *opts;
    struct target *target;
    struct smtp_server *server;
    struct smtp_session *session;
    struct relay_stats stats;
    void (*on_end)(void *arg);
    void *on_end_arg;
    unsigned txn_generation;     /* target connection the open transaction lives on */
    bool target_txn_open;        /* MAIL sent to the target and not finished */
    int spool_fd;                /* the session's spool file (relay_data_begin) */
    unsigned long long spool_len;   /* its length */
    bool group_rset;             /* the group under way gives up an open transaction */
    char rcpt_addr[SMTP_LOCAL_PART_MAX + SMTP_DOMAIN_MAX + 4];   /* its RCPT's address */
    char rcpt_notify[32];        /* and NOTIFY ("" for none; RFC 3461 4.1: at most 21) */
    unsigned long long msg_bytes;   /* the message being spooled */
};

/* ---- replies ---- */

/* The target was lost (connection closed, timed out or not to be had) while it was asked
 * something: 421, after which the engine closes the session (RFC 5321 3.8). Going on would
 * cost every further message the same wait; the provider keeps all that was not acknowledged
 * and the next run delivers it (docs/client.md, "Hostile and failing peers"). */
static void unavailable(struct smtp_reply *out)
{
    reply_set(out, 421, "4.4.0", "Local delivery target unavailable; closing, try again later");
}

/* The target's verdict, passed on as it is. No reply (code 0), or a 3xx where only 2xx, 4xx or
 * 5xx can be a verdict (RFC 5321 4.3.2: MAIL, RCPT, the final dot), means the target is gone
 * or out of step: 421, never a code the provider could take for acceptance or refusal. */
static void target_reply(const struct smtp_client_reply *w, struct smtp_reply *out)
{
    if (w->code == 0 || reply_class(w->code) == 3)
        unavailable(out);
    else
        peer_reply_to_smtp(w, out);
}

void relay_fold_lmtp(const struct smtp_client_reply *replies, size_t count, struct smtp_reply *out)
{
    const struct smtp_client_reply *first_ok = NULL, *first_4 = NULL, *first_5 = NULL;
    bool lost = false;
    for (size_t i = 0; i < count; i++) {
        int cls = replies[i].code / 100;
        if (cls == 2 && first_ok == NULL)
            first_ok = &replies[i];
        else if (cls == 5 && first_5 == NULL)
            first_5 = &replies[i];
        else if (cls != 2 && cls != 5 && first_4 == NULL)
            first_4 = &replies[i];
        lost = lost || replies[i].code == 0;
    }
    if (count == 0 || lost)
        unavailable(out);
    else if (first_ok != NULL && first_4 == NULL && first_5 == NULL)
        target_reply(first_ok, out);
    else if (first_ok != NULL)
        reply_set(out, 451, "4.3.0", "Local delivery accepted only some recipients; "
                  "retry all (RFC 2033 replies cannot be passed on one by one)");
    else if (first_4 != NULL)
        target_reply(first_4, out);
    else
        target_reply(first_5, out);
}

/* ---- building the commands for the target ---- */

static void address_of(const struct smtp_path_command *cmd, char *out, size_t len)
{
    if (cmd->mailbox.domain[0] != '\0')
        snprintf(out, len, "%s@%s", cmd->mailbox.local, cmd->mailbox.domain);
    else
        snprintf(out, len, "%s", cmd->mailbox.local);
}

/* The value of a RCPT parameter (checked by the engine: RFC 3461 4.1 NOTIFY, 4.2 ORCPT), or
 * NULL. */
static const char *param_value(const struct smtp_path_command *cmd, const char *keyword)
{
    for (size_t i = 0; i < cmd->param_count; i++)
        if (strcasecmp(cmd->params[i].keyword, keyword) == 0)
            return cmd->params[i].value;
    return NULL;
}

/* RFC 3461 5.2.2 (a): a target without DSN gets no NOTIFY, so what NOTIFY asked (a "delivered"
 * notice for SUCCESS, none at all for NEVER) cannot be honoured beyond us. The provider must
 * not take our 250 for that promise: the recipient's reply says so on a line of its own, and
 * the log names the recipient (docs/client.md, "Envelope parameters"). */
static void note_dsn_dropped(struct relay *r, struct smtp_reply *reply)
{
    if (r->rcpt_notify[0] == '\0' || target_capabilities(r->target)->dsn ||
        reply_class(reply->code) != 2)
        return;
    char qaddr[200];
    log_info("client.dsn_not_relayed", " rcpt=%s notify=%s",
             log_quote(qaddr, sizeof qaddr, r->rcpt_addr, strlen(r->rcpt_addr)),
             r->rcpt_notify);
    size_t n = strlen(reply->text);
    snprintf(reply->text + n, sizeof reply->text - n,
             "\nNOTIFY=%s not relayed: the local delivery target does not offer DSN",
             r->rcpt_notify);
}

/* ---- RCPT: [RSET] [MAIL] RCPT [DATA] to the target, its reply is the reply ---- */

/* A recipient's verdict from the target: MAIL's reply when this recipient opened the
 * transaction (a refused sender is the verdict on it), else its RCPT's. Read before the engine
 * is called (it may ask the target the next thing at once). */
static void rcpt_answered(void *arg, const struct smtp_client_reply *mail,
                          const struct smtp_client_reply *rcpt)
{
    struct relay *r = arg;
    struct smtp_reply reply;
    if (r->session == NULL)
        return;
    if (r->group_rset)
        r->target_txn_open = false;
    if (mail != NULL && mail->code / 100 != 2) {
        r->target_txn_open = false;
        target_reply(mail, &reply);
        smtp_session_rcpt_done(r->session, &reply);
        return;
    }
    if (mail != NULL) {
        r->target_txn_open = true;
        r->txn_generation = target_generation(r->target);
    }
    target_reply(rcpt, &reply);
    note_dsn_dropped(r, &reply);
    smtp_session_rcpt_done(r->session, &reply);
}

static void relay_rcpt(void *ctx, struct smtp_session *s, const struct smtp_path_command *cmd,
                       const char *domain_lower)
{
    struct relay *r = ctx;
    const struct smtp_transaction *txn = smtp_session_transaction(s);
    const char *notify = param_value(cmd, "NOTIFY");
    r->session = s;
    address_of(cmd, r->rcpt_addr, sizeof r->rcpt_addr);
    snprintf(r->rcpt_notify, sizeof r->rcpt_notify, "%s", notify != NULL ? notify : "");
    /* Later recipients join the transaction already open on the same connection; the first
     * accepted one (re)starts it: RSET when one was left open, then MAIL. */
    bool first = txn->rcpt_count == 0;
    if (!first && !(r->target_txn_open && r->txn_generation == target_generation(r->target))) {
        struct smtp_reply reply;
        unavailable(&reply);
        smtp_session_rcpt_done(s, &reply);
        return;
    }
    r->group_rset = first && r->target_txn_open;
    /* The target composes MAIL and RCPT when it sends them, from the capabilities of the
     * connection they go on (which may not be open yet). */
    const struct target_mail mail = {
        .sender = txn->sender ? txn->sender : "",
        .size = txn->declared_size,
        .eightbit = txn->body == SMTP_BODY_8BITMIME,
        .smtputf8 = txn->smtputf8,
        .ret = txn->ret,
        .envid = txn->envid,
    };
    /* RFC 2920: when the provider's DATA/BDAT is already here, DATA goes along (last), and
     * the target's 354 comes back with the RCPT verdict instead of a round trip later. */
    struct target_group g = {
        .rset = r->group_rset,
        .mail = first ? &mail : NULL,
        .rcpt = {r->rcpt_addr, notify, param_value(cmd, "ORCPT")},
        .data = smtp_session_data_follows(s),
    };
    target_group(r->target, &g, rcpt_answered, r);
}

/* ---- DATA: spool to an unlinked file (bounded memory), then relay ---- */

static int open_spool(void)
{
    const char *dir = getenv("TMPDIR");
    if (dir == NULL || dir[0] == '\0')
        dir = "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[4096];
    snprintf(path, sizeof path, "%s/odmr-client.XXXXXX", dir);
    fd = mkstemp(path);
    if (fd >= 0)
        unlink(path);
    return fd;
}

static void close_spool(struct relay *r)
{
    if (r->spool_fd >= 0)
        close(r->spool_fd);
    r->spool_fd = -1;
}

/* One spool file per session, rewritten from the start for each message: creating and
 * removing a file per message costs more than writing the data (ext4 inode allocation). After
 * a message shorter than the file it is cut to the message's length, so the file always ends
 * where the message ends (target_data() and local delivery read to EOF). */
static int relay_data_begin(void *ctx, struct smtp_session *s, struct smtp_reply *reply)
{
    struct relay *r = ctx;
    if (!r->target_txn_open || r->txn_generation != target_generation(r->target)) {
        unavailable(reply);
        return -1;
    }
    r->msg_bytes = 0;
    if (r->spool_fd < 0) {
        r->spool_fd = open_spool();
        r->spool_len = 0;
    }
    if (r->spool_fd < 0 || lseek(r->spool_fd, 0, SEEK_SET) != 0) {
        reply_set(reply, 452, "4.3.1", "Cannot spool the message: %s", strerror(errno));
        close_spool(r);
        return -1;
    }
    return 0;
}

static int relay_data_write(void *ctx, struct smtp_session *s, const char *data, size_t len)
{
    struct relay *r = ctx;
    r->msg_bytes += len;
    if (r->msg_bytes > r->spool_len)
        r->spool_len = r->msg_bytes;
    return local_write_all(r->spool_fd, data, len, 0);   /* a file: no deadline */
}

static void count_outcome(struct relay *r, const struct smtp_reply *reply)
{
    r->stats.messages++;
    int cls = reply_class(reply->code);
    if (cls == 2) {
        r->stats.delivered++;
        r->stats.bytes += r->msg_bytes;
    } else if (cls == 4) {
        r->stats.deferred++;
    } else {
        r->stats.failed++;
    }
    char text[120];
    log_info("client.message", " code=%d reply=%s", reply->code,
             log_quote(text, sizeof text, reply->text, strlen(reply->text)));
}

/* One reply per recipient (LMTP, maildir:, mda:) is folded into one for the provider, which
 * then records the folded reply for every recipient: log each recipient's own reply, so the
 * one that made a "451 4.3.0 ... only some recipients" (or the others behind a first 5xx) is
 * named. Not 2xx at info, 2xx with -v. The replies follow the accepted recipients' order. */
static void log_rcpt_replies(struct relay *r, const struct smtp_client_reply *replies,
                             size_t count)
{
    const struct smtp_transaction *txn = smtp_session_transaction(r->session);
    for (size_t i = 0; i < count; i++) {
        const char *addr = txn != NULL && i < txn->rcpt_count ? txn->rcpts[i].address : "?";
        char qaddr[200], quoted[200], text[PEER_REPLY_TEXT];
        peer_reply_text(&replies[i], text, sizeof text);
        log_event(replies[i].code / 100 == 2 ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
                  "client.rcpt_result", " rcpt=%s code=%d reply=%s",
                  log_quote(qaddr, sizeof qaddr, addr, strlen(addr)), replies[i].code,
                  log_quote(quoted, sizeof quoted, text, strlen(text)));
    }
}

static void data_answered(void *arg, const struct smtp_client_reply *replies, size_t count)
{
    struct relay *r = arg;
    struct smtp_reply reply;
    r->target_txn_open = false;
    if (target_per_recipient(r->target) && count > 1) {
        log_rcpt_replies(r, replies, count);
        relay_fold_lmtp(replies, count, &reply);
    } else {
        target_reply(&replies[0], &reply);
    }
    count_outcome(r, &reply);
    smtp_session_data_done(r->session, &reply);
}

static void relay_data_end(void *ctx, struct smtp_session *s)
{
    struct relay *r = ctx;
    const struct smtp_transaction *txn = smtp_session_transaction(s);
    size_t replies = target_per_recipient(r->target) ? txn->rcpt_count : 1;
    if (r->spool_len > r->msg_bytes) {
        if (ftruncate(r->spool_fd, (off_t)r->msg_bytes) != 0) {
            log_warn("client.spool", " error=\"%s\"", strerror(errno));
            close_spool(r);   /* target_data() answers "unavailable" for a missing body */
        }
        r->spool_len = r->msg_bytes;
    }
    target_data(r->target, r->spool_fd, replies, data_answered, r);
}

/* Why the reversed session ended, and whether that was clean (exit 0) or not (exit 7): a
 * provider recipient was accepted and the transaction never got its final reply, or we had to
 * close the session ourselves. */
static void judge_end(struct relay *r, const struct smtp_session *s)
{
    bool in_txn = smtp_session_transaction(s)->rcpt_count > 0 ||
                  smtp_session_left_mid_transaction(s);
    bool by_us = smtp_session_closed_by_server(s);
    r->stats.clean = !in_txn && !by_us;
    r->stats.end = by_us ? "closed by odmr-client (limit, timeout, protocol error or target lost)"
                   : in_txn ? "connection ended inside a transaction"
                            : "ended by the provider";
}

static void relay_session_closed(void *ctx, struct smtp_session *s)
{
    struct relay *r = ctx;
    r->session = NULL;
    judge_end(r, s);
    if (r->on_end != NULL)
        r->on_end(r->on_end_arg);
}

static const struct smtp_server_hooks relay_hooks = {
    .check_rcpt_async = relay_rcpt,
    .data_begin = relay_data_begin,
    .data_write = relay_data_write,
    /* no data_abort: what was spooled stays in the unlinked file until the next message
     * overwrites it */
    .data_end = relay_data_end,
    .session_closed = relay_session_closed,
};

/* Our EHLO reply after the turnaround names X-ODMR-FAST: odmrd then pushes with PIPELINING
 * (docs/client.md, docs/push.md). */
static const char *const relay_ehlo_extra[] = {"X-ODMR-FAST", NULL};

struct relay *relay_new(struct event_base *base, const struct client_options *o,
                        struct target *t, const char *hostname, uint64_t max_size,
                        bool target_dsn, void (*on_end)(void *arg), void *arg)
{
    struct relay *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    *r = (struct relay){
        .base = base, .opts = o, .target = t, .spool_fd = -1, .on_end = on_end, .on_end_arg = arg,
    };
    struct smtp_server_settings settings = {
        .mode = SMTP_SERVER_SMTP,
        .hostname = hostname,
        .role = "reversed",
        .limits = {
            .max_message_size = max_size,
            .max_recipients = RELAY_MAX_RECIPIENTS,
            .max_line_length = RELAY_MAX_LINE,
            .max_errors = 1000,
            .max_junk_commands = 1000,
            .command_timeout = client_timeout_seconds(o, TIMEOUT_SERVER_COMMAND),
            .data_timeout = client_timeout_seconds(o, TIMEOUT_SERVER_DATA),
        },
        .hooks = &relay_hooks,
        .hooks_ctx = r,
        .max_sessions = 1,
        .ehlo_extra = relay_ehlo_extra,
        .chunking = true,   /* RFC 3030: with PIPELINING, many messages per round trip */
        /* RFC 3461 5.2.2: advertising DSN claims the notices of the hops after us; a target
         * without DSN cannot give them, so the provider must see a hop without DSN and write
         * the relayed notices itself (docs/client.md). */
        .no_dsn = !target_dsn,
    };
    r->server = smtp_server_new(base, &settings);
    if (r->server == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

int relay_start(struct relay *r, struct bufferevent *bev, const char *peer, bool tls_active)
{
    r->session = smtp_server_adopt(r->server, bev, peer, tls_active);
    return r->session != NULL ? 0 : -1;
}

const struct relay_stats *relay_stats(const struct relay *r)
{
    return &r->stats;
}

void relay_free(struct relay *r)
{
    if (r == NULL)
        return;
    r->on_end = NULL;   /* freeing a live session must not report an end again */
    smtp_server_free(r->server);
    close_spool(r);
    free(r);
}
