/* SPDX-License-Identifier: ISC */
/* Per-command, per-message and TLS-handshake deadlines on one evtimer per session. */
#include "platform/deadline.h"

#include <string.h>

static double elapsed_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Seconds the current deadline allows in all; a message's grows with its octets (Postfix's
 * smtpd_min_data_rate idea: a sender that keeps up the minimum rate is never cut off). */
static double allowed(const struct deadline *d)
{
    double total = (double)d->seconds;
    if (d->kind == DEADLINE_MESSAGE && d->min_rate > 0)
        total += (double)d->octets / (double)d->min_rate;
    return total;
}

static void arm(struct deadline *d, double seconds)
{
    if (seconds < 0.001)
        seconds = 0.001;
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    evtimer_add(d->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short events, void *arg)
{
    struct deadline *d = arg;
    double left = allowed(d) - elapsed_since(&d->start);
    if (left > 0.001) {
        arm(d, left);   /* octets arrived meanwhile and moved a message's deadline out */
        return;
    }
    enum deadline_kind kind = d->kind;
    d->kind = DEADLINE_NONE;
    d->expired(d->arg, kind);
}

int deadline_init(struct deadline *d, struct event_base *base,
                  void (*expired)(void *arg, enum deadline_kind kind), void *arg)
{
    memset(d, 0, sizeof *d);
    d->expired = expired;
    d->arg = arg;
    d->timer = evtimer_new(base, on_timer, d);
    return d->timer != NULL ? 0 : -1;
}

void deadline_start(struct deadline *d, enum deadline_kind kind, time_t seconds,
                    unsigned min_rate)
{
    if (seconds <= 0 || kind == DEADLINE_NONE) {
        deadline_stop(d);
        return;
    }
    d->kind = kind;
    d->seconds = seconds;
    d->min_rate = min_rate;
    d->octets = 0;
    clock_gettime(CLOCK_MONOTONIC, &d->start);
    arm(d, (double)seconds);
}

void deadline_add_octets(struct deadline *d, uint64_t octets)
{
    d->octets += octets;
}

void deadline_stop(struct deadline *d)
{
    d->kind = DEADLINE_NONE;
    if (d->timer != NULL)
        evtimer_del(d->timer);
}

enum deadline_kind deadline_kind(const struct deadline *d)
{
    return d->kind;
}

const char *deadline_kind_name(enum deadline_kind kind)
{
    static const char *const names[] = {
        [DEADLINE_NONE] = "none",   [DEADLINE_COMMAND] = "command",  [DEADLINE_MESSAGE] = "message",
        [DEADLINE_HANDSHAKE] = "tls_handshake", [DEADLINE_CLOSE] = "close",
    };
    return names[kind];
}

void deadline_free(struct deadline *d)
{
    if (d->timer != NULL)
        event_free(d->timer);
    d->timer = NULL;
    d->kind = DEADLINE_NONE;
}
