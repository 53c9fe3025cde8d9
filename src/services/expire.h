/* SPDX-License-Identifier: ISC */
/* Expiry ([queue] max_hold, docs/notices.md): a timer scan that gives every recipient held
 * longer than max_hold its failed notice (Status 5.4.7) and then records it bounced -- also
 * when no customer ever connects and for domains no user holds any more. */
#ifndef ODMR_SERVICES_EXPIRE_H
#define ODMR_SERVICES_EXPIRE_H

#include <event2/event.h>
#include <time.h>

#include "store/queue.h"

enum { EXPIRE_BATCH_MAX = 1000 };   /* messages handled per scan; the rest wait for the next */

struct expire;

/* Scan period for max_hold: a tenth of it, at most 5 minutes, at least 1 second. */
time_t expire_period(time_t max_hold);

/* Starts the periodic scan (the first one after one period; the period of the shorter of
 * max_hold and delay_warning). delay_warning > 0: a scan with nothing to expire sends the delay
 * warnings (services/delay_warn). NULL when out of memory. */
struct expire *expire_start(struct event_base *base, struct queue *q, time_t max_hold,
                            time_t delay_warning);
/* Stops scanning; idle(arg) runs once the message being expired (if any) is recorded -- at
 * once when none is. */
void expire_shutdown(struct expire *e, void (*idle)(void *arg), void *arg);
void expire_free(struct expire *e);

#endif
