/* SPDX-License-Identifier: ISC */
/* Shared by the ODMR service's three files only: odmr_session.c (the service, the sessions'
 * lifetime, the turnaround), odmr_auth.c (AUTH) and odmr_atrn.c (ATRN, leases). */
#ifndef ODMR_SERVICES_ODMR_SESSION_INTERNAL_H
#define ODMR_SERVICES_ODMR_SESSION_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "engines/smtp_server.h"
#include "services/odmr_session.h"

struct failure_reply;


struct odmr_service {
    struct event_base *base;
    struct queue *queue;
    struct userdb *const *users;
    struct odmr_settings settings;
    struct sasl_server *sasl;
    struct smtp_server *server;
    struct push_service *pushes;
    struct peer_count *peers;           /* sessions per address */
    struct peer_count *unauthenticated; /* sessions per address not yet through AUTH */
    struct peer_count *exchanges;       /* AUTH exchanges under way per address */
    struct auth_failures *failures;     /* failed AUTH per address (services/auth_failures.h) */
};

/* The service's part of one session (the engine session's user pointer), until the session
 * ends or, after a turnaround, until the push is done. */
struct odmr_session {
    struct odmr_service *service;
    struct smtp_session *smtp;   /* NULL once detached */
    char id[24];
    char peer[64];
    unsigned auth_failures;
    struct sasl_exchange *exchange;
    const char *mechanism;       /* of the exchange under way */
    const struct failure_reply *failure;   /* sent when the delay ends */
    bool exchange_sent_final;   /* server's last SASL data sent as 334, awaiting empty line */
    char *user;                  /* authenticated user */
    char **leased;               /* domains leased for the push (malloc) */
    size_t leased_count;
    struct event *delay;         /* slows down the reply to a failed AUTH */
    struct smtp_detached detached;   /* the connection handed to the push */
};

static inline struct evbuffer *odmr_out(struct odmr_session *s)
{
    return smtp_session_output(s->smtp);
}

/* The service's part of an engine session, made on its first service verb; NULL when out of
 * memory. */
struct odmr_session *odmr_session_of(struct odmr_service *service, struct smtp_session *smtp);
/* RFC 2645 5.3: after the 250 to ATRN, the connection goes to the push. */
void odmr_turn_around(struct odmr_session *s);

#endif
