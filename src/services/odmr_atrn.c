/* SPDX-License-Identifier: ISC */
/* ATRN on the ODMR port (RFC 2645 5.2.1): the domains asked for (or every domain of the user),
 * the authorization for each, the leases (all or none), the replies, then the turnaround. */
#include "services/odmr_atrn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/domain_list.h"
#include "lib/log.h"
#include "lib/reply.h"
#include "services/metrics.h"
#include "services/odmr_session_internal.h"
#include "store/last_atrn.h"

void odmr_atrn_release_leases(struct odmr_session *s)
{
    for (size_t i = 0; i < s->leased_count; i++) {
        queue_release_domain(s->service->queue, s->leased[i]);
        free(s->leased[i]);
    }
    free(s->leased);
    s->leased = NULL;
    s->leased_count = 0;
}

static int count_id(const char *id, void *arg)
{
    (*(size_t *)arg)++;
    return 1;   /* one is enough */
}

static bool any_mail(struct odmr_session *s)
{
    for (size_t i = 0; i < s->leased_count; i++) {
        size_t found = 0;
        queue_list_domain(s->service->queue, s->leased[i], count_id, &found);
        if (found > 0)
            return true;
    }
    return false;
}

/* The domains of one ATRN: the argument's (at most DOMAIN_LIST_MAX), or every domain of the
 * user, however many. names points into parsed or into the users file; lease_all() copies
 * them before the event loop runs again (a SIGHUP may replace the users file then). */
struct atrn_domains {
    struct domain_list parsed;
    const char *argument[DOMAIN_LIST_MAX];
    const char *const *names;
    size_t count;
};

/* Leases every domain or none: 0, or -1 with *busy naming the domain another session holds
 * (NULL when out of memory). */
static int lease_all(struct odmr_session *s, const struct atrn_domains *d, const char **busy)
{
    *busy = NULL;
    s->leased = calloc(d->count, sizeof *s->leased);
    if (s->leased == NULL)
        return -1;
    for (size_t i = 0; i < d->count; i++) {
        char *copy = strdup(d->names[i]);
        if (copy == NULL || queue_lease_domain(s->service->queue, d->names[i]) != 0) {
            *busy = copy ? d->names[i] : NULL;
            free(copy);
            odmr_atrn_release_leases(s);
            return -1;
        }
        s->leased[s->leased_count++] = copy;
    }
    return 0;
}

/* Every reply to ATRN goes through here, so the metrics count each one by its code. */
static void atrn_reply(struct odmr_session *s, int code, const char *enhanced, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
static void atrn_reply(struct odmr_session *s, int code, const char *enhanced, const char *fmt,
                       ...)
{
    char text[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    metrics_count_atrn(code);
    reply_send(odmr_out(s), code, enhanced, "%s", text);
}

static bool resolve_domains(struct odmr_session *s, const char *arg, struct atrn_domains *d)
{
    const char *why = NULL;
    const struct odmr_user *u = userdb_find_user(*s->service->users, s->user);
    if (domain_list_parse(arg, &d->parsed, &why) != 0) {
        char text[200];
        snprintf(text, sizeof text, "Syntax: ATRN [domain[,domain...]]: %s", why);
        metrics_count_atrn(501);
        smtp_session_error(s->smtp, 501, "5.5.4", text);
        return false;
    }
    if (u == NULL) {
        atrn_reply(s, 450, "4.7.1", "ATRN request refused: the user no longer exists");
        return false;
    }
    for (size_t i = 0; i < d->parsed.count; i++)
        d->argument[i] = d->parsed.names[i];
    d->names = d->argument;
    d->count = d->parsed.count;
    /* RFC 2645 5.2.1: no domains means every domain the customer may have: all of them. */
    if (d->count == 0) {
        d->names = (const char *const *)u->domains;
        d->count = u->domain_count;
    }
    if (d->count == 0) {
        atrn_reply(s, 450, "4.7.1", "ATRN request refused: no domains for this user");
        return false;
    }
    /* RFC 2645 5.2.1: not authorized for one domain -> nothing is sent for any (450). */
    for (size_t i = 0; i < d->count; i++) {
        if (!userdb_user_has_domain(u, d->names[i])) {
            log_warn("odmr.atrn_refused", " session=%s user=%s domain=%s", s->id, s->user,
                     d->names[i]);
            atrn_reply(s, 450, "4.7.1", "ATRN request refused: not authorized for %s",
                       d->names[i]);
            return false;
        }
    }
    return true;
}

/* 451 when another session holds a domain (RFC 2645 5.2.1), 453 without mail. */
static bool lease_with_mail(struct odmr_session *s, const struct atrn_domains *domains)
{
    const char *busy;
    if (lease_all(s, domains, &busy) != 0) {
        if (busy != NULL)
            atrn_reply(s, 451, "4.3.0", "Unable to process ATRN request now: %s is being "
                       "delivered by another session", busy);
        else
            atrn_reply(s, 451, "4.3.0", "Unable to process ATRN request now");
        return false;
    }
    if (!any_mail(s)) {
        odmr_atrn_release_leases(s);
        last_atrn_record(s->user);   /* odmrctl queue summary: when the customer last polled */
        atrn_reply(s, 453, "4.3.0", "You have no mail");
        return false;
    }
    return true;
}

/* The engine's flags (require_auth) already answered 530 before AUTH. */
void odmr_cmd_atrn(void *ctx, struct smtp_session *smtp, const char *arg)
{
    struct odmr_session *s = smtp_session_user(smtp);
    struct atrn_domains domains;
    if (!resolve_domains(s, arg, &domains) || !lease_with_mail(s, &domains))
        return;
    /* docs/odmr.md "Turnaround": the customer must wait for our 250 before its 220; anything
     * already buffered is a protocol error, never the next phase's input. */
    if (smtp_session_input_pending(smtp)) {
        log_warn("odmr.atrn_pipelined", " session=%s user=%s", s->id, s->user);
        odmr_atrn_release_leases(s);
        atrn_reply(s, 554, "5.5.0", "Pipelined data after ATRN; closing");
        smtp_session_close(smtp);
        return;
    }
    last_atrn_record(s->user);
    atrn_reply(s, 250, "2.0.0", "OK, now reversing the connection");
    odmr_turn_around(s);
}

