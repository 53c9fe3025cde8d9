/* SPDX-License-Identifier: ISC */
/* The filesystem queue's operator marks and usage counts (docs/queue.md "Hold", "Quotas"):
 * hold/<id> marks, per-domain message counts and sizes. Split from queue_fs.c, which reaches
 * them through its ops table. */
#ifndef ODMR_STORE_QUEUE_FS_ADMIN_H
#define ODMR_STORE_QUEUE_FS_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include "store/queue.h"
#include "store/queue_fs_spool.h"

#define QUEUE_FS_HOLD_DIR "hold"   /* hold/<id>: the message is on hold (odmrctl queue hold) */

/* Defined in queue_fs.c: the fd of a spool subdirectory (QUEUE_FS_SUB_COUNT: the spool); an
 * envelope with its states for a rewrite (touched: a flag per recipient, all false; EROFS for
 * a read-only queue), and the rewrite of the touched recipients' domain entries (F4, F5). */
int queue_fs_dir_fd(struct queue *q, enum queue_fs_subdir sub, bool *read_only);
int queue_fs_load_for_update(struct queue *q, const char *id, struct queue_envelope *env,
                             bool **touched);
int queue_fs_write_touched(struct queue *q, const struct queue_envelope *env, const bool *touched);

int queue_fs_hold(struct queue *q, const char *id, bool held);
int queue_fs_requeue(struct queue *q, const char *id, size_t *count);
bool queue_fs_is_held(struct queue *q, const char *id);
int queue_fs_domain_usage(struct queue *q, const char *domain, bool sizes,
                          struct queue_usage *out);

#endif
