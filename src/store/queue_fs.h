/* SPDX-License-Identifier: ISC */
/* The filesystem queue backend: queue_open_fs() is declared in store/queue.h; this header holds
 * the on-disk names and limits that tests and tools may need (docs/queue.md). */
#ifndef ODMR_STORE_QUEUE_FS_H
#define ODMR_STORE_QUEUE_FS_H

#include "store/queue.h"

/* Spool subdirectories. */
#define QUEUE_FS_TMP_DIR "tmp"           /* tmp/<id>: being received, not committed */
#define QUEUE_FS_MSG_DIR "msg"           /* msg/<id>: committed messages */
#define QUEUE_FS_DOM_DIR "dom"           /* dom/<domain>/<id>: per-domain index entries */
#define QUEUE_FS_CORRUPT_DIR "corrupt"   /* files that failed validation, kept for a human */
#define QUEUE_FS_LOCK_DIR "lock"         /* lock/<domain>: delivery leases (flock) */
#define QUEUE_FS_SPOOL_LOCK ".spool"     /* lock/.spool: held by the daemon that owns the spool */
#define QUEUE_FS_EMPTY_ENTRY ".empty"    /* dom/.empty: the daemon's empty entries link to it */

/* Message file: magic line, envelope lines, blank line, octets, fixed-size trailer. */
#define QUEUE_FS_MAGIC_PREFIX "ODMRQ "
#define QUEUE_FS_MAGIC_LINE "ODMRQ 1\n"
#define QUEUE_FS_TRAILER_PREFIX "ODMRQ-END "
enum {
    QUEUE_FS_TRAILER_LEN = 10 + 20 + 1 + 64 + 1,   /* prefix, length, space, sha256 hex, LF */
    QUEUE_FS_HEADER_MAX = 16 << 20,                /* envelope lines of 1000s of recipients */
    QUEUE_FS_WRITE_BUFFER = 64 << 10,
};

/* Domain index entry: empty (all pending), or magic line, rcpt lines, "end" line. Version 2
 * adds the per-recipient flags (queue_fs_entry.c); version 1 entries are still read. */
#define QUEUE_FS_ENTRY_MAGIC_LINE "ODMRD 2\n"
#define QUEUE_FS_ENTRY_MAGIC_V1 "ODMRD 1\n"
#define QUEUE_FS_ENTRY_END_LINE "end\n"

/* For tests and tools without an event loop (not part of struct queue_ops: odmrd commits and
 * records outcomes with queue_commit() and queue_record_outcomes_async()). */
/* Synchronous commit. 0 or errno. */
int queue_fs_commit_sync(struct queue_writer *w);
/* Returns once removing id cannot be undone by a replay of the commit journal: no segment of
 * wal/ holds a record of it. In odmrd, waits for its checkpoint. In a tool (odmrctl), which
 * does not see odmrd's checkpoints, polls wal/ for up to 5 s (odmrd checkpoints a segment
 * about a second after it opened) and then returns EAGAIN: odmrd is not running and left the
 * segment (its next start replays it). 0 or errno. Every removal calls it; odmrctl calls it
 * first where a removal follows other changes (bounce). */
int queue_fs_wait_out_of_journal(struct queue *q, const char *id);
/* queue_journal_read_state() of the spool's journal (store/queue_journal.h). */
struct queue_journal_state;
int queue_fs_journal_state(struct queue *q, struct queue_journal_state *out);
/* Records the outcome for one recipient (index into env.rcpts) durably (fsync before return).
 * reply may be NULL. DONE/FAILED/BOUNCED are final (the one move out of a final state is
 * FAILED -> BOUNCED, once its notice exists); PENDING counts an attempt. 0 or errno. */
int queue_fs_record_outcome(struct queue *q, const char *id, size_t rcpt_index,
                            enum queue_rcpt_state state, const char *reply);

#endif
