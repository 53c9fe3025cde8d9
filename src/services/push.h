/* SPDX-License-Identifier: ISC */
/* The reversed session (RFC 2645 5.3): after the provider's 250 to ATRN the customer greets
 * with 220 and odmrd, now the SMTP client, pushes every held message of the ATRN domains.
 * Removes a recipient from the queue only after the customer's 250 for it; a 4xx keeps it
 * queued (attempt counted), a 5xx gets its failed notice committed to the queue and is then
 * recorded bounced (docs/notices.md). */
#ifndef ODMR_SERVICES_PUSH_H
#define ODMR_SERVICES_PUSH_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "store/queue.h"

enum push_profile {
    PUSH_PROFILE_COMPAT,   /* one command at a time, no STARTTLS/BDAT/PIPELINING, and over
                              TLS one line per TLS record (fetchmail) */
    PUSH_PROFILE_FAST,     /* PIPELINING and CHUNKING when the customer advertises them */
};

struct push_timeouts {     /* RFC 5321 4.5.3.2 client timeouts, seconds */
    time_t greeting;       /* customer's 220 after our 250 to ATRN: 5 min */
    time_t command;        /* EHLO, MAIL, RCPT, QUIT: 5 min */
    time_t data_init;      /* 354: 2 min */
    time_t data_block;     /* each write of message data: 3 min */
    time_t data_end;       /* reply to the final dot: 10 min */
};

struct push_request {
    struct event_base *base;
    struct bufferevent *bev;       /* the connection; push owns it and frees it at the end */
    bool tls_active;
    struct queue *queue;
    const char *const *domains;    /* lower-case, already leased by the caller */
    size_t domain_count;
    const char *hostname;          /* our EHLO name */
    const char *session_id;        /* for logs */
    const char *peer;              /* the customer's address, for the delivery line, or NULL */
    const char *user;              /* the authenticated user, for the delivery line, or NULL */
    enum push_profile profile;
    struct push_timeouts timeouts;
};

struct push_result {
    unsigned messages;             /* transactions attempted */
    unsigned delivered;            /* recipients answered 250 */
    unsigned deferred;             /* recipients left queued after a 4xx */
    unsigned failed;               /* recipients refused with 5xx (notified, then bounced) */
    bool clean;                    /* ended with our QUIT and the customer's 221 */
    char reason[200];              /* why it ended early, or "" */
};

typedef void (*push_done_fn)(void *arg, const struct push_result *result);

/* The running pushes of one owner (the ODMR service holds one). */
struct push_service;
/* open_files: the message files all its pushes together may hold open beyond one each
 * (docs/push.md "Open files"). */
struct push_service *push_service_new(unsigned open_files);
/* After the last push is done (odmr_service_free). */
void push_service_free(struct push_service *service);

/* Starts the reversed session on req->bev. done runs exactly once, from the event loop, after
 * the connection is closed; the caller then releases its domain leases. Returns 0, or -1 when
 * it could not start (then bev is freed and done is not called). */
int push_start(struct push_service *service, const struct push_request *req, push_done_fn done,
               void *arg);
/* Daemon shutdown: ends every running push of service at the next safe point (never between
 * the final dot and recording its outcome); their done callbacks still run. */
void push_service_shutdown(struct push_service *service);

void push_default_timeouts(struct push_timeouts *t);

#endif
