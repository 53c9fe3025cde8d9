/* SPDX-License-Identifier: ISC */
/* Commit batches: the commits one turn of the event loop asked for, as one job
 * (docs/queue.md "Commit batches"). */
#ifndef ODMR_STORE_QUEUE_FS_BATCH_H
#define ODMR_STORE_QUEUE_FS_BATCH_H

#include <stdbool.h>

struct fs_queue;
struct fs_writer;

/* Adds w to the batch of this loop turn (submitted once the turn's callbacks ran). false when
 * the queue does not batch (no journal, no workers, no memory): submit w on its own. */
bool queue_fs_batch_add(struct fs_queue *fq, struct fs_writer *w);
/* At close: the commits still waiting for their batch are dropped, never reported. */
void queue_fs_batch_drop_unsubmitted(struct fs_queue *fq);

#endif
