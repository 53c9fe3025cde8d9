/* SPDX-License-Identifier: ISC */
/* The reversed ODMR session (RFC 2645 5.3): odmrd, now the SMTP client, pushes the held mail of
 * the ATRN domains over the turned-around connection (docs/push.md).
 *
 * States: greeting/EHLO (the engine) -> a pass (list every ATRN domain, oldest first, skip ids
 * already handled in this session) -> one transaction per message -> outcomes recorded on the
 * queue's workers -> next pass until a pass finds nothing new (bounded) -> QUIT -> wait for the
 * outstanding outcome records -> done(). */
#include "services/push.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engines/smtp_client.h"
#include "lib/log.h"
#include "services/delivery_log.h"
#include "services/dsn.h"
#include "services/metrics.h"
#include "services/notice.h"
#include "services/txn_build.h"

enum {
    PUSH_MAX_PASSES = 16,         /* listings per session (mail arriving during the session) */
    /* Transactions queued ahead with PIPELINING: enough to fill a long round trip (50 ms at
     * 1500 messages/s is 75 messages), bounded by their octets (a few big messages fill the
     * pipe as well) and by the open queue files each one holds. */
    PUSH_FAST_IN_FLIGHT = 128,
    PUSH_FAST_IN_FLIGHT_OCTETS = 8 << 20,
    PUSH_MAX_WRITE = 256 << 10,   /* octets per write to the customer (libevent's default: 16 KiB) */
    /* Messages opened ahead of the window, in batches (one hand-off to the queue's workers
     * and back per batch; docs/push.md "Opening"): compat sends one at a time, so a few ready
     * ones are enough; fast keeps its pipeline fed, several batches opening in parallel,
     * without holding many more files open than it has in flight. */
    PUSH_COMPAT_OPEN_AHEAD = 16,
    PUSH_COMPAT_OPEN_BATCH = 8,
    PUSH_FAST_OPEN_AHEAD = 64,
    PUSH_FAST_OPEN_BATCH = 16,
};

/* One message: opened on a worker, waiting in the session's list (in id order) until the
 * window lets it go, then in flight: one transaction (a second one after 452 reuses it). */
struct push_msg {
    struct push_session *s;
    struct queue_message *m;
    struct txn_build b;
    bool opened;                  /* the opening reported back (m set when open_status is 0) */
    bool pooled;                  /* its file counts against the service's shared pool */
    int open_status;
    struct push_msg *next;        /* in the waiting list */
    char id[QUEUE_ID_MAX];
};

struct push_session {
    struct event_base *base;
    struct queue *queue;
    char **domains;
    size_t domain_count;
    char *hostname, *session_id;
    enum push_profile profile;
    bool tls_active;
    push_done_fn done;
    void *done_arg;
    struct smtp_client *client;
    struct smtp_client_ext ext;
    char remote[256];             /* the customer's name from its greeting, or "" */
    char relay[200];              /* relay= of the delivery line: customer[PEER] user=USER */
    struct push_result result;
    /* the current pass, and every id taken in this session (sorted) */
    char **ids;
    size_t id_count, id_next;
    char **seen;
    size_t seen_count, seen_cap;
    unsigned passes, in_flight, outcome_jobs;
    uint64_t in_flight_octets;    /* body octets of the transactions in flight */
    /* messages being opened or opened and not yet sent, oldest first */
    struct push_msg *waiting_head, *waiting_tail;
    unsigned waiting, opening;    /* in that list; of them, openings not yet reported */
    bool ready, closed, quitting, stopping, finished;
    bool filling, refill;         /* fill() is running; an inline opening asked for another */
    bool own_file_taken;          /* a message holds the session's own file (not pooled) */
    struct push_service *service;
    struct push_session *next;
};

/* The running pushes of one owner (the ODMR service), for push_service_shutdown(), and
 * their shared pool of message files (docs/push.md "Open files"): each session may hold one
 * open message file of its own (odmrd's descriptor budget counts one per ODMR session); every
 * further one, opened ahead or in flight, is taken from files_free and given back when that
 * message is done. */
struct push_service {
    struct push_session *sessions;
    unsigned files_free;
};

static void fill(struct push_session *s);
static void msg_free(struct push_msg *pm);

/* ---- helpers ---- */

static char *quote(char *dst, size_t len, const char *src)
{
    return (char *)log_quote(dst, len, src != NULL ? src : "", src != NULL ? strlen(src) : 0);
}

static void set_reason(struct push_session *s, const char *reason)
{
    if (s->result.reason[0] == '\0')
        snprintf(s->result.reason, sizeof s->result.reason, "%s", reason);
}

static bool our_domain(const struct push_session *s, const char *domain)
{
    for (size_t i = 0; i < s->domain_count; i++) {
        if (strcasecmp(s->domains[i], domain) == 0)
            return true;
    }
    return false;
}

/* ---- the ids of a pass ---- */

static int compare_ids(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool seen_id(const struct push_session *s, const char *id)
{
    return s->seen_count > 0 &&
           bsearch(&id, s->seen, s->seen_count, sizeof *s->seen, compare_ids) != NULL;
}

static int mark_seen(struct push_session *s, const char *id)
{
    if (s->seen_count == s->seen_cap) {
        size_t cap = s->seen_cap != 0 ? s->seen_cap * 2 : 64;
        char **grown = realloc(s->seen, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        s->seen = grown;
        s->seen_cap = cap;
    }
    char *copy = strdup(id);
    if (copy == NULL)
        return -1;
    size_t at = 0;
    while (at < s->seen_count && strcmp(s->seen[at], id) < 0)
        at++;
    memmove(&s->seen[at + 1], &s->seen[at], (s->seen_count - at) * sizeof *s->seen);
    s->seen[at] = copy;
    s->seen_count++;
    return 0;
}

static void free_ids(struct push_session *s)
{
    for (size_t i = 0; i < s->id_count; i++)
        free(s->ids[i]);
    free(s->ids);
    s->ids = NULL;
    s->id_count = s->id_next = 0;
}

static int collect_id(const char *id, void *arg)
{
    struct push_session *s = arg;
    if (seen_id(s, id))
        return 0;
    char **grown = realloc(s->ids, (s->id_count + 1) * sizeof *grown);
    char *copy = grown != NULL ? strdup(id) : NULL;
    if (grown != NULL)
        s->ids = grown;
    if (copy == NULL)
        return 1;
    s->ids[s->id_count++] = copy;
    return 0;
}

/* Lists every ATRN domain; a message held for several of them appears once (ids sort by
 * arrival, so sorting the union keeps "oldest first"). Returns the number of new ids. */
static size_t list_pass(struct push_session *s)
{
    free_ids(s);
    s->passes++;
    for (size_t i = 0; i < s->domain_count; i++) {
        int rc = queue_list_domain(s->queue, s->domains[i], collect_id, s);
        if (rc != 0)
            log_warn("push.list_failed", " session=%s domain=%s error=\"%s\"", s->session_id,
                     s->domains[i], strerror(rc));
    }
    if (s->id_count > 1)
        qsort(s->ids, s->id_count, sizeof *s->ids, compare_ids);
    size_t out = 0;
    for (size_t i = 0; i < s->id_count; i++) {
        if (out > 0 && strcmp(s->ids[out - 1], s->ids[i]) == 0)
            free(s->ids[i]);
        else
            s->ids[out++] = s->ids[i];
    }
    s->id_count = out;
    log_info("push.pass", " session=%s pass=%u messages=%zu", s->session_id, s->passes, out);
    return out;
}

/* ---- ending ---- */

static void unlink_session(struct push_session *s)
{
    if (s->service == NULL)
        return;   /* its owner is gone (push_service_free) */
    for (struct push_session **p = &s->service->sessions; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            return;
        }
    }
}

static void session_free(struct push_session *s)
{
    free_ids(s);
    for (size_t i = 0; i < s->seen_count; i++)
        free(s->seen[i]);
    free(s->seen);
    for (size_t i = 0; i < s->domain_count; i++)
        free(s->domains[i]);
    free(s->domains);
    free(s->hostname);
    free(s->session_id);
    free(s);
}

/* done() runs once: after the connection is freed and every outcome is on disk. */
static void maybe_finish(struct push_session *s)
{
    if (!s->closed || s->outcome_jobs > 0 || s->opening > 0 || s->finished)
        return;
    s->finished = true;
    unlink_session(s);
    char reason[240];
    log_info("push.end", " session=%s passes=%u messages=%u delivered=%u deferred=%u failed=%u "
             "clean=%d reason=%s", s->session_id, s->passes, s->result.messages,
             s->result.delivered, s->result.deferred, s->result.failed, s->result.clean,
             quote(reason, sizeof reason, s->result.reason));
    s->done(s->done_arg, &s->result);
    session_free(s);
}

static void quit(struct push_session *s)
{
    if (s->quitting || s->closed)
        return;
    s->quitting = true;
    smtp_client_quit(s->client);
}

/* ---- outcomes ---- */

static void on_outcomes_recorded(int status, int removed, const char *id, void *arg)
{
    struct push_session *s = arg;
    if (status != 0)
        log_error("push.record_failed", " session=%s id=%s error=\"%s\"", s->session_id, id,
                  strerror(status));
    else if (removed)
        log_info("push.removed", " session=%s id=%s", s->session_id, id);
    s->outcome_jobs--;
    metrics_queue_changed();
    maybe_finish(s);
}

static const char *const outcome_names[] = {
    [QUEUE_RCPT_PENDING] = "deferred",
    [QUEUE_RCPT_DONE] = "done",
    [QUEUE_RCPT_FAILED] = "failed",
};

static void count_outcome(struct push_session *s, const struct queue_message *m,
                          const char *rcpt, enum queue_rcpt_state state, const char *reply)
{
    unsigned *counters[] = {[QUEUE_RCPT_PENDING] = &s->result.deferred,
                            [QUEUE_RCPT_DONE] = &s->result.delivered,
                            [QUEUE_RCPT_FAILED] = &s->result.failed};
    (*counters[state])++;
    metrics_count_push_outcome(reply);
    char qrcpt[300], qreply[600];
    log_info("push.rcpt", " session=%s id=%s rcpt=%s outcome=%s reply=%s", s->session_id,
             m->env.id, quote(qrcpt, sizeof qrcpt, rcpt), outcome_names[state],
             quote(qreply, sizeof qreply, reply));
    delivery_log(m->env.id, rcpt, s->relay, m->env.arrival, delivery_status_of(state), reply);
}

/* Hands n outcomes to the queue's workers with the open message, whose envelope and states
 * the record reuses; 5xx/4xx/250 alike. done() waits for them. */
static void record_now(struct push_session *s, const struct queue_message *m,
                       const struct queue_outcome *o, size_t n)
{
    bool any_done = false;
    for (size_t i = 0; i < n; i++)
        any_done = any_done || o[i].state == QUEUE_RCPT_DONE;
    if (n == 0)
        return;
    s->outcome_jobs++;
    queue_record_message_outcomes_async(s->queue, m, o, n, any_done, on_outcomes_recorded, s);
}

static void on_notice_done(int status, void *arg)
{
    struct push_session *s = arg;
    s->outcome_jobs--;
    maybe_finish(s);
}

/* RFC 2645 4, RFC 3461 6: the refused recipients get their failed notice, committed to the
 * queue before they are recorded final (notice.c); so do the relayed ones (NOTICE_RELAYED).
 * Without a notice (no memory, no disk) they stay pending with the reply, to be tried again. */
static void notify(struct push_session *s, const struct queue_message *m,
                   const struct notice_failure *f, size_t n, const char *remote,
                   enum notice_cause cause)
{
    struct notice_event ev = {cause, remote, 0, s->session_id};
    if (n == 0)
        return;
    s->outcome_jobs++;
    if (notice_failed(s->queue, m, f, n, &ev, on_notice_done, s) == 0)
        return;
    s->outcome_jobs--;
    struct queue_outcome *o = calloc(n, sizeof *o);
    for (size_t i = 0; o != NULL && i < n; i++)
        o[i] = (struct queue_outcome){f[i].rcpt_index, QUEUE_RCPT_PENDING, f[i].reply};
    if (o != NULL)
        record_now(s, m, o, n);
    free(o);
}

/* RFC 3461 5.2.2 (b): a customer without DSN cannot send the success notice a NOTIFY=SUCCESS
 * recipient asked for, so odmrd writes a relayed one when the customer took it. */
static bool owes_relayed(const struct push_session *s, const struct queue_message *m,
                         const struct queue_outcome *o)
{
    return o->state == QUEUE_RCPT_DONE && !s->ext.dsn &&
           dsn_wanted(m->env.sender, m->env.rcpts[o->rcpt_index].notify, DSN_ACTION_RELAYED);
}

/* Records the outcomes of one transaction; the failed ones go through their notice first, and
 * so do the relayed ones. remote: the customer's name when the replies are its own (RFC 3464
 * 2.3.5 Remote-MTA). */
static void record(struct push_session *s, const struct queue_message *m,
                   const struct queue_outcome *o, size_t n, const char *remote)
{
    struct queue_outcome *rest = calloc(n > 0 ? n : 1, sizeof *rest);
    struct notice_failure *failed = calloc(n > 0 ? n : 1, sizeof *failed);
    struct notice_failure *relayed = calloc(n > 0 ? n : 1, sizeof *relayed);
    size_t nrest = 0, nfailed = 0, nrelayed = 0;
    for (size_t i = 0; rest != NULL && failed != NULL && relayed != NULL && i < n; i++) {
        if (o[i].state == QUEUE_RCPT_FAILED)
            failed[nfailed++] = (struct notice_failure){o[i].rcpt_index, o[i].reply};
        else if (owes_relayed(s, m, &o[i]))
            relayed[nrelayed++] = (struct notice_failure){o[i].rcpt_index, o[i].reply};
        else
            rest[nrest++] = o[i];
    }
    if (rest == NULL || failed == NULL || relayed == NULL) {
        record_now(s, m, o, n);   /* no memory: recorded failed, the notice owed */
    } else {
        record_now(s, m, rest, nrest);
        notify(s, m, failed, nfailed, remote, NOTICE_REFUSED);
        notify(s, m, relayed, nrelayed, remote, NOTICE_RELAYED);
    }
    free(rest);
    free(failed);
    free(relayed);
}

/* Marks the recipients of a message the customer cannot take (missing extension). */
static void fail_message(struct push_session *s, struct push_msg *pm, const char *reply)
{
    struct queue_outcome *o = calloc(pm->b.count, sizeof *o);
    for (size_t i = 0; o != NULL && i < pm->b.count; i++) {
        size_t k = pm->b.trcpts[i].env_index;
        o[i] = (struct queue_outcome){k, QUEUE_RCPT_FAILED, reply};
        count_outcome(s, pm->m, pm->m->env.rcpts[k].address, QUEUE_RCPT_FAILED, reply);
    }
    if (o != NULL)
        record(s, pm->m, o, pm->b.count, NULL);   /* our refusal: the customer said nothing */
    free(o);
}

/* ---- open message files: one the session's own, the others from the shared pool ---- */

static bool file_available(const struct push_session *s)
{
    return !s->own_file_taken || (s->service != NULL && s->service->files_free > 0);
}

static void take_file(struct push_session *s, struct push_msg *pm)
{
    if (!s->own_file_taken) {
        s->own_file_taken = true;
        return;
    }
    s->service->files_free--;
    pm->pooled = true;
}

static void give_back_file(struct push_session *s, const struct push_msg *pm)
{
    if (!pm->pooled)
        s->own_file_taken = false;
    else if (s->service != NULL)
        s->service->files_free++;
}

static void msg_free(struct push_msg *pm)
{
    give_back_file(pm->s, pm);
    txn_build_free(&pm->b);
    queue_message_close(pm->m);
    free(pm);
}

/* Returns true when the message goes out again (recipients carried after a 452). */
static bool settle(struct push_session *s, struct push_msg *pm)
{
    struct queue_outcome *o = calloc(pm->b.count, sizeof *o);
    bool *carry = calloc(pm->b.count, sizeof *carry);
    size_t n = 0, carried = 0;
    bool alive = !s->closed && !s->stopping && !smtp_client_ended(s->client);
    for (size_t i = 0; o != NULL && carry != NULL && i < pm->b.count; i++) {
        const char *address = pm->m->env.rcpts[pm->b.trcpts[i].env_index].address;
        enum queue_rcpt_state state = QUEUE_RCPT_PENDING;
        const char *reply = NULL;
        enum txn_verdict v = txn_judge(&pm->b.txn, &pm->b.rcpts[i], alive, &state, &reply);
        if (v == TXN_RECORD) {
            o[n++] = (struct queue_outcome){pm->b.trcpts[i].env_index, state, reply};
            count_outcome(s, pm->m, address, state, reply);
        } else if (v == TXN_CARRY) {
            carry[i] = true;
            carried++;
        } else {
            count_outcome(s, pm->m, address, QUEUE_RCPT_PENDING, "not attempted");
        }
    }
    record(s, pm->m, o, n, s->remote[0] != '\0' ? s->remote : NULL);
    bool again = carried > 0;
    if (again)
        txn_build_keep(&pm->b, carry);
    free(o);
    free(carry);
    return again && smtp_client_send(s->client, &pm->b.txn) == 0;
}

static void on_txn_done(void *arg, struct smtp_client_txn *txn)
{
    struct push_msg *pm = txn->user;
    struct push_session *s = pm->s;
    if (settle(s, pm)) {
        s->result.messages++;
        return;
    }
    s->in_flight--;
    s->in_flight_octets -= pm->m->env.body_size;
    msg_free(pm);
    fill(s);
}

/* ---- building a transaction ---- */

/* The pending recipients of the ATRN domains only: never one of another domain. */
static bool atrn_rcpt(const struct queue_rcpt *r, void *arg)
{
    return our_domain(arg, r->domain);
}

/* Queues the transaction of an opened message. false when there was nothing to send for it. */
static bool start_message(struct push_session *s, struct push_msg *pm)
{
    if (pm->open_status != 0)
        return false;   /* logged when it reported back */
    if (txn_build_rcpts(&pm->b, pm->m, &s->ext, atrn_rcpt, s) != 0 || pm->b.count == 0)
        return false;
    /* RFC 3030: BINARYMIME needs BDAT, which only the fast profile uses. */
    const char *refusal = txn_build_mail(&pm->b, &s->ext, s->profile == PUSH_PROFILE_FAST, pm);
    if (refusal != NULL) {
        fail_message(s, pm, refusal);
        return false;
    }
    if (smtp_client_send(s->client, &pm->b.txn) != 0)
        return false;
    s->in_flight++;
    s->in_flight_octets += pm->m->env.body_size;
    s->result.messages++;
    return true;
}

/* ---- the waiting list: openings on the queue's workers, in id order ---- */

static void unlink_waiting(struct push_session *s, struct push_msg *pm)
{
    struct push_msg *prev = NULL;
    for (struct push_msg *p = s->waiting_head; p != NULL; prev = p, p = p->next) {
        if (p != pm)
            continue;
        if (prev != NULL)
            prev->next = pm->next;
        else
            s->waiting_head = pm->next;
        if (s->waiting_tail == pm)
            s->waiting_tail = prev;
        s->waiting--;
        pm->next = NULL;
        return;
    }
}

/* Frees the opened messages that will not be sent (shutdown, connection gone); the ones still
 * opening go when their opening reports back. */
static void drop_opened(struct push_session *s)
{
    struct push_msg *pm = s->waiting_head;
    while (pm != NULL) {
        struct push_msg *next = pm->next;
        if (pm->opened) {
            unlink_waiting(s, pm);
            msg_free(pm);
        }
        pm = next;
    }
}

static void on_opened(int status, struct queue_message *m, void *arg)
{
    struct push_msg *pm = arg;
    struct push_session *s = pm->s;
    s->opening--;
    pm->opened = true;
    pm->open_status = status;
    pm->m = m;
    if (status != 0)
        log_warn("push.open_failed", " session=%s id=%s error=\"%s\"", s->session_id, pm->id,
                 strerror(status));
    if (s->closed || s->stopping || s->quitting) {
        unlink_waiting(s, pm);
        msg_free(pm);
    }
    if (s->closed)
        maybe_finish(s);
    else
        fill(s);
}

/* The next id of the pass not yet taken in this session, appended to the waiting list with
 * an open file taken for it (file_available() first); NULL when there is none to open for
 * this id. */
static struct push_msg *take_next(struct push_session *s)
{
    const char *id = s->ids[s->id_next++];
    if (seen_id(s, id) || mark_seen(s, id) != 0)
        return NULL;
    struct push_msg *pm = calloc(1, sizeof *pm);
    if (pm == NULL)
        return NULL;
    pm->s = s;
    take_file(s, pm);
    snprintf(pm->id, sizeof pm->id, "%s", id);
    if (s->waiting_tail != NULL)
        s->waiting_tail->next = pm;
    else
        s->waiting_head = pm;
    s->waiting_tail = pm;
    s->waiting++;
    s->opening++;
    return pm;
}

/* Opens the next batch of the pass, as far as open files are available. The SHA-256 check
 * reads each whole file: on a worker, never on the loop. False when no file was available:
 * the session's own one is then taken, and its message's end calls fill() again. */
static bool open_batch(struct push_session *s, unsigned batch)
{
    struct queue_open_request req[PUSH_FAST_OPEN_BATCH];
    size_t n = 0;
    bool progress = false;
    while (n < batch && n < sizeof req / sizeof req[0] && s->id_next < s->id_count &&
           file_available(s)) {
        progress = true;
        struct push_msg *pm = take_next(s);
        if (pm != NULL)
            req[n++] = (struct queue_open_request){pm->id, pm};
    }
    if (n > 0)
        queue_messages_open_async(s->queue, req, n, on_opened);
    return progress;
}

/* Sends the oldest waiting message once it is opened. */
static void send_head(struct push_session *s)
{
    struct push_msg *pm = s->waiting_head;
    unlink_waiting(s, pm);
    if (!start_message(s, pm))
        msg_free(pm);
}

/* ---- scheduling ---- */

/* Compat: one transaction at a time. Fast: up to PUSH_FAST_IN_FLIGHT transactions and
 * PUSH_FAST_IN_FLIGHT_OCTETS of message data (always at least one transaction). */
static bool window_open(const struct push_session *s)
{
    if (s->in_flight == 0)
        return true;
    return s->profile == PUSH_PROFILE_FAST && s->ext.pipelining &&
           s->in_flight < PUSH_FAST_IN_FLIGHT && s->in_flight_octets < PUSH_FAST_IN_FLIGHT_OCTETS;
}

/* How many messages a new batch opens: 0 while enough are waiting. */
static unsigned open_batch_size(const struct push_session *s)
{
    bool fast = s->profile == PUSH_PROFILE_FAST && s->ext.pipelining;
    unsigned ahead = fast ? PUSH_FAST_OPEN_AHEAD : PUSH_COMPAT_OPEN_AHEAD;
    unsigned batch = fast ? PUSH_FAST_OPEN_BATCH : PUSH_COMPAT_OPEN_BATCH;
    return s->waiting + batch <= ahead ? batch : 0;
}

/* One round of fill(): send what is opened and fits the window, open ahead, a new pass when
 * this one is used up and nothing is waiting or in flight; QUIT when a pass finds nothing new
 * (or after PUSH_MAX_PASSES), or on shutdown once nothing is in flight. */
static void fill_once(struct push_session *s)
{
    if (!s->ready || s->closed || s->quitting || smtp_client_ended(s->client))
        return;
    while (!s->stopping) {
        if (s->waiting_head != NULL && s->waiting_head->opened && window_open(s)) {
            send_head(s);
            continue;
        }
        unsigned batch = open_batch_size(s);
        if (batch > 0 && s->id_next < s->id_count && open_batch(s, batch))
            continue;
        if (s->waiting > 0 || s->in_flight > 0 || s->id_next < s->id_count)
            return;
        /* Mail that arrived during the session goes out before QUIT. */
        if (s->passes >= PUSH_MAX_PASSES || list_pass(s) == 0)
            break;
    }
    if (s->stopping)
        drop_opened(s);
    if (s->in_flight == 0)
        quit(s);
}

/* Keeps the customer busy. An opening without workers reports inline, from inside fill():
 * that report asks for another round instead of nesting. */
static void fill(struct push_session *s)
{
    if (s->filling) {
        s->refill = true;
        return;
    }
    s->filling = true;
    do {
        s->refill = false;
        fill_once(s);
    } while (s->refill);
    s->filling = false;
}

/* ---- engine callbacks ---- */

/* RFC 5321 4.2: the greeting is "220 " Domain [SP text]: the customer's name for Remote-MTA
 * (RFC 3464 2.3.5); kept only when it is a plain name. */
static void remember_remote(struct push_session *s, const char *greeting)
{
    const char *name = strlen(greeting) > 4 ? greeting + 4 : "";
    size_t len = strcspn(name, " \n");
    s->remote[0] = '\0';
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '[' || c == ']' || c == ':';
        if (!ok)
            return;
    }
    if (len > 0 && len < sizeof s->remote) {
        memcpy(s->remote, name, len);
        s->remote[len] = '\0';
    }
}

static void on_ready(void *arg, const struct smtp_client_ext *ext,
                     const struct smtp_client_reply *greeting)
{
    struct push_session *s = arg;
    s->ext = *ext;
    s->ready = true;
    remember_remote(s, greeting->text);
    /* Our own customer program asks for the fast profile in its EHLO reply (X-ODMR-FAST);
     * fetchmail relays its MTA's reply verbatim and never carries that keyword. */
    if (ext->odmr_fast)
        s->profile = PUSH_PROFILE_FAST;
    char qgreet[300];
    log_info("push.ready", " session=%s esmtp=%d pipelining=%d chunking=%d 8bitmime=%d "
             "smtputf8=%d dsn=%d size=%" PRIu64 " greeting=%s", s->session_id, ext->esmtp,
             ext->pipelining, ext->chunking, ext->eightbitmime, ext->smtputf8, ext->dsn,
             ext->size_max, quote(qgreet, sizeof qgreet, greeting->text));
    if (s->stopping)
        quit(s);
    else
        fill(s);
}

static void on_closed(void *arg, enum smtp_client_end how, const char *reason)
{
    struct push_session *s = arg;
    s->closed = true;
    s->result.clean = how == SMTP_CLIENT_END_QUIT;
    if (how != SMTP_CLIENT_END_QUIT) {
        char r[sizeof s->result.reason];
        snprintf(r, sizeof r, "%s: %s", smtp_client_end_name(how), reason);
        set_reason(s, r);
    }
    smtp_client_free(s->client);   /* frees the connection */
    s->client = NULL;
    drop_opened(s);
    maybe_finish(s);
}

/* ---- public ---- */

void push_default_timeouts(struct push_timeouts *t)
{
    /* RFC 5321 4.5.3.2 */
    t->greeting = 5 * 60;
    t->command = 5 * 60;
    t->data_init = 2 * 60;
    t->data_block = 3 * 60;
    t->data_end = 10 * 60;
}

/* relay= of the delivery line: "customer[PEER] user=USER", both quoted. */
static void set_relay(struct push_session *s, const char *peer, const char *user)
{
    char qpeer[80], quser[100];
    snprintf(s->relay, sizeof s->relay, "customer[%s] user=%s",
             quote(qpeer, sizeof qpeer, peer != NULL ? peer : "unknown"),
             quote(quser, sizeof quser, user != NULL ? user : "-"));
}

static struct push_session *session_new(const struct push_request *req)
{
    struct push_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->base = req->base;
    s->queue = req->queue;
    s->profile = req->profile;
    s->tls_active = req->tls_active;
    set_relay(s, req->peer, req->user);
    s->hostname = strdup(req->hostname != NULL ? req->hostname : "localhost");
    s->session_id = strdup(req->session_id != NULL ? req->session_id : "-");
    s->domains = calloc(req->domain_count > 0 ? req->domain_count : 1, sizeof *s->domains);
    bool ok = s->hostname != NULL && s->session_id != NULL && s->domains != NULL;
    for (; ok && s->domain_count < req->domain_count; s->domain_count++)
        ok = (s->domains[s->domain_count] = strdup(req->domains[s->domain_count])) != NULL;
    if (!ok) {
        session_free(s);
        return NULL;
    }
    return s;
}

static unsigned client_flags(const struct push_request *req)
{
    if (req->profile == PUSH_PROFILE_FAST)
        return SMTP_CLIENT_USE_PIPELINING | SMTP_CLIENT_USE_CHUNKING;
    unsigned compat = SMTP_CLIENT_FAST_ON_REQUEST;
    /* docs/push.md "Profiles": fetchmail stalls when one TLS record carries several lines. */
    return compat | (req->tls_active ? SMTP_CLIENT_LINE_PER_WRITE : 0);
}

struct push_service *push_service_new(unsigned open_files)
{
    struct push_service *service = calloc(1, sizeof *service);
    if (service != NULL)
        service->files_free = open_files;
    return service;
}

void push_service_free(struct push_service *service)
{
    if (service == NULL)
        return;
    for (struct push_session *s = service->sessions; s != NULL; s = s->next)
        s->service = NULL;
    free(service);
}

int push_start(struct push_service *service, const struct push_request *req, push_done_fn done,
               void *arg)
{
    struct push_session *s = session_new(req);
    struct smtp_client_config cfg = {
        .flags = client_flags(req),
        .timeouts = {req->timeouts.greeting, req->timeouts.command, req->timeouts.data_init,
                     req->timeouts.data_block, req->timeouts.data_end},
    };
    struct smtp_client_callbacks cb = {on_ready, on_txn_done, on_closed};
    /* A 100 KiB message went out in seven 16 KiB writes, one loop iteration each. */
    bufferevent_set_max_single_write(req->bev, PUSH_MAX_WRITE);
    if (s != NULL) {
        cfg.helo_name = s->hostname;
        cfg.log_id = s->session_id;
        s->done = done;
        s->done_arg = arg;
        s->client = smtp_client_new(req->base, req->bev, &cfg, &cb, s);
    }
    if (s == NULL || s->client == NULL) {
        log_error("push.start_failed", " session=%s error=\"out of memory\"",
                  req->session_id != NULL ? req->session_id : "-");
        if (s != NULL)
            session_free(s);
        bufferevent_free(req->bev);
        return -1;
    }
    s->service = service;
    s->next = service->sessions;
    service->sessions = s;
    log_info("push.start", " session=%s domains=%zu profile=%s tls=%d", s->session_id,
             s->domain_count, s->profile == PUSH_PROFILE_FAST ? "fast" : "compat", s->tls_active);
    return 0;
}

void push_service_shutdown(struct push_service *service)
{
    for (struct push_session *s = service->sessions; s != NULL; s = s->next) {
        if (s->stopping || s->closed)
            continue;
        s->stopping = true;
        set_reason(s, "shutdown");
        /* Before the customer's EHLO reply nothing is in flight: hang up. Otherwise QUIT
         * follows the transactions in flight, whose outcomes are recorded first. */
        drop_opened(s);
        if (!s->ready)
            smtp_client_abort(s->client, "shutdown");
        else if (s->in_flight == 0)
            quit(s);
    }
}
