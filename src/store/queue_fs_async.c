/* SPDX-License-Identifier: ISC */
/* The filesystem queue's jobs for the push (docs/queue.md "Opening for a push"): batches of
 * messages opened on the reader threads (the SHA-256 check reads each whole file), each with a
 * stamp per index entry; outcome records on the commit workers, by id or from an opened
 * message, whose states are reused unless an entry's stamp changed. The records of one message
 * carry its id as the pool's serial key: they never overlap and keep their order. Without
 * workers (a tool) a job runs inline and reports before the call returns. */
#include "store/queue_fs_async.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/log.h"
#include "platform/worker_pool.h"
#include "store/queue_backend.h"
#include "store/queue_fs_admin.h"

static int dir_fd(struct queue *q, enum queue_fs_subdir sub)
{
    bool read_only;
    return queue_fs_dir_fd(q, sub, &read_only);
}

/* ---- stamps: what an index entry was when the opening read it ---- */

/* docs/queue.md "Opening for a push": file timestamps come from the kernel's coarse clock (at
 * most one 10 ms tick behind the real one). An entry whose ctime is this much older than the
 * moment it is stamped cannot share that ctime with any file written after it: a later stamp
 * equal to this one means the same file, unchanged. A younger entry is read again instead. */
enum { STAMP_SETTLED_NSEC = 50 * 1000 * 1000 };

struct stamper {
    int dom_fd;
    const char *id;
    struct timespec now;
    struct queue_fs_stamp *stamps;
    size_t count;
};

static int stamp_domain(const char *domain, void *arg)
{
    struct stamper *sp = arg;
    char path[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 2];
    struct stat st;
    if (sp->stamps == NULL) {
        sp->count++;   /* only counting */
        return 0;
    }
    struct queue_fs_stamp *out = &sp->stamps[sp->count++];
    snprintf(path, sizeof path, "%s/%s", domain, sp->id);
    if (fstatat(sp->dom_fd, path, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        out->trusted = errno == ENOENT;   /* no entry: any later one differs */
        return 0;
    }
    *out = (struct queue_fs_stamp){false, true, st.st_dev, st.st_ino, st.st_size, st.st_ctim,
                                   st.st_mtim};
    int64_t age = ((int64_t)sp->now.tv_sec - st.st_ctim.tv_sec) * 1000000000 +
                  (sp->now.tv_nsec - st.st_ctim.tv_nsec);
    /* An empty entry is one state (all pending) whatever its times: the daemon's empty
     * entries are links to one file (dom/.empty) whose ctime every new link renews. */
    out->trusted = age >= STAMP_SETTLED_NSEC || st.st_size == 0;
    return 0;
}

static bool stamps_match(const struct queue_fs_stamp *a, const struct queue_fs_stamp *b)
{
    if (a->present != b->present)
        return false;
    if (a->present && a->size == 0 && b->size == 0)
        return true;   /* empty, as when opened: nothing was recorded meanwhile */
    return !a->present ||
           (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
            a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec &&
            a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec);
}

/* The message struct, stamped (one stamp per domain) before the states are read: an entry
 * that changes in between is read again when the outcomes are recorded. */
struct queue_message *queue_fs_message_new(struct queue *q, const struct queue_envelope *env,
                                           bool stamped)
{
    struct stamper sp = {dir_fd(q, QUEUE_FS_SUB_DOM), env->id, {0, 0}, NULL, 0};
    if (stamped)
        queue_fs_for_each_domain(env, stamp_domain, &sp);   /* counts */
    struct queue_fs_message *fm = calloc(1, sizeof *fm + sp.count * sizeof fm->stamps[0]);
    if (fm == NULL)
        return NULL;
    fm->stamp_count = sp.count;
    sp.stamps = fm->stamps;
    sp.count = 0;
    clock_gettime(CLOCK_REALTIME, &sp.now);
    if (fm->stamp_count > 0)
        queue_fs_for_each_domain(env, stamp_domain, &sp);
    return &fm->base;
}

/* ---- the record of an opened message ---- */

/* Sets the recipients of domain back to "no entry": pending, no attempt, no reply. */
static void forget_domain_states(struct queue_envelope *env, const char *domain)
{
    for (size_t i = 0; i < env->rcpt_count; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        if (strcmp(r->domain, domain) != 0)
            continue;
        free(r->last_reply);
        r->last_reply = NULL;
        r->state = QUEUE_RCPT_PENDING;
        r->attempts = 0;
        r->last_attempt = 0;
        r->warned = false;
    }
}

struct refresher {
    struct queue *q;
    struct queue_envelope *env;
    const struct queue_fs_stamp *stamps;
    size_t count, index;
};

/* Reads the entry of domain again unless its stamp from the opening still holds. */
static int refresh_domain(const char *domain, void *arg)
{
    struct refresher *r = arg;
    size_t i = r->index++;
    if (i < r->count && r->stamps[i].trusted) {
        struct stamper sp = {dir_fd(r->q, QUEUE_FS_SUB_DOM), r->env->id, {0, 0}, NULL, 0};
        struct queue_fs_stamp now = {0};
        sp.stamps = &now;
        stamp_domain(domain, &sp);
        if (stamps_match(&now, &r->stamps[i]))
            return 0;
    }
    forget_domain_states(r->env, domain);
    return queue_fs_load_domain(r->q, r->env, domain);
}

/* Records n outcomes on env, a copy of the envelope and states of an opened message whose
 * stamps say which entries may have changed since: those are read again, the rest is used as
 * it is. ENOENT when the message is gone. env is updated; the caller clears it. */
static int record_opened(struct queue *q, struct queue_envelope *env,
                         const struct queue_fs_stamp *stamps, size_t stamp_count,
                         const struct queue_outcome *o, size_t n, bool remove_if_finished,
                         bool *removed)
{
    struct refresher r = {q, env, stamps, stamp_count, 0};
    struct stat st;
    bool read_only;
    int msg_fd = queue_fs_dir_fd(q, QUEUE_FS_SUB_MSG, &read_only);
    *removed = false;
    if (read_only)
        return EROFS;
    /* Message files are never rewritten: while msg/<id> exists, its envelope is env's. */
    int rc = fstatat(msg_fd, env->id, &st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
    if (rc == 0)
        rc = queue_fs_for_each_domain(env, refresh_domain, &r);
    bool *touched = rc == 0 ? calloc(env->rcpt_count, sizeof *touched) : NULL;
    if (rc == 0 && touched == NULL)
        rc = ENOMEM;
    if (rc == 0)
        rc = queue_fs_record_loaded(q, env, touched, o, n, remove_if_finished, removed);
    else
        queue_fs_log_failed(env->id, o, n, rc);
    free(touched);
    return rc;
}

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
        j->status = record_opened(j->q, &j->env, j->stamps, j->stamp_count, j->outcomes,
                                  j->count, j->remove, &removed);
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
 * message. No serial key: an opening does not wait for pending records of the same message (as
 * queue_message_open() on the loop never did); an entry they rewrite later fails its stamp. */
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
