/* SPDX-License-Identifier: ISC */
/* For the session fuzz targets: an event base, a bounded event loop and the checks they share.
 * One loop pass runs the callbacks active when it starts (a "breaker" callback queued behind
 * them ends the pass), so a session that keeps re-activating itself cannot hang a target:
 * fuzz_loop_idle() gives up after a fixed number of passes and the target traps (a livelock is
 * a finding). A header, not a target: the Makefile builds fuzz/fuzz_*.c only. */
#ifndef ODMR_FUZZ_LOOP_H
#define ODMR_FUZZ_LOOP_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/log.h"

#define FUZZ_CHECK(cond)          \
    do {                          \
        if (!(cond))              \
            __builtin_trap();     \
    } while (0)

enum { FUZZ_LOOP_PASSES = 20000 };   /* per idle wait; a real session needs a few dozen */

struct fuzz_loop {
    struct event_base *base;
    struct event *breaker;
};

static inline void fuzz_loop_break(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

/* Quiet logs (the engines log every session), a fresh base per input. */
static inline bool fuzz_loop_init(struct fuzz_loop *l)
{
    log_init("fuzz", LOG_LEVEL_ERROR);
    l->base = event_base_new();
    l->breaker = l->base != NULL ? event_new(l->base, -1, 0, fuzz_loop_break, l->base) : NULL;
    return l->breaker != NULL;
}

static inline void fuzz_loop_free(struct fuzz_loop *l)
{
    if (l->breaker != NULL)
        event_free(l->breaker);
    if (l->base != NULL)
        event_base_free(l->base);
}

/* Runs passes until two in a row end with no callback active: the second one's poll found no
 * socket ready either (a pass polls before it runs callbacks; what the poll wakes runs in the
 * next pass). No timer of the targets is ever due. */
static inline void fuzz_loop_idle(struct fuzz_loop *l)
{
    unsigned quiet = 0;
    for (unsigned pass = 0; pass < FUZZ_LOOP_PASSES; pass++) {
        event_active(l->breaker, EV_TIMEOUT, 0);
        event_base_loop(l->base, EVLOOP_NONBLOCK);
        quiet = event_base_get_num_events(l->base, EVENT_BASE_COUNT_ACTIVE) == 0 ? quiet + 1 : 0;
        if (quiet == 2)
            return;
    }
    __builtin_trap();   /* still busy after FUZZ_LOOP_PASSES passes: a livelock */
}

/* The peer's end of a bufferevent pair: deferred callbacks like a socket's, both ends open. */
static inline bool fuzz_pair(struct fuzz_loop *l, struct bufferevent *pair[2])
{
    return bufferevent_pair_new(l->base, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS,
                                pair) == 0;
}

/* The next piece of the peer's stream: up to and including the next LF (line mode), or at most
 * piece octets. */
static inline size_t fuzz_next_piece(const unsigned char *data, size_t size, size_t off,
                                     bool line_mode, size_t piece)
{
    size_t n = 0;
    if (line_mode) {
        while (off + n < size && data[off + n++] != '\n')
            ;
        return n;
    }
    return size - off < piece ? size - off : piece;
}

#endif
