/* SPDX-License-Identifier: ISC */
/* Expiry scan (docs/notices.md "Expiry"). Every period: the ids older than max_hold (ids carry
 * their arrival time, so a young message's file is never opened), one message at a time: open
 * it, lease the domains of its unfinished recipients (a message a push is sending is skipped
 * until the next scan), commit the failed notice, record the recipients bounced, release. */
#include "services/expire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "platform/periodic.h"
#include "services/delay_warn.h"
#include "services/delivery_log.h"
#include "services/lease_set.h"
#include "services/notice.h"

struct expire {
    struct queue *queue;
    time_t max_hold;
    struct periodic scan;       /* the scan's timer; busy while a scan runs */
    char (*ids)[QUEUE_ID_MAX];  /* this scan's old ids, oldest first (EXPIRE_BATCH_MAX) */
    size_t count, next;
    struct lease_set leased;    /* domains leased for the message being expired */
    struct delay_warn *warn;    /* [queue] delay_warning, or NULL */
};

static void next_message(struct expire *e);

time_t expire_period(time_t max_hold)
{
    time_t period = max_hold / 10;
    if (period > 300)
        period = 300;
    return period < 1 ? 1 : period;
}

static void release_leases(struct expire *e)
{
    lease_set_release(e->queue, &e->leased);
}

static void on_notified(int status, void *arg)
{
    struct expire *e = arg;
    release_leases(e);
    next_message(e);
}

/* The recipients of m that expire: every one not yet final (pending), and failed ones whose
 * notice is still owed. Fills f and returns how many; 0 with *skipped when a push holds one of
 * their domains (the message waits for the next scan). */
static size_t expiring(struct expire *e, const struct queue_message *m, struct notice_failure *f,
                       bool *skipped)
{
    size_t n = 0;
    char quoted[300];
    int64_t age = (int64_t)(time(NULL) - m->env.arrival);
    for (size_t i = 0; i < m->env.rcpt_count; i++) {
        const struct queue_rcpt *r = &m->env.rcpts[i];
        if (r->state != QUEUE_RCPT_PENDING && r->state != QUEUE_RCPT_FAILED)
            continue;
        int rc = lease_set_take(e->queue, &e->leased, r->domain);
        if (rc != 0) {
            log_debug("expire.skipped", " id=%s domain=%s reason=\"%s\"", m->env.id, r->domain,
                      rc == EBUSY ? "being delivered" : strerror(rc));
            release_leases(e);
            *skipped = true;
            return 0;
        }
        f[n++] = (struct notice_failure){i, NULL};
    }
    /* Held (odmrctl queue hold) after the scan listed it: checked under the leases, which
     * odmrctl holds while it sets the mark. */
    if (n > 0 && queue_is_held(e->queue, m->env.id)) {
        log_debug("expire.skipped", " id=%s reason=held", m->env.id);
        release_leases(e);
        *skipped = true;
        return 0;
    }
    char why[120];
    snprintf(why, sizeof why, "expired: held %lld seconds, max_hold %lld seconds",
             (long long)age, (long long)e->max_hold);
    for (size_t i = 0; i < n; i++) {
        const struct queue_rcpt *r = &m->env.rcpts[f[i].rcpt_index];
        log_info("expire.rcpt", " id=%s rcpt=%s domain=%s age=%lld max_hold=%lld", m->env.id,
                 log_quote(quoted, sizeof quoted, r->address, strlen(r->address)), r->domain,
                 (long long)age, (long long)e->max_hold);
        delivery_log(m->env.id, r->address, "none", m->env.arrival, DELIVERY_EXPIRED, why);
    }
    return n;
}

/* Starts expiring id. true when a notice is under way (on_notified follows). */
static bool expire_one(struct expire *e, const char *id)
{
    struct queue_message *m = NULL;
    int rc = queue_message_open(e->queue, id, &m);
    if (rc != 0) {
        if (rc != ENOENT)   /* gone meanwhile is normal; corrupt ones were logged */
            log_warn("expire.open_failed", " id=%s error=\"%s\"", id, strerror(rc));
        return false;
    }
    struct notice_failure *f = calloc(m->env.rcpt_count, sizeof *f);
    bool skipped = f == NULL, started = false;
    size_t n = f != NULL ? expiring(e, m, f, &skipped) : 0;
    if (n > 0) {
        struct notice_event ev = {NOTICE_EXPIRED, NULL, e->max_hold, "expire"};
        started = notice_failed(e->queue, m, f, n, &ev, on_notified, e) == 0;
        if (!started)
            release_leases(e);
    } else if (!skipped) {
        queue_remove_if_finished(e->queue, id, NULL);   /* nothing left: a removal a crash cut short */
    }
    free(f);
    queue_message_close(m);
    return started;
}

/* The scan (expiry, then warnings) is over. */
static void scan_over(struct expire *e)
{
    periodic_done(&e->scan);
}

static void next_message(struct expire *e)
{
    while (e->next < e->count && !e->scan.stopping) {
        if (expire_one(e, e->ids[e->next++]))
            return;
    }
    e->count = e->next = 0;
    scan_over(e);
}

static void scan_over_cb(void *arg)
{
    scan_over(arg);
}

static int collect(const char *id, void *arg)
{
    struct expire *e = arg;
    snprintf(e->ids[e->count++], QUEUE_ID_MAX, "%s", id);
    return e->count >= EXPIRE_BATCH_MAX;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct expire *e = arg;
    if (!periodic_may_run(&e->scan))
        return;
    int rc = queue_expire_scan(e->queue, e->max_hold, collect, e);
    if (rc != 0) {
        log_error("expire.scan_failed", " error=\"%s\"", strerror(rc));
        e->count = 0;
        return;
    }
    if (e->count == 0) {
        /* Nothing to expire: the delay warnings' turn. */
        e->scan.busy = true;
        if (e->warn == NULL || !delay_warn_start(e->warn, scan_over_cb, e))
            e->scan.busy = false;
        return;
    }
    log_info("expire.scan", " messages=%zu max_hold=%lld", e->count, (long long)e->max_hold);
    e->scan.busy = true;
    next_message(e);
}

struct expire *expire_start(struct event_base *base, struct queue *q, time_t max_hold,
                            time_t delay_warning)
{
    struct expire *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    *e = (struct expire){
        .queue = q, .max_hold = max_hold, .ids = calloc(EXPIRE_BATCH_MAX, sizeof *e->ids),
    };
    time_t period = expire_period(max_hold);
    if (delay_warning > 0 && expire_period(delay_warning) < period)
        period = expire_period(delay_warning);
    e->warn = delay_warning > 0 ? delay_warn_new(q, delay_warning, max_hold) : NULL;
    if (e->ids == NULL || (delay_warning > 0 && e->warn == NULL) ||
        periodic_start(&e->scan, base, period, on_timer, e) != 0) {
        expire_free(e);
        return NULL;
    }
    log_info("expire.start", " max_hold=%lld period=%lld delay_warning=%lld",
             (long long)max_hold, (long long)period, (long long)delay_warning);
    return e;
}

void expire_shutdown(struct expire *e, void (*idle)(void *arg), void *arg)
{
    if (e->warn != NULL)
        delay_warn_stop(e->warn);
    periodic_stop(&e->scan, idle, arg);
}

void expire_free(struct expire *e)
{
    if (e == NULL)
        return;
    periodic_free(&e->scan);
    release_leases(e);
    delay_warn_free(e->warn);
    free(e->ids);
    free(e);
}
