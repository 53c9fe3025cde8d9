/* SPDX-License-Identifier: ISC */
/* [metrics] listen: /metrics over HTTP (libevent's evhttp) in the Prometheus text format
 * (docs/metrics.md). Loopback only unless [metrics] allow_remote: the page names the hosted
 * domains and the traffic, and has no authentication of its own. */
#ifndef ODMR_SERVICES_METRICS_HTTP_H
#define ODMR_SERVICES_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct metrics_http;

/* Descriptors it may hold (odmrd/nofile.c): the listener, the scrapers' connections (closed
 * after METRICS_HTTP_TIMEOUT s idle; Prometheus keeps one) and the queue scan's read-only
 * spool handle with its directory streams. */
enum { METRICS_HTTP_TIMEOUT = 10, NOFILE_METRICS = 1 + 16 + 16 };

/* Checks a [metrics] listen value: host:port or [v6]:port, every address it names loopback
 * unless allow_remote. NULL or "" is off and fine. 0, or -1 with err set. */
int metrics_http_check(const char *spec, bool allow_remote, char *err, size_t errlen);
/* Binds spec (checked) and serves /metrics; the queue families come once
 * metrics_http_watch_queue() ran. NULL with err set. */
struct metrics_http *metrics_http_listen(struct event_base *base, const char *spec, char *err,
                                         size_t errlen);
/* After the switch to [server] user: the queue gauges from spool. 0, or -1 with err set. */
int metrics_http_watch_queue(struct metrics_http *h, const char *spool, unsigned top_domains,
                             char *err, size_t errlen);
/* Answers waiting scrapes, closes the listener and its connections, stops the scan thread. */
void metrics_http_free(struct metrics_http *h);

#endif
