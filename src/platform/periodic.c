/* SPDX-License-Identifier: ISC */
/* A periodic job's timer and graceful stop (periodic.h). */
#include "platform/periodic.h"

int periodic_start(struct periodic *p, struct event_base *base, time_t period,
                   event_callback_fn run, void *arg)
{
    struct timeval tv = {period > 0 ? period : 1, 0};
    p->timer = event_new(base, -1, EV_PERSIST, run, arg);
    if (p->timer == NULL || event_add(p->timer, &tv) != 0)
        return -1;
    return 0;
}

bool periodic_may_run(const struct periodic *p)
{
    return !p->busy && !p->stopping;
}

void periodic_done(struct periodic *p)
{
    p->busy = false;
    if (p->stopping && p->idle != NULL) {
        void (*idle)(void *) = p->idle;
        p->idle = NULL;
        idle(p->idle_arg);
    }
}

bool periodic_stop(struct periodic *p, void (*idle)(void *arg), void *arg)
{
    p->stopping = true;
    if (p->timer != NULL)
        event_del(p->timer);
    if (!p->busy) {
        idle(arg);
        return false;
    }
    p->idle = idle;
    p->idle_arg = arg;
    return true;
}

void periodic_free(struct periodic *p)
{
    if (p->timer != NULL)
        event_free(p->timer);
    p->timer = NULL;
}
