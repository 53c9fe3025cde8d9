/* SPDX-License-Identifier: ISC */
/* The filesystem queue's own structures and the few functions its modules share (queue_fs.c,
 * queue_fs_batch.c). Not for the rest of the program: it uses queue.h. */
#ifndef ODMR_STORE_QUEUE_FS_INTERNAL_H
#define ODMR_STORE_QUEUE_FS_INTERNAL_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "platform/worker_pool.h"
#include "store/queue_backend.h"

struct event;
struct event_base;
struct group_sync;
struct queue_fs_empty;
struct queue_journal;
struct queue_journal_segment;

struct fs_lease {
    char domain[QUEUE_DOMAIN_MAX];
    int fd;
};

struct fs_queue {
    struct queue base;
    char *spool;
    int spool_fd, tmp_fd, msg_fd, dom_fd, corrupt_fd, lock_fd;
    int spool_lock_fd;                   /* -1 for tools (base == NULL) */
    bool read_only;                      /* odmrctl's read commands: never write anything */
    struct queue_fs_empty *empty;        /* empty entries as links to dom/.empty (daemon) */
    struct event_base *evbase;
    struct worker_pool *workers;         /* commits and outcome records; NULL for tools */
    struct worker_pool *readers;         /* openings for a push, started at the first one */
    struct group_sync *msg_sync;         /* fsync(msg/) shared by concurrent commits, removals */
    struct queue_journal *journal;       /* the daemon's commit journal; NULL for tools */
    struct queue_fs_names *journal_held; /* tools: ids with a record in wal/, read at need */
    struct queue_fs_spares *spares;      /* unnamed files made ahead (daemon); NULL: none */
    struct event *batch_event;           /* submits the commits of one loop turn together */
    struct fs_writer *batch_head, **batch_tail;
    size_t commits_in_flight;            /* queue_commit() called, callback not yet run */
    /* leases held by this process */
    struct fs_lease *leases;
    size_t lease_count;
};

struct fs_writer {
    struct queue_writer base;
    struct fs_queue *fq;
    char id[QUEUE_ID_MAX];
    int fd;
    bool unnamed;               /* fd is a spare file: no tmp/<id>, linked at commit */
    EVP_MD_CTX *digest;         /* SHA-256 over everything before the trailer */
    unsigned char *buffer;
    size_t buffered;
    uint64_t file_size;         /* octets written to fd so far */
    bool spilled;               /* some of the file left the buffer before the trailer */
    bool own_file;              /* commits by its own file's fsync, not the journal */
    uint64_t body_len;          /* message octets (after the header) */
    int error;                  /* first write error; sticky: commit then fails */
    char (*domains)[QUEUE_DOMAIN_MAX];
    size_t domain_count;
    /* asynchronous commit */
    queue_commit_cb cb;
    void *cb_arg;
    int status;
    struct worker_job job;
    struct queue_journal_segment *seg;   /* the journal segment of its record */
    struct fs_writer *batch_next;        /* the next commit of the same batch */
};

/* The journal commit's steps (docs/queue.md "Group commit"): append the record (0 or errno);
 * finish (rc: the append's or the sync's result): into msg/, entries, or undone. */
int queue_fs_journal_append(struct fs_writer *w);
int queue_fs_journal_finish(struct fs_writer *w, int rc);
/* A commit job's report (callback, free) and drop (never reported, free). */
void queue_fs_commit_report(struct worker_job *job);
void queue_fs_commit_drop(struct worker_job *job);
/* One commit as its own job, or inline without workers. */
void queue_fs_commit_submit_one(struct fs_writer *w);

#endif
