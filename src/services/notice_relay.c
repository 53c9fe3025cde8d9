/* SPDX-License-Identifier: ISC */
/* Sending notices out through [bounce] relay (notice_relay.h, docs/notices.md).
 *
 * One scan: list the domains no customer hosts, their ids with pending recipients (oldest
 * first, starting after the last id the previous scan opened, so a long queue is walked round
 * and nothing starves), open at most NOTICE_RELAY_OPEN_MAX of them, keep the notices that are
 * due (back-off), lease their domains, connect, send them, QUIT, record every outcome, release
 * the leases. At most one connection at a time. */
#include "services/notice_relay.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engines/smtp_client.h"
#include "lib/log.h"
#include "platform/periodic.h"
#include "services/delivery_log.h"
#include "services/lease_set.h"
#include "services/notice_readdress.h"
#include "services/txn_build.h"
#include "store/queue_backend.h"
#include "store/userdb.h"

enum { RELAY_DOMAINS_MAX = 4096, RELAY_SCAN_PERIOD_MAX = 60 };

struct relay_item {
    struct notice_relay *r;
    struct queue_message *m;
    struct txn_build b;
    bool sent;
};

struct notice_relay {
    struct event_base *base;
    struct queue *queue;
    struct notice_relay_settings set;
    char *relay, *postmaster, *hostname;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct periodic scan;                /* the scan's timer; busy while a batch is out */
    char (*ids)[QUEUE_ID_MAX];           /* this scan's candidates, sorted */
    size_t id_count;
    char cursor[QUEUE_ID_MAX];           /* the last id opened: the next scan starts after it */
    struct relay_item *items[NOTICE_RELAY_BATCH];
    size_t item_count;
    struct lease_set leased;
    struct smtp_client *client;
    unsigned jobs;                       /* outcome records and re-addressings under way */
    bool closed;
};

/* ---- configuration ---- */

int notice_relay_resolve(const char *spec, struct sockaddr_storage *addr, socklen_t *len,
                         char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    const char *h = spec;
    size_t hlen = colon != NULL ? (size_t)(colon - spec) : 0;
    if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
        h = spec + 1;
        hlen -= 2;
    }
    if (colon == NULL || hlen == 0 || hlen >= sizeof host || colon[1] == '\0') {
        snprintf(err, errlen, "[bounce] relay: \"%s\" is not HOST:PORT", spec);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL || res->ai_addrlen > sizeof *addr) {
        snprintf(err, errlen, "[bounce] relay: \"%s\": %s", spec,
                 rc != 0 ? gai_strerror(rc) : "no address");
        if (res != NULL)
            freeaddrinfo(res);
        return -1;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

time_t notice_relay_backoff(time_t retry_min, time_t retry_max, unsigned attempts)
{
    time_t wait = retry_min;
    for (unsigned i = 1; i < attempts && wait < retry_max; i++)
        wait *= 2;
    return wait < retry_max ? wait : retry_max;
}

/* ---- the end of a round ---- */

static void item_free(struct relay_item *it)
{
    txn_build_free(&it->b);
    queue_message_close(it->m);
    free(it);
}

/* Once the connection is gone and every outcome is on disk. */
static void maybe_finish(struct notice_relay *r)
{
    if (!r->scan.busy || !r->closed || r->jobs > 0)
        return;
    for (size_t i = 0; i < r->item_count; i++)
        item_free(r->items[i]);
    r->item_count = 0;
    lease_set_release(r->queue, &r->leased);
    periodic_done(&r->scan);
}

/* ---- outcomes ---- */

static bool relay_rcpt(const struct queue_rcpt *rc, void *arg)
{
    struct notice_relay *r = arg;
    return *r->set.users == NULL || !userdb_domain_hosted(*r->set.users, rc->domain);
}


static void on_recorded(int status, int removed, const char *id, void *arg)
{
    struct notice_relay *r = arg;
    if (status != 0 && status != EALREADY)
        log_error("notice_relay.record_failed", " id=%s error=\"%s\"", id, strerror(status));
    r->jobs--;
    maybe_finish(r);
}

static void record(struct notice_relay *r, const char *id, size_t index,
                   enum queue_rcpt_state state, const char *reply)
{
    struct queue_outcome o = {index, state, reply};
    r->jobs++;
    queue_record_outcomes_async(r->queue, id, &o, 1, true, on_recorded, r);
}

static void on_readdressed(int status, void *arg)
{
    struct notice_relay *r = arg;
    r->jobs--;
    maybe_finish(r);
}

/* RFC 3461 6.2: a notice is never the subject of another notice. A 5xx from the relay sends
 * the notice to [bounce] postmaster (notice_readdress.c), else it is logged and dropped. */
static void refused(struct notice_relay *r, struct relay_item *it, size_t index,
                    const char *reply)
{
    const struct queue_rcpt *rc = &it->m->env.rcpts[index];
    struct readdress_request req = {r->queue, it->m, index, reply, r->postmaster, r->hostname};
    r->jobs++;
    if (notice_readdress(&req, on_readdressed, r) == 0)
        return;
    r->jobs--;
    char q[300];
    log_error("notice_relay.readdress_failed", " id=%s rcpt=%s", it->m->env.id,
              log_quote(q, sizeof q, rc->address, strlen(rc->address)));
    record(r, it->m->env.id, index, QUEUE_RCPT_PENDING, reply);   /* tried again later */
}

static void outcome(struct notice_relay *r, struct relay_item *it, size_t k,
                    enum queue_rcpt_state state, const char *reply)
{
    static const char *const names[] = {[QUEUE_RCPT_PENDING] = "deferred",
                                        [QUEUE_RCPT_DONE] = "sent",
                                        [QUEUE_RCPT_FAILED] = "refused"};
    const struct queue_rcpt *rc = &it->m->env.rcpts[k];
    char qrcpt[300], qreply[600], retry[48] = "";
    if (state == QUEUE_RCPT_PENDING)
        snprintf(retry, sizeof retry, " retry_in=%lld", (long long)notice_relay_backoff(
                     r->set.retry_min, r->set.retry_max, rc->attempts + 1));
    log_info("notice_relay.rcpt", " id=%s rcpt=%s outcome=%s attempts=%u relay=%s reply=%s%s",
             it->m->env.id, log_quote(qrcpt, sizeof qrcpt, rc->address, strlen(rc->address)),
             names[state], rc->attempts + 1, r->relay,
             log_quote(qreply, sizeof qreply, reply, strlen(reply)), retry);
    delivery_log(it->m->env.id, rc->address, r->relay, it->m->env.arrival,
                 delivery_status_of(state), reply);
    if (state == QUEUE_RCPT_FAILED)
        refused(r, it, k, reply);
    else
        record(r, it->m->env.id, k, state, reply);
}

static void on_txn_done(void *arg, struct smtp_client_txn *txn)
{
    struct relay_item *it = txn->user;
    for (size_t i = 0; i < it->b.count; i++) {
        enum queue_rcpt_state state = QUEUE_RCPT_PENDING;
        const char *reply = "not attempted (the relay connection ended)";
        if (txn_judge(txn, &it->b.rcpts[i], false, &state, &reply) != TXN_RECORD)
            state = QUEUE_RCPT_PENDING;
        outcome(it->r, it, it->b.trcpts[i].env_index, state, reply);
    }
}

/* ---- the connection ---- */

static void on_ready(void *arg, const struct smtp_client_ext *ext,
                     const struct smtp_client_reply *greeting)
{
    struct notice_relay *r = arg;
    for (size_t i = 0; i < r->item_count; i++) {
        struct relay_item *it = r->items[i];
        if (txn_build_rcpts(&it->b, it->m, ext, relay_rcpt, r) != 0 || it->b.count == 0)
            continue;
        const char *refusal = txn_build_mail(&it->b, ext, false, it);
        it->sent = refusal == NULL && smtp_client_send(r->client, &it->b.txn) == 0;
        for (size_t k = 0; refusal != NULL && k < it->b.count; k++)
            outcome(r, it, it->b.trcpts[k].env_index, QUEUE_RCPT_FAILED, refusal);
        if (refusal != NULL)
            it->sent = true;   /* recorded */
    }
    smtp_client_quit(r->client);
}

/* Every notice that never went out counts an attempt (its back-off grows). */
static void attempts_unsent(struct notice_relay *r, const char *why)
{
    for (size_t i = 0; i < r->item_count; i++) {
        struct relay_item *it = r->items[i];
        for (size_t k = 0; !it->sent && k < it->m->env.rcpt_count; k++) {
            const struct queue_rcpt *rc = &it->m->env.rcpts[k];
            if (rc->state == QUEUE_RCPT_PENDING && relay_rcpt(rc, r))
                outcome(r, it, k, QUEUE_RCPT_PENDING, why);
        }
    }
}

static void on_closed(void *arg, enum smtp_client_end how, const char *reason)
{
    struct notice_relay *r = arg;
    char why[300], quoted[300];
    snprintf(why, sizeof why, "relay %s: %s", smtp_client_end_name(how), reason);
    if (how != SMTP_CLIENT_END_QUIT)
        log_warn("notice_relay.connection", " relay=%s end=%s reason=%s", r->relay,
                 smtp_client_end_name(how),
                 log_quote(quoted, sizeof quoted, reason, strlen(reason)));
    attempts_unsent(r, why);
    smtp_client_free(r->client);
    r->client = NULL;
    r->closed = true;
    maybe_finish(r);
}

static void connect_relay(struct notice_relay *r)
{
    static const struct smtp_client_callbacks cb = {on_ready, on_txn_done, on_closed};
    /* RFC 5321 4.5.3.2: the client's minimum timeouts per step. */
    struct smtp_client_config cfg = {.helo_name = r->hostname, .log_id = "notice-relay",
                                     .timeouts = {300, 300, 120, 180, 600}};
    struct bufferevent *bev = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
    r->scan.busy = true;
    r->closed = false;
    if (bev != NULL && bufferevent_socket_connect(bev, (struct sockaddr *)&r->addr,
                                                  (int)r->addr_len) == 0)
        r->client = smtp_client_new(r->base, bev, &cfg, &cb, r);
    if (r->client == NULL) {   /* the engine did not take bev */
        if (bev != NULL)
            bufferevent_free(bev);
        log_error("notice_relay.connect_failed", " relay=%s error=\"%s\"", r->relay,
                  strerror(errno));
        attempts_unsent(r, "cannot connect to the relay");
        r->closed = true;
        maybe_finish(r);
        return;
    }
    log_info("notice_relay.connect", " relay=%s notices=%zu", r->relay, r->item_count);
}

/* ---- the scan ---- */

struct scan {
    struct notice_relay *r;
    char **domains;
    size_t domain_count;
};

static int collect_domain(const char *domain, void *arg)
{
    struct scan *sc = arg;
    struct notice_relay *r = sc->r;
    if (*r->set.users != NULL && userdb_domain_hosted(*r->set.users, domain))
        return 0;   /* held for that customer: pushed at its ATRN */
    char **grown = realloc(sc->domains, (sc->domain_count + 1) * sizeof *grown);
    if (grown == NULL)
        return 1;
    sc->domains = grown;
    sc->domains[sc->domain_count] = strdup(domain);
    sc->domain_count += sc->domains[sc->domain_count] != NULL ? 1 : 0;
    return sc->domain_count >= RELAY_DOMAINS_MAX;
}

static int collect_id(const char *id, void *arg)
{
    struct notice_relay *r = arg;
    if (r->id_count >= NOTICE_RELAY_OPEN_MAX * 4)
        return 1;
    snprintf(r->ids[r->id_count++], QUEUE_ID_MAX, "%s", id);
    return 0;
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* The ids with pending recipients in domains no customer holds, sorted, without repeats. */
static void list_candidates(struct notice_relay *r)
{
    struct scan sc = {r, NULL, 0};
    r->id_count = 0;
    int rc = queue_list_domains(r->queue, collect_domain, &sc);
    if (rc != 0)
        log_error("notice_relay.scan_failed", " error=\"%s\"", strerror(rc));
    for (size_t i = 0; i < sc.domain_count; i++) {
        queue_list_domain(r->queue, sc.domains[i], collect_id, r);
        free(sc.domains[i]);
    }
    free(sc.domains);
    qsort(r->ids, r->id_count, QUEUE_ID_MAX, compare_ids);
    size_t out = 0;
    for (size_t i = 0; i < r->id_count; i++)
        if (out == 0 || strcmp(r->ids[out - 1], r->ids[i]) != 0)
            memmove(r->ids[out++], r->ids[i], QUEUE_ID_MAX);
    r->id_count = out;
}

/* A notice odmrd wrote (from <>, protocol "local": not mail from the network with a null
 * sender, which is never relayed) with a relayable recipient whose back-off has run out. */
static bool due(const struct notice_relay *r, const struct queue_message *m, time_t now)
{
    if (m->env.sender[0] != '\0' || m->env.protocol == NULL ||
        strcmp(m->env.protocol, "local") != 0)
        return false;
    for (size_t i = 0; i < m->env.rcpt_count; i++) {
        const struct queue_rcpt *rc = &m->env.rcpts[i];
        if (rc->state != QUEUE_RCPT_PENDING || !relay_rcpt(rc, (void *)r))
            continue;
        if (rc->attempts == 0 ||
            now - rc->last_attempt >=
                notice_relay_backoff(r->set.retry_min, r->set.retry_max, rc->attempts))
            return true;
    }
    return false;
}

/* Opens id; keeps it (leased) when it is a due notice. */
static void consider(struct notice_relay *r, const char *id, time_t now)
{
    struct queue_message *m = NULL;
    if (queue_message_open(r->queue, id, &m) != 0)
        return;
    bool take = due(r, m, now);
    for (size_t i = 0; take && i < m->env.rcpt_count; i++) {
        const struct queue_rcpt *rc = &m->env.rcpts[i];
        /* a push or the expiry scan holds it: next scan */
        take = rc->state != QUEUE_RCPT_PENDING ||
               lease_set_take(r->queue, &r->leased, rc->domain) == 0;
    }
    struct relay_item *it = take ? calloc(1, sizeof *it) : NULL;
    if (it == NULL) {
        queue_message_close(m);
        return;
    }
    *it = (struct relay_item){.r = r, .m = m};
    r->items[r->item_count++] = it;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct notice_relay *r = arg;
    if (!periodic_may_run(&r->scan))
        return;
    list_candidates(r);
    size_t start = 0;
    while (start < r->id_count && strcmp(r->ids[start], r->cursor) <= 0)
        start++;
    time_t now = time(NULL);
    size_t opened = 0;
    for (; opened < r->id_count && opened < NOTICE_RELAY_OPEN_MAX &&
           r->item_count < NOTICE_RELAY_BATCH; opened++) {
        const char *id = r->ids[(start + opened) % r->id_count];
        snprintf(r->cursor, sizeof r->cursor, "%s", id);
        consider(r, id, now);
    }
    if (opened == r->id_count)
        r->cursor[0] = '\0';   /* walked round: the next scan starts at the oldest */
    if (r->item_count > 0)
        connect_relay(r);
    else
        lease_set_release(r->queue, &r->leased);
}

/* ---- public ---- */

struct notice_relay *notice_relay_start(struct event_base *base, struct queue *q,
                                        const struct notice_relay_settings *settings, char *err,
                                        size_t errlen)
{
    struct notice_relay *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    *r = (struct notice_relay){
        .base = base, .queue = q, .set = *settings,
        .relay = strdup(settings->relay),
        .hostname = strdup(settings->hostname != NULL ? settings->hostname : "localhost"),
        .postmaster = settings->postmaster != NULL ? strdup(settings->postmaster) : NULL,
        .ids = calloc(NOTICE_RELAY_OPEN_MAX * 4, sizeof *r->ids),
    };
    time_t period = settings->retry_min < RELAY_SCAN_PERIOD_MAX ? settings->retry_min
                                                                : RELAY_SCAN_PERIOD_MAX;
    bool ok = r->relay != NULL && r->hostname != NULL && r->ids != NULL &&
              (settings->postmaster == NULL || r->postmaster != NULL);
    if (ok && notice_relay_resolve(r->relay, &r->addr, &r->addr_len, err, errlen) != 0)
        ok = false;
    else if (!ok)
        snprintf(err, errlen, "out of memory");
    if (!ok || periodic_start(&r->scan, base, period, on_timer, r) != 0) {
        notice_relay_free(r);
        return NULL;
    }
    log_info("notice_relay.start", " relay=%s postmaster=%s retry_min=%lld retry_max=%lld "
             "period=%lld", r->relay, r->postmaster != NULL ? r->postmaster : "-",
             (long long)settings->retry_min, (long long)settings->retry_max,
             (long long)(period > 0 ? period : 1));
    return r;
}

void notice_relay_shutdown(struct notice_relay *r, void (*idle)(void *arg), void *arg)
{
    if (r == NULL) {
        idle(arg);
        return;
    }
    if (periodic_stop(&r->scan, idle, arg) && r->client != NULL)
        smtp_client_abort(r->client, "shutdown");
}

void notice_relay_free(struct notice_relay *r)
{
    if (r == NULL)
        return;
    periodic_free(&r->scan);
    for (size_t i = 0; i < r->item_count; i++)
        item_free(r->items[i]);
    lease_set_release(r->queue, &r->leased);
    free(r->ids);
    free(r->relay);
    free(r->hostname);
    free(r->postmaster);
    free(r);
}
