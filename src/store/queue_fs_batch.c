/* SPDX-License-Identifier: ISC */
/* Commit batches (queue_fs_batch.h, docs/queue.md "Commit batches"). */
#include "store/queue_fs_batch.h"

#include <event2/event.h>
#include <stdlib.h>

#include "store/queue_fs_internal.h"
#include "store/queue_journal.h"

/* docs/queue.md "Commit batches": one job on one worker appends every record of the batch,
 * syncs each segment it touched once, then renames and reports them all. Per batch, not per
 * message: one worker wake-up, no contention for the journal's mutex, one wait for the sync,
 * one wake-up of the loop; batches of successive turns still share syncs (group_sync). */
struct commit_batch {
    struct worker_job job;
    struct fs_writer *first;
};

static struct commit_batch *batch_of_job(struct worker_job *job)
{
    return (struct commit_batch *)((char *)job - offsetof(struct commit_batch, job));
}

static void batch_run(struct worker_job *job)
{
    struct commit_batch *b = batch_of_job(job);
    for (struct fs_writer *w = b->first; w != NULL; w = w->batch_next)
        w->status = queue_fs_journal_append(w);
    /* Appends go to segments in order: a sync per run of the same segment covers them all. */
    struct queue_journal_segment *synced = NULL;
    int sync_rc = 0;
    for (struct fs_writer *w = b->first; w != NULL; w = w->batch_next) {
        if (w->status != 0)
            continue;
        if (w->seg != synced) {
            synced = w->seg;
            sync_rc = queue_journal_sync(synced);
        }
        w->status = sync_rc;
    }
    for (struct fs_writer *w = b->first; w != NULL; w = w->batch_next)
        w->status = queue_fs_journal_finish(w, w->status);
}

/* fn (a commit's report or drop) for each commit of the list, which fn may free. */
static void each_commit(struct fs_writer *first, void (*fn)(struct worker_job *job))
{
    for (struct fs_writer *w = first, *next; w != NULL; w = next) {
        next = w->batch_next;
        fn(&w->job);
    }
}

static void batch_report(struct worker_job *job)
{
    struct commit_batch *b = batch_of_job(job);
    each_commit(b->first, queue_fs_commit_report);
    free(b);
}

static void batch_drop(struct worker_job *job)
{
    struct commit_batch *b = batch_of_job(job);
    each_commit(b->first, queue_fs_commit_drop);
    free(b);
}

/* On the loop, once the turn's callbacks ran: the commits they asked for go as one job. */
static void submit_batch(evutil_socket_t fd, short what, void *arg)
{
    struct fs_queue *fq = arg;
    struct fs_writer *first = fq->batch_head;
    fq->batch_head = NULL;
    fq->batch_tail = &fq->batch_head;
    struct commit_batch *b = calloc(1, sizeof *b);
    if (b == NULL) {   /* one job each, or inline */
        for (struct fs_writer *w = first, *next; w != NULL; w = next) {
            next = w->batch_next;
            queue_fs_commit_submit_one(w);
        }
        return;
    }
    b->job.run = batch_run;
    b->job.report = batch_report;
    b->job.drop = batch_drop;
    b->first = first;
    if (!worker_pool_submit(fq->workers, &b->job)) {
        batch_run(&b->job);
        batch_report(&b->job);
    }
}

/* The queue's batch event, made at the first commit. */
static bool batching(struct fs_queue *fq)
{
    if (fq->batch_event == NULL && fq->journal != NULL && fq->workers != NULL) {
        fq->batch_tail = &fq->batch_head;
        fq->batch_event = event_new(fq->evbase, -1, 0, submit_batch, fq);
    }
    return fq->batch_event != NULL;
}

/* Commits still waiting for their batch when the queue closes: never reported. */
void queue_fs_batch_drop_unsubmitted(struct fs_queue *fq)
{
    each_commit(fq->batch_head, queue_fs_commit_drop);
    fq->batch_head = NULL;
    if (fq->batch_event != NULL)
        event_free(fq->batch_event);
    fq->batch_event = NULL;
}

bool queue_fs_batch_add(struct fs_queue *fq, struct fs_writer *w)
{
    if (!batching(fq))
        return false;
    bool first = fq->batch_head == NULL;
    w->batch_next = NULL;
    *fq->batch_tail = w;
    fq->batch_tail = &w->batch_next;
    if (first)
        event_active(fq->batch_event, 0, 0);
    return true;
}
