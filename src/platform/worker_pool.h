/* SPDX-License-Identifier: ISC */
/* A pool of worker threads that run jobs off the event loop and report each job back on the
 * event-loop thread (docs/queue.md "Commit threading"). The queue's commits and outcome records
 * run here.
 *
 * Requirement: evthread_use_pthreads() before the event_base is created (the workers activate
 * events from other threads). */
#ifndef ODMR_PLATFORM_WORKER_POOL_H
#define ODMR_PLATFORM_WORKER_POOL_H

#include <stdbool.h>
#include <stdint.h>

struct event;
struct event_base;
struct worker_pool;

/* run() executes on a worker thread; report() on the event-loop thread afterwards and may free
 * the job; drop() frees a finished job whose report the stopped loop never ran
 * (worker_pool_free). Jobs with the same serial key run one at a time in submission order;
 * NULL: no key. The fields after serial belong to the pool. */
struct worker_job {
    void (*run)(struct worker_job *job);
    void (*report)(struct worker_job *job);
    void (*drop)(struct worker_job *job);
    const char *serial;
    uint64_t seq;
    bool finished;
    struct worker_pool *pool;
    struct event *done_event;
    struct worker_job *next_job;
    struct worker_job *inflight_prev, *inflight_next;
};

/* Starts count (at least 1) threads reporting on base. NULL with errno set on failure. */
struct worker_pool *worker_pool_new(struct event_base *base, unsigned count);
unsigned worker_pool_size(const struct worker_pool *pool);
/* Queues job. false when there is no memory for its event: the caller then runs the job
 * itself. */
bool worker_pool_submit(struct worker_pool *pool, struct worker_job *job);
/* Lets the workers finish every queued job, joins them, then drops the jobs whose report the
 * (stopped) loop never ran. NULL is a no-op. */
void worker_pool_free(struct worker_pool *pool);

#endif
