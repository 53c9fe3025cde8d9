/* SPDX-License-Identifier: ISC */
/* Failed notices into odmrd's own queue (docs/notices.md): when the customer's MTA refuses a
 * recipient with 5xx during the push, and when a recipient expires ([queue] max_hold).
 *
 * Order (the crash rule): the notice is committed first, then the original recipients are
 * recorded BOUNCED (and the original removed once nothing is left). A crash in between leaves
 * the recipients as they were, so at worst a second notice follows, never none. */
#ifndef ODMR_SERVICES_NOTICE_H
#define ODMR_SERVICES_NOTICE_H

#include <stddef.h>
#include <time.h>

#include "store/queue.h"

struct userdb;

/* Set once at start-up (odmrd's main): the Reporting-MTA name and the users, which decide only
 * whether a notice is held for a customer or for the admin (logged as held=). Both optional. */
void notice_configure(const char *hostname, struct userdb *const *users);

enum notice_cause {
    NOTICE_REFUSED,   /* the customer's MTA answered 5xx (RCPT, or after the data) */
    NOTICE_EXPIRED,   /* held longer than [queue] max_hold */
    NOTICE_ADMIN,     /* returned by the administrator (odmrctl queue bounce) */
    NOTICE_RELAYED,   /* the customer's MTA took it (2xx) without advertising DSN, and the
                         recipient asked for NOTIFY=SUCCESS (RFC 3461 5.2.2 b): a relayed
                         notice, then the recipient is recorded DONE */
    NOTICE_DELAYED,   /* not collected after [queue] delay_warning (RFC 3461 4.1 DELAY): a
                         delayed notice, then the recipient is marked warned (still pending) */
};

struct notice_failure {
    size_t rcpt_index;   /* into the original's envelope */
    const char *reply;   /* the customer's reply (refused), or NULL */
};

struct notice_event {
    enum notice_cause cause;
    const char *remote_mta;   /* the customer's name when it answered, or NULL */
    time_t held_for;          /* expired and delayed: [queue] max_hold in seconds */
    const char *session_id;   /* for the logs, or NULL */
};

/* 0, or the errno of the notice's commit or of the record (the recipients then stay as they
 * were: refused ones pending, to be tried again; expired ones expire again next scan). */
typedef void (*notice_done_fn)(int status, void *arg);

/* Commits one failed notice for the n recipients of m (those the RFC 3461 rules let have one),
 * then records all n BOUNCED (NOTICE_RELAYED: one relayed notice, then all n DONE), removing m when every recipient is final. m is only read during
 * this call. Returns 0 when done will run (later, on the event loop; inline when the queue has
 * no event base), or an errno (nothing was committed or recorded; done is not called). */
int notice_failed(struct queue *q, const struct queue_message *m,
                  const struct notice_failure *failures, size_t n,
                  const struct notice_event *event, notice_done_fn done, void *arg);

/* "5 days", "2 seconds": the largest unit that divides seconds. */
void notice_format_duration(time_t seconds, char *out, size_t len);

#endif
