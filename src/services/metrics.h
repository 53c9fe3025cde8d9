/* SPDX-License-Identifier: ISC */
/* odmrd's metrics (docs/metrics.md): counters, gauges and the commit-latency histogram that the
 * services bump with one-line hooks, and their Prometheus text exposition (format 0.0.4).
 *
 * Threading: the hooks run on the event-loop thread (the services' only thread) and are plain
 * increments, cheap enough to run whether or not [metrics] listen is set; the queue snapshot
 * (services/metrics_queue.h) is made on its own thread and handed over under its lock. */
#ifndef ODMR_SERVICES_METRICS_H
#define ODMR_SERVICES_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "store/queue.h"

struct evbuffer;
struct metrics_queue_snapshot;

/* ---- hooks (one line each at their sites) ---- */

/* A session began or ended; service is the server's role: "smtp", "lmtp" or "odmr" (any other,
 * such as odmr-client's "reversed", is not counted). */
void metrics_session_opened(const char *service);
void metrics_session_closed(const char *service);
/* One failed AUTH exchange on the ODMR port (wrong credentials, "*", cut off). */
void metrics_count_auth_failure(void);
/* odmrd's reply to one ATRN command. */
void metrics_count_atrn(int code);
/* One recipient's outcome in a push: reply is the customer's reply text ("250 2.1.5 OK"), or
 * odmrd's own words when there was none ("not attempted": class "none"). */
void metrics_count_push_outcome(const char *reply);
/* odmrd's reply to the end of one message's data (final dot or BDAT LAST); count replies at
 * once (LMTP: one per recipient, RFC 2033 4.2). */
void metrics_count_intake_reply(const char *service, int code, size_t count);
/* odmrd changed the queue (outcomes recorded, a message removed): the next scrape reads it. */
void metrics_queue_changed(void);
/* queue_commit() that measures the time to the callback (odmrd_commit_duration_seconds). */
void metrics_queue_commit(struct queue_writer *w, queue_commit_cb cb, void *arg);

/* ---- for the exposition ---- */

/* Bumped whenever odmrd changes the queue through a hook (a commit, a push outcome): a queue
 * snapshot older than the last change is stale. */
uint64_t metrics_queue_generation(void);
/* Every family, in the text format, onto out. snap: the latest queue snapshot (NULL: the queue
 * families are left out); top_domains: how many domains get their own series. */
void metrics_format(struct evbuffer *out, const struct metrics_queue_snapshot *snap);
/* Forgets every counter (unit tests). */
void metrics_reset(void);

#endif
