/* SPDX-License-Identifier: ISC */
/* What a queue backend implements (docs/queue.md). queue.c dispatches every call of
 * store/queue.h through the ops table of the queue it is given; a backend's own structs embed
 * struct queue / struct queue_writer as their first member.
 *
 * The helpers below (ids, domain names) and store/queue_format.h are backend-neutral so every
 * backend names, checks and serialises things the same way. */
#ifndef ODMR_STORE_QUEUE_BACKEND_H
#define ODMR_STORE_QUEUE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "store/queue.h"

/* Operations every backend implements; each one has a caller in odmrd or odmrctl. Helpers only
 * tests need (a synchronous commit, one recipient's outcome) are the backend's own (for the
 * filesystem backend: store/queue_fs.h). */
struct queue_ops {
    const char *name;
    void (*close)(struct queue *q);
    int (*put)(struct queue *q, struct queue_envelope *env, struct queue_writer **out);
    int (*write)(struct queue_writer *w, const void *data, size_t len);
    void (*abort)(struct queue_writer *w);
    void (*commit)(struct queue_writer *w, queue_commit_cb cb, void *arg);
    int (*list_domain)(struct queue *q, const char *domain, queue_id_fn fn, void *arg);
    int (*list_all)(struct queue *q, queue_id_fn fn, void *arg);
    int (*list_domains)(struct queue *q, queue_id_fn fn, void *arg);
    int (*message_open)(struct queue *q, const char *id, struct queue_message **out);
    void (*messages_open_async)(struct queue *q, const struct queue_open_request *req, size_t n,
                                queue_message_open_cb cb);
    int (*remove_if_finished)(struct queue *q, const char *id, bool *removed);
    void (*record_outcomes_async)(struct queue *q, const char *id,
                                  const struct queue_outcome *outcomes, size_t n,
                                  bool remove_if_finished, queue_outcomes_cb cb, void *arg);
    void (*record_message_outcomes_async)(struct queue *q, const struct queue_message *m,
                                          const struct queue_outcome *outcomes, size_t n,
                                          bool remove_if_finished, queue_outcomes_cb cb,
                                          void *arg);
    int (*remove)(struct queue *q, const char *id);
    int (*lease_domain)(struct queue *q, const char *domain);
    void (*release_domain)(struct queue *q, const char *domain);
    int (*expire_scan)(struct queue *q, time_t max_age, queue_id_fn fn, void *arg);
    int (*hold)(struct queue *q, const char *id, bool held);
    bool (*is_held)(struct queue *q, const char *id);
    int (*requeue)(struct queue *q, const char *id, size_t *count);
    int (*domain_usage)(struct queue *q, const char *domain, bool sizes, struct queue_usage *out);
};

struct queue {
    const struct queue_ops *ops;
};

struct queue_writer {
    struct queue *queue;
};

/* ---- ids ---- */

enum {
    QUEUE_ID_TIME_DIGITS = 9,     /* microseconds since the epoch, base 62: good until 2398 */
    QUEUE_ID_COUNTER_DIGITS = 3,
    QUEUE_ID_RANDOM_DIGITS = 4,
    QUEUE_ID_LENGTH = QUEUE_ID_TIME_DIGITS + QUEUE_ID_COUNTER_DIGITS + QUEUE_ID_RANDOM_DIGITS,
};

/* Makes a new id from now: fixed-width base-62 time, a per-process counter and random
 * digits. Ids sort by time as plain strings (digits 0-9 < A-Z < a-z in ASCII). 0 or errno. */
int queue_id_generate(char id[QUEUE_ID_MAX], const struct timeval *now);
/* True for a non-empty string of [0-9A-Za-z] shorter than QUEUE_ID_MAX: safe as a file name. */
bool queue_id_valid(const char *id);
/* The time encoded in an id made by queue_id_generate(); -1 when id is not one. */
int64_t queue_id_time_usec(const char *id);

/* ---- domain names (used as directory names by the fs backend) ---- */

enum { QUEUE_DOMAIN_MAX = 254 };   /* 253 octets + NUL */
/* Lower-cases in into out and checks it: only [a-z0-9.-], not starting with '.', no "..",
 * 1..253 octets. 0 or EINVAL. */
int queue_domain_normalize(const char *in, char out[QUEUE_DOMAIN_MAX]);

#include "store/queue_format.h"   /* the envelope codec every backend shares */

#endif
