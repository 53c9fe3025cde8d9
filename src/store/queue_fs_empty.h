/* SPDX-License-Identifier: ISC */
/* The daemon's empty index entries as hard links to one empty file, dom/.empty
 * (docs/queue.md "Empty entries"). */
#ifndef ODMR_STORE_QUEUE_FS_EMPTY_H
#define ODMR_STORE_QUEUE_FS_EMPTY_H

struct queue_fs_empty;

/* Makes a new dom/.empty (read-only, owned by the caller) and holds it open. NULL with errno
 * when it cannot: empty entries are then files of their own. */
struct queue_fs_empty *queue_fs_empty_open(int dom_fd);

/* Links the entry path (relative to dom/) to dom/.empty: 0; EEXIST (an entry is there);
 * ENOENT (its domain directory is missing); any other errno: make the entry a file instead. */
int queue_fs_empty_link(struct queue_fs_empty *e, const char *path);

void queue_fs_empty_close(struct queue_fs_empty *e);

#endif
