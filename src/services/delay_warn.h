/* SPDX-License-Identifier: ISC */
/* Delay warnings ([queue] delay_warning, docs/notices.md): run by the expiry scan's timer. One
 * pass: the ids older than delay_warning (from their names, no file of a younger message
 * opened) after the last one a pass finished with, at most EXPIRE_BATCH_MAX; each message's
 * pending recipients that are not yet warned and want a delay notice (NOTIFY with DELAY, or
 * none: RFC 3461 4.1) get one delayed notice per message (Status 4.4.7, Will-Retry-Until =
 * arrival + max_hold), committed before they are marked warned (docs/queue.md "Index entry"). */
#ifndef ODMR_SERVICES_DELAY_WARN_H
#define ODMR_SERVICES_DELAY_WARN_H

#include <stdbool.h>
#include <time.h>

#include "store/queue.h"

struct delay_warn;

struct delay_warn *delay_warn_new(struct queue *q, time_t delay_warning, time_t max_hold);
/* Starts a pass. false when there is nothing to look at (done is not called); else done(arg)
 * runs once the pass is over (on the event loop). */
bool delay_warn_start(struct delay_warn *w, void (*done)(void *arg), void *arg);
/* Ends the pass after the message under way. */
void delay_warn_stop(struct delay_warn *w);
void delay_warn_free(struct delay_warn *w);

#endif
