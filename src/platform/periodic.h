/* SPDX-License-Identifier: ISC */
/* A job that runs every so many seconds on the event loop (the expiry scan, the notice relay):
 * its persistent timer, whether a run is under way, and the graceful stop that waits for that
 * run to end before it reports idle. */
#ifndef ODMR_PLATFORM_PERIODIC_H
#define ODMR_PLATFORM_PERIODIC_H

#include <event2/event.h>
#include <stdbool.h>
#include <time.h>

struct periodic {
    struct event *timer;
    bool busy;                  /* a run is under way: set by the job, ended by periodic_done */
    bool stopping;              /* periodic_stop() was called: start no new run */
    void (*idle)(void *arg);    /* called once the run under way ends, after periodic_stop */
    void *idle_arg;
};

/* Arms the timer: run(arg) every period seconds (at least 1). 0, or -1 (out of memory). */
int periodic_start(struct periodic *p, struct event_base *base, time_t period,
                   event_callback_fn run, void *arg);
/* Whether a timer tick may start a run (none under way, not stopping). */
bool periodic_may_run(const struct periodic *p);
/* The run under way is over: idle() now if a stop waits for it. */
void periodic_done(struct periodic *p);
/* No more runs; idle(arg) now if none is under way, else when periodic_done() is called.
 * Returns whether a run is under way. */
bool periodic_stop(struct periodic *p, void (*idle)(void *arg), void *arg);
void periodic_free(struct periodic *p);

#endif
