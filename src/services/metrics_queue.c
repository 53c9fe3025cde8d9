/* SPDX-License-Identifier: ISC */
/* The queue snapshot of /metrics (docs/metrics.md "Queue gauges"), read on a thread of its own
 * through a read-only queue handle: what odmrctl does beside a running odmrd, so it takes no
 * lock and writes nothing. One scan lists the message ids (held or not, their file sizes, the
 * oldest arrival from the ids) and the per-domain usage (store/queue.h queue_domain_usage).
 * The message sizes are read with fstatat() in the filesystem backend's msg/ directory
 * (docs/queue.md "Spool layout"), the one thing the queue interface does not offer. */
#include "services/metrics_queue.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "services/metrics.h"
#include "store/queue_fs.h"
#include "store/queue_journal.h"

struct metrics_queue {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool requested, scanning, stopping, have_snapshot, running;
    uint64_t request_generation;
    struct timespec taken_mono;       /* of snap */
    struct metrics_queue_snapshot snap;
    struct queue *queue;
    int msg_fd;
    unsigned top_domains;
    struct event *done;               /* on the loop: ready() */
    metrics_queue_ready_cb ready;
    void *ready_arg;
};

/* ---- one scan ---- */

struct scan {
    struct queue *queue;
    int msg_fd;
    struct metrics_queue_snapshot *out;
    struct metrics_domain *domains;
    size_t domain_count, domain_alloc;
};

static int on_message(const char *id, void *arg)
{
    struct scan *sc = arg;
    struct stat st;
    if (fstatat(sc->msg_fd, id, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return 0;   /* removed since the listing */
    int state = queue_is_held(sc->queue, id) ? METRICS_QUEUE_HELD : METRICS_QUEUE_ACTIVE;
    sc->out->messages[state]++;
    sc->out->bytes[state] += (uint64_t)st.st_size;
    int64_t arrival = queue_id_time_usec(id);
    if (arrival > 0 && (sc->out->oldest_usec == 0 || arrival < sc->out->oldest_usec))
        sc->out->oldest_usec = arrival;
    return 0;
}

static int on_domain(const char *name, void *arg)
{
    struct scan *sc = arg;
    struct queue_usage usage;
    if (queue_domain_usage(sc->queue, name, true, &usage) != 0 || usage.messages == 0)
        return 0;
    if (sc->domain_count == sc->domain_alloc) {
        size_t n = sc->domain_alloc ? 2 * sc->domain_alloc : 16;
        struct metrics_domain *grown = realloc(sc->domains, n * sizeof *grown);
        if (grown == NULL)
            return -1;
        sc->domains = grown;
        sc->domain_alloc = n;
    }
    struct metrics_domain *d = &sc->domains[sc->domain_count++];
    snprintf(d->name, sizeof d->name, "%s", name);
    d->messages = usage.messages;
    d->bytes = usage.bytes;
    return 0;
}

static int by_messages(const void *a, const void *b)
{
    const struct metrics_domain *x = a, *y = b;
    if (x->messages != y->messages)
        return x->messages < y->messages ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* The top_domains with the most messages keep their names; the rest are summed. */
static void keep_top(struct scan *sc, unsigned top_domains)
{
    struct metrics_queue_snapshot *out = sc->out;
    if (sc->domain_count > 0)   /* qsort(NULL, 0, ...) is undefined */
        qsort(sc->domains, sc->domain_count, sizeof *sc->domains, by_messages);
    out->domains = sc->domains;
    out->domain_count = sc->domain_count < top_domains ? sc->domain_count : top_domains;
    snprintf(out->other.name, sizeof out->other.name, "%s", METRICS_OTHER_DOMAINS);
    for (size_t i = out->domain_count; i < sc->domain_count; i++) {
        out->other.messages += sc->domains[i].messages;
        out->other.bytes += sc->domains[i].bytes;
        out->other_count++;
    }
}

int metrics_queue_scan(struct queue *q, int msg_dir_fd, unsigned top_domains,
                       struct metrics_queue_snapshot *out)
{
    struct timespec start, end;
    struct scan sc = {q, msg_dir_fd, out, NULL, 0, 0};
    memset(out, 0, sizeof *out);
    clock_gettime(CLOCK_MONOTONIC, &start);
    int rc = queue_list_all(q, on_message, &sc);   /* 0 or an errno value (queue.h) */
    if (rc == 0)
        rc = queue_list_domains(q, on_domain, &sc);
    struct queue_journal_state journal;
    if (rc == 0)
        rc = queue_fs_journal_state(q, &journal);
    if (rc == 0) {
        out->journal_segments = journal.segments;
        out->journal_oldest_change = journal.oldest_change;
    }
    keep_top(&sc, top_domains);
    clock_gettime(CLOCK_MONOTONIC, &end);
    out->scan_seconds = (double)(end.tv_sec - start.tv_sec) +
                        (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    clock_gettime(CLOCK_REALTIME, &end);
    out->taken = (double)end.tv_sec + (double)end.tv_nsec / 1e9;
    out->failed = rc != 0;
    return rc;
}

void metrics_queue_snapshot_clear(struct metrics_queue_snapshot *snap)
{
    free(snap->domains);
    memset(snap, 0, sizeof *snap);
}

/* ---- the thread ---- */

/* A failed scan keeps the counts of the last good one, marked failed and logged once. */
static void publish(struct metrics_queue *mq, struct metrics_queue_snapshot *fresh, int rc,
                    uint64_t generation)
{
    pthread_mutex_lock(&mq->lock);
    bool first_failure = rc != 0 && !(mq->have_snapshot && mq->snap.failed);
    if (rc != 0 && mq->have_snapshot) {
        mq->snap.failed = true;
        mq->snap.taken = fresh->taken;
        metrics_queue_snapshot_clear(fresh);
    } else {
        metrics_queue_snapshot_clear(&mq->snap);
        mq->snap = *fresh;
    }
    mq->snap.generation = generation;
    clock_gettime(CLOCK_MONOTONIC, &mq->taken_mono);
    mq->have_snapshot = true;
    mq->scanning = false;
    pthread_mutex_unlock(&mq->lock);
    if (first_failure)
        log_error("metrics.queue_scan_failed", " error=\"%s\"", strerror(rc));
    event_active(mq->done, EV_TIMEOUT, 0);
}

static void *scan_thread(void *arg)
{
    struct metrics_queue *mq = arg;
    pthread_mutex_lock(&mq->lock);
    for (;;) {
        while (!mq->requested && !mq->stopping)
            pthread_cond_wait(&mq->wake, &mq->lock);
        if (mq->stopping)
            break;
        mq->requested = false;
        mq->scanning = true;
        uint64_t generation = mq->request_generation;
        pthread_mutex_unlock(&mq->lock);
        struct metrics_queue_snapshot fresh;
        int rc = metrics_queue_scan(mq->queue, mq->msg_fd, mq->top_domains, &fresh);
        publish(mq, &fresh, rc, generation);
        pthread_mutex_lock(&mq->lock);
    }
    pthread_mutex_unlock(&mq->lock);
    return NULL;
}

static void on_done(evutil_socket_t fd, short events, void *arg)
{
    struct metrics_queue *mq = arg;
    mq->ready(mq->ready_arg);
}

static double seconds_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

bool metrics_queue_fresh(struct metrics_queue *mq)
{
    uint64_t generation = metrics_queue_generation();
    pthread_mutex_lock(&mq->lock);
    bool fresh = !mq->scanning && mq->have_snapshot && mq->snap.generation == generation &&
                 seconds_since(&mq->taken_mono) < METRICS_QUEUE_MAX_AGE;
    if (!fresh && !mq->scanning) {
        mq->requested = true;
        mq->request_generation = generation;
        pthread_cond_signal(&mq->wake);
    }
    pthread_mutex_unlock(&mq->lock);
    return fresh;
}

void metrics_queue_with(struct metrics_queue *mq,
                        void (*fn)(const struct metrics_queue_snapshot *snap, void *arg),
                        void *arg)
{
    pthread_mutex_lock(&mq->lock);
    fn(mq->have_snapshot ? &mq->snap : NULL, arg);
    pthread_mutex_unlock(&mq->lock);
}

static int open_spool(struct metrics_queue *mq, const char *spool, char *err, size_t errlen)
{
    char path[4096], qerr[300];
    mq->queue = queue_open_fs_existing(spool, true, qerr, sizeof qerr);
    if (mq->queue == NULL) {
        snprintf(err, errlen, "%s", qerr);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", spool, QUEUE_FS_MSG_DIR);
    mq->msg_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mq->msg_fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

struct metrics_queue *metrics_queue_start(struct event_base *base, const char *spool,
                                          unsigned top_domains, metrics_queue_ready_cb ready,
                                          void *arg, char *err, size_t errlen)
{
    struct metrics_queue *mq = calloc(1, sizeof *mq);
    if (mq == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    mq->msg_fd = -1;
    mq->top_domains = top_domains;
    mq->ready = ready;
    mq->ready_arg = arg;
    pthread_mutex_init(&mq->lock, NULL);
    pthread_cond_init(&mq->wake, NULL);
    mq->done = event_new(base, -1, 0, on_done, mq);
    if (mq->done == NULL || open_spool(mq, spool, err, errlen) != 0) {
        if (mq->done == NULL)
            snprintf(err, errlen, "out of memory");
        metrics_queue_free(mq);
        return NULL;
    }
    int rc = pthread_create(&mq->thread, NULL, scan_thread, mq);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the queue scan thread: %s", strerror(rc));
        metrics_queue_free(mq);
        return NULL;
    }
    mq->running = true;
    return mq;
}

void metrics_queue_free(struct metrics_queue *mq)
{
    if (mq == NULL)
        return;
    if (mq->running) {
        pthread_mutex_lock(&mq->lock);
        mq->stopping = true;
        pthread_cond_signal(&mq->wake);
        pthread_mutex_unlock(&mq->lock);
        pthread_join(mq->thread, NULL);
    }
    if (mq->done != NULL)
        event_free(mq->done);
    if (mq->queue != NULL)
        queue_close(mq->queue);
    if (mq->msg_fd >= 0)
        close(mq->msg_fd);
    metrics_queue_snapshot_clear(&mq->snap);
    pthread_mutex_destroy(&mq->lock);
    pthread_cond_destroy(&mq->wake);
    free(mq);
}
