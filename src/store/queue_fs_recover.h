/* SPDX-License-Identifier: ISC */
/* Start-up recovery of the filesystem queue (docs/queue.md "Start-up recovery"): journal
 * replay, tmp/ cleared, every msg/ file validated, lost index entries rebuilt, orphan entries
 * deleted. Split from queue_fs.c; run by the daemon only, with the spool lock held. */
#ifndef ODMR_STORE_QUEUE_FS_RECOVER_H
#define ODMR_STORE_QUEUE_FS_RECOVER_H

#include <stdbool.h>

#include "store/queue.h"

/* Recovers the spool of q (opened with an event base, before its workers start). Logs
 * event=queue.recovered with the counts. 0 or errno. */
int queue_fs_recover(struct queue *q);

/* Defined in queue_fs.c, for the recovery: moves msg/<name> and its index entries to
 * corrupt/ durably and logs it (0 or errno); creates the empty entry dom/<domain>/<id> when
 * it is missing (*created then true; 0 or errno). */
int queue_fs_quarantine(struct queue *q, const char *name, const char *reason);
int queue_fs_create_entry(struct queue *q, const char *domain, const char *id, bool *created);

#endif
