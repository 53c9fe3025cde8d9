/* SPDX-License-Identifier: ISC */
/* The commit journal of the filesystem queue (docs/queue.md "Group commit"): segment files
 * wal/<number> to which a commit appends its whole message file as one record (all but large
 * messages committed under load, docs/queue.md "Large messages under load"); one
 * fdatasync() of the segment covers every record appended before it started (group commit), so
 * a commit costs one sync, shared with every concurrent commit. The message file itself is
 * renamed into msg/ without any sync; a checkpointer thread later fsyncs the message files and
 * msg/ of a sealed segment and then deletes the segment. While commits arrive, the checkpointer
 * also prepares the next segment filled with zeros and synced (a standby), so that the commit's
 * fdatasync only overwrites existing blocks. Start-up replays the segments left; a zero octet
 * where a record header would start ends a segment cleanly. */
#ifndef ODMR_STORE_QUEUE_JOURNAL_H
#define ODMR_STORE_QUEUE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QUEUE_JOURNAL_DIR "wal"
#define QUEUE_JOURNAL_RECORD_MAGIC "ODMRJ 1 "   /* "ODMRJ 1 <id> <length>\n" + file octets */

struct queue_journal;
struct queue_journal_segment;

/* Opens the journal in spool_fd/wal (created if missing) for a spool whose tmp/ and msg/ are
 * tmp_fd and msg_fd, and starts the checkpointer. Call after queue_journal_replay(). A failed
 * checkpoint is tried again after a second, writing the segment's messages back from its
 * records. 0 or errno. */
int queue_journal_open(int spool_fd, int tmp_fd, int msg_fd, struct queue_journal **out);
/* Checkpoints and retires every segment, stops the checkpointer, frees. NULL is a no-op. */
void queue_journal_close(struct queue_journal *j);

/* Appends the message file fd (len octets from offset 0, the whole file with its trailer) of
 * id as one record; queue_journal_sync(*seg) then waits until a sync covers it (one call per
 * segment covers every record appended to it before the call). *seg is the segment it went
 * to: pass it to queue_journal_commit_done() once the file is in msg/ (or the commit was
 * undone), so the checkpointer knows when the segment's messages are all in place. 0 or
 * errno (*seg is NULL then: nothing was appended). content: the file's len octets when the
 * caller still has them in memory (written with the header in one pwritev), else NULL (copied
 * from fd in the kernel). */
int queue_journal_append(struct queue_journal *j, const char *id, int fd, uint64_t len,
                         const void *content, struct queue_journal_segment **seg);
int queue_journal_sync(struct queue_journal_segment *seg);
void queue_journal_commit_done(struct queue_journal *j, struct queue_journal_segment *seg);

/* Returns once no unretired segment holds a record of id: the message file is durable on its
 * own, so deleting it cannot be undone by a replay. Asks the checkpointer to seal and retire
 * the segment now if needed. */
void queue_journal_wait_retired(struct queue_journal *j, const char *id);

/* For a process beside odmrd (odmrctl): the ids that have a record in a segment of
 * spool_fd/wal now, sorted, in *out (always safe to queue_fs_names_free()). A record being
 * appended while this reads ends its segment's list: it is a commit newer than the call. 0 or
 * errno; no wal/ is no id. */
struct queue_fs_names;
int queue_journal_held_ids(int spool_fd, struct queue_fs_names *out);

/* What a reader beside odmrd (the metrics' snapshot) can see of the journal: the segments in
 * spool_fd/wal that hold at least one record (a standby, zeros only, is not counted), and the
 * last change of the oldest of them (its mtime, seconds since the epoch; 0 when none). A
 * healthy journal has one or two, none older than a few seconds: an old one is a checkpoint
 * that keeps failing. 0 or errno; no wal/ is none. */
struct queue_journal_state {
    size_t segments;
    double oldest_change;
};
int queue_journal_read_state(int spool_fd, struct queue_journal_state *out);

/* Start-up: re-materialises into msg/ every message of the segments left in spool_fd/wal whose
 * msg/<id> is missing or fails validation, makes every message of those segments durable
 * (fsync of the files and msg/), then deletes the segments. A record that is incomplete or
 * fails validation (a torn tail) ends its segment and is never delivered. tmp_fd is the
 * scratch directory. *replayed counts the messages written back. 0 or errno. */
int queue_journal_replay(int spool_fd, int tmp_fd, int msg_fd, unsigned *replayed,
                         unsigned *torn);

#endif
