/* SPDX-License-Identifier: ISC */
/* Failed notices into odmrd's own queue (docs/notices.md): who gets one (RFC 3461), reading
 * what the notice returns of the original, the commit, and only then the original's final
 * state (BOUNCED). */
#include "services/notice.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "lib/log.h"
#include "services/dsn.h"
#include "store/queue_backend.h"
#include "store/userdb.h"

enum {
    NOTICE_HEADERS_READ_MAX = 256 << 10,   /* what is read to find the original's headers */
    NOTICE_TEXT_MAX = 300,
};

/* Where a notice whose sender's domain cannot name a queue directory (an address literal, a
 * U-label) is filed: RFC 2606 reserves .invalid, so it never clashes with a hosted domain. */
static const char fallback_domain[] = "notices.invalid";

static struct {
    const char *hostname;
    struct userdb *const *users;
} config = {"localhost", NULL};

void notice_configure(const char *hostname, struct userdb *const *users)
{
    config.hostname = hostname != NULL ? hostname : "localhost";
    config.users = users;
}

void notice_format_duration(time_t seconds, char *out, size_t len)
{
    static const struct { time_t size; const char *name; } units[] = {
        {7 * 86400, "week"}, {86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (seconds >= units[i].size && seconds % units[i].size == 0) {
            time_t n = seconds / units[i].size;
            snprintf(out, len, "%lld %s%s", (long long)n, units[i].name, n == 1 ? "" : "s");
            return;
        }
    }
    snprintf(out, len, "%lld seconds", (long long)seconds);
}

/* ---- the job: from the commit to the record ---- */

struct notice_job {
    struct queue *queue;
    char id[QUEUE_ID_MAX];               /* the original */
    char notice_id[QUEUE_ID_MAX];
    char *session_id;
    char *sender;
    char domain[QUEUE_DOMAIN_MAX];       /* where the notice is filed */
    enum dsn_action action;
    struct queue_outcome *outcomes;      /* every failure: BOUNCED (relayed: DONE) */
    char **addresses;                    /* for the log lines */
    bool *notified;                      /* which of them the notice lists */
    size_t count;
    notice_done_fn done;
    void *arg;
};

static void job_free(struct notice_job *j)
{
    for (size_t i = 0; i < j->count; i++) {
        free((char *)j->outcomes[i].reply);
        free(j->addresses[i]);
    }
    free(j->outcomes);
    free(j->addresses);
    free(j->notified);
    free(j->session_id);
    free(j->sender);
    free(j);
}

static const char *held_for(const char *domain)
{
    if (config.users == NULL || *config.users == NULL)
        return "unknown";
    return userdb_domain_hosted(*config.users, domain) ? "customer" : "admin";
}

static void log_recipients(const struct notice_job *j)
{
    char qrcpt[300], qsender[300];
    log_quote(qsender, sizeof qsender, j->sender, strlen(j->sender));
    for (size_t i = 0; i < j->count; i++) {
        log_quote(qrcpt, sizeof qrcpt, j->addresses[i], strlen(j->addresses[i]));
        static const char *const events[] = {[DSN_ACTION_FAILED] = "notice.failed",
                                             [DSN_ACTION_DELAYED] = "notice.delayed",
                                             [DSN_ACTION_RELAYED] = "notice.relayed"};
        if (j->notified[i])
            log_info(events[j->action],
                     " session=%s id=%s rcpt=%s notice=%s to=%s domain=%s held=%s",
                     j->session_id, j->id, qrcpt, j->notice_id, qsender, j->domain,
                     held_for(j->domain));
        else
            log_info("notice.none", " session=%s id=%s rcpt=%s reason=%s", j->session_id, j->id,
                     qrcpt, j->sender[0] == '\0' ? "null-sender" : "notify");
    }
}

static void on_recorded(int status, int removed, const char *id, void *arg)
{
    struct notice_job *j = arg;
    /* EALREADY: a recipient became final meanwhile (another path); the rest is recorded. */
    if (status != 0 && status != EALREADY)
        log_error("notice.record_failed", " session=%s id=%s error=\"%s\"", j->session_id, id,
                  strerror(status));
    else if (removed)
        log_info("notice.original_removed", " session=%s id=%s", j->session_id, id);
    j->done(status == EALREADY ? 0 : status, j->arg);
    job_free(j);
}

static void record_bounced(struct notice_job *j)
{
    log_recipients(j);
    queue_record_outcomes_async(j->queue, j->id, j->outcomes, j->count, true, on_recorded, j);
}

static void on_committed(int status, const char *id, void *arg)
{
    struct notice_job *j = arg;
    if (status != 0) {
        log_error("notice.commit_failed", " session=%s id=%s error=\"%s\"", j->session_id, j->id,
                  strerror(status));
        j->done(status, j->arg);
        job_free(j);
        return;
    }
    snprintf(j->notice_id, sizeof j->notice_id, "%s", id);
    log_info("notice.committed", " session=%s id=%s notice=%s", j->session_id, j->id, id);
    record_bounced(j);
}

static struct notice_job *job_new(struct queue *q, const struct queue_message *m,
                                  const struct notice_failure *f, size_t n,
                                  const char *session_id, const char *reason,
                                  enum dsn_action action)
{
    static const enum queue_rcpt_state finals[] = {[DSN_ACTION_FAILED] = QUEUE_RCPT_BOUNCED,
                                                   [DSN_ACTION_DELAYED] = QUEUE_OUTCOME_WARNED,
                                                   [DSN_ACTION_RELAYED] = QUEUE_RCPT_DONE};
    enum queue_rcpt_state final = finals[action];
    struct notice_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->queue = q;
    j->action = action;
    snprintf(j->id, sizeof j->id, "%s", m->env.id);
    j->outcomes = calloc(n, sizeof *j->outcomes);
    j->addresses = calloc(n, sizeof *j->addresses);
    j->notified = calloc(n, sizeof *j->notified);
    j->session_id = strdup(session_id != NULL ? session_id : "-");
    j->sender = strdup(m->env.sender);
    bool ok = j->outcomes && j->addresses && j->notified && j->session_id && j->sender;
    for (; ok && j->count < n; j->count++) {
        const char *reply = f[j->count].reply != NULL ? f[j->count].reply : reason;
        j->outcomes[j->count] = (struct queue_outcome){f[j->count].rcpt_index, final,
                                                       strdup(reply)};
        j->addresses[j->count] = strdup(m->env.rcpts[f[j->count].rcpt_index].address);
        ok = j->outcomes[j->count].reply != NULL && j->addresses[j->count] != NULL;
    }
    if (!ok) {
        j->count += j->count < n ? 1 : 0;   /* free the partly filled slot too */
        job_free(j);
        return NULL;
    }
    return j;
}

/* ---- what the notice says ---- */

/* The sender's domain as a queue directory name, else fallback_domain. */
static void filing_domain(const char *sender, char out[QUEUE_DOMAIN_MAX])
{
    const char *at = strrchr(sender, '@');
    if (at == NULL || queue_domain_normalize(at + 1, out) != 0)
        snprintf(out, QUEUE_DOMAIN_MAX, "%s", fallback_domain);
}

/* Reads the start of the original: enough for its headers, or all of it for RET=FULL when
 * it may be returned whole. *whole says whether buf holds the entire message. */
static char *read_original(const struct queue_message *m, const char *ret, size_t *len,
                           bool *whole)
{
    bool full = ret != NULL && strcasecmp(ret, "FULL") == 0 && m->env.body_size <= DSN_FULL_MAX;
    uint64_t want = full ? m->env.body_size
                         : (m->env.body_size < NOTICE_HEADERS_READ_MAX ? m->env.body_size
                                                                       : NOTICE_HEADERS_READ_MAX);
    char *buf = malloc(want + 1);
    size_t got = 0;
    while (buf != NULL && got < want) {
        ssize_t r = pread(m->fd, buf + got, want - got, m->body_offset + (off_t)got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    *len = got;
    *whole = got == m->env.body_size;
    return buf;
}

struct notice_texts {
    char status[DSN_STATUS_MAX];
    char explanation[NOTICE_TEXT_MAX];
    char diagnostic[NOTICE_TEXT_MAX];
};

/* RFC 3463 3.5: 4.4.7 "delivery time expired" (not yet: a persistent transient failure);
 * RFC 3464 2.3.9 Will-Retry-Until: when max_hold ends it. */
static void describe_delayed(const struct queue_rcpt *r, const struct notice_event *ev,
                             time_t arrival, struct dsn_recipient *out, struct notice_texts *tx)
{
    char held[64], until[40];
    notice_format_duration(ev->held_for, held, sizeof held);
    dsn_format_date(arrival + ev->held_for, until);
    snprintf(tx->status, sizeof tx->status, "4.4.7");
    snprintf(tx->explanation, sizeof tx->explanation,
             "not yet collected by the customer's server; kept and offered to it for up to %s "
             "after arrival (until %s)", held, until);
    snprintf(tx->diagnostic, sizeof tx->diagnostic,
             "not yet collected by the customer's server");
    *out = (struct dsn_recipient){.address = r->address, .orcpt = r->orcpt,
                                  .status = tx->status, .explanation = tx->explanation,
                                  .diagnostic_type = "X-odmrd", .diagnostic = tx->diagnostic,
                                  .last_attempt = r->last_attempt,
                                  .will_retry_until = arrival + ev->held_for};
}

static void describe(const struct queue_rcpt *r, const struct notice_failure *f,
                     const struct notice_event *ev, time_t now, struct dsn_recipient *out,
                     struct notice_texts *tx)
{
    char held[64];
    *out = (struct dsn_recipient){.address = r->address, .orcpt = r->orcpt,
                                  .status = tx->status, .explanation = tx->explanation};
    if (ev->cause == NOTICE_RELAYED) {
        /* RFC 3461 5.2.2 (b), 6.3 (h), (i): the customer's name and its 2xx, verbatim. */
        dsn_status_of_reply(f->reply, tx->status);
        snprintf(tx->explanation, sizeof tx->explanation, "passed on to the recipient's mail "
                 "server, which does not send delivery notices");
        *out = (struct dsn_recipient){.address = r->address, .orcpt = r->orcpt,
                                      .status = tx->status, .explanation = tx->explanation,
                                      .remote_mta = ev->remote_mta, .diagnostic = f->reply,
                                      .last_attempt = now};
        return;
    }
    if (ev->cause == NOTICE_REFUSED || r->state == QUEUE_RCPT_FAILED) {
        /* RFC 3461 6.3 (h), (i): the customer answered: its name and its reply verbatim. */
        const char *reply = f->reply != NULL ? f->reply : r->last_reply;
        dsn_status_of_reply(reply, tx->status);
        snprintf(tx->explanation, sizeof tx->explanation, "the recipient's mail server refused it");
        out->remote_mta = ev->cause == NOTICE_REFUSED ? ev->remote_mta : NULL;
        out->diagnostic = reply;
        out->last_attempt = ev->cause == NOTICE_REFUSED ? now : r->last_attempt;
        return;
    }
    if (ev->cause == NOTICE_ADMIN) {
        /* RFC 3463 3.1: X.0.0, no code says "returned by the administrator". */
        snprintf(tx->status, sizeof tx->status, "5.0.0");
        snprintf(tx->explanation, sizeof tx->explanation, "returned by the administrator");
        out->diagnostic_type = "X-odmrd";
        out->diagnostic = tx->explanation;
        out->last_attempt = r->last_attempt;
        return;
    }
    /* RFC 3463 3.5: 5.4.7 "delivery time expired". */
    notice_format_duration(ev->held_for, held, sizeof held);
    snprintf(tx->status, sizeof tx->status, "5.4.7");
    snprintf(tx->explanation, sizeof tx->explanation,
             "held for %s, the customer's server did not collect it", held);
    snprintf(tx->diagnostic, sizeof tx->diagnostic, "%s", tx->explanation);
    out->diagnostic_type = "X-odmrd";
    out->diagnostic = tx->diagnostic;
    out->last_attempt = r->last_attempt;
}

static void unique_token(const char *id, char *out, size_t len)
{
    unsigned char random_octets[8] = {0};
    if (getrandom(random_octets, sizeof random_octets, 0) != (ssize_t)sizeof random_octets)
        memset(random_octets, 0, sizeof random_octets);   /* the id alone is still unique */
    size_t n = (size_t)snprintf(out, len, "%s.", id);
    for (size_t i = 0; i < sizeof random_octets && n + 2 < len; i++, n += 2)
        snprintf(out + n, len - n, "%02x", random_octets[i]);
}

/* Builds the notice text for the notified recipients of j. 0 or errno. */
static int build_notice(const struct queue_message *m, const struct notice_failure *f,
                        const struct notice_job *j, const struct notice_event *ev,
                        struct dsn_notice *out)
{
    time_t now = time(NULL);
    char unique[QUEUE_ID_MAX + 20];
    struct dsn_recipient *rcpts = calloc(j->count, sizeof *rcpts);
    struct notice_texts *texts = calloc(j->count, sizeof *texts);
    size_t len = 0, n = 0;
    bool whole = false;
    /* RFC 3461 4.3: RET is about failed notices; the others return the headers. */
    const char *ret_asked = j->action == DSN_ACTION_FAILED ? m->env.ret : NULL;
    char *original = rcpts != NULL && texts != NULL ? read_original(m, ret_asked, &len, &whole)
                                                    : NULL;
    int rc = original != NULL ? 0 : ENOMEM;
    for (size_t i = 0; rc == 0 && i < j->count; i++) {
        const struct queue_rcpt *r = &m->env.rcpts[f[i].rcpt_index];
        if (j->notified[i] && ev->cause == NOTICE_DELAYED)
            describe_delayed(r, ev, m->env.arrival, &rcpts[n++], &texts[i]);
        else if (j->notified[i])
            describe(r, &f[i], ev, now, &rcpts[n++], &texts[i]);
    }
    if (rc == 0) {
        unique_token(m->env.id, unique, sizeof unique);
        size_t headers = dsn_header_length(original, len);
        bool headers_complete = whole || headers < len;
        enum dsn_return ret = dsn_choose_return(ret_asked, original, headers,
                                                whole ? original : NULL, len);
        if (ret == DSN_RETURN_HEADERS && !headers_complete)
            ret = DSN_RETURN_NONE;
        struct dsn_report r = {j->action, config.hostname, m->env.id, m->env.sender,
                               m->env.envid, m->env.helo, m->env.client_addr, m->env.arrival,
                               now, unique, m->env.smtputf8, rcpts, n,
                               ret_asked != NULL && strcasecmp(ret_asked, "FULL") == 0};
        rc = dsn_build(&r, ret, original, ret == DSN_RETURN_FULL ? len : headers, out);
    }
    free(original);
    free(texts);
    free(rcpts);
    return rc;
}

/* Puts the notice into the queue: from <>, to the original sender, filed under its domain. */
static int commit_notice(struct notice_job *j, const struct dsn_notice *text)
{
    struct queue_rcpt rcpt = {.address = j->sender, .domain = j->domain};
    struct queue_envelope env = {
        .sender = "",
        .body = text->eightbit ? QUEUE_BODY_8BITMIME : QUEUE_BODY_7BIT,
        .smtputf8 = text->smtputf8,
        .helo = (char *)config.hostname,
        .protocol = "local",
        .rcpt_count = 1,
        .rcpts = &rcpt,
    };
    struct queue_writer *w;
    int rc = queue_put(j->queue, &env, &w);
    if (rc != 0)
        return rc;
    if ((rc = queue_write(w, text->text, text->len)) != 0) {
        queue_abort(w);
        return rc;
    }
    queue_commit(w, on_committed, j);
    return 0;
}

int notice_failed(struct queue *q, const struct queue_message *m,
                  const struct notice_failure *failures, size_t n,
                  const struct notice_event *event, notice_done_fn done, void *arg)
{
    char reason[NOTICE_TEXT_MAX], held[64];
    notice_format_duration(event->held_for, held, sizeof held);
    snprintf(reason, sizeof reason, "554 5.4.7 held for %s, not collected", held);
    if (event->cause == NOTICE_ADMIN)
        snprintf(reason, sizeof reason, "554 5.0.0 returned by the administrator");
    enum dsn_action action =
        event->cause == NOTICE_RELAYED   ? DSN_ACTION_RELAYED
        : event->cause == NOTICE_DELAYED ? DSN_ACTION_DELAYED
                                         : DSN_ACTION_FAILED;
    bool own_reason = event->cause == NOTICE_EXPIRED || event->cause == NOTICE_ADMIN;
    struct notice_job *j = job_new(q, m, failures, n, event->session_id,
                                   own_reason ? reason : "554 5.0.0 refused", action);
    if (j == NULL)
        return ENOMEM;
    j->done = done;
    j->arg = arg;
    size_t wanted = 0;
    for (size_t i = 0; i < n; i++) {
        const struct queue_rcpt *r = &m->env.rcpts[failures[i].rcpt_index];
        j->notified[i] = dsn_wanted(m->env.sender, r->notify, action);
        wanted += j->notified[i] ? 1 : 0;
    }
    if (wanted == 0) {   /* none owed: the recipients are final at once */
        record_bounced(j);
        return 0;
    }
    filing_domain(m->env.sender, j->domain);
    struct dsn_notice text;
    int rc = build_notice(m, failures, j, event, &text);
    if (rc == 0) {
        rc = commit_notice(j, &text);
        dsn_notice_free(&text);
    }
    if (rc != 0) {
        log_error("notice.commit_failed", " session=%s id=%s error=\"%s\"", j->session_id,
                  j->id, strerror(rc));
        job_free(j);
    }
    return rc;
}
