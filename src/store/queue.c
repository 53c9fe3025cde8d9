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

int queue_put(struct queue *q, struct queue_envelope *env, struct queue_writer **out)
{
    return q->ops->put(q, env, out);
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

/* Held messages (odmrctl queue hold) are skipped by the listings that lead to a push or an
 * expiry; the callers check again once they hold the domain leases. */
struct unheld_filter {
    struct queue *q;
    queue_id_fn fn;
    void *arg;
};

static int call_if_unheld(const char *id, void *arg)
{
    struct unheld_filter *f = arg;
    return f->q->ops->is_held(f->q, id) ? 0 : f->fn(id, f->arg);
}

int queue_list_domain(struct queue *q, const char *domain, queue_id_fn fn, void *arg)
{
    struct unheld_filter f = {q, fn, arg};
    return q->ops->list_domain(q, domain, call_if_unheld, &f);
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

void queue_messages_open_async(struct queue *q, const struct queue_open_request *req, size_t n,
                               queue_message_open_cb cb)
{
    q->ops->messages_open_async(q, req, n, cb);
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

int queue_remove_if_finished(struct queue *q, const char *id, bool *removed)
{
    bool ignored;
    return q->ops->remove_if_finished(q, id, removed != NULL ? removed : &ignored);
}

void queue_record_outcomes_async(struct queue *q, const char *id,
                                 const struct queue_outcome *outcomes, size_t n,
                                 bool remove_if_finished, queue_outcomes_cb cb, void *arg)
{
    q->ops->record_outcomes_async(q, id, outcomes, n, remove_if_finished, cb, arg);
}

void queue_record_message_outcomes_async(struct queue *q, const struct queue_message *m,
                                         const struct queue_outcome *outcomes, size_t n,
                                         bool remove_if_finished, queue_outcomes_cb cb,
                                         void *arg)
{
    q->ops->record_message_outcomes_async(q, m, outcomes, n, remove_if_finished, cb, arg);
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
    struct unheld_filter f = {q, fn, arg};
    return q->ops->expire_scan(q, max_age, call_if_unheld, &f);
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

int queue_envelope_for_each_domain(const struct queue_envelope *env,
                                   int (*fn)(const char *domain, void *arg), void *arg)
{
    for (size_t i = 0; i < env->rcpt_count; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(env->rcpts[j].domain, env->rcpts[i].domain) == 0;
        if (seen)
            continue;
        int rc = fn(env->rcpts[i].domain, arg);
        if (rc != 0)
            return rc;
    }
    return 0;
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
