/* SPDX-License-Identifier: ISC */
/* The queue interface: dispatch to the backend's ops table, plus what every backend shares
 * (ids, domain-name checks, the envelope text codec). docs/queue.md describes the format. */
#include "store/queue_backend.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* ---- dispatch ---- */

void queue_close(struct queue *q)
{
    if (q != NULL)
        q->ops->close(q);
}

struct queue_writer *queue_put(struct queue *q, struct queue_envelope *env)
{
    return q->ops->put(q, env);
}

int queue_write(struct queue_writer *w, const void *data, size_t len)
{
    return w->queue->ops->write(w, data, len);
}

void queue_abort(struct queue_writer *w)
{
    if (w != NULL)
        w->queue->ops->abort(w);
}

void queue_commit(struct queue_writer *w, queue_commit_cb cb, void *arg)
{
    w->queue->ops->commit(w, cb, arg);
}

int queue_commit_sync(struct queue_writer *w)
{
    return w->queue->ops->commit_sync(w);
}

/* Held messages (odmrctl queue hold) are skipped by the listings that lead to a push or an
 * expiry; the callers check again once they hold the domain leases. */
struct unheld_filter {
    struct queue *q;
    queue_id_fn fn;
    void *arg;
    int skipped;
};

static int call_if_unheld(const char *id, void *arg)
{
    struct unheld_filter *f = arg;
    if (f->q->ops->is_held(f->q, id)) {
        f->skipped++;
        return 0;
    }
    return f->fn(id, f->arg);
}

int queue_list_domain(struct queue *q, const char *domain, queue_id_fn fn, void *arg)
{
    struct unheld_filter f = {q, fn, arg, 0};
    int n = q->ops->list_domain(q, domain, call_if_unheld, &f);
    return n < 0 ? n : n - f.skipped;
}

int queue_list_domain_with_held(struct queue *q, const char *domain, queue_id_fn fn, void *arg)
{
    return q->ops->list_domain(q, domain, fn, arg);
}

int queue_list_all(struct queue *q, queue_id_fn fn, void *arg)
{
    return q->ops->list_all(q, fn, arg);
}

int queue_list_domains(struct queue *q, queue_id_fn fn, void *arg)
{
    return q->ops->list_domains(q, fn, arg);
}

int queue_message_open(struct queue *q, const char *id, struct queue_message **out)
{
    return q->ops->message_open(q, id, out);
}

void queue_message_close(struct queue_message *m)
{
    if (m == NULL)
        return;
    if (m->fd >= 0)
        close(m->fd);
    queue_envelope_clear(&m->env);
    free(m);
}

int queue_record_outcome(struct queue *q, const char *id, size_t rcpt_index,
                         enum queue_rcpt_state state, const char *reply)
{
    return q->ops->record_outcome(q, id, rcpt_index, state, reply);
}

int queue_remove_if_finished(struct queue *q, const char *id)
{
    return q->ops->remove_if_finished(q, id);
}

void queue_record_outcomes_async(struct queue *q, const char *id,
                                 const struct queue_outcome *outcomes, size_t n,
                                 bool remove_if_finished, queue_outcomes_cb cb, void *arg)
{
    q->ops->record_outcomes_async(q, id, outcomes, n, remove_if_finished, cb, arg);
}

int queue_remove(struct queue *q, const char *id)
{
    int rc = q->ops->remove(q, id);
    if (rc == 0)
        q->ops->hold(q, id, false);   /* a mark of a gone message is stale */
    return rc;
}

int queue_lease_domain(struct queue *q, const char *domain)
{
    return q->ops->lease_domain(q, domain);
}

void queue_release_domain(struct queue *q, const char *domain)
{
    q->ops->release_domain(q, domain);
}

int queue_expire_scan(struct queue *q, time_t max_age, queue_id_fn fn, void *arg)
{
    struct unheld_filter f = {q, fn, arg, 0};
    int n = q->ops->expire_scan(q, max_age, call_if_unheld, &f);
    return n < 0 ? n : n - f.skipped;
}

int queue_hold(struct queue *q, const char *id, bool held)
{
    return q->ops->hold(q, id, held);
}

bool queue_is_held(struct queue *q, const char *id)
{
    return q->ops->is_held(q, id);
}

int queue_requeue(struct queue *q, const char *id, size_t *count)
{
    return q->ops->requeue(q, id, count);
}

int queue_domain_usage(struct queue *q, const char *domain, bool sizes, struct queue_usage *out)
{
    return q->ops->domain_usage(q, domain, sizes, out);
}

void queue_envelope_clear(struct queue_envelope *env)
{
    free(env->sender);
    free(env->ret);
    free(env->envid);
    free(env->helo);
    free(env->client_addr);
    free(env->protocol);
    for (size_t i = 0; i < env->rcpt_count && env->rcpts != NULL; i++) {
        free(env->rcpts[i].address);
        free(env->rcpts[i].domain);
        free(env->rcpts[i].notify);
        free(env->rcpts[i].orcpt);
        free(env->rcpts[i].last_reply);
    }
    free(env->rcpts);
    memset(env, 0, sizeof *env);
}

/* ---- ids ---- */

static const char base62_digits[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Writes value as exactly width base-62 digits, most significant first (so that fixed-width
 * ids compare like the numbers). */
static void put_base62(char *out, size_t width, uint64_t value)
{
    for (size_t i = width; i-- > 0;) {
        out[i] = base62_digits[value % 62];
        value /= 62;
    }
}

static int base62_value(char c)
{
    const char *p = c != '\0' ? strchr(base62_digits, c) : NULL;
    return p != NULL ? (int)(p - base62_digits) : -1;
}

int queue_id_generate(char id[QUEUE_ID_MAX], const struct timeval *now)
{
    static atomic_uint counter;
    uint32_t random_value;
    if (getrandom(&random_value, sizeof random_value, 0) != (ssize_t)sizeof random_value)
        return errno != 0 ? errno : EIO;
    uint64_t usec = (uint64_t)now->tv_sec * 1000000u + (uint64_t)now->tv_usec;
    unsigned count = atomic_fetch_add(&counter, 1) % (62u * 62u * 62u);
    put_base62(id, QUEUE_ID_TIME_DIGITS, usec);
    put_base62(id + QUEUE_ID_TIME_DIGITS, QUEUE_ID_COUNTER_DIGITS, count);
    put_base62(id + QUEUE_ID_TIME_DIGITS + QUEUE_ID_COUNTER_DIGITS, QUEUE_ID_RANDOM_DIGITS,
               random_value);
    id[QUEUE_ID_LENGTH] = '\0';
    return 0;
}

bool queue_id_valid(const char *id)
{
    size_t n = 0;
    for (; id[n] != '\0'; n++) {
        if (n >= QUEUE_ID_MAX - 1 || base62_value(id[n]) < 0)
            return false;
    }
    return n > 0;
}

int64_t queue_id_time_usec(const char *id)
{
    if (!queue_id_valid(id) || strlen(id) != QUEUE_ID_LENGTH)
        return -1;
    uint64_t usec = 0;
    for (size_t i = 0; i < QUEUE_ID_TIME_DIGITS; i++)
        usec = usec * 62 + (uint64_t)base62_value(id[i]);
    return usec > INT64_MAX ? -1 : (int64_t)usec;
}

/* ---- domain names ---- */

int queue_domain_normalize(const char *in, char out[QUEUE_DOMAIN_MAX])
{
    size_t n = 0;
    for (; in[n] != '\0'; n++) {
        if (n >= QUEUE_DOMAIN_MAX - 1)
            return EINVAL;
        char c = in[n];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        bool allowed = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
        if (!allowed)
            return EINVAL;
        out[n] = c;
    }
    out[n] = '\0';
    /* The name becomes a directory name: never ".", "..", a hidden name or a path. */
    if (n == 0 || out[0] == '.' || strstr(out, "..") != NULL)
        return EINVAL;
    return 0;
}

/* ---- text buffer and token codec ---- */

int queue_text_append(struct queue_text *t, const void *data, size_t len)
{
    if (t->cap - t->len <= len) {
        size_t cap = t->cap != 0 ? t->cap : 256;
        while (cap - t->len <= len)
            cap *= 2;
        char *grown = realloc(t->data, cap);
        if (grown == NULL)
            return ENOMEM;
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, data, len);
    t->len += len;
    t->data[t->len] = '\0';
    return 0;
}

int queue_text_printf(struct queue_text *t, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof small)
        return EINVAL;   /* only used for short numeric fields */
    return queue_text_append(t, small, (size_t)n);
}

static bool octet_needs_escape(unsigned char c)
{
    return c <= 0x20 || c >= 0x7f || c == '%';
}

int queue_text_token(struct queue_text *t, const char *value)
{
    if (value == NULL)
        return queue_text_append(t, "-", 1);
    int rc = queue_text_append(t, "=", 1);
    for (const unsigned char *p = (const unsigned char *)value; rc == 0 && *p != '\0'; p++) {
        if (octet_needs_escape(*p)) {
            char escaped[4];
            snprintf(escaped, sizeof escaped, "%%%02X", *p);
            rc = queue_text_append(t, escaped, 3);
        } else {
            rc = queue_text_append(t, p, 1);
        }
    }
    return rc;
}

void queue_text_free(struct queue_text *t)
{
    free(t->data);
    memset(t, 0, sizeof *t);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int queue_token_decode(const char *token, size_t len, char **out)
{
    *out = NULL;
    if (len == 1 && token[0] == '-')
        return 0;
    if (len == 0 || token[0] != '=')
        return EBADMSG;
    char *value = malloc(len);
    if (value == NULL)
        return ENOMEM;
    size_t n = 0;
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if (c == '%') {
            int hi = i + 2 < len ? hex_value(token[i + 1]) : -1;
            int lo = hi >= 0 ? hex_value(token[i + 2]) : -1;
            if (lo < 0 || (hi == 0 && lo == 0)) {
                free(value);
                return EBADMSG;
            }
            value[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (octet_needs_escape(c)) {
            free(value);
            return EBADMSG;
        } else {
            value[n++] = (char)c;
        }
    }
    value[n] = '\0';
    *out = value;
    return 0;
}

/* ---- envelope lines ---- */

static const char *const body_type_names[] = {
    [QUEUE_BODY_7BIT] = "7BIT",
    [QUEUE_BODY_8BITMIME] = "8BITMIME",
    [QUEUE_BODY_BINARYMIME] = "BINARYMIME",
};

static const char *const rcpt_state_names[] = {
    [QUEUE_RCPT_PENDING] = "pending",
    [QUEUE_RCPT_DONE] = "done",
    [QUEUE_RCPT_FAILED] = "failed",
    [QUEUE_RCPT_BOUNCED] = "bounced",
};

const char *queue_rcpt_state_name(enum queue_rcpt_state state)
{
    if (state == QUEUE_OUTCOME_WARNED)
        return "warned";   /* an outcome, not a state: logged by the queue */
    return (unsigned)state <= QUEUE_RCPT_STATE_LAST ? rcpt_state_names[state] : "unknown";
}

int queue_rcpt_state_parse(const char *name, size_t len, enum queue_rcpt_state *out)
{
    for (unsigned i = 0; i <= QUEUE_RCPT_STATE_LAST; i++) {
        if (strlen(rcpt_state_names[i]) == len && memcmp(rcpt_state_names[i], name, len) == 0) {
            *out = (enum queue_rcpt_state)i;
            return 0;
        }
    }
    return EBADMSG;
}

static int format_token_line(struct queue_text *t, const char *key, const char *value)
{
    int rc = queue_text_printf(t, "%s ", key);
    if (rc == 0)
        rc = queue_text_token(t, value);
    if (rc == 0)
        rc = queue_text_append(t, "\n", 1);
    return rc;
}

static int format_rcpt_line(struct queue_text *t, const struct queue_rcpt *r)
{
    const char *fields[] = {r->domain, r->address, r->notify, r->orcpt};
    int rc = queue_text_append(t, "rcpt", 4);
    for (size_t i = 0; rc == 0 && i < 4; i++) {
        rc = queue_text_append(t, " ", 1);
        if (rc == 0)
            rc = queue_text_token(t, fields[i]);
    }
    if (rc == 0)
        rc = queue_text_append(t, "\n", 1);
    return rc;
}

int queue_envelope_format(struct queue_text *t, const struct queue_envelope *env)
{
    unsigned body = (unsigned)env->body <= QUEUE_BODY_BINARYMIME ? env->body : QUEUE_BODY_7BIT;
    int rc = queue_text_printf(t, "id %s\narrival %" PRId64 "\n", env->id, (int64_t)env->arrival);
    if (rc == 0)
        rc = format_token_line(t, "sender", env->sender);
    if (rc == 0)
        rc = queue_text_printf(t, "body %s\nsmtputf8 %d\n", body_type_names[body],
                               env->smtputf8 ? 1 : 0);
    if (rc == 0)
        rc = format_token_line(t, "ret", env->ret);
    if (rc == 0)
        rc = format_token_line(t, "envid", env->envid);
    if (rc == 0)
        rc = queue_text_printf(t, "size %" PRIu64 "\n", env->declared_size);
    if (rc == 0)
        rc = format_token_line(t, "helo", env->helo);
    if (rc == 0)
        rc = format_token_line(t, "client", env->client_addr);
    if (rc == 0)
        rc = format_token_line(t, "protocol", env->protocol);
    for (size_t i = 0; rc == 0 && i < env->rcpt_count; i++)
        rc = format_rcpt_line(t, &env->rcpts[i]);
    return rc;
}

/* A parsed line: key, then the rest split at single spaces into at most 4 fields. */
struct env_line {
    const char *key;
    size_t key_len;
    const char *field[4];
    size_t field_len[4];
    size_t fields;
};

static int split_line(const char *line, size_t len, struct env_line *out)
{
    memset(out, 0, sizeof *out);
    const char *end = line + len;
    const char *sp = memchr(line, ' ', len);
    if (sp == NULL || sp == line)
        return EBADMSG;
    out->key = line;
    out->key_len = (size_t)(sp - line);
    const char *p = sp + 1;
    while (p <= end) {
        const char *next = memchr(p, ' ', (size_t)(end - p));
        const char *stop = next != NULL ? next : end;
        if (out->fields == 4 || stop == p)
            return EBADMSG;   /* too many fields, or an empty one */
        out->field[out->fields] = p;
        out->field_len[out->fields++] = (size_t)(stop - p);
        p = stop + 1;
    }
    return 0;
}

static bool key_is(const struct env_line *l, const char *key)
{
    return l->key_len == strlen(key) && memcmp(l->key, key, l->key_len) == 0;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return EBADMSG;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return EBADMSG;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return EBADMSG;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_rcpt_line(const struct env_line *l, struct queue_envelope *env)
{
    if (l->fields != 4)
        return EBADMSG;
    struct queue_rcpt *grown = realloc(env->rcpts, (env->rcpt_count + 1) * sizeof *grown);
    if (grown == NULL)
        return ENOMEM;
    env->rcpts = grown;
    struct queue_rcpt *r = &env->rcpts[env->rcpt_count++];
    memset(r, 0, sizeof *r);
    char **targets[] = {&r->domain, &r->address, &r->notify, &r->orcpt};
    for (size_t i = 0; i < 4; i++) {
        int rc = queue_token_decode(l->field[i], l->field_len[i], targets[i]);
        if (rc != 0)
            return rc;
    }
    char normalized[QUEUE_DOMAIN_MAX];
    if (r->domain == NULL || r->address == NULL ||
        queue_domain_normalize(r->domain, normalized) != 0 || strcmp(normalized, r->domain) != 0)
        return EBADMSG;
    return 0;
}

static int parse_body_type(const struct env_line *l, struct queue_envelope *env)
{
    for (unsigned i = 0; i <= QUEUE_BODY_BINARYMIME; i++) {
        if (l->field_len[0] == strlen(body_type_names[i]) &&
            memcmp(l->field[0], body_type_names[i], l->field_len[0]) == 0) {
            env->body = (enum queue_body_type)i;
            return 0;
        }
    }
    return EBADMSG;
}

/* Keys that must appear exactly once, in this bit order. */
enum {
    SEEN_ID = 1 << 0, SEEN_ARRIVAL = 1 << 1, SEEN_SENDER = 1 << 2, SEEN_BODY = 1 << 3,
    SEEN_SMTPUTF8 = 1 << 4, SEEN_RET = 1 << 5, SEEN_ENVID = 1 << 6, SEEN_SIZE = 1 << 7,
    SEEN_HELO = 1 << 8, SEEN_CLIENT = 1 << 9, SEEN_PROTOCOL = 1 << 10, SEEN_ALL = (1 << 11) - 1,
};

static int parse_token_field(const struct env_line *l, char **target, bool required)
{
    if (*target != NULL)
        free(*target);
    int rc = queue_token_decode(l->field[0], l->field_len[0], target);
    if (rc == 0 && required && *target == NULL)
        rc = EBADMSG;
    return rc;
}

static int parse_scalar_line(const struct env_line *l, struct queue_envelope *env, unsigned *seen)
{
    uint64_t number = 0;
    unsigned bit;
    int rc;
    if (l->fields != 1)
        return EBADMSG;
    if (key_is(l, "id")) {
        bit = SEEN_ID;
        if (l->field_len[0] >= QUEUE_ID_MAX)
            return EBADMSG;
        memcpy(env->id, l->field[0], l->field_len[0]);
        env->id[l->field_len[0]] = '\0';
        rc = queue_id_valid(env->id) ? 0 : EBADMSG;
    } else if (key_is(l, "arrival")) {
        bit = SEEN_ARRIVAL;
        rc = parse_u64(l->field[0], l->field_len[0], &number);
        if (rc == 0 && number > INT64_MAX)
            rc = EBADMSG;
        env->arrival = (time_t)number;
    } else if (key_is(l, "sender")) {
        bit = SEEN_SENDER;
        rc = parse_token_field(l, &env->sender, true);
    } else if (key_is(l, "body")) {
        bit = SEEN_BODY;
        rc = parse_body_type(l, env);
    } else if (key_is(l, "smtputf8")) {
        bit = SEEN_SMTPUTF8;
        rc = l->field_len[0] == 1 && (l->field[0][0] == '0' || l->field[0][0] == '1') ? 0
                                                                                     : EBADMSG;
        env->smtputf8 = l->field[0][0] == '1';
    } else if (key_is(l, "ret")) {
        bit = SEEN_RET;
        rc = parse_token_field(l, &env->ret, false);
    } else if (key_is(l, "envid")) {
        bit = SEEN_ENVID;
        rc = parse_token_field(l, &env->envid, false);
    } else if (key_is(l, "size")) {
        bit = SEEN_SIZE;
        rc = parse_u64(l->field[0], l->field_len[0], &env->declared_size);
    } else if (key_is(l, "helo")) {
        bit = SEEN_HELO;
        rc = parse_token_field(l, &env->helo, false);
    } else if (key_is(l, "client")) {
        bit = SEEN_CLIENT;
        rc = parse_token_field(l, &env->client_addr, false);
    } else if (key_is(l, "protocol")) {
        bit = SEEN_PROTOCOL;
        rc = parse_token_field(l, &env->protocol, false);
    } else {
        return EBADMSG;   /* an unknown key needs a new format version */
    }
    if (*seen & bit)
        return EBADMSG;
    *seen |= bit;
    return rc;
}

int queue_envelope_parse(const char *text, size_t len, struct queue_envelope *env,
                         const char **reason)
{
    unsigned seen = 0;
    size_t pos = 0;
    memset(env, 0, sizeof *env);
    *reason = "bad envelope line";
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        if (nl == NULL)
            return EBADMSG;
        struct env_line line;
        int rc = split_line(text + pos, (size_t)(nl - (text + pos)), &line);
        if (rc == 0)
            rc = key_is(&line, "rcpt") ? parse_rcpt_line(&line, env)
                                       : parse_scalar_line(&line, env, &seen);
        if (rc != 0)
            return rc;
        pos = (size_t)(nl - text) + 1;
    }
    if (seen != SEEN_ALL) {
        *reason = "envelope field missing";
        return EBADMSG;
    }
    if (env->rcpt_count == 0) {
        *reason = "envelope without recipients";
        return EBADMSG;
    }
    *reason = NULL;
    return 0;
}
