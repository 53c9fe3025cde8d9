/* SPDX-License-Identifier: ISC */
/* Spare message files: unnamed files (O_TMPFILE) in tmp/, made ahead of need on a worker, so
 * that a new message's file costs the event loop no inode allocation (docs/queue.md "Spare
 * files"). Daemon queues only (they have workers and a journal). */
#ifndef ODMR_STORE_QUEUE_FS_SPARE_H
#define ODMR_STORE_QUEUE_FS_SPARE_H

struct queue_fs_spares;
struct worker_pool;

/* Spares for tmp_dir_fd, made on pool's workers; NULL when the filesystem (or /proc, which
 * gives an unnamed file its name) cannot do it, or without memory: files are then created
 * by name, as before. */
struct queue_fs_spares *queue_fs_spares_new(int tmp_dir_fd, struct worker_pool *pool);
/* An open, empty, unnamed file (read-write, close-on-exec), or -1 when none is ready (the
 * caller creates one by name). Asks for more when few are left. Event-loop thread only. */
int queue_fs_spare_take(struct queue_fs_spares *spares);
/* Gives the unnamed file fd the name dir_fd/name (which must not exist): 0 or errno. */
int queue_fs_spare_link(int fd, int dir_fd, const char *name);
/* Closes the spares. After worker_pool_free() of the pool: a refill still queued was dropped
 * by it. NULL is a no-op. */
void queue_fs_spares_free(struct queue_fs_spares *spares);

#endif
