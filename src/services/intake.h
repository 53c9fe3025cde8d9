/* SPDX-License-Identifier: ISC */
/* Intake: the policy behind the SMTP and LMTP listeners. Accepts recipients of hosted domains
 * only (no open relay) and the bare "Postmaster" (RFC 5321 4.5.1), adds the Received trace
 * header, and stores each message in the queue, answering 250 only once the queue says the
 * commit is durable. */
#ifndef ODMR_SERVICES_INTAKE_H
#define ODMR_SERVICES_INTAKE_H

#include "engines/smtp_server.h"
#include "store/queue.h"
#include "store/userdb.h"

struct intake {
    struct queue *queue;
    struct userdb *const *users;   /* the current users file; swapped on reload */
    const char *hostname;
    const char *postmaster;        /* [server] postmaster; NULL: postmaster@hostname */
    /* [queue] quotas and disk guard (services/intake_limits.c); 0: none */
    const char *spool;             /* for statvfs */
    uint64_t domain_max_messages, domain_max_bytes, min_free;
};

/* Quotas and the disk guard (intake_limits.c). Each returns true and sets reply (452) when
 * the message or recipient must wait, and logs it. */
bool intake_low_on_space(const struct intake *intake, struct smtp_session *s,
                         struct smtp_reply *reply);
bool intake_over_quota(const struct intake *intake, struct smtp_session *s, const char *domain,
                       struct smtp_reply *reply);

extern const struct smtp_server_hooks intake_hooks;

#endif
