/* SPDX-License-Identifier: ISC */
/* Delay warnings (delay_warn.h, docs/notices.md "Delay warnings"). */
#include "services/delay_warn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "services/dsn.h"
#include "services/expire.h"
#include "services/lease_set.h"
#include "services/notice.h"

struct delay_warn {
    struct queue *queue;
    time_t delay, max_hold;
    char (*ids)[QUEUE_ID_MAX];    /* this pass's ids, oldest first */
    size_t count, next;
    /* Every id up to the cursor was looked at: a later pass starts after it. A message skipped
     * (a push held its domain) holds the cursor back so that it is looked at again. */
    char cursor[QUEUE_ID_MAX];
    bool skipped, stopping;
    struct lease_set leased;
    void (*done)(void *arg);
    void *arg;
};

static void next_message(struct delay_warn *w);

/* RFC 3461 4.1: a delay notice for NOTIFY containing DELAY, or for no NOTIFY at all. */
static bool wants_warning(const struct queue_message *m, const struct queue_rcpt *r)
{
    return r->state == QUEUE_RCPT_PENDING && !r->warned &&
           dsn_wanted(m->env.sender, r->notify, DSN_ACTION_DELAYED);
}

static void on_warned(int status, void *arg)
{
    struct delay_warn *w = arg;
    lease_set_release(w->queue, &w->leased);
    if (status != 0)
        w->skipped = true;   /* not marked: looked at again */
    next_message(w);
}

/* The recipients of m to warn, leased; 0 with w->skipped when a push holds one. */
static size_t warned_rcpts(struct delay_warn *w, const struct queue_message *m,
                           struct notice_failure *f)
{
    size_t n = 0;
    for (size_t i = 0; i < m->env.rcpt_count; i++) {
        const struct queue_rcpt *r = &m->env.rcpts[i];
        if (!wants_warning(m, r))
            continue;
        if (lease_set_take(w->queue, &w->leased, r->domain) != 0) {
            lease_set_release(w->queue, &w->leased);
            w->skipped = true;
            return 0;
        }
        f[n++] = (struct notice_failure){i, NULL};
    }
    return n;
}

/* true when a notice is under way (on_warned follows). */
static bool warn_one(struct delay_warn *w, const char *id)
{
    struct queue_message *m = NULL;
    if (queue_message_open(w->queue, id, &m) != 0)
        return false;   /* gone meanwhile, or corrupt (logged) */
    struct notice_failure *f = calloc(m->env.rcpt_count, sizeof *f);
    size_t n = f != NULL ? warned_rcpts(w, m, f) : 0;
    bool started = false;
    if (n > 0) {
        struct notice_event ev = {NOTICE_DELAYED, NULL, w->max_hold, "delay"};
        log_info("delay.warn", " id=%s rcpts=%zu age=%lld delay_warning=%lld", id, n,
                 (long long)(time(NULL) - m->env.arrival), (long long)w->delay);
        started = notice_failed(w->queue, m, f, n, &ev, on_warned, w) == 0;
        if (!started) {
            lease_set_release(w->queue, &w->leased);
            w->skipped = true;
        }
    }
    free(f);
    queue_message_close(m);
    return started;
}

static void next_message(struct delay_warn *w)
{
    while (w->next < w->count && !w->stopping) {
        const char *id = w->ids[w->next++];
        bool started = warn_one(w, id);
        if (!w->skipped)
            snprintf(w->cursor, sizeof w->cursor, "%s", id);
        if (started)
            return;
    }
    w->count = w->next = 0;
    w->done(w->arg);
}

static int collect(const char *id, void *arg)
{
    struct delay_warn *w = arg;
    if (strcmp(id, w->cursor) <= 0)
        return 0;
    snprintf(w->ids[w->count++], QUEUE_ID_MAX, "%s", id);
    return w->count >= EXPIRE_BATCH_MAX;
}

bool delay_warn_start(struct delay_warn *w, void (*done)(void *arg), void *arg)
{
    w->count = w->next = 0;
    w->skipped = w->stopping = false;
    int rc = queue_expire_scan(w->queue, w->delay, collect, w);
    if (rc != 0) {
        log_error("delay.scan_failed", " error=\"%s\"", strerror(rc));
        return false;
    }
    if (w->count == 0)
        return false;
    w->done = done;
    w->arg = arg;
    next_message(w);
    return true;
}

void delay_warn_stop(struct delay_warn *w)
{
    w->stopping = true;
}

struct delay_warn *delay_warn_new(struct queue *q, time_t delay_warning, time_t max_hold)
{
    struct delay_warn *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    *w = (struct delay_warn){
        .queue = q, .delay = delay_warning, .max_hold = max_hold,
        .ids = calloc(EXPIRE_BATCH_MAX, sizeof *w->ids),
    };
    if (w->ids == NULL) {
        free(w);
        return NULL;
    }
    return w;
}

void delay_warn_free(struct delay_warn *w)
{
    if (w == NULL)
        return;
    lease_set_release(w->queue, &w->leased);
    free(w->ids);
    free(w);
}
