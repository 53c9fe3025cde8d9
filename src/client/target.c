/* SPDX-License-Identifier: ISC */
/* The local target (target.h): transactions on the client engine, the connection opened when
 * first needed and again after it is lost; the spec is target_spec.c, the connect
 * target_connect.c, one transaction's envelope and parameters target_txn.c, the probe
 * target_probe.c, maildir: and mda: target_local.c. */
#include "client/target.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "client/target_connect.h"
#include "client/target_local.h"
#include "lib/log.h"

/* ---- the connection: the client engine ---- */

/* One connection; the engine's callbacks carry it, so that a connection given up (a new one
 * may be open already) still ends in order. */
struct tconn {
    struct target *t;                 /* NULL once given up (ending) */
    struct target *owner;
    struct tconn *next;               /* the owner's list */
    struct smtp_client *client;
};

enum answer_kind { ANSWER_NONE, ANSWER_GROUP, ANSWER_DATA };

struct target {
    struct event_base *base;
    struct target_spec spec;
    const struct client_options *opts;
    char helo[256];
    struct tconn *conn;          /* NULL: no connection */
    struct tconn *conns;         /* every connection not closed yet (conn among them) */
    struct target_txn *txns;           /* every transaction the engine may still hand back */
    SSL_CTX *tls_ctx;            /* for STARTTLS, or NULL (target_tls_context) */
    bool ready;                  /* EHLO/LHLO answered: caps known */
    unsigned generation;
    struct smtp_client_ext caps;
    struct target_txn *txn;            /* the transaction open on the target, or NULL */
    /* the group waiting for its verdict, the data waiting for its replies */
    target_rcpt_cb group_cb;
    void *group_arg;
    bool group_mail;             /* the group opened the transaction: its MAIL reply counts */
    size_t group_rcpt;           /* its recipient's index */
    target_cb data_cb;
    void *data_arg;
    size_t data_count;
    /* answers made here (local targets, no connection), handed over from the loop */
    struct event *deliver;
    enum answer_kind answer;
    struct smtp_client_reply answer_mail, answer_rcpt;
    struct smtp_client_reply *answers;
    struct target_local local;   /* maildir: and mda: */
};

/* Hands a group's verdict to the caller (once). */
static void answer_group(struct target *t, const struct smtp_client_reply *mail,
                         const struct smtp_client_reply *rcpt)
{
    target_rcpt_cb cb = t->group_cb;
    t->group_cb = NULL;
    if (cb != NULL)
        cb(t->group_arg, t->group_mail ? mail : NULL, rcpt);
}

static void answer_data(struct target *t, const struct smtp_client_reply *replies)
{
    target_cb cb = t->data_cb;
    t->data_cb = NULL;
    if (cb != NULL)
        cb(t->data_arg, replies, t->data_count);
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    struct target *t = arg;
    enum answer_kind kind = t->answer;
    t->answer = ANSWER_NONE;
    if (kind == ANSWER_GROUP)
        answer_group(t, &t->answer_mail, &t->answer_rcpt);
    else if (kind == ANSWER_DATA)
        answer_data(t, t->answers);
}

/* Answers made here (answer_mail and answer_rcpt, or answers) go from the loop, never from
 * inside a target_* call. */
static void answer_later(struct target *t, enum answer_kind kind)
{
    t->answer = kind;
    event_active(t->deliver, EV_WRITE, 0);
}

/* A verdict made here (no reply from the target: code 0, or a refusal), from the loop. */
static void defer_group(struct target *t, const struct smtp_client_reply *mail)
{
    memset(&t->answer_rcpt, 0, sizeof t->answer_rcpt);
    if (mail != NULL)
        t->answer_mail = *mail;
    else
        memset(&t->answer_mail, 0, sizeof t->answer_mail);
    answer_later(t, ANSWER_GROUP);
}

/* count replies with code 0 (target unavailable), from the loop. */
static void defer_unavailable(struct target *t)
{
    memset(t->answers, 0, t->data_count * sizeof *t->answers);
    answer_later(t, ANSWER_DATA);
}

/* The transaction is no longer the target's concern: given up, or over. */
static void detach_txn(struct target *t, bool cancel)
{
    struct target_txn *x = t->txn;
    t->txn = NULL;
    if (x == NULL)
        return;
    if (!x->started) {
        target_txn_free(x);   /* never handed to the engine */
        return;
    }
    x->t = NULL;        /* freed at its txn_done */
    if (cancel && t->conn != NULL)
        smtp_client_cancel(t->conn->client, &x->txn);
}

/* The engine's verdict on one recipient: the group's, if it is the one waited for. */
static void on_rcpt_done(void *user, struct smtp_client_txn *txn, size_t index)
{
    struct target_txn *x = user;
    struct target *t = x->t;
    if (t == NULL || t->txn != x || index != t->group_rcpt)
        return;
    /* A refused MAIL leaves nothing open on the target. */
    if (txn->mail_reply.code / 100 != 2)
        detach_txn(t, true);
    answer_group(t, &txn->mail_reply, &txn->rcpts[index].reply);
}

/* After the data: one reply per accepted recipient in RCPT order (LMTP, RFC 2033 4.2), or the
 * one reply (SMTP), or the refusal of DATA; code 0 for what never came. */
static void on_txn_done(void *arg, struct smtp_client_txn *txn)
{
    struct target_txn *x = txn->user;
    struct target *t = x->t;
    if (t != NULL && t->txn == x) {
        t->txn = NULL;
        size_t k = 0;
        memset(t->answers, 0, t->data_count * sizeof *t->answers);
        for (size_t i = 0; i < txn->rcpt_count && k < t->data_count; i++)
            if (txn->rcpts[i].reply.code / 100 == 2)
                t->answers[k++] = txn->rcpts[i].data_reply;
        target_txn_free(x);
        answer_data(t, t->answers);
        return;
    }
    target_txn_free(x);
}

/* -v: every command to the target, quoted. */
static void on_command_sent(void *arg, const char *line)
{
    char quoted[200];
    log_debug("target.send", " line=%s", log_quote(quoted, sizeof quoted, line, strlen(line)));
}

/* -v: every reply of the target, its text quoted (a reply cannot forge a log line). */
static void on_reply_seen(void *arg, const struct smtp_client_reply *r)
{
    struct tconn *tc = arg;
    if (tc->t == NULL || !tc->t->opts->verbose)
        return;
    char text[PEER_REPLY_TEXT], quoted[300];
    peer_reply_text(r, text, sizeof text);
    log_debug("target.reply", " code=%d text=%s", r->code,
              log_quote(quoted, sizeof quoted, text, strlen(text)));
}

static void start_txn(struct target *t);

static void on_ready(void *arg, const struct smtp_client_ext *ext,
                     const struct smtp_client_reply *greeting)
{
    struct tconn *tc = arg;
    struct target *t = tc->t;
    if (t == NULL || t->conn != tc)
        return;
    t->caps = *ext;
    t->ready = true;
    if (t->txn != NULL && !t->txn->started)
        start_txn(t);
}

/* The connection is gone: what was asked got its code 0 replies from the engine (rcpt_done,
 * txn_done); a group still waiting for the greeting gets them here. The next MAIL reopens. */
static void on_closed(void *arg, enum smtp_client_end how, const char *reason)
{
    struct tconn *tc = arg;
    struct target *t = tc->t;
    char quoted[300];
    if (t != NULL && how != SMTP_CLIENT_END_QUIT)
        log_warn("target.lost", " reason=%s end=%s",
                 log_quote(quoted, sizeof quoted, reason, strlen(reason)),
                 smtp_client_end_name(how));
    for (struct tconn **p = &tc->owner->conns; *p != NULL; p = &(*p)->next)
        if (*p == tc) {
            *p = tc->next;
            break;
        }
    smtp_client_free(tc->client);   /* reason lives in it */
    free(tc);
    if (t == NULL)
        return;
    t->conn = NULL;
    t->ready = false;
    if (t->txn != NULL && !t->txn->started) {
        detach_txn(t, false);
        answer_group(t, NULL, &(struct smtp_client_reply){0});
    }
}

static const struct smtp_client_callbacks target_callbacks = {
    .ready = on_ready, .txn_done = on_txn_done, .closed = on_closed,
};

static int open_connection(struct target *t)
{
    char err[256];
    struct tconn *tc = calloc(1, sizeof *tc);
    if (tc == NULL)
        return -1;
    tc->t = tc->owner = t;
    const struct target_link link = {
        .spec = &t->spec, .opts = t->opts, .helo = t->helo, .tls_ctx = t->tls_ctx};
    tc->client = target_connect(t->base, &link, &target_callbacks, tc, err, sizeof err);
    if (tc->client == NULL) {
        log_warn("target.connect_failed", " error=%s", err);
        free(tc);
        return -1;
    }
    tc->next = t->conns;
    t->conns = tc;
    if (t->opts->verbose)
        smtp_client_trace(tc->client, on_command_sent, on_reply_seen);
    t->conn = tc;
    t->ready = false;
    t->generation++;
    return 0;
}

/* The connection is ready: MAIL (composed now, from its EHLO reply) and the first RCPT. A
 * message the target cannot take gets its refusal as MAIL's reply, and nothing is sent. */
static void start_txn(struct target *t)
{
    struct target_txn *x = t->txn;
    struct smtp_client_reply refusal = {0};
    if (target_mail_params(&t->caps, &x->mail, x->mail_params, sizeof x->mail_params,
                           &refusal) != 0) {
        detach_txn(t, false);
        defer_group(t, &refusal);
        return;
    }
    x->txn = (struct smtp_client_txn){
        .mail_from = x->sender, .mail_params = x->mail_params, .user = x,
        .rcpt_done = on_rcpt_done,
    };
    if (target_txn_add_rcpt(x, &t->caps, &x->first, &t->group_rcpt) != 0 ||
        smtp_client_open(t->conn->client, &x->txn) != 0) {
        detach_txn(t, false);
        defer_group(t, NULL);
        return;
    }
    x->started = true;
    if (x->first_data)
        smtp_client_rcpts_done(t->conn->client, &x->txn);
}

/* MAIL and the first RCPT. A transaction never spans two connections, but MAIL may open a new
 * one. */
static void group_open(struct target *t, const struct target_group *g)
{
    if (t->conn == NULL && open_connection(t) != 0) {
        defer_group(t, NULL);
        return;
    }
    t->txn = target_txn_new(&t->txns, t, g->mail, &g->rcpt, g->data);
    if (t->txn == NULL) {
        defer_group(t, NULL);
        return;
    }
    if (t->ready)
        start_txn(t);
}

/* A later RCPT joins the transaction on the connection it lives on. On a new connection the
 * target would answer it 503, a permanent failure for mail that is only delayed: no reply
 * (code 0) instead. */
static void group_join(struct target *t, const struct target_group *g)
{
    struct target_txn *x = t->txn;
    if (x == NULL || !x->started || t->conn == NULL ||
        target_txn_add_rcpt(x, &t->caps, &g->rcpt, &t->group_rcpt) != 0) {
        defer_group(t, NULL);
        return;
    }
    if (smtp_client_add_rcpt(t->conn->client, &x->txn) != 0) {
        target_txn_forget_rcpt(x);   /* the list is closed: the engine took it back */
        defer_group(t, NULL);
        return;
    }
    if (g->data)
        smtp_client_rcpts_done(t->conn->client, &x->txn);
}

void target_group(struct target *t, const struct target_group *g, target_rcpt_cb cb, void *arg)
{
    t->group_cb = cb;
    t->group_arg = arg;
    t->group_mail = g->mail != NULL;
    if (target_spec_is_local(&t->spec)) {
        target_local_group(&t->local, g->rset, g->mail != NULL ? g->mail->sender : NULL,
                           g->rcpt.address, &t->answer_mail, &t->answer_rcpt);
        answer_later(t, ANSWER_GROUP);
        return;
    }
    if (g->rset || g->mail != NULL)
        detach_txn(t, true);   /* RSET, or the connection dropped inside the data */
    if (t->conn != NULL && smtp_client_ended(t->conn->client)) {
        t->conn->t = NULL;     /* ending: its closed() frees it */
        t->conn = NULL;
        t->ready = false;
    }
    if (g->mail != NULL)
        group_open(t, g);
    else
        group_join(t, g);
}

void target_data(struct target *t, int fd, size_t count, target_cb cb, void *arg)
{
    struct stat st;
    t->data_cb = cb;
    t->data_arg = arg;
    t->data_count = count < TARGET_MAX_RCPTS ? count : TARGET_MAX_RCPTS;
    if (target_spec_is_local(&t->spec) && fd >= 0) {
        target_local_data(&t->local, fd, t->answers, t->data_count);
        answer_later(t, ANSWER_DATA);
        return;
    }
    struct target_txn *x = t->txn;
    if (fd < 0 || x == NULL || t->conn == NULL || fstat(fd, &st) != 0) {
        /* No body to send: a DATA left open ends without its dot; the replies have code 0. */
        detach_txn(t, true);
        defer_unavailable(t);
        return;
    }
    /* The spool file ends where the message ends: its size is the body's (BDAT's chunk). */
    const struct smtp_client_body body = {.fd = fd, .offset = 0, .length = (uint64_t)st.st_size};
    smtp_client_data(t->conn->client, &x->txn, &body);
}

/* ---- the target ---- */

struct target *target_new(struct event_base *base, const struct target_spec *spec,
                          const struct client_options *o, const char *helo)
{
    struct target *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->base = base;
    t->spec = *spec;
    t->opts = o;
    snprintf(t->helo, sizeof t->helo, "%s", helo);
    t->deliver = event_new(base, -1, 0, on_deliver, t);
    t->tls_ctx = target_tls_context(spec);
    t->answers = calloc(TARGET_MAX_RCPTS, sizeof *t->answers);
    int local_failed = 0;
    if (target_spec_is_local(spec)) {
        t->generation = 1;   /* nothing to lose: a transaction never spans a reconnection */
        target_local_caps(&t->caps);
        local_failed = target_local_init(&t->local, &t->spec, o);
    }
    if (t->deliver == NULL || t->answers == NULL || local_failed != 0) {
        target_free(t);
        return NULL;
    }
    return t;
}

/* QUIT if connected and idle (best effort, without waiting: the loop is over). */
void target_quit(struct target *t)
{
    if (t->conn != NULL && t->txn == NULL)
        smtp_client_quit_now(t->conn->client);
}

void target_free(struct target *t)
{
    if (t == NULL)
        return;
    /* The engines hand back what they hold (txn_done, closed) only from the loop, which is
     * over: end them here, and free what they held. */
    while (t->conns != NULL) {
        struct tconn *tc = t->conns;
        t->conns = tc->next;
        smtp_client_free(tc->client);
        free(tc);
    }
    while (t->txns != NULL)
        target_txn_free(t->txns);
    if (t->deliver != NULL)
        event_free(t->deliver);
    target_local_free(&t->local);
    free(t->answers);
    SSL_CTX_free(t->tls_ctx);
    free(t);
}

unsigned target_generation(const struct target *t)
{
    return t->generation;
}

const struct smtp_client_ext *target_capabilities(const struct target *t)
{
    return &t->caps;
}

bool target_is_lmtp(const struct target *t)
{
    return t->spec.kind == TARGET_LMTP;
}

bool target_per_recipient(const struct target *t)
{
    return t->spec.kind != TARGET_SMTP;
}
