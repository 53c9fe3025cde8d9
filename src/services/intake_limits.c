/* SPDX-License-Identifier: ISC */
/* Quotas and the disk guard at intake ([queue] domain_max_messages, domain_max_bytes,
 * min_free; docs/queue.md "Quotas and free space"). Both answer 452, a temporary refusal: the
 * sending MTA keeps the mail and tries again later, which is what a full queue needs.
 *
 * Counts are read from the spool at each RCPT (queue_domain_usage: the domain's index entries,
 * and the sizes of their files when a byte limit is set), never cached: odmrctl's deletes and
 * the pushes of a running odmrd show at once, and nothing has to be rebuilt at start. */
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "lib/log.h"
#include "services/intake.h"

enum { LOW_SPACE_LOG_SECONDS = 60 };

/* The free space of the spool's filesystem for an unprivileged user (f_bavail). */
static bool free_space(const char *spool, uint64_t *out)
{
    struct statvfs st;
    if (spool == NULL || statvfs(spool, &st) != 0)
        return false;
    *out = (uint64_t)st.f_bavail * (uint64_t)st.f_frsize;
    return true;
}

/* RFC 3463 3.4: X.3.1 "Mail system full", temporary (4.3.1). Like Postfix's queue_minfree,
 * and as Postfix does with SIZE: refused when less than min_free would stay free, counting a
 * declared SIZE as already used. Logged at most once a minute, with the count refused. */
bool intake_low_on_space(const struct intake *intake, struct smtp_session *s,
                         struct smtp_reply *reply)
{
    static unsigned refused;
    static time_t logged_at;
    uint64_t available;
    if (intake->min_free == 0 || !free_space(intake->spool, &available))
        return false;
    uint64_t size = smtp_session_transaction(s)->declared_size;
    if (available >= intake->min_free && available - intake->min_free >= size)
        return false;
    refused++;
    time_t now = time(NULL);
    if (now - logged_at >= LOW_SPACE_LOG_SECONDS) {
        log_warn("intake.low_space", " session=%s free=%llu min_free=%llu size=%llu refused=%u",
                 smtp_session_id(s), (unsigned long long)available,
                 (unsigned long long)intake->min_free, (unsigned long long)size, refused);
        logged_at = now;
        refused = 0;
    }
    reply_set(reply, 452, "4.3.1", "Insufficient system storage");
    return true;
}

/* RFC 3463 3.3: X.2.2 "Mailbox full", temporary (4.2.2): the hosted domain holds its quota.
 * A domain at its message limit takes no more; at its byte limit neither, nor a message whose
 * declared SIZE would take it over. */
bool intake_over_quota(const struct intake *intake, struct smtp_session *s, const char *domain,
                       struct smtp_reply *reply)
{
    struct queue_usage usage;
    if (intake->domain_max_messages == 0 && intake->domain_max_bytes == 0)
        return false;
    if (queue_domain_usage(intake->queue, domain, intake->domain_max_bytes > 0, &usage) != 0)
        return false;   /* cannot count: the commit will tell if storage fails */
    uint64_t count = usage.messages, bytes = usage.bytes;
    uint64_t size = smtp_session_transaction(s)->declared_size;
    bool full_count = intake->domain_max_messages > 0 && count >= intake->domain_max_messages;
    bool full_bytes = intake->domain_max_bytes > 0 &&
                      (bytes >= intake->domain_max_bytes || size > intake->domain_max_bytes - bytes);
    if (!full_count && !full_bytes)
        return false;
    log_info("rcpt.refused", " session=%s peer=%s domain=%s reason=quota messages=%llu "
             "bytes=%llu size=%llu domain_max_messages=%llu domain_max_bytes=%llu",
             smtp_session_id(s), smtp_session_peer(s), domain, (unsigned long long)count,
             (unsigned long long)bytes, (unsigned long long)size,
             (unsigned long long)intake->domain_max_messages,
             (unsigned long long)intake->domain_max_bytes);
    reply_set(reply, 452, "4.2.2", "Mailbox full: the queue for %s is at its quota", domain);
    return true;
}
