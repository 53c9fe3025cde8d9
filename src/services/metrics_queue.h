/* SPDX-License-Identifier: ISC */
/* The queue gauges of /metrics (docs/metrics.md): a snapshot made on a thread of its own with
 * a read-only handle on the spool (the way odmrctl reads it beside a running odmrd), so a large
 * queue never stalls the event loop. A scrape asks for a new snapshot when the last one is
 * older than METRICS_QUEUE_MAX_AGE or older than odmrd's last change of the queue, and is
 * answered when it is made. */
#ifndef ODMR_SERVICES_METRICS_QUEUE_H
#define ODMR_SERVICES_METRICS_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store/queue_backend.h"

struct event_base;

enum { METRICS_QUEUE_MAX_AGE = 5 };   /* seconds */

enum metrics_queue_state { METRICS_QUEUE_ACTIVE, METRICS_QUEUE_HELD, METRICS_QUEUE_STATES };

struct metrics_domain {
    char name[QUEUE_DOMAIN_MAX];
    uint64_t messages, bytes;
};

struct metrics_queue_snapshot {
    uint64_t generation;        /* metrics_queue_generation() when the scan began */
    double taken;               /* wall clock, seconds since the epoch */
    double scan_seconds;        /* how long the scan took */
    bool failed;                /* the spool could not be read; counts are from before */
    uint64_t messages[METRICS_QUEUE_STATES], bytes[METRICS_QUEUE_STATES];
    int64_t oldest_usec;        /* arrival of the oldest message (from its id); 0: none */
    struct metrics_domain *domains;   /* the top ones, most messages first */
    size_t domain_count;
    struct metrics_domain other;      /* the rest together, under OTHER_DOMAINS */
    size_t other_count;               /* how many domains are in it */
    size_t journal_segments;          /* commit journal segments holding records */
    double journal_oldest_change;     /* the oldest one's mtime (epoch seconds); 0: none */
};

/* The label value of the domains beyond the top ones: no queue domain can be named so (queue
 * domains are [a-z0-9.-], store/queue_backend.h). */
#define METRICS_OTHER_DOMAINS "_other"

struct metrics_queue;
typedef void (*metrics_queue_ready_cb)(void *arg);

/* Starts the thread for spool (opened read-only there). ready runs on base's loop after each
 * snapshot. NULL on error with err set. */
struct metrics_queue *metrics_queue_start(struct event_base *base, const char *spool,
                                          unsigned top_domains, metrics_queue_ready_cb ready,
                                          void *arg, char *err, size_t errlen);
/* True when the latest snapshot can be served now; else false, and a new one is under way
 * (ready will run). */
bool metrics_queue_fresh(struct metrics_queue *mq);
/* Runs fn with the latest snapshot (NULL before the first) under the lock. */
void metrics_queue_with(struct metrics_queue *mq,
                        void (*fn)(const struct metrics_queue_snapshot *snap, void *arg),
                        void *arg);
/* Stops and joins the thread. */
void metrics_queue_free(struct metrics_queue *mq);

/* One scan, on the calling thread (unit tests; the thread's body). 0 or an errno. */
int metrics_queue_scan(struct queue *q, int msg_dir_fd, unsigned top_domains,
                       struct metrics_queue_snapshot *out);
void metrics_queue_snapshot_clear(struct metrics_queue_snapshot *snap);

#endif
