/* SPDX-License-Identifier: ISC */
/* odmrctl queue list --json: one JSON document (RFC 8259) with every message, for scripts.
 * Values from the network may hold any octet: every string is escaped (quote, backslash and
 * control characters as \uXXXX), and an octet that is not part of valid UTF-8 is written as
 * the code point of the same number (\u00XX), so the document is always valid UTF-8. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "ctl/ctl_queue_ops.h"
#include "store/queue_backend.h"

/* Length of the valid UTF-8 sequence at p (RFC 3629 4), or 0. */
static size_t utf8_length(const unsigned char *p)
{
    size_t n = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
    if (n == 0 || p[0] > 0xf4)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    unsigned cp = p[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++)
        cp = cp << 6 | (p[i] & 0x3f);
    static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
    bool surrogate = cp >= 0xd800 && cp <= 0xdfff;
    return cp < min[n] || cp > 0x10ffff || surrogate ? 0 : n;
}

static void json_string(const char *s)
{
    if (s == NULL) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0';) {
        size_t n = *p >= 0x80 ? utf8_length(p) : 1;
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f || n == 0)
            printf("\\u%04x", *p);
        else
            fwrite(p, 1, n, stdout);
        p += n == 0 ? 1 : n;
    }
    putchar('"');
}

static void json_time(time_t t)
{
    char text[40];
    struct tm utc;
    if (t == 0 || gmtime_r(&t, &utc) == NULL) {
        fputs("null", stdout);
        return;
    }
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    json_string(text);
}

static void json_recipient(const struct queue_rcpt *r)
{
    fputs("{\"address\": ", stdout);
    json_string(r->address);
    fputs(", \"domain\": ", stdout);
    json_string(r->domain);
    printf(", \"state\": \"%s\", \"attempts\": %u, \"last_attempt\": ",
           queue_rcpt_state_name(r->state), r->attempts);
    json_time(r->last_attempt);
    fputs(", \"last_reply\": ", stdout);
    json_string(r->last_reply);
    fputs(", \"notify\": ", stdout);
    json_string(r->notify);
    fputs(", \"orcpt\": ", stdout);
    json_string(r->orcpt);
    putchar('}');
}

struct json_run {
    struct queue *q;
    size_t shown;
    int status;
};

static int json_message(const char *id, void *arg)
{
    struct json_run *run = arg;
    struct queue_message *m;
    int rc = queue_message_open(run->q, id, &m);
    if (rc == ENOENT)
        return 0;   /* delivered or removed while we listed */
    if (rc != 0) {
        run->status = ctl_queue_open_error(id, rc) == EX_IOERR ? EX_IOERR : run->status;
        return 0;
    }
    const struct queue_envelope *env = &m->env;
    printf("%s\n    {\"id\": \"%s\", \"arrival\": ", run->shown > 0 ? "," : "", id);
    json_time(env->arrival);
    fputs(", \"sender\": ", stdout);
    json_string(env->sender);
    printf(", \"size\": %" PRIu64 ", \"held\": %s, \"recipients\": [", env->body_size,
           queue_is_held(run->q, id) ? "true" : "false");
    for (size_t i = 0; i < env->rcpt_count; i++) {
        fputs(i > 0 ? ",\n        " : "\n        ", stdout);
        json_recipient(&env->rcpts[i]);
    }
    fputs("]}", stdout);
    run->shown++;
    queue_message_close(m);
    return 0;
}

int ctl_queue_list_json(struct queue *q, const char *domain)
{
    struct json_run run = {.q = q};
    fputs("{\"messages\": [", stdout);
    int rc = domain != NULL ? queue_list_domain_with_held(q, domain, json_message, &run)
                            : queue_list_all(q, json_message, &run);
    fputs(run.shown > 0 ? "\n]}\n" : "]}\n", stdout);
    if (rc != 0) {
        fprintf(stderr, "odmrctl: cannot list the queue: %s\n", strerror(rc));
        return EX_IOERR;
    }
    return run.status;
}
