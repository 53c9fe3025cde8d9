/* SPDX-License-Identifier: ISC */
/* A session's deadline on an event timer of its own (RFC 5321 4.5.3.2: the server timeouts
 * are per command, not per received octet). Unlike a bufferevent's read timeout, arriving
 * octets never restart it: a client trickling a byte now and then is still cut off once the
 * command (or message, or TLS handshake) has taken too long. */
#ifndef ODMR_PLATFORM_DEADLINE_H
#define ODMR_PLATFORM_DEADLINE_H

#include <event2/event.h>
#include <stdint.h>
#include <time.h>

enum deadline_kind {
    DEADLINE_NONE,
    DEADLINE_COMMAND,     /* a whole command line, from when the server was ready for it */
    DEADLINE_MESSAGE,     /* a whole message (DATA or every BDAT chunk), extended by its octets */
    DEADLINE_HANDSHAKE,   /* a TLS handshake (STARTTLS or implicit TLS) */
    DEADLINE_CLOSE,       /* the last reply of a closing session (it may never leave) */
};

struct deadline {
    struct event *timer;
    enum deadline_kind kind;
    struct timespec start;     /* CLOCK_MONOTONIC */
    time_t seconds;
    unsigned min_rate;         /* DEADLINE_MESSAGE: octets per second that extend it; 0 none */
    uint64_t octets;
    void (*expired)(void *arg, enum deadline_kind kind);
    void *arg;
};

/* 0, or -1 when the timer cannot be made. expired runs when a started deadline passes. */
int deadline_init(struct deadline *d, struct event_base *base,
                  void (*expired)(void *arg, enum deadline_kind kind), void *arg);
/* Starts (or restarts) a deadline of `seconds` from now. A DEADLINE_MESSAGE deadline moves
 * out by one second for every min_rate octets counted with deadline_add_octets() (min_rate 0:
 * it does not move); seconds 0 stops the timer. */
void deadline_start(struct deadline *d, enum deadline_kind kind, time_t seconds,
                    unsigned min_rate);
void deadline_add_octets(struct deadline *d, uint64_t octets);
void deadline_stop(struct deadline *d);
enum deadline_kind deadline_kind(const struct deadline *d);
/* "command", "message", "tls_handshake", "close" (for logs). */
const char *deadline_kind_name(enum deadline_kind kind);
void deadline_free(struct deadline *d);

#endif
