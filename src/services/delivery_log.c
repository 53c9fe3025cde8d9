/* SPDX-License-Identifier: ISC */
/* The per-recipient Postfix-style delivery line (delivery_log.h). */
#include "services/delivery_log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "lib/log.h"

static const char *const status_names[] = {
    [DELIVERY_SENT] = "sent",
    [DELIVERY_DEFERRED] = "deferred",
    [DELIVERY_BOUNCED] = "bounced",
    [DELIVERY_EXPIRED] = "expired",
};

static const char *const default_dsn[] = {
    [DELIVERY_SENT] = "2.0.0",
    [DELIVERY_DEFERRED] = "4.0.0",
    [DELIVERY_BOUNCED] = "5.0.0",
    [DELIVERY_EXPIRED] = "5.4.7",
};

enum delivery_status delivery_status_of(enum queue_rcpt_state state)
{
    return state == QUEUE_RCPT_DONE     ? DELIVERY_SENT
           : state == QUEUE_RCPT_FAILED ? DELIVERY_BOUNCED
                                        : DELIVERY_DEFERRED;
}

/* Digits at p, 1 to max of them; returns how many, 0 when there are none or too many. */
static size_t digits(const char *p, size_t max)
{
    size_t n = 0;
    while (p[n] >= '0' && p[n] <= '9')
        n++;
    return n > max ? 0 : n;
}

/* RFC 3463: class "." subject "." detail after "NNN " or "NNN-"; its length, or 0. */
static size_t enhanced_code(const char *reply)
{
    if (reply == NULL || digits(reply, 3) != 3 || (reply[3] != ' ' && reply[3] != '-'))
        return 0;
    const char *p = reply + 4;
    if (*p < '2' || *p > '5' || *p == '3' || reply[0] != *p || p[1] != '.')
        return 0;
    size_t subject = digits(p + 2, 3);
    if (subject == 0 || p[2 + subject] != '.')
        return 0;
    size_t detail = digits(p + 3 + subject, 3);
    if (detail == 0)
        return 0;
    char after = p[3 + subject + detail];
    return after == ' ' || after == '\0' ? 3 + subject + detail : 0;
}

const char *delivery_dsn(char *out, size_t outlen, enum delivery_status status,
                         const char *reply)
{
    size_t n = enhanced_code(reply);
    if (n > 0 && status != DELIVERY_EXPIRED)
        snprintf(out, outlen, "%.*s", (int)n, reply + 4);
    else
        snprintf(out, outlen, "%s", default_dsn[status]);
    return out;
}

/* The reply as received, one line: every octet outside printable ASCII becomes '?'. */
static const char *plain_text(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    for (size_t i = 0; src != NULL && src[i] != '\0' && o + 1 < dstlen; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[o++] = c >= 32 && c < 127 ? (char)c : '?';
    }
    dst[o] = '\0';
    return dst;
}

void delivery_log(const char *id, const char *rcpt, const char *relay, time_t arrival,
                  enum delivery_status status, const char *reply)
{
    struct timeval now;
    char qrcpt[300], dsn[16], text[600];
    gettimeofday(&now, NULL);
    double delay = (double)(now.tv_sec - arrival) + (double)now.tv_usec / 1e6;
    if (delay < 0)
        delay = 0;
    log_info("delivery", " id=%s to=%s relay=%s delay=%.1f dsn=%s status=%s (%s)", id,
             log_quote(qrcpt, sizeof qrcpt, rcpt != NULL ? rcpt : "", rcpt ? strlen(rcpt) : 0),
             relay != NULL ? relay : "none", delay, delivery_dsn(dsn, sizeof dsn, status, reply),
             status_names[status], plain_text(text, sizeof text, reply));
}
