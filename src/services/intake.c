/* SPDX-License-Identifier: ISC */
/* Intake policy and storage hooks for the SMTP server engine. */
#include "services/intake.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/smtp_grammar.h"
#include "services/metrics.h"

/* ---- storage errors: one error line per burst ---- */

enum { STORAGE_REMINDER_SECONDS = 600 };

/* A full or failing disk refuses every message until it recovers; the log gets one error line
 * with the errno when it starts (or the errno changes), a reminder every 10 minutes while it
 * lasts, and an info line when a message is stored again -- not a line per message. One state
 * for the process: SMTP and LMTP intake share the spool, so they share the burst. */
static struct {
    unsigned refused;      /* messages refused since the burst began; 0: no burst */
    int last_errno;
    time_t logged_at;
} storage;

static void storage_failed(const char *session, const char *op, int error)
{
    time_t now = time(NULL);
    storage.refused++;
    if (storage.refused > 1 && error == storage.last_errno &&
        now - storage.logged_at < STORAGE_REMINDER_SECONDS)
        return;
    log_error("queue.storage_error", " session=%s op=%s errno=%d error=\"%s\" refused=%u", session,
              op, error, strerror(error), storage.refused);
    storage.last_errno = error;
    storage.logged_at = now;
}

static void storage_worked(void)
{
    if (storage.refused == 0)
        return;
    log_info("queue.storage_recovered", " refused=%u", storage.refused);
    storage.refused = 0;
    storage.last_errno = 0;
}

/* ---- RCPT TO:<Postmaster> ---- */

/* RFC 5321 4.5.1: a receiver MUST accept "Postmaster" without a domain (4.1.1.3: in any case;
 * the grammar hands it over with an empty domain). It is stored as [server] postmaster, else as
 * postmaster@<hostname>, held for the admin (odmrctl queue list/show) like mail of a domain no
 * user lists. What was sent stays in the envelope as ORCPT (RFC 3461 4.2) unless the client
 * gave one. */
struct postmaster_dest {
    char address[SMTP_PATH_MAX + 1];
    char domain[SMTP_DOMAIN_MAX + 1];
};

static void postmaster_dest(const struct intake *intake, struct postmaster_dest *pm)
{
    if (intake->postmaster != NULL)
        snprintf(pm->address, sizeof pm->address, "%s", intake->postmaster);
    else
        snprintf(pm->address, sizeof pm->address, "postmaster@%s", intake->hostname);
    const char *at = strrchr(pm->address, '@');   /* a quoted local part may hold an @ */
    snprintf(pm->domain, sizeof pm->domain, "%s", at != NULL ? at + 1 : "");
    smtp_domain_lower(pm->domain);
}

static bool is_bare_postmaster(const struct smtp_txn_rcpt *r)
{
    return r->domain[0] == '\0';
}

/* Points the stored recipient at the postmaster address; the ORCPT made here is freed by
 * free_envelope_rcpts(). 0 or -1 (out of memory). */
static int store_postmaster(const struct smtp_txn_rcpt *sent, struct queue_rcpt *stored,
                            struct postmaster_dest *pm)
{
    stored->address = pm->address;
    stored->domain = pm->domain;
    if (sent->orcpt == NULL && asprintf(&stored->orcpt, "rfc822;%s", sent->address) < 0) {
        stored->orcpt = NULL;
        return -1;
    }
    return 0;
}

/* ---- recipients ---- */

static void intake_check_rcpt(void *ctx, struct smtp_session *s,
                              const struct smtp_path_command *rcpt, const char *domain,
                              struct smtp_reply *reply)
{
    struct intake *intake = ctx;
    const struct userdb *users = *intake->users;
    char quoted[600];
    if (rcpt->mailbox.domain[0] == '\0') {
        log_info("rcpt.postmaster", " session=%s peer=%s", smtp_session_id(s),
                 smtp_session_peer(s));
        return;   /* accepted: see "RCPT TO:<Postmaster>" above */
    }
    /* Never an open relay: only the domains of the users file are accepted. */
    if (rcpt->mailbox.domain_is_literal || !userdb_domain_hosted(users, domain)) {
        log_info("rcpt.refused", " session=%s peer=%s rcpt=%s reason=relay", smtp_session_id(s),
                 smtp_session_peer(s),
                 log_quote(quoted, sizeof quoted, rcpt->mailbox.domain, strlen(rcpt->mailbox.domain)));
        reply_set(reply, 550, "5.7.1", "Relay access denied: we do not hold mail for that domain");
        return;
    }
    if (!userdb_local_part_valid(users, domain, rcpt->mailbox.local)) {
        reply_set(reply, 550, "5.1.1", "No such user here");
        return;
    }
    if (!intake_over_quota(intake, s, domain, reply))
        intake_low_on_space(intake, s, reply);
}

static void intake_check_mail(void *ctx, struct smtp_session *s, struct smtp_reply *reply)
{
    intake_low_on_space(ctx, s, reply);
}

static void free_envelope_rcpts(struct smtp_session *s, struct queue_envelope *env)
{
    const struct smtp_transaction *t = smtp_session_transaction(s);
    for (size_t i = 0; env->rcpts != NULL && i < env->rcpt_count; i++)
        if (env->rcpts[i].orcpt != t->rcpts[i].orcpt)
            free(env->rcpts[i].orcpt);   /* made by store_postmaster() */
    free(env->rcpts);
    env->rcpts = NULL;
}

/* The queue copies what it needs; the envelope only borrows the transaction's strings (and
 * pm's, for a bare Postmaster). */
static int build_envelope(struct smtp_session *s, struct queue_envelope *env,
                          struct postmaster_dest *pm)
{
    const struct smtp_transaction *t = smtp_session_transaction(s);
    memset(env, 0, sizeof *env);
    env->sender = t->sender;
    env->body = t->body == SMTP_BODY_8BITMIME ? QUEUE_BODY_8BITMIME : QUEUE_BODY_7BIT;
    env->smtputf8 = t->smtputf8;
    env->ret = t->ret;
    env->envid = t->envid;
    env->declared_size = t->declared_size;
    env->helo = (char *)smtp_session_helo(s);
    env->client_addr = (char *)smtp_session_peer(s);
    env->protocol = (char *)smtp_session_protocol(s);
    env->rcpt_count = t->rcpt_count;
    env->rcpts = calloc(t->rcpt_count, sizeof *env->rcpts);
    if (env->rcpts == NULL)
        return -1;
    for (size_t i = 0; i < t->rcpt_count; i++) {
        env->rcpts[i].address = t->rcpts[i].address;
        env->rcpts[i].domain = t->rcpts[i].domain;
        env->rcpts[i].notify = t->rcpts[i].notify;
        env->rcpts[i].orcpt = t->rcpts[i].orcpt;
        if (is_bare_postmaster(&t->rcpts[i]) && store_postmaster(&t->rcpts[i], &env->rcpts[i], pm))
            return -1;
    }
    return 0;
}

/* RFC 5321 4.4: the Received trace header, with the RFC 5322 date. */
static int write_received(struct intake *intake, struct smtp_session *s,
                          struct queue_writer *w, const char *id)
{
    const struct smtp_transaction *t = smtp_session_transaction(s);
    char date[64], header[1200], for_clause[400] = "";
    struct tm local;
    time_t now = time(NULL);
    localtime_r(&now, &local);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &local);
    if (t->rcpt_count == 1)
        snprintf(for_clause, sizeof for_clause, "\r\n\tfor <%s>", t->rcpts[0].address);
    int n = snprintf(header, sizeof header,
                     "Received: from %s ([%s])\r\n\tby %s (odmrd) with %s id %s%s;\r\n\t%s\r\n",
                     smtp_session_helo(s), smtp_session_peer(s), intake->hostname,
                     smtp_session_protocol(s), id, for_clause, date);
    if (n < 0 || (size_t)n >= sizeof header)
        return EOVERFLOW;
    return queue_write(w, header, (size_t)n);
}

static int intake_data_begin(void *ctx, struct smtp_session *s, struct smtp_reply *reply)
{
    struct intake *intake = ctx;
    struct queue_envelope env;
    struct postmaster_dest pm;
    postmaster_dest(intake, &pm);
    if (build_envelope(s, &env, &pm) != 0) {
        free_envelope_rcpts(s, &env);
        reply_set(reply, 452, "4.3.1", "Out of memory");
        return -1;
    }
    struct queue_writer *w;
    int rc = queue_put(intake->queue, &env, &w);
    free_envelope_rcpts(s, &env);
    if (rc != 0 || (rc = write_received(intake, s, w, env.id)) != 0) {
        storage_failed(smtp_session_id(s), w == NULL ? "create" : "write", rc);
        if (w)
            queue_abort(w);
        reply_set(reply, 452, "4.3.1", "Insufficient system storage");
        return -1;
    }
    smtp_session_set_user(s, w);
    return 0;
}

static int intake_data_write(void *ctx, struct smtp_session *s, const char *data, size_t len)
{
    int rc = queue_write(smtp_session_user(s), data, len);
    if (rc != 0) {
        /* once per message: the engine writes no more of it after an error */
        storage_failed(smtp_session_id(s), "write", rc);
        errno = rc;   /* the engine's convention: -1 with errno */
        return -1;
    }
    return 0;
}

static void intake_data_abort(void *ctx, struct smtp_session *s)
{
    struct queue_writer *w = smtp_session_user(s);
    if (w != NULL)
        queue_abort(w);
    smtp_session_set_user(s, NULL);
}

static void on_committed(int status, const char *id, void *arg)
{
    struct smtp_session *s = arg;
    struct smtp_reply reply;
    if (status == 0) {
        const struct smtp_transaction *t = smtp_session_transaction(s);
        storage_worked();
        char path[SMTP_PATH_MAX + 3], sender[4 * sizeof path];
        snprintf(path, sizeof path, "<%s>", t->sender);   /* one value, brackets and all */
        log_info("message.accepted", " session=%s id=%s from=%s rcpts=%zu", smtp_session_id(s),
                 id, log_quote(sender, sizeof sender, path, strlen(path)),
                 t->rcpt_count);
        reply_set(&reply, 250, "2.0.0", "Ok: queued as %s", id);
    } else {
        storage_failed(smtp_session_id(s), "commit", status);
        reply_set(&reply, 452, "4.3.1", "Insufficient system storage");
    }
    smtp_session_data_done(s, &reply);
}

static void intake_data_end(void *ctx, struct smtp_session *s)
{
    struct queue_writer *w = smtp_session_user(s);
    smtp_session_set_user(s, NULL);
    metrics_queue_commit(w, on_committed, s);   /* queue_commit(), timed */
}

const struct smtp_server_hooks intake_hooks = {
    .check_rcpt = intake_check_rcpt,
    .check_mail = intake_check_mail,
    .data_begin = intake_data_begin,
    .data_write = intake_data_write,
    .data_abort = intake_data_abort,
    .data_end = intake_data_end,
};
