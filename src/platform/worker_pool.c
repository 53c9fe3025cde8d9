/* SPDX-License-Identifier: ISC */
/* Worker threads with reports on the event loop (worker_pool.h). */
#include "platform/worker_pool.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct worker_pool {
    struct event_base *evbase;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    pthread_cond_t serial_done;                /* a job with a serial key finished */
    struct worker_job *jobs_head, *jobs_tail;  /* waiting for a worker */
    struct worker_job *inflight;               /* submitted, report not yet run */
    uint64_t next_seq;
    bool stopping;
    pthread_t *threads;
    unsigned thread_count;
};

static void inflight_unlink(struct worker_pool *p, struct worker_job *job)
{
    if (job->inflight_prev != NULL)
        job->inflight_prev->inflight_next = job->inflight_next;
    else
        p->inflight = job->inflight_next;
    if (job->inflight_next != NULL)
        job->inflight_next->inflight_prev = job->inflight_prev;
}

/* Runs on the event-loop thread once a worker has finished the job. */
static void job_done_trampoline(evutil_socket_t fd, short what, void *arg)
{
    struct worker_job *job = arg;
    struct worker_pool *p = job->pool;
    pthread_mutex_lock(&p->mutex);
    inflight_unlink(p, job);
    pthread_mutex_unlock(&p->mutex);
    event_free(job->done_event);
    job->done_event = NULL;
    job->report(job);
}

/* True while an earlier job with the same serial key has not finished (mutex held). */
static bool job_must_wait(const struct worker_pool *p, const struct worker_job *job)
{
    if (job->serial == NULL)
        return false;
    for (const struct worker_job *j = p->inflight; j != NULL; j = j->inflight_next) {
        if (j != job && !j->finished && j->seq < job->seq && j->serial != NULL &&
            strcmp(j->serial, job->serial) == 0)
            return true;
    }
    return false;
}

static struct worker_job *next_job_locked(struct worker_pool *p)
{
    while (p->jobs_head == NULL && !p->stopping)
        pthread_cond_wait(&p->wake, &p->mutex);
    struct worker_job *job = p->jobs_head;
    if (job != NULL) {
        p->jobs_head = job->next_job;
        if (p->jobs_head == NULL)
            p->jobs_tail = NULL;
        while (job_must_wait(p, job))
            pthread_cond_wait(&p->serial_done, &p->mutex);
    }
    return job;
}

static void *job_worker(void *arg)
{
    struct worker_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mutex);
        struct worker_job *job = next_job_locked(p);
        pthread_mutex_unlock(&p->mutex);
        if (job == NULL)
            return NULL;   /* stopping and every queued job done */
        job->run(job);
        pthread_mutex_lock(&p->mutex);
        job->finished = true;
        pthread_cond_broadcast(&p->serial_done);
        pthread_mutex_unlock(&p->mutex);
        /* Hands the job back to the loop thread; it may be freed there from now on. */
        event_active(job->done_event, EV_WRITE, 0);
    }
}

bool worker_pool_submit(struct worker_pool *p, struct worker_job *job)
{
    job->pool = p;
    job->finished = false;
    job->done_event = event_new(p->evbase, -1, 0, job_done_trampoline, job);
    if (job->done_event == NULL)
        return false;
    pthread_mutex_lock(&p->mutex);
    job->seq = p->next_seq++;
    job->inflight_prev = NULL;
    job->inflight_next = p->inflight;
    if (p->inflight != NULL)
        p->inflight->inflight_prev = job;
    p->inflight = job;
    job->next_job = NULL;
    if (p->jobs_tail != NULL)
        p->jobs_tail->next_job = job;
    else
        p->jobs_head = job;
    p->jobs_tail = job;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    return true;
}

unsigned worker_pool_size(const struct worker_pool *p)
{
    return p != NULL ? p->thread_count : 0;
}

struct worker_pool *worker_pool_new(struct event_base *base, unsigned count)
{
    struct worker_pool *p = calloc(1, sizeof *p);
    if (count == 0)
        count = 1;
    if (p == NULL || (p->threads = calloc(count, sizeof *p->threads)) == NULL) {
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    p->evbase = base;
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->serial_done, NULL);
    for (; p->thread_count < count; p->thread_count++) {
        int rc = pthread_create(&p->threads[p->thread_count], NULL, job_worker, p);
        if (rc != 0) {
            worker_pool_free(p);
            errno = rc;
            return NULL;
        }
    }
    return p;
}

void worker_pool_free(struct worker_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mutex);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (unsigned i = 0; i < p->thread_count; i++)
        pthread_join(p->threads[i], NULL);
    /* Jobs finished but whose report the loop never ran (the loop has stopped): each job's
     * drop() says what became of it; whoever waited for the report no longer exists. */
    while (p->inflight != NULL) {
        struct worker_job *job = p->inflight;
        inflight_unlink(p, job);
        event_free(job->done_event);
        job->done_event = NULL;
        job->drop(job);
    }
    pthread_mutex_destroy(&p->mutex);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->serial_done);
    free(p->threads);
    free(p);
}
