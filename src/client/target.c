/* SPDX-License-Identifier: ISC */
/* The local target (target.h): the spec, the connection on the client engine, Maildir and MDA. */
#include "client/target.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engines/smtp_params.h"
#include "lib/log.h"

#include <openssl/ssl.h>

enum {
    BODY_HIGH = 256 << 10,   /* the largest single write of the body */
    MAX_REPLIES = 1000,      /* LMTP: one per recipient */
    TXN_PARAMS = 1024,       /* MAIL's or a RCPT's parameters */
};

/* ---- the spec ---- */

static int split_host_port(const char *text, struct target_spec *out, char *err, size_t errlen)
{
    const char *colon;
    const char *host = text;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        host = text + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            goto bad;
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0 || hlen >= sizeof out->host || strlen(colon + 1) == 0 ||
        strlen(colon + 1) >= sizeof out->port || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        goto bad;
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    snprintf(out->port, sizeof out->port, "%s", colon + 1);
    return 0;
bad:
    snprintf(err, errlen, "bad target address '%s': use HOST:PORT", text);
    return -1;
}

static int parse_network(const char *text, const char *rest, struct target_spec *out, char *err,
                         size_t errlen)
{
    if (strncmp(rest, "unix:", 5) != 0)
        return split_host_port(rest, out, err, errlen);
    if (rest[5] != '/' || strlen(rest + 5) >= sizeof out->unix_path) {
        snprintf(err, errlen, "bad unix socket path in '%s'", text);
        return -1;
    }
    out->is_unix = true;
    snprintf(out->unix_path, sizeof out->unix_path, "%s", rest + 5);
    return 0;
}

static int parse_network_tls(const char *text, const char *rest, struct target_spec *out,
                             char *err, size_t errlen)
{
    out->starttls_required = true;
    if (strncmp(rest, "unix:", 5) == 0) {
        snprintf(err, errlen, "STARTTLS needs a TCP target: '%s'", text);
        return -1;
    }
    return parse_network(text, rest, out, err, errlen);
}

static int parse_maildir(const char *text, const char *rest, struct target_spec *out, char *err,
                         size_t errlen)
{
    snprintf(out->local, sizeof out->local, "%s", rest);
    return maildir_template_check(rest, err, errlen);
}

static int parse_mda(const char *text, const char *rest, struct target_spec *out, char *err,
                     size_t errlen)
{
    struct mda_command c;
    snprintf(out->local, sizeof out->local, "%s", rest);
    return mda_parse(rest, &c, err, errlen);
}

int target_parse(const char *text, struct target_spec *out, char *err, size_t errlen)
{
    static const struct {
        const char *prefix;
        enum target_kind kind;
        int (*parse)(const char *, const char *, struct target_spec *, char *, size_t);
    } kinds[] = {
        {"smtp:", TARGET_SMTP, parse_network},
        {"lmtp:", TARGET_LMTP, parse_network},
        {"smtp+starttls:", TARGET_SMTP, parse_network_tls},
        {"lmtp+starttls:", TARGET_LMTP, parse_network_tls},
        {"maildir:", TARGET_MAILDIR, parse_maildir},
        {"mda:", TARGET_MDA, parse_mda},
    };
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t plen = strlen(kinds[i].prefix);
        if (strncmp(text, kinds[i].prefix, plen) != 0)
            continue;
        out->kind = kinds[i].kind;
        return kinds[i].parse(text, text + plen, out, err, errlen);
    }
    snprintf(err, errlen, "unsupported --deliver '%s': use smtp:HOST:PORT, lmtp:HOST:PORT, "
             "lmtp:unix:/path, smtp+starttls:HOST:PORT, lmtp+starttls:HOST:PORT, "
             "maildir:/path or mda:/path/to/command args", text);
    return -1;
}

static bool is_local(const struct target_spec *spec)
{
    return spec->kind == TARGET_MAILDIR || spec->kind == TARGET_MDA;
}

static bool is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* STARTTLS toward the target (RFC 3207, docs/client.md "Local delivery target"): required and
 * verified for +starttls; otherwise opportunistic and unauthenticated (RFC 7435) toward a host
 * that is not loopback; never over loopback or a unix socket, where TLS protects nothing. */
static SSL_CTX *target_tls_context(const struct target_spec *spec)
{
    if (is_local(spec) || spec->is_unix || (!spec->starttls_required && is_loopback(spec->host)))
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, spec->starttls_required ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (spec->starttls_required && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return NULL;   /* the engine then refuses to go on in clear */
    }
    return ctx;
}


/* ---- MAIL and RCPT parameters (engines/smtp_params.c: the rules; the wording here) ---- */

/* RFC 6531 3.5: a SMTPUTF8 message cannot go to a server without SMTPUTF8 (no downgrade
 * here): 553 5.6.7. RFC 6152 3: an 8-bit message to a server without 8BITMIME is converted or
 * returned; we do not convert: 554 5.6.3, the answer odmrd's own push gives a customer without
 * 8BITMIME (docs/client.md). */
int target_mail_params(const struct smtp_client_ext *caps, const struct target_mail *m,
                       char *params, size_t len, struct smtp_client_reply *refusal)
{
    const struct smtp_params_mail pm = {
        .sender = m->sender, .size = m->size, .size_known = m->size != 0,
        .body = m->eightbit ? SMTP_PARAMS_8BITMIME : SMTP_PARAMS_7BIT,
        .smtputf8 = m->smtputf8, .ret = m->ret, .envid = m->envid,
    };
    switch (smtp_params_mail(caps, false, &pm, params, len)) {
    case SMTP_PARAMS_OK:
        return 0;
    case SMTP_PARAMS_NEEDS_SMTPUTF8:
        peer_reply_set(refusal, 553, "5.6.7 The message needs SMTPUTF8, which the local "
                       "delivery target does not offer");
        return -1;
    case SMTP_PARAMS_NEEDS_8BITMIME:
    case SMTP_PARAMS_NEEDS_BINARYMIME:
        peer_reply_set(refusal, 554, "5.6.3 The message needs 8BITMIME, which the local "
                       "delivery target does not offer");
        return -1;
    default:
        peer_reply_set(refusal, 553, "5.1.7 Unusable reverse-path");
        return -1;
    }
}

void target_rcpt_params(const struct smtp_client_ext *caps, const struct target_rcpt *r,
                        char *params, size_t len)
{
    smtp_params_rcpt(caps, r->notify, r->orcpt, params, len);
}

/* ---- the connection: the client engine ---- */

/* One transaction on the engine: its recipients' strings are copies, kept until txn_done. */
struct ttxn {
    struct smtp_client_txn txn;
    struct target *t;                 /* NULL once given up (detach_txn) */
    struct target *owner;             /* frees it (target_free at the latest) */
    struct ttxn *next;                /* the owner's list */
    size_t cap;
    char *sender;
    char mail_params[TXN_PARAMS];
    struct target_mail mail;          /* the envelope until MAIL is composed (ready) */
    char *mail_strings[2];            /* ret, envid */
    struct target_rcpt first;         /* the first recipient until then */
    char *first_strings[3];           /* address, notify, orcpt */
    bool started, first_data;
};

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
    struct ttxn *txns;           /* every transaction the engine may still hand back */
    SSL_CTX *tls_ctx;            /* for STARTTLS, or NULL (target_tls_context) */
    bool ready;                  /* EHLO/LHLO answered: caps known */
    unsigned generation;
    struct smtp_client_ext caps;
    struct ttxn *txn;            /* the transaction open on the target, or NULL */
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
    /* local targets: the open transaction */
    struct mda_command mda;
    char *sender;
    struct local_rcpt { char *addr; char *dest; } *rcpts;
    size_t rcpt_count;
};

/* Unlinks item from a list whose links are at offset next_off. */
static void unlink_item(void **head, void *item, size_t next_off)
{
    for (void **p = head; *p != NULL; p = (void **)((char *)*p + next_off))
        if (*p == item) {
            *p = *(void **)((char *)item + next_off);
            return;
        }
}

static void ttxn_free(struct ttxn *x)
{
    unlink_item((void **)&x->owner->txns, x, offsetof(struct ttxn, next));
    for (size_t i = 0; i < x->txn.rcpt_count; i++) {
        free((char *)x->txn.rcpts[i].address);
        free((char *)x->txn.rcpts[i].params);
    }
    for (size_t i = 0; i < 2; i++)
        free(x->mail_strings[i]);
    for (size_t i = 0; i < 3; i++)
        free(x->first_strings[i]);
    free(x->txn.rcpts);
    free(x->sender);
    free(x);
}

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

/* A verdict made here (no reply from the target: code 0, or a refusal), from the loop. */
static void defer_group(struct target *t, const struct smtp_client_reply *mail)
{
    memset(&t->answer_rcpt, 0, sizeof t->answer_rcpt);
    if (mail != NULL)
        t->answer_mail = *mail;
    else
        memset(&t->answer_mail, 0, sizeof t->answer_mail);
    t->answer = ANSWER_GROUP;
    event_active(t->deliver, EV_WRITE, 0);
}

/* count replies with code 0 (target unavailable), from the loop. */
static void defer_unavailable(struct target *t)
{
    memset(t->answers, 0, t->data_count * sizeof *t->answers);
    t->answer = ANSWER_DATA;
    event_active(t->deliver, EV_WRITE, 0);
}

/* The transaction is no longer the target's concern: given up, or over. */
static void detach_txn(struct target *t, bool cancel)
{
    struct ttxn *x = t->txn;
    t->txn = NULL;
    if (x == NULL)
        return;
    if (!x->started) {
        ttxn_free(x);   /* never handed to the engine */
        return;
    }
    x->t = NULL;        /* freed at its txn_done */
    if (cancel && t->conn != NULL)
        smtp_client_cancel(t->conn->client, &x->txn);
}

/* The engine's verdict on one recipient: the group's, if it is the one waited for. */
static void on_rcpt_done(void *user, struct smtp_client_txn *txn, size_t index)
{
    struct ttxn *x = user;
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
    struct ttxn *x = txn->user;
    struct target *t = x->t;
    if (t != NULL && t->txn == x) {
        t->txn = NULL;
        size_t k = 0;
        memset(t->answers, 0, t->data_count * sizeof *t->answers);
        for (size_t i = 0; i < txn->rcpt_count && k < t->data_count; i++)
            if (txn->rcpts[i].reply.code / 100 == 2)
                t->answers[k++] = txn->rcpts[i].data_reply;
        ttxn_free(x);
        answer_data(t, t->answers);
        return;
    }
    ttxn_free(x);
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
    unlink_item((void **)&tc->owner->conns, tc, offsetof(struct tconn, next));
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

/* RFC 5321 4.5.3.2 timeouts, from the client's settings (whole seconds, scaled). */
static struct smtp_client_config engine_config(const struct target *t)
{
    const struct client_options *o = t->opts;
    unsigned flags = SMTP_CLIENT_USE_PIPELINING | SMTP_CLIENT_USE_CHUNKING |
                     SMTP_CLIENT_STRICT_CRLF;
    if (t->spec.kind == TARGET_LMTP)
        flags |= SMTP_CLIENT_LMTP;
    if (t->spec.starttls_required)
        flags |= SMTP_CLIENT_STARTTLS_REQUIRED;
    else if (t->tls_ctx != NULL)
        flags |= SMTP_CLIENT_STARTTLS;
    return (struct smtp_client_config){
        .helo_name = t->helo,
        .flags = flags,
        .tls_ctx = t->tls_ctx,
        .tls_name = t->spec.host,
        .timeouts = {
            .greeting = client_timeout_seconds(o, TIMEOUT_GREETING),
            .command = client_timeout_seconds(o, TIMEOUT_COMMAND),
            .data_init = client_timeout_seconds(o, TIMEOUT_DATA_INIT),
            .data_block = client_timeout_seconds(o, TIMEOUT_DATA_BLOCK),
            .data_end = client_timeout_seconds(o, TIMEOUT_DATA_END),
        },
    };
}

/* Connects (blocking, bounded) and hands the socket to the engine on base. */
static struct smtp_client *engine_connect(struct event_base *base, const struct target *t,
                                          const struct smtp_client_callbacks *cb, void *arg,
                                          char *err, size_t errlen)
{
    int fd = wire_connect(t->spec.host, t->spec.port, t->spec.is_unix ? t->spec.unix_path : NULL,
                          client_timeout(t->opts, TIMEOUT_CONNECT), err, errlen);
    if (fd < 0)
        return NULL;
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* libevent writes at most 16 KiB per callback by default: the body goes in bigger writes */
    bufferevent_set_max_single_write(bev, BODY_HIGH);
    const struct smtp_client_config cfg = engine_config(t);
    struct smtp_client *c = smtp_client_new(base, bev, &cfg, cb, arg);
    if (c == NULL) {
        bufferevent_free(bev);
        snprintf(err, errlen, "out of memory");
    }
    return c;
}

static int open_connection(struct target *t)
{
    char err[256];
    struct tconn *tc = calloc(1, sizeof *tc);
    if (tc == NULL)
        return -1;
    tc->t = tc->owner = t;
    tc->client = engine_connect(t->base, t, &target_callbacks, tc, err, sizeof err);
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

/* Copies of the caller's strings, kept with the transaction. */
static int keep(char **slot, const char *from, const char **to)
{
    *to = NULL;
    if (from == NULL)
        return 0;
    *slot = strdup(from);
    *to = *slot;
    return *slot != NULL ? 0 : -1;
}

/* Appends a recipient to x, its parameters composed for the connection's capabilities. */
static int add_rcpt(struct target *t, struct ttxn *x, const struct target_rcpt *r)
{
    char params[TXN_PARAMS];
    if (x->txn.rcpt_count == x->cap) {
        size_t cap = x->cap != 0 ? x->cap * 2 : 4;
        struct smtp_client_rcpt *grown = realloc(x->txn.rcpts, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        x->txn.rcpts = grown;
        x->cap = cap;
    }
    target_rcpt_params(&t->caps, r, params, sizeof params);
    struct smtp_client_rcpt *rc = &x->txn.rcpts[x->txn.rcpt_count];
    memset(rc, 0, sizeof *rc);
    rc->address = strdup(r->address);
    rc->params = params[0] != '\0' ? strdup(params) : NULL;
    if (rc->address == NULL || (params[0] != '\0' && rc->params == NULL)) {
        free((char *)rc->address);
        free((char *)rc->params);
        return -1;
    }
    t->group_rcpt = x->txn.rcpt_count++;
    return 0;
}

/* The connection is ready: MAIL (composed now, from its EHLO reply) and the first RCPT. A
 * message the target cannot take gets its refusal as MAIL's reply, and nothing is sent. */
static void start_txn(struct target *t)
{
    struct ttxn *x = t->txn;
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
    if (add_rcpt(t, x, &x->first) != 0 || smtp_client_open(t->conn->client, &x->txn) != 0) {
        detach_txn(t, false);
        defer_group(t, NULL);
        return;
    }
    x->started = true;
    if (x->first_data)
        smtp_client_rcpts_done(t->conn->client, &x->txn);
}

/* A new transaction: the envelope copied until the connection is ready. */
static struct ttxn *new_txn(struct target *t, const struct target_group *g)
{
    struct ttxn *x = calloc(1, sizeof *x);
    if (x == NULL)
        return NULL;
    x->t = x->owner = t;
    x->next = t->txns;
    t->txns = x;
    x->mail = *g->mail;
    x->first_data = g->data;
    x->sender = strdup(g->mail->sender);
    int rc = keep(&x->mail_strings[0], g->mail->ret, &x->mail.ret);
    rc |= keep(&x->mail_strings[1], g->mail->envid, &x->mail.envid);
    rc |= keep(&x->first_strings[0], g->rcpt.address, &x->first.address);
    rc |= keep(&x->first_strings[1], g->rcpt.notify, &x->first.notify);
    rc |= keep(&x->first_strings[2], g->rcpt.orcpt, &x->first.orcpt);
    x->mail.sender = x->sender;
    if (rc != 0 || x->sender == NULL) {
        ttxn_free(x);
        return NULL;
    }
    return x;
}

/* MAIL and the first RCPT. A transaction never spans two connections, but MAIL may open a new
 * one. */
static void group_open(struct target *t, const struct target_group *g)
{
    if (t->conn == NULL && open_connection(t) != 0) {
        defer_group(t, NULL);
        return;
    }
    t->txn = new_txn(t, g);
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
    struct ttxn *x = t->txn;
    if (x == NULL || !x->started || t->conn == NULL || add_rcpt(t, x, &g->rcpt) != 0) {
        defer_group(t, NULL);
        return;
    }
    if (smtp_client_add_rcpt(t->conn->client, &x->txn) != 0) {
        /* the list is closed: the engine took the recipient back */
        free((char *)x->txn.rcpts[x->txn.rcpt_count].address);
        free((char *)x->txn.rcpts[x->txn.rcpt_count].params);
        defer_group(t, NULL);
        return;
    }
    if (g->data)
        smtp_client_rcpts_done(t->conn->client, &x->txn);
}

static void local_group(struct target *t, const struct target_group *g);

void target_group(struct target *t, const struct target_group *g, target_rcpt_cb cb, void *arg)
{
    t->group_cb = cb;
    t->group_arg = arg;
    t->group_mail = g->mail != NULL;
    if (is_local(&t->spec)) {
        local_group(t, g);
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

static void local_body(struct target *t, int fd);

void target_data(struct target *t, int fd, size_t count, target_cb cb, void *arg)
{
    struct stat st;
    t->data_cb = cb;
    t->data_arg = arg;
    t->data_count = count < MAX_REPLIES ? count : MAX_REPLIES;
    if (is_local(&t->spec) && fd >= 0) {
        local_body(t, fd);
        return;
    }
    struct ttxn *x = t->txn;
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

/* ---- the blocking probe: the same engine on a private event loop ---- */

struct probe {
    struct event_base *base;
    struct smtp_client *client;
    struct smtp_client_ext *caps;
    bool ready;
    char reason[200];
};

static void probe_ready(void *arg, const struct smtp_client_ext *ext,
                        const struct smtp_client_reply *greeting)
{
    struct probe *p = arg;
    *p->caps = *ext;
    p->ready = true;
    smtp_client_quit(p->client);
}

static void probe_closed(void *arg, enum smtp_client_end how, const char *reason)
{
    struct probe *p = arg;
    snprintf(p->reason, sizeof p->reason, "%s", reason);
    event_base_loopbreak(p->base);
}

static void probe_txn_done(void *arg, struct smtp_client_txn *txn)
{
}

static const struct smtp_client_callbacks probe_callbacks = {
    .ready = probe_ready, .txn_done = probe_txn_done, .closed = probe_closed,
};

static int probe_exchange(const struct target_spec *spec, const struct client_options *o,
                          const char *helo, struct smtp_client_ext *caps, char *err,
                          size_t errlen)
{
    struct target t = {.spec = *spec, .opts = o, .tls_ctx = target_tls_context(spec)};
    struct probe p = {.caps = caps};
    snprintf(t.helo, sizeof t.helo, "%s", helo);
    p.base = event_base_new();
    if (p.base == NULL) {
        SSL_CTX_free(t.tls_ctx);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p.client = engine_connect(p.base, &t, &probe_callbacks, &p, err, errlen);
    if (p.client != NULL) {
        event_base_dispatch(p.base);
        smtp_client_free(p.client);
        event_base_loop(p.base, EVLOOP_NONBLOCK);   /* libevent frees the bufferevent there */
        if (!p.ready)
            snprintf(err, errlen, "%s", p.reason);
    }
    event_base_free(p.base);
    SSL_CTX_free(t.tls_ctx);
    return p.ready ? 0 : -1;
}

static int local_probe(const struct target_spec *spec, struct smtp_client_ext *caps, char *err,
                       size_t errlen);

int target_probe(const struct target_spec *spec, const struct client_options *o,
                 const char *helo, struct smtp_client_ext *caps, char *err, size_t errlen)
{
    memset(caps, 0, sizeof *caps);
    if (is_local(spec))
        return local_probe(spec, caps, err, errlen);
    return probe_exchange(spec, o, helo, caps, err, errlen);
}

/* ---- local targets: maildir: and mda: (local.h) ---- */

static void local_caps(struct smtp_client_ext *caps)
{
    /* The message is stored or piped as it is: any 8-bit or UTF-8 content goes. */
    *caps = (struct smtp_client_ext){.esmtp = true, .eightbitmime = true, .smtputf8 = true};
}

static int local_probe(const struct target_spec *spec, struct smtp_client_ext *caps, char *err,
                       size_t errlen)
{
    struct mda_command c;
    local_caps(caps);
    if (spec->kind == TARGET_MAILDIR)
        return maildir_probe(spec->local, err, errlen);
    if (mda_parse(spec->local, &c, err, errlen) != 0)
        return -1;
    return mda_probe(&c, err, errlen);
}

static void local_reset(struct target *t)
{
    for (size_t i = 0; i < t->rcpt_count; i++) {
        free(t->rcpts[i].addr);
        free(t->rcpts[i].dest);
    }
    t->rcpt_count = 0;
    free(t->sender);
    t->sender = NULL;
}

static void local_mail(struct target *t, const char *sender, struct smtp_client_reply *out)
{
    local_reset(t);
    if (t->spec.kind == TARGET_MDA && mda_address_ok(sender) != 0) {
        peer_reply_set(out, 553, "5.1.7 Sender address starting with '-' refused "
                    "by the MDA target");
        return;
    }
    t->sender = strdup(sender);
    if (t->sender == NULL)
        peer_reply_set(out, 451, "4.3.0 Out of memory");
    else
        peer_reply_set(out, 250, "2.1.0 OK");
}

/* The recipient's destination: the expanded maildir, or nothing for an MDA. */
static int local_destination(struct target *t, const char *rcpt, char **dest,
                             struct smtp_client_reply *out)
{
    char path[LOCAL_PATH_MAX], err[200];
    *dest = NULL;
    if (t->spec.kind == TARGET_MDA) {
        if (mda_address_ok(rcpt) == 0)
            return 0;
        peer_reply_set(out, 553, "5.1.3 Recipient address starting with '-' refused "
                    "by the MDA target");
        return -1;
    }
    if (maildir_expand(t->spec.local, rcpt, path, sizeof path, err, sizeof err) != 0) {
        peer_reply_set(out, 553, "5.1.3 %s", err);
        return -1;
    }
    *dest = strdup(path);
    return 0;
}

static void local_rcpt(struct target *t, const char *rcpt, struct smtp_client_reply *out)
{
    char *dest;
    if (t->sender == NULL || t->rcpt_count == MAX_REPLIES) {
        peer_reply_set(out, 452, "4.5.3 Too many recipients");
        return;
    }
    if (local_destination(t, rcpt, &dest, out) != 0)
        return;
    struct local_rcpt *r = &t->rcpts[t->rcpt_count];
    r->addr = strdup(rcpt);
    r->dest = dest;
    if (r->addr == NULL || (dest == NULL && t->spec.kind == TARGET_MAILDIR)) {
        free(r->addr);
        free(dest);
        peer_reply_set(out, 451, "4.3.0 Out of memory");
        return;
    }
    t->rcpt_count++;
    peer_reply_set(out, 250, "2.1.5 OK");
}

/* One delivery per recipient, each with its own verdict (folded by the relay), from the loop. */
static void local_body(struct target *t, int fd)
{
    struct smtp_client_reply *out = t->answers;
    memset(out, 0, t->data_count * sizeof *out);
    for (size_t i = 0; i < t->data_count && i < t->rcpt_count; i++) {
        const struct local_rcpt *r = &t->rcpts[i];
        if (t->spec.kind == TARGET_MAILDIR)
            maildir_deliver(r->dest, fd, t->sender, r->addr, &out[i]);
        else
            mda_deliver(&t->mda, fd, t->sender, r->addr,
                        (double)client_timeout_seconds(t->opts, TIMEOUT_DATA_END), &out[i]);
        if (t->opts->verbose) {
            char qaddr[300], qtext[300], text[PEER_REPLY_TEXT];
            peer_reply_text(&out[i], text, sizeof text);
            log_debug("target.local", " rcpt=%s code=%d reply=%s",
                      log_quote(qaddr, sizeof qaddr, r->addr, strlen(r->addr)), out[i].code,
                      log_quote(qtext, sizeof qtext, text, strlen(text)));
        }
    }
    local_reset(t);
    t->answer = ANSWER_DATA;
    event_active(t->deliver, EV_WRITE, 0);
}

/* A group runs one command at a time and stops at the first refusal; DATA has nothing to do
 * here (the delivery is target_data()). */
static void local_group(struct target *t, const struct target_group *g)
{
    memset(&t->answer_mail, 0, sizeof t->answer_mail);
    memset(&t->answer_rcpt, 0, sizeof t->answer_rcpt);
    if (g->rset)
        local_reset(t);
    if (g->mail != NULL)
        local_mail(t, g->mail->sender, &t->answer_mail);
    if (g->mail == NULL || t->answer_mail.code / 100 == 2)
        local_rcpt(t, g->rcpt.address, &t->answer_rcpt);
    t->answer = ANSWER_GROUP;
    event_active(t->deliver, EV_WRITE, 0);
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
    t->rcpts = calloc(MAX_REPLIES, sizeof *t->rcpts);
    t->answers = calloc(MAX_REPLIES, sizeof *t->answers);
    if (is_local(spec)) {
        char err[256];
        t->generation = 1;   /* nothing to lose: a transaction never spans a reconnection */
        local_caps(&t->caps);
        if (spec->kind == TARGET_MDA && mda_parse(spec->local, &t->mda, err, sizeof err) != 0)
            log_warn("target.mda", " error=\"%s\"", err);
    }
    if (t->deliver == NULL || t->rcpts == NULL || t->answers == NULL) {
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
        ttxn_free(t->txns);
    if (t->deliver != NULL)
        event_free(t->deliver);
    if (t->rcpts != NULL)
        local_reset(t);
    free(t->rcpts);
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
