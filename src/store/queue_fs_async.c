/* SPDX-License-Identifier: ISC */
/* The filesystem queue's jobs on the commit workers for the push (docs/queue.md "Opening for a
 * push"): opening a message (the SHA-256 check reads the whole file) and recording outcomes,
 * by id or from the opened message. Every job of one message carries its id as the pool's
 * serial key, so an opening and the updates of the same message never overlap and keep their
 * order. Without workers (a tool) a job runs inline and reports before the call returns. */
#include "store/queue_fs_async.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "platform/worker_pool.h"

static void open_job_run(struct worker_job *job);

/* Queues job on the workers under the message's id (serial: the jobs of one message never
 * overlap and keep their order), or runs and reports it inline without workers. */
static void submit_job(struct queue *q, struct worker_job *job, const char *id,
                       void (*run)(struct worker_job *), void (*report)(struct worker_job *),
                       void (*drop)(struct worker_job *))
{
    job->run = run;
    job->report = report;
    job->drop = drop;
    job->serial = id;
    if (!queue_fs_submit(q, job, run == open_job_run)) {
        run(job);
        report(job);
    }
}

/* ---- outcome records ---- */

struct outcome_job {
    struct worker_job job;           /* first member */
    char id[QUEUE_ID_MAX];
    struct queue_outcome *outcomes;
    size_t count;
    bool remove;
    struct queue *q;
    queue_outcomes_cb cb;
    void *arg;
    int status, removed;
    /* from an opened message: its envelope (recipients and states only) and stamps */
    bool opened;
    struct queue_envelope env;
    struct queue_fs_stamp *stamps;
    size_t stamp_count;
};

static void outcome_job_free(struct outcome_job *j)
{
    for (size_t i = 0; i < j->count; i++)
        free((char *)j->outcomes[i].reply);
    free(j->outcomes);
    queue_envelope_clear(&j->env);
    free(j->stamps);
    free(j);
}

static void outcome_job_run(struct worker_job *job)
{
    struct outcome_job *j = (struct outcome_job *)job;
    bool removed;
    if (j->opened)
        j->status = queue_fs_record_opened(j->q, &j->env, j->stamps, j->stamp_count,
                                           j->outcomes, j->count, j->remove, &removed);
    else
        j->status = queue_fs_record_by_id(j->q, j->id, j->outcomes, j->count, j->remove,
                                          &removed);
    j->removed = removed;
}

static void outcome_job_report(struct worker_job *job)
{
    struct outcome_job *j = (struct outcome_job *)job;
    j->cb(j->status, j->removed, j->id, j->arg);
    outcome_job_free(j);
}

static void outcome_job_drop(struct worker_job *job)
{
    struct outcome_job *j = (struct outcome_job *)job;
    log_warn("queue.outcome_unreported", " id=%s status=%d", j->id, j->status);
    outcome_job_free(j);
}

static struct outcome_job *outcome_job_new(const char *id, const struct queue_outcome *o,
                                           size_t n)
{
    struct outcome_job *j = calloc(1, sizeof *j);
    if (j == NULL || strlen(id) >= sizeof j->id ||
        (j->outcomes = calloc(n > 0 ? n : 1, sizeof *j->outcomes)) == NULL) {
        free(j);
        return NULL;
    }
    strcpy(j->id, id);
    for (; j->count < n; j->count++) {
        j->outcomes[j->count] = o[j->count];
        j->outcomes[j->count].reply = NULL;
        if (o[j->count].reply != NULL &&
            (j->outcomes[j->count].reply = strdup(o[j->count].reply)) == NULL) {
            outcome_job_free(j);
            return NULL;
        }
    }
    return j;
}

static void outcome_job_submit(struct queue *q, struct outcome_job *j, bool remove_if_finished,
                               queue_outcomes_cb cb, void *arg)
{
    j->q = q;
    j->remove = remove_if_finished;
    j->cb = cb;
    j->arg = arg;
    submit_job(q, &j->job, j->id, outcome_job_run, outcome_job_report, outcome_job_drop);
}

void queue_fs_record_outcomes_async(struct queue *q, const char *id,
                                    const struct queue_outcome *outcomes, size_t n,
                                    bool remove_if_finished, queue_outcomes_cb cb, void *arg)
{
    struct outcome_job *j = outcome_job_new(id, outcomes, n);
    if (j == NULL) {
        cb(ENOMEM, 0, id, arg);
        return;
    }
    outcome_job_submit(q, j, remove_if_finished, cb, arg);
}

/* What a record needs of an envelope: id, each recipient's address, domain and state. */
static int copy_states(const struct queue_envelope *from, struct queue_envelope *to)
{
    memcpy(to->id, from->id, sizeof to->id);
    to->arrival = from->arrival;
    to->rcpts = calloc(from->rcpt_count > 0 ? from->rcpt_count : 1, sizeof *to->rcpts);
    if (to->rcpts == NULL)
        return ENOMEM;
    for (; to->rcpt_count < from->rcpt_count; to->rcpt_count++) {
        const struct queue_rcpt *f = &from->rcpts[to->rcpt_count];
        struct queue_rcpt *t = &to->rcpts[to->rcpt_count];
        *t = (struct queue_rcpt){.state = f->state, .attempts = f->attempts,
                                 .last_attempt = f->last_attempt, .warned = f->warned};
        t->address = strdup(f->address);
        t->domain = strdup(f->domain);
        t->last_reply = f->last_reply != NULL ? strdup(f->last_reply) : NULL;
        if (t->address == NULL || t->domain == NULL ||
            (f->last_reply != NULL && t->last_reply == NULL)) {
            to->rcpt_count++;   /* cleared with the others */
            return ENOMEM;
        }
    }
    return 0;
}

void queue_fs_record_message_outcomes_async(struct queue *q, const struct queue_message *m,
                                            const struct queue_outcome *outcomes, size_t n,
                                            bool remove_if_finished, queue_outcomes_cb cb,
                                            void *arg)
{
    /* Only messages from queue_fs_open_message() reach here: they carry their stamps. */
    const struct queue_fs_message *fm = (const struct queue_fs_message *)m;
    struct outcome_job *j = outcome_job_new(m->env.id, outcomes, n);
    if (j != NULL) {
        j->opened = true;
        j->stamps = calloc(fm->stamp_count > 0 ? fm->stamp_count : 1, sizeof *j->stamps);
        j->stamp_count = j->stamps != NULL ? fm->stamp_count : 0;
        if (j->stamps != NULL)
            memcpy(j->stamps, fm->stamps, fm->stamp_count * sizeof *j->stamps);
    }
    if (j == NULL || j->stamps == NULL || copy_states(&m->env, &j->env) != 0) {
        if (j != NULL)
            outcome_job_free(j);
        cb(ENOMEM, 0, m->env.id, arg);
        return;
    }
    outcome_job_submit(q, j, remove_if_finished, cb, arg);
}

/* ---- opening ---- */

/* One job opens a batch: one hand-off to a worker and one report back per batch, not per
 * message. No serial key: a push never has updates outstanding for a message it opens. */
struct open_slot {
    char id[QUEUE_ID_MAX];
    void *arg;
    int status;
    struct queue_message *m;
};

struct open_job {
    struct worker_job job;           /* first member */
    struct queue *q;
    queue_message_open_cb cb;
    size_t count;
    struct open_slot slots[];
};

static void open_job_run(struct worker_job *job)
{
    struct open_job *j = (struct open_job *)job;
    for (size_t i = 0; i < j->count; i++)
        j->slots[i].status = queue_fs_open_message(j->q, j->slots[i].id, true, &j->slots[i].m);
}

static void open_job_report(struct worker_job *job)
{
    struct open_job *j = (struct open_job *)job;
    for (size_t i = 0; i < j->count; i++)   /* each message is the callee's now */
        j->cb(j->slots[i].status, j->slots[i].m, j->slots[i].arg);
    free(j);
}

static void open_job_drop(struct worker_job *job)
{
    struct open_job *j = (struct open_job *)job;
    for (size_t i = 0; i < j->count; i++)
        queue_message_close(j->slots[i].m);
    free(j);
}

void queue_fs_messages_open_async(struct queue *q, const struct queue_open_request *req,
                                  size_t n, queue_message_open_cb cb)
{
    struct open_job *j = calloc(1, sizeof *j + n * sizeof j->slots[0]);
    for (size_t i = 0; i < n; i++) {
        /* An id that does not fit is not a queue id: like queue_message_open(), ENOENT. */
        if (j != NULL && strlen(req[i].id) < QUEUE_ID_MAX) {
            struct open_slot *slot = &j->slots[j->count++];
            strcpy(slot->id, req[i].id);
            slot->arg = req[i].arg;
        } else {
            cb(j == NULL ? ENOMEM : ENOENT, NULL, req[i].arg);
        }
    }
    if (j == NULL)
        return;
    j->q = q;
    j->cb = cb;
    submit_job(q, &j->job, NULL, open_job_run, open_job_report, open_job_drop);
}
