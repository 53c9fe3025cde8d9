/* SPDX-License-Identifier: ISC */
/* Sending notices out ([bounce] relay, docs/notices.md "Sending notices out"). odmrd does no
 * MX lookups: the notices it holds for the admin (filed under a domain no customer hosts) go
 * to one SMTP relay, with retries and exponential back-off kept in the queue's own per-recipient
 * attempts and last-attempt time. A timer scan leases the notices' domains, sends the due ones
 * over one connection (engines/smtp_client), and records each outcome: 250 done (removed),
 * 4xx or no answer pending (an attempt counted), 5xx: re-addressed to [bounce] postmaster when
 * set, else logged and dropped -- never a notice about a notice (RFC 3461 6.2). */
#ifndef ODMR_SERVICES_NOTICE_RELAY_H
#define ODMR_SERVICES_NOTICE_RELAY_H

#include <event2/event.h>
#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

#include "store/queue.h"

struct userdb;
struct notice_relay;

enum {
    NOTICE_RELAY_BATCH = 32,         /* notices sent per scan (one connection) */
    NOTICE_RELAY_OPEN_MAX = 256,     /* messages opened per scan to find them */
};

struct notice_relay_settings {
    const char *relay;               /* HOST:PORT, [v6]:PORT */
    const char *postmaster;          /* [bounce] postmaster, or NULL */
    const char *hostname;            /* EHLO name */
    time_t retry_min, retry_max;
    struct userdb *const *users;     /* hosted domains: their notices are not relayed */
};

/* Resolves HOST:PORT (once, at start: the relay's address is fixed for the run). 0, or -1 with
 * a message in err. */
int notice_relay_resolve(const char *spec, struct sockaddr_storage *addr, socklen_t *len,
                         char *err, size_t errlen);

/* The wait before the next attempt after `attempts` failed ones: retry_min doubled per
 * attempt, at most retry_max. */
time_t notice_relay_backoff(time_t retry_min, time_t retry_max, unsigned attempts);

/* Starts the scan (every retry_min, at most every minute, at least every second). NULL with
 * err filled on failure. */
struct notice_relay *notice_relay_start(struct event_base *base, struct queue *q,
                                        const struct notice_relay_settings *settings, char *err,
                                        size_t errlen);
/* Stops scanning; a connection under way is ended (its outcomes recorded), then idle(arg).
 * r may be NULL (idle at once). */
void notice_relay_shutdown(struct notice_relay *r, void (*idle)(void *arg), void *arg);
void notice_relay_free(struct notice_relay *r);

#endif
