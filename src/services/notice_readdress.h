/* SPDX-License-Identifier: ISC */
/* A notice the relay refused (5xx): RFC 3461 6.2 forbids a notice about a notice, so it is
 * re-addressed to [bounce] postmaster when that is set -- a copy of the notice's octets with
 * two header fields saying for whom it was and what the relay answered, from <>, committed to
 * the queue before the refused notice is recorded bounced (a crash in between: at worst two
 * copies). Without a postmaster, or when the refused notice was already addressed to the
 * postmaster (no loop), it is logged and dropped (recorded bounced, removed). */
#ifndef ODMR_SERVICES_NOTICE_READDRESS_H
#define ODMR_SERVICES_NOTICE_READDRESS_H

#include <stddef.h>

#include "services/notice.h"
#include "store/queue.h"

struct readdress_request {
    struct queue *queue;
    const struct queue_message *m;   /* the refused notice, open; read during the call only */
    size_t rcpt_index;
    const char *reply;               /* the relay's reply */
    const char *postmaster;          /* [bounce] postmaster, or NULL */
    const char *hostname;            /* HELO of the copy's envelope */
};

/* 0 when done(status, arg) will run once the refused notice is recorded (later, on the event
 * loop), or an errno (nothing committed or recorded; done is not called). */
int notice_readdress(const struct readdress_request *req, notice_done_fn done, void *arg);

#endif
