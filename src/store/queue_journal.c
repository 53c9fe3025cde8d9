/* SPDX-License-Identifier: ISC */
/* The commit journal of the filesystem queue (queue_journal.h, docs/queue.md "Group commit"). */
#include "store/queue_journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lib/log.h"
#include "platform/group_sync.h"
#include "store/queue_backend.h"
#include "store/queue_format.h"
#include "store/queue_fs_entry.h"
#include "store/queue_fs_spool.h"

enum {
    SEGMENT_MAX = 64 << 20,         /* a segment takes no new record past this size */
    CHECKPOINT_SECONDS = 1,         /* a segment is sealed at most this long after it opened */
    SEGMENT_NAME_DIGITS = 20,
    RECORD_HEADER_MAX = 8 + QUEUE_ID_MAX + 1 + 20 + 1 + 1,
    COPY_CHUNK = 64 << 10,
    CHECKPOINT_BATCH = 256,         /* message files open at once in a checkpoint */
    CHECKPOINT_SYNC_THREADS = 16,   /* fdatasyncs of a checkpoint running at once */
    STANDBY_MIN = 1 << 20,          /* octets of zeros written ahead into a standby segment */
    STANDBY_MAX = 16 << 20,
    ZERO_CHUNK = 1 << 20,
};

struct queue_journal_segment {
    uint64_t number;
    int fd;
    uint64_t size;                  /* octets of complete records */
    uint64_t zeroed;                /* octets of zeros written and synced ahead; 0: appended */
    time_t opened;                  /* CLOCK_MONOTONIC seconds */
    char (*ids)[QUEUE_ID_MAX];      /* the messages with a record here */
    size_t id_count, id_cap;
    unsigned pending;               /* appended, commit_done not yet called */
    bool sealed;                    /* takes no new record */
    bool rewrite;                   /* a checkpoint failed: the next rewrites from the records */
    bool unlinked;                  /* checkpointed and deleted; wal/ not yet synced */
    struct group_sync *sync;
    struct queue_journal_segment *next;
};

struct queue_journal {
    int wal_fd, tmp_fd, msg_fd;
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    struct queue_journal_segment *segments;   /* oldest first; the last may be current */
    uint64_t next_number;
    struct queue_journal_segment *standby;    /* zero-filled, synced, not in use yet */
    uint64_t standby_octets;        /* how much the next standby gets: the last segment's size */
    time_t standby_retry;           /* no new standby before this (after a failure) */
    bool seal_requested, stopping;
    bool rewrite_marked;            /* wal/.rewrite made (the checkpointer thread alone) */
    pthread_t checkpointer;
    bool checkpointer_started;
};

/* wal/.rewrite: a checkpoint failed in this spool (docs/queue.md "A failed checkpoint"); the
 * next start writes every record back instead of trusting the files in msg/. */
#define REWRITE_MARK ".rewrite"

static time_t monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static void segment_name(char out[SEGMENT_NAME_DIGITS + 1], uint64_t number)
{
    snprintf(out, SEGMENT_NAME_DIGITS + 1, "%0*" PRIu64, SEGMENT_NAME_DIGITS, number);
}

static bool accept_segment_name(const char *name)
{
    return strlen(name) == SEGMENT_NAME_DIGITS &&
           strspn(name, "0123456789") == SEGMENT_NAME_DIGITS;
}

/* Copies len octets from in_fd at in_off to out_fd at out_off, in the kernel when it can. */
static int copy_range(int in_fd, off_t in_off, int out_fd, off_t out_off, uint64_t len)
{
    bool kernel = true;
    char *buf = NULL;
    int rc = 0;
    while (rc == 0 && len > 0) {
        size_t want = len < COPY_CHUNK ? (size_t)len : COPY_CHUNK;
        ssize_t n = -1;
        if (kernel) {
            n = copy_file_range(in_fd, &in_off, out_fd, &out_off, want, 0);
            if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
                          errno == EOPNOTSUPP)) {
                kernel = false;
                continue;
            }
        } else if (buf == NULL && (buf = malloc(COPY_CHUNK)) == NULL) {
            rc = ENOMEM;
            break;
        } else if ((n = pread(in_fd, buf, want, in_off)) > 0) {
            n = pwrite(out_fd, buf, (size_t)n, out_off);
            in_off += n > 0 ? n : 0;
            out_off += n > 0 ? n : 0;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = n < 0 ? errno : EIO;   /* a short source: it shrank under us */
        else
            len -= (uint64_t)n;
    }
    free(buf);
    return rc;
}

/* ---- segments ---- */

static void segment_free(struct queue_journal_segment *seg)
{
    if (seg->fd >= 0)
        close(seg->fd);
    group_sync_free(seg->sync);
    free(seg->ids);
    free(seg);
}

/* Writes zeros over [start, end) of fd. 0 or errno. */
static int write_zeros(int fd, uint64_t start, uint64_t end)
{
    char *zeros = start < end ? calloc(1, ZERO_CHUNK) : NULL;
    int rc = start < end && zeros == NULL ? ENOMEM : 0;
    for (uint64_t off = start; rc == 0 && off < end; off += ZERO_CHUNK) {
        size_t n = end - off < ZERO_CHUNK ? (size_t)(end - off) : ZERO_CHUNK;
        if (pwrite(fd, zeros, n, (off_t)off) != (ssize_t)n)
            rc = errno != 0 ? errno : EIO;
    }
    free(zeros);
    return rc;
}

/* Creates segment wal/<number>, with zeroed octets of zeros written and synced ahead (0: an
 * empty file that records extend). Runs without the mutex. 0 or errno. */
static int segment_create(int wal_fd, uint64_t number, uint64_t zeroed,
                          struct queue_journal_segment **out)
{
    char name[SEGMENT_NAME_DIGITS + 1];
    struct queue_journal_segment *seg = calloc(1, sizeof *seg);
    *out = NULL;
    if (seg == NULL)
        return ENOMEM;
    seg->number = number;
    seg->zeroed = zeroed;
    segment_name(name, seg->number);
    seg->fd = openat(wal_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    seg->sync = seg->fd >= 0 ? group_sync_new(seg->fd, true) : NULL;
    int rc = seg->fd < 0 ? errno : seg->sync == NULL ? ENOMEM : 0;
    if (rc == 0 && zeroed > 0)
        rc = write_zeros(seg->fd, 0, zeroed);
    if (rc == 0 && zeroed > 0 && fdatasync(seg->fd) != 0)
        rc = errno;
    /* The new name must survive a crash with the records that the first sync will cover. */
    if (rc == 0 && fsync(wal_fd) != 0)
        rc = errno;
    if (rc != 0) {
        if (seg->fd >= 0)
            unlinkat(wal_fd, name, 0);
        segment_free(seg);
        return rc;
    }
    *out = seg;
    return 0;
}

static void segment_append_locked(struct queue_journal *j, struct queue_journal_segment *seg)
{
    seg->opened = monotonic_seconds();
    struct queue_journal_segment **tail = &j->segments;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = seg;
}

/* Opens a new current segment at the end of the list (mutex held): the standby when one is
 * ready, else a new empty file. 0 or errno. */
static int segment_open_locked(struct queue_journal *j, struct queue_journal_segment **out)
{
    struct queue_journal_segment *seg = j->standby;
    j->standby = NULL;
    int rc = seg != NULL ? 0 : segment_create(j->wal_fd, j->next_number++, 0, &seg);
    if (rc != 0)
        return rc;
    segment_append_locked(j, seg);
    pthread_cond_broadcast(&j->changed);   /* the checkpointer prepares the next standby */
    *out = seg;
    return 0;
}

/* The segment new records go to, opened if needed (mutex held). */
static int current_segment_locked(struct queue_journal *j, struct queue_journal_segment **out)
{
    struct queue_journal_segment *last = j->segments;
    while (last != NULL && last->next != NULL)
        last = last->next;
    /* An appended segment gives way to a zero-filled standby as soon as one is ready. */
    bool switch_to_standby = last != NULL && last->zeroed == 0 && j->standby != NULL;
    if (last != NULL && !last->sealed && last->size < SEGMENT_MAX && !switch_to_standby) {
        *out = last;
        return 0;
    }
    if (last != NULL && !last->sealed) {
        last->sealed = true;
        pthread_cond_broadcast(&j->changed);
    }
    return segment_open_locked(j, out);
}

static int segment_add_id(struct queue_journal_segment *seg, const char *id)
{
    if (seg->id_count == seg->id_cap) {
        size_t cap = seg->id_cap > 0 ? seg->id_cap * 2 : 64;
        void *ids = realloc(seg->ids, cap * sizeof *seg->ids);
        if (ids == NULL)
            return ENOMEM;
        seg->ids = ids;
        seg->id_cap = cap;
    }
    snprintf(seg->ids[seg->id_count++], QUEUE_ID_MAX, "%s", id);
    return 0;
}

/* Removes what a failed append wrote into [start, end): zeros again inside the zero-filled part
 * (the replay stops at a zero header), the file cut back to its size beyond it. */
static int cut_record(struct queue_journal_segment *seg, uint64_t start, uint64_t end)
{
    int rc = write_zeros(seg->fd, start, end < seg->zeroed ? end : seg->zeroed);
    if (rc == 0 && end > seg->zeroed &&
        ftruncate(seg->fd, (off_t)(start > seg->zeroed ? start : seg->zeroed)) != 0)
        rc = errno;
    return rc;
}

/* Appends one record at the end of seg (mutex held); a failed append leaves no trace. */
static int append_record_locked(struct queue_journal_segment *seg, const char *id, int fd,
                                uint64_t len, const void *content)
{
    char header[RECORD_HEADER_MAX];
    int n = snprintf(header, sizeof header, "%s%s %" PRIu64 "\n", QUEUE_JOURNAL_RECORD_MAGIC, id,
                     len);
    if (n < 0 || (size_t)n >= sizeof header)
        return EINVAL;
    off_t start = (off_t)seg->size;
    int rc;
    if (content != NULL) {
        struct iovec iov[2] = {{header, (size_t)n}, {(void *)content, (size_t)len}};
        rc = pwritev(seg->fd, iov, 2, start) == (ssize_t)((size_t)n + len) ? 0
             : errno != 0 ? errno : EIO;
    } else {
        rc = pwrite(seg->fd, header, (size_t)n, start) == n ? 0 : errno != 0 ? errno : EIO;
        if (rc == 0)
            rc = copy_range(fd, 0, seg->fd, start + n, len);
    }
    if (rc == 0)
        rc = segment_add_id(seg, id);
    if (rc != 0) {
        /* Cut the partial record off so the records appended after it stay reachable. */
        if (cut_record(seg, (uint64_t)start, (uint64_t)start + (uint64_t)n + len) != 0)
            seg->sealed = true;   /* cannot cut: take no more records here */
        return rc;
    }
    seg->size = (uint64_t)start + (uint64_t)n + len;
    return 0;
}

int queue_journal_append(struct queue_journal *j, const char *id, int fd, uint64_t len,
                         const void *content, struct queue_journal_segment **out)
{
    struct queue_journal_segment *seg = NULL;
    *out = NULL;
    pthread_mutex_lock(&j->mutex);
    int rc = current_segment_locked(j, &seg);
    if (rc == 0)
        rc = append_record_locked(seg, id, fd, len, content);
    if (rc == 0) {
        seg->pending++;
        *out = seg;
    }
    pthread_mutex_unlock(&j->mutex);
    return rc;
}

/* Group commit: one fdatasync covers every record appended before it started. */
int queue_journal_sync(struct queue_journal_segment *seg)
{
    return group_sync(seg->sync);
}

void queue_journal_commit_done(struct queue_journal *j, struct queue_journal_segment *seg)
{
    pthread_mutex_lock(&j->mutex);
    if (--seg->pending == 0 && seg->sealed)
        pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->mutex);
}

static bool segment_holds(const struct queue_journal_segment *seg, const char *id)
{
    for (size_t i = 0; i < seg->id_count; i++) {
        if (strcmp(seg->ids[i], id) == 0)
            return true;
    }
    return false;
}

void queue_journal_wait_retired(struct queue_journal *j, const char *id)
{
    pthread_mutex_lock(&j->mutex);
    for (;;) {
        struct queue_journal_segment *seg = j->segments;
        while (seg != NULL && !segment_holds(seg, id))
            seg = seg->next;
        if (seg == NULL)
            break;
        if (!seg->sealed) {
            j->seal_requested = true;
            pthread_cond_broadcast(&j->changed);
        }
        pthread_cond_wait(&j->changed, &j->mutex);
    }
    pthread_mutex_unlock(&j->mutex);
}

/* ---- the checkpointer ---- */

/* The fdatasync of a batch of message files, shared by the checkpoint's sync threads. */
struct sync_batch {
    const int *fds;
    size_t count;
    size_t next;                    /* the next file to sync */
    int error;                      /* the first error */
    pthread_mutex_t mutex;
};

static void *sync_batch_thread(void *arg)
{
    struct sync_batch *b = arg;
    pthread_mutex_lock(&b->mutex);
    while (b->next < b->count) {
        int fd = b->fds[b->next++];
        pthread_mutex_unlock(&b->mutex);
        int rc = fd >= 0 && fdatasync(fd) != 0 ? errno : 0;
        pthread_mutex_lock(&b->mutex);
        if (rc != 0 && b->error == 0)
            b->error = rc;
    }
    pthread_mutex_unlock(&b->mutex);
    return NULL;
}

/* fdatasync of every fds[i] >= 0, CHECKPOINT_SYNC_THREADS at a time: a file whose data and
 * size a filesystem journal commit already made durable still costs a flush of the disk's
 * write cache (ext4 issues one per fdatasync then); the block layer merges the flushes that
 * are waiting at the same time into one, where one-by-one syncs would pay one each. */
static int sync_files_concurrently(const int *fds, size_t count)
{
    struct sync_batch b = {.fds = fds, .count = count};
    pthread_t threads[CHECKPOINT_SYNC_THREADS - 1];
    size_t started = 0;
    pthread_mutex_init(&b.mutex, NULL);
    while (started < CHECKPOINT_SYNC_THREADS - 1 && started + 1 < count &&
           pthread_create(&threads[started], NULL, sync_batch_thread, &b) == 0)
        started++;
    sync_batch_thread(&b);   /* this thread too; alone when no thread could start */
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&b.mutex);
    return b.error;
}

/* fdatasync of the message files ids[0..n): first writeback is started for all of them, so
 * that the syncs that follow mostly find their data written by one journal commit. A missing
 * file was removed or never renamed (a failed commit): nothing to keep. */
static int sync_message_files(int msg_fd, char (*ids)[QUEUE_ID_MAX], size_t n)
{
    int fds[CHECKPOINT_BATCH];
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        fds[i] = queue_fs_open_file(msg_fd, ids[i], O_RDONLY, 0);
        if (fds[i] < 0 && errno != ENOENT && rc == 0)
            rc = errno;
        if (fds[i] >= 0)
            sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WRITE);
    }
    int sync_rc = sync_files_concurrently(fds, n);
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
    }
    return rc != 0 ? rc : sync_rc;
}

static int rewrite_segment_messages(struct queue_journal *j,
                                    const struct queue_journal_segment *seg);

/* Makes every message of seg durable without the journal (its file, then its name in msg/),
 * then deletes seg. After a failed attempt the files are written again from the records
 * instead of synced again: Linux reports a writeback error to one fsync only, and may keep the
 * failed pages in the cache as clean, so a second fsync of the same files can return 0 while
 * the disk holds no good copy (docs/queue.md "A failed checkpoint"). The records are durable:
 * they are the copy to trust. */
static int checkpoint_segment(struct queue_journal *j, struct queue_journal_segment *seg)
{
    char name[SEGMENT_NAME_DIGITS + 1];
    segment_name(name, seg->number);
    int rc = 0;
    if (!seg->unlinked && seg->rewrite)
        rc = rewrite_segment_messages(j, seg);
    for (size_t i = 0; !seg->unlinked && !seg->rewrite && rc == 0 && i < seg->id_count;
         i += CHECKPOINT_BATCH) {
        size_t n = seg->id_count - i < CHECKPOINT_BATCH ? seg->id_count - i : CHECKPOINT_BATCH;
        rc = sync_message_files(j->msg_fd, seg->ids + i, n);
    }
    if (!seg->unlinked && rc == 0 && seg->id_count > 0 && fsync(j->msg_fd) != 0)
        rc = errno;
    if (!seg->unlinked && rc == 0 && unlinkat(j->wal_fd, name, 0) != 0)
        rc = errno;
    seg->unlinked |= rc == 0;
    if (rc == 0 && fsync(j->wal_fd) != 0)
        rc = errno;
    return rc;
}

/* Makes wal/.rewrite (once): a stop before the failed segment's rewrite must not let the next
 * start trust the files either. Best effort: on a disk that fails this may fail too. */
static void mark_rewrite(struct queue_journal *j)
{
    if (j->rewrite_marked)
        return;
    int fd = openat(j->wal_fd, REWRITE_MARK, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    j->rewrite_marked = fd >= 0 && fsync(j->wal_fd) == 0;
    if (fd >= 0)
        close(fd);
    if (!j->rewrite_marked)
        log_error("queue.journal_mark_failed", " file=wal/%s error=\"%s\"", REWRITE_MARK,
                  strerror(errno));
}

static struct queue_journal_segment *retirable_locked(struct queue_journal *j)
{
    for (struct queue_journal_segment *seg = j->segments; seg != NULL; seg = seg->next) {
        if (seg->sealed && seg->pending == 0)
            return seg;
    }
    return NULL;
}

static void unlink_segment_locked(struct queue_journal *j, struct queue_journal_segment *seg)
{
    struct queue_journal_segment **p = &j->segments;
    while (*p != seg)
        p = &(*p)->next;
    *p = seg->next;
}

/* Seals the current segment when it is old enough, or asked for, or at close (mutex held). */
static void seal_if_due_locked(struct queue_journal *j)
{
    struct queue_journal_segment *last = j->segments;
    while (last != NULL && last->next != NULL)
        last = last->next;
    if (last == NULL || last->sealed)
        return;
    if (j->seal_requested || j->stopping ||
        monotonic_seconds() - last->opened >= CHECKPOINT_SECONDS)
        last->sealed = true;
    j->seal_requested = false;
}

/* ---- the standby segment ---- */

/* Deletes an unused standby. No fsync of wal/: a zero-filled segment holds no record, and
 * the replay deletes one that a crash left. */
static void standby_discard(struct queue_journal *j, struct queue_journal_segment *seg)
{
    char name[SEGMENT_NAME_DIGITS + 1];
    segment_name(name, seg->number);
    unlinkat(j->wal_fd, name, 0);
    segment_free(seg);
}

/* A standby is prepared while commits are arriving: the current segment is open. */
static bool standby_wanted_locked(const struct queue_journal *j)
{
    const struct queue_journal_segment *last = j->segments;
    while (last != NULL && last->next != NULL)
        last = last->next;
    return j->standby == NULL && !j->stopping && last != NULL && !last->sealed &&
           monotonic_seconds() >= j->standby_retry;
}

/* As many zeros as the largest segment in use or last retired held, within bounds. */
static uint64_t standby_octets_locked(const struct queue_journal *j)
{
    uint64_t octets = j->standby_octets;
    for (const struct queue_journal_segment *seg = j->segments; seg != NULL; seg = seg->next)
        octets = seg->size > octets ? seg->size : octets;
    octets = octets < STANDBY_MIN ? STANDBY_MIN : octets > STANDBY_MAX ? STANDBY_MAX : octets;
    return (octets + ZERO_CHUNK - 1) / ZERO_CHUNK * ZERO_CHUNK;
}

/* Creates the next segment ahead of need, filled with zeros and synced (mutex held on entry
 * and on return, released around the disk work). Its records then overwrite blocks that
 * exist, inside the file's size: the commit's fdatasync writes them and flushes the disk's
 * cache, and needs no filesystem journal commit (fdatasync(2): metadata "not needed to
 * retrieve the data" is not flushed), so it does not wait for every other file change on the
 * filesystem (tmp/ creations, renames, index entries) the way an append does. */
static void standby_prepare_locked(struct queue_journal *j)
{
    uint64_t number = j->next_number++;
    uint64_t octets = standby_octets_locked(j);
    pthread_mutex_unlock(&j->mutex);
    struct queue_journal_segment *seg = NULL;
    int rc = segment_create(j->wal_fd, number, octets, &seg);
    pthread_mutex_lock(&j->mutex);
    if (rc != 0) {
        /* Commits go on appending to new empty segments; try again in a while. */
        log_warn("queue.journal_standby_failed", " error=\"%s\"", strerror(rc));
        j->standby_retry = monotonic_seconds() + 10;
    } else if (j->next_number != number + 1 || j->stopping) {
        standby_discard(j, seg);   /* a segment opened meanwhile has a higher number */
    } else {
        j->standby = seg;
    }
}

static void *checkpointer_main(void *arg)
{
    struct queue_journal *j = arg;
    pthread_mutex_lock(&j->mutex);
    for (;;) {
        seal_if_due_locked(j);
        struct queue_journal_segment *seg = retirable_locked(j);
        if (seg == NULL && j->stopping && j->segments == NULL)
            break;
        if (seg == NULL && standby_wanted_locked(j)) {
            standby_prepare_locked(j);
            continue;
        }
        if (seg == NULL && j->standby != NULL && j->segments == NULL) {
            standby_discard(j, j->standby);   /* idle: wal/ empty again */
            j->standby = NULL;
        }
        if (seg == NULL) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 200 * 1000 * 1000;
            if (until.tv_nsec >= 1000 * 1000 * 1000) {
                until.tv_sec++;
                until.tv_nsec -= 1000 * 1000 * 1000;
            }
            pthread_cond_timedwait(&j->changed, &j->mutex, &until);
            continue;
        }
        pthread_mutex_unlock(&j->mutex);
        int rc = checkpoint_segment(j, seg);
        if (rc != 0)
            mark_rewrite(j);   /* the checkpointer's alone: outside the mutex */
        pthread_mutex_lock(&j->mutex);
        if (rc != 0) {
            /* The segment stays (replayed at the next start); waiting removals stay blocked
             * rather than risk a resurrection. Try again later. */
            log_error("queue.checkpoint_failed", " segment=%" PRIu64 " error=\"%s\" retry=%s",
                      seg->number, strerror(rc), seg->unlinked ? "sync" : "rewrite");
            seg->rewrite = true;
            j->seal_requested = false;
            pthread_cond_timedwait(&j->changed, &j->mutex, &(struct timespec){
                .tv_sec = time(NULL) + 1});
            if (!j->stopping)
                continue;
        }
        unlink_segment_locked(j, seg);
        j->standby_octets = seg->size;
        segment_free(seg);
        pthread_cond_broadcast(&j->changed);
    }
    pthread_mutex_unlock(&j->mutex);
    return NULL;
}

/* ---- open and close ---- */

static int open_wal_dir(int spool_fd, bool create, int *out)
{
    if (create && mkdirat(spool_fd, QUEUE_JOURNAL_DIR, 0700) == 0 && fsync(spool_fd) != 0)
        return errno;
    *out = openat(spool_fd, QUEUE_JOURNAL_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return *out < 0 ? errno : 0;
}

int queue_journal_open(int spool_fd, int tmp_fd, int msg_fd, struct queue_journal **out)
{
    struct queue_journal *j = calloc(1, sizeof *j);
    *out = NULL;
    if (j == NULL)
        return ENOMEM;
    j->tmp_fd = tmp_fd;
    j->msg_fd = msg_fd;
    j->wal_fd = -1;
    j->next_number = 1;
    pthread_mutex_init(&j->mutex, NULL);
    pthread_cond_init(&j->changed, NULL);
    int rc = open_wal_dir(spool_fd, true, &j->wal_fd);
    if (rc == 0)
        rc = pthread_create(&j->checkpointer, NULL, checkpointer_main, j);
    j->checkpointer_started = rc == 0;
    if (rc != 0) {
        queue_journal_close(j);
        return rc;
    }
    *out = j;
    return 0;
}

void queue_journal_close(struct queue_journal *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->mutex);
    j->stopping = true;
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->mutex);
    if (j->checkpointer_started)
        pthread_join(j->checkpointer, NULL);
    if (j->standby != NULL)
        standby_discard(j, j->standby);
    while (j->segments != NULL) {   /* only when the checkpointer never ran */
        struct queue_journal_segment *seg = j->segments;
        j->segments = seg->next;
        segment_free(seg);
    }
    if (j->wal_fd >= 0)
        close(j->wal_fd);
    pthread_mutex_destroy(&j->mutex);
    pthread_cond_destroy(&j->changed);
    free(j);
}

/* ---- start-up replay ---- */

struct replay_stats {
    unsigned replayed, torn;
    bool rewrite_all;               /* wal/.rewrite: a checkpoint failed, trust no file */
    /* valid files kept in msg/, not yet synced: synced a batch at a time, as a checkpoint */
    char kept[CHECKPOINT_BATCH][QUEUE_ID_MAX];
    size_t kept_count;
};

/* Reads the record header at off: 1 and the id and length, 0 at the clean end of the segment,
 * -1 for a torn or damaged header. */
static int read_record_header(int fd, off_t off, char id[QUEUE_ID_MAX], uint64_t *len,
                              size_t *header_len)
{
    char buf[RECORD_HEADER_MAX + 1];
    ssize_t n = pread(fd, buf, RECORD_HEADER_MAX, off);
    /* A zero octet where a header would start: the zero-filled rest of a standby segment
     * that no record reached (no sync covered a record beyond it). */
    if (n == 0 || (n > 0 && buf[0] == '\0'))
        return 0;
    if (n < 0)
        return -1;
    buf[n] = '\0';
    size_t magic = strlen(QUEUE_JOURNAL_RECORD_MAGIC);
    char *nl = memchr(buf, '\n', (size_t)n);
    if (nl == NULL || strncmp(buf, QUEUE_JOURNAL_RECORD_MAGIC, magic) != 0)
        return -1;
    *nl = '\0';
    char *space = strchr(buf + magic, ' ');
    if (space == NULL || (size_t)(space - (buf + magic)) >= QUEUE_ID_MAX)
        return -1;
    *space = '\0';
    memcpy(id, buf + magic, (size_t)(space - (buf + magic)) + 1);
    if (!queue_id_valid(id) || !queue_fs_parse_number(space + 1, UINT64_MAX, len))
        return -1;
    *header_len = (size_t)(nl - buf) + 1;
    return 1;
}

/* True when fd is a valid message file of id. */
static bool message_valid(int fd, const char *id)
{
    struct queue_format_validated v;
    const char *reason = NULL;
    if (queue_format_validate(fd, id, &v, &reason) != 0)
        return false;
    queue_envelope_clear(&v.env);
    return true;
}

/* msg/<id> exists and is valid: it is queued for a sync (a crash of the process alone leaves
 * it in the page cache only). 0 when kept, ENOENT/EBADMSG when it must be written back, or
 * errno. */
static int keep_existing(int msg_fd, const char *id, struct replay_stats *st)
{
    int fd = queue_fs_open_file(msg_fd, id, O_RDONLY, 0);
    if (fd < 0)
        return errno == ENOENT || errno == EBADMSG ? ENOENT : errno;
    bool valid = message_valid(fd, id);
    close(fd);
    if (!valid)
        return EBADMSG;
    int rc = 0;
    if (st->kept_count == CHECKPOINT_BATCH) {
        rc = sync_message_files(msg_fd, st->kept, st->kept_count);
        st->kept_count = 0;
    }
    snprintf(st->kept[st->kept_count++], QUEUE_ID_MAX, "%s", id);
    return rc;
}

/* Writes the record's octets back as msg/<id>, through tmp/<id>. EBADMSG: the record is
 * incomplete or damaged (the torn tail of the segment). */
static int write_back(int seg_fd, off_t off, uint64_t len, int tmp_fd, int msg_fd,
                      const char *id)
{
    int fd = openat(tmp_fd, id, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    struct stat st;
    int rc = fstat(seg_fd, &st) != 0 ? errno : 0;
    if (rc == 0 && (uint64_t)st.st_size - (uint64_t)off < len)
        rc = EBADMSG;   /* cut short */
    if (rc == 0)
        rc = copy_range(seg_fd, off, fd, 0, len);
    if (rc == 0 && !message_valid(fd, id))
        rc = EBADMSG;
    if (rc == 0 && fsync(fd) != 0)
        rc = errno;
    close(fd);
    if (rc == 0 && renameat(tmp_fd, id, msg_fd, id) != 0)
        rc = errno;
    if (rc != 0)
        unlinkat(tmp_fd, id, 0);
    return rc;
}

/* The checkpoint after a failed one: every record of seg whose msg/<id> still exists is written
 * back over it (a file that is gone was never renamed: its commit failed). */
static int rewrite_segment_messages(struct queue_journal *j,
                                    const struct queue_journal_segment *seg)
{
    char name[SEGMENT_NAME_DIGITS + 1];
    segment_name(name, seg->number);
    int fd = queue_fs_open_file(j->wal_fd, name, O_RDONLY, 0);
    int rc = fd < 0 ? errno : 0;
    unsigned rewritten = 0;
    for (off_t off = 0; rc == 0 && (uint64_t)off < seg->size;) {
        char id[QUEUE_ID_MAX];
        uint64_t len;
        size_t header_len;
        if (read_record_header(fd, off, id, &len, &header_len) != 1) {
            rc = EBADMSG;   /* only complete records lie below seg->size */
            break;
        }
        if (faccessat(j->msg_fd, id, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
            rc = write_back(fd, off + (off_t)header_len, len, j->tmp_fd, j->msg_fd, id);
            rewritten += rc == 0;
        } else if (errno != ENOENT) {
            rc = errno;
        }
        off += (off_t)header_len + (off_t)len;
    }
    if (fd >= 0)
        close(fd);
    log_info("queue.checkpoint_rewrite", " segment=%" PRIu64 " rewritten=%u result=%s",
             seg->number, rewritten, rc == 0 ? "ok" : strerror(rc));
    return rc;
}

/* Replays one segment: every complete record whose message is missing or damaged in msg/ is
 * written back; the first torn record ends it. */
static int replay_segment(int seg_fd, const char *name, int tmp_fd, int msg_fd,
                          struct replay_stats *st)
{
    off_t off = 0;
    for (;;) {
        char id[QUEUE_ID_MAX];
        uint64_t len;
        size_t header_len;
        int h = read_record_header(seg_fd, off, id, &len, &header_len);
        if (h == 0)
            return 0;
        int rc = h < 0 ? EBADMSG : st->rewrite_all ? ENOENT : keep_existing(msg_fd, id, st);
        if (rc == ENOENT || rc == EBADMSG) {
            rc = h < 0 ? EBADMSG
                       : write_back(seg_fd, off + (off_t)header_len, len, tmp_fd, msg_fd, id);
            if (rc == 0)
                st->replayed++;
        }
        if (rc == EBADMSG) {
            /* Never delivered: the sync that would have covered it did not return, so no 250
             * was sent for it (docs/queue.md "Group commit"). */
            log_warn("queue.journal_torn", " segment=%s offset=%jd", name, (intmax_t)off);
            st->torn++;
            return 0;
        }
        if (rc != 0)
            return rc;
        off += (off_t)header_len + (off_t)len;
    }
}

/* fn(fd of each segment in spool_fd/wal, oldest first, arg) until one returns an error. A
 * segment checkpointed meanwhile is skipped; no wal/ is no segment. 0 or errno. */
static int for_each_segment(int spool_fd, int (*fn)(int fd, void *arg), void *arg)
{
    struct queue_fs_names segments = {0};
    int wal_fd = -1;
    int rc = open_wal_dir(spool_fd, false, &wal_fd);
    if (rc == ENOENT)
        return 0;
    if (rc == 0)
        rc = queue_fs_list_dir(wal_fd, ".", accept_segment_name, &segments);
    for (size_t i = 0; rc == 0 && i < segments.count; i++) {
        int fd = queue_fs_open_file(wal_fd, segments.names[i], O_RDONLY, 0);
        if (fd < 0 && errno != ENOENT)
            rc = errno;
        if (fd >= 0) {
            rc = fn(fd, arg);
            close(fd);
        }
    }
    queue_fs_names_free(&segments);
    if (wal_fd >= 0)
        close(wal_fd);
    return rc;
}

/* Adds the id of every complete record of the segment fd to the names arg. */
static int add_record_ids(int fd, void *arg)
{
    char id[QUEUE_ID_MAX];
    uint64_t len;
    size_t header_len;
    int rc = 0;
    for (off_t off = 0; rc == 0 && read_record_header(fd, off, id, &len, &header_len) == 1;
         off += (off_t)header_len + (off_t)len)
        rc = queue_fs_names_add(arg, id);
    return rc;
}

int queue_journal_held_ids(int spool_fd, struct queue_fs_names *out)
{
    memset(out, 0, sizeof *out);
    int rc = for_each_segment(spool_fd, add_record_ids, out);
    if (rc != 0)
        queue_fs_names_free(out);
    queue_fs_names_sort(out);
    return rc;
}

/* Adds the segment fd to the state arg when it holds a record (any octet but a zero where the
 * first record starts); segments come oldest first. */
static int count_segment(int fd, void *arg)
{
    struct queue_journal_state *st = arg;
    char first;
    struct stat sb;
    ssize_t n = pread(fd, &first, 1, 0);
    if (n < 0 || fstat(fd, &sb) != 0)
        return errno;
    if (n == 0 || first == '\0')
        return 0;
    if (st->segments++ == 0)
        st->oldest_change = (double)sb.st_mtim.tv_sec + (double)sb.st_mtim.tv_nsec / 1e9;
    return 0;
}

int queue_journal_read_state(int spool_fd, struct queue_journal_state *out)
{
    memset(out, 0, sizeof *out);
    return for_each_segment(spool_fd, count_segment, out);
}

int queue_journal_replay(int spool_fd, int tmp_fd, int msg_fd, unsigned *replayed,
                         unsigned *torn)
{
    struct replay_stats st = {0};
    struct queue_fs_names names = {0};
    int wal_fd = -1;
    int rc = open_wal_dir(spool_fd, false, &wal_fd);
    if (rc == ENOENT)
        rc = 0;   /* a spool from before the journal */
    else if (rc == 0)
        rc = queue_fs_list_dir(wal_fd, ".", accept_segment_name, &names);
    st.rewrite_all = wal_fd >= 0 && faccessat(wal_fd, REWRITE_MARK, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
    for (size_t i = 0; rc == 0 && i < names.count; i++) {
        int fd = queue_fs_open_file(wal_fd, names.names[i], O_RDONLY, 0);
        rc = fd < 0 ? errno : replay_segment(fd, names.names[i], tmp_fd, msg_fd, &st);
        if (fd >= 0)
            close(fd);
    }
    /* The kept files are synced now (the written-back ones were before their rename); their
     * names in msg/ next, then the segments go. */
    if (rc == 0 && st.kept_count > 0)
        rc = sync_message_files(msg_fd, st.kept, st.kept_count);
    if (rc == 0 && names.count > 0 && fsync(msg_fd) != 0)
        rc = errno;
    for (size_t i = 0; rc == 0 && i < names.count; i++) {
        if (unlinkat(wal_fd, names.names[i], 0) != 0)
            rc = errno;
    }
    if (rc == 0 && names.count > 0 && fsync(wal_fd) != 0)
        rc = errno;
    if (rc == 0 && st.rewrite_all && unlinkat(wal_fd, REWRITE_MARK, 0) == 0 && fsync(wal_fd) != 0)
        rc = errno;
    if (st.rewrite_all)
        log_info("queue.journal_rewrite_all", " result=%s", rc == 0 ? "ok" : strerror(rc));
    queue_fs_names_free(&names);
    if (wal_fd >= 0)
        close(wal_fd);
    *replayed = st.replayed;
    *torn = st.torn;
    return rc;
}
