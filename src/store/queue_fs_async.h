/* SPDX-License-Identifier: ISC */
/* The filesystem queue's work for the push off the event loop (docs/queue.md "Opening for a
 * push"): messages opened (SHA-256 check included) on the commit workers, and outcome records,
 * either by id or from a message opened for a push, whose envelope and per-recipient states
 * are reused instead of being read again. Split from queue_fs.c, which reaches it through its
 * ops table. */
#ifndef ODMR_STORE_QUEUE_FS_ASYNC_H
#define ODMR_STORE_QUEUE_FS_ASYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "store/queue.h"

struct worker_job;

/* What an index entry dom/<domain>/<id> was when its states were read: enough to tell later,
 * with one fstatat(), that it is still the same file with the same content. */
struct queue_fs_stamp {
    bool trusted;        /* false: read the entry again before using its states */
    bool present;        /* false: there was no entry (every recipient of it pending) */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec ctime, mtime;
};

/* A message opened for a push: the public message plus one stamp per distinct recipient
 * domain, in envelope order. One allocation: queue_message_close() frees it. */
struct queue_fs_message {
    struct queue_message base;   /* first member */
    size_t stamp_count;
    struct queue_fs_stamp stamps[];
};

/* Defined in queue_fs.c. The opening of queue_message_open(), with stamps when stamped (the
 * message is then a struct queue_fs_message). */
int queue_fs_open_message(struct queue *q, const char *id, bool stamped,
                          struct queue_message **out);
/* Records n outcomes of id by reading its envelope and states (queue_record_outcomes_async). */
int queue_fs_record_by_id(struct queue *q, const char *id, const struct queue_outcome *o,
                          size_t n, bool remove_if_finished, bool *removed);
/* The record itself, on env loaded with its states (touched: a flag per recipient, all
 * false); the outcome_failed log lines of a record that could not start; the states of one
 * domain's entry read into env; each distinct domain of env, in envelope order. */
int queue_fs_record_loaded(struct queue *q, struct queue_envelope *env, bool *touched,
                           const struct queue_outcome *o, size_t n, bool remove_if_finished,
                           bool *removed);
void queue_fs_log_failed(const char *id, const struct queue_outcome *o, size_t n, int rc);
int queue_fs_load_domain(struct queue *q, struct queue_envelope *env, const char *domain);
int queue_fs_for_each_domain(const struct queue_envelope *env,
                             int (*fn)(const char *domain, void *arg), void *arg);
/* Queues job on the commit workers, or with reading on the reader threads (openings); false
 * without workers (a tool) or memory: run it inline. */
bool queue_fs_submit(struct queue *q, struct worker_job *job, bool reading);

/* Defined in queue_fs_async.c. The message struct of an opening, with a stamp per domain of
 * env taken now (before its states are read) when stamped. NULL: no memory. */
struct queue_message *queue_fs_message_new(struct queue *q, const struct queue_envelope *env,
                                           bool stamped);
/* Defined in queue_fs_async.c: the ops of struct queue_ops. */
void queue_fs_messages_open_async(struct queue *q, const struct queue_open_request *req,
                                  size_t n, queue_message_open_cb cb);
void queue_fs_record_outcomes_async(struct queue *q, const char *id,
                                    const struct queue_outcome *outcomes, size_t n,
                                    bool remove_if_finished, queue_outcomes_cb cb, void *arg);
void queue_fs_record_message_outcomes_async(struct queue *q, const struct queue_message *m,
                                            const struct queue_outcome *outcomes, size_t n,
                                            bool remove_if_finished, queue_outcomes_cb cb,
                                            void *arg);

#endif
