/* SPDX-License-Identifier: ISC */
/* The filesystem queue backend (docs/queue.md has the table of on-disk states).
 *
 * Durability in one paragraph: a message is written to tmp/<id> without fsync (on the event
 * loop), then on a worker thread: trailer appended, fsync(file), rename(tmp/<id>, msg/<id>)
 * -- THE commit point -- and fsync(msg/). Index entries dom/<domain>/<id> are created after
 * that without fsync: start-up recovery rebuilds any that a crash lost from msg/. Every later
 * change of an index entry is a temp file + fsync + rename + fsync(dir), except the last: the
 * outcomes that leave every recipient delivered are recorded by the removal alone. Removal unlinks
 * msg/<id> first and fsyncs msg/, so a crash leaves at worst orphan entries, which recovery
 * deletes. All paths are resolved relative to directory fds opened once at start. */
#include "store/queue_fs.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "lib/log.h"
#include "platform/group_sync.h"
#include "platform/worker_pool.h"
#include "store/queue_backend.h"
#include "store/queue_fs_admin.h"
#include "store/queue_fs_async.h"
#include "store/queue_fs_batch.h"
#include "store/queue_fs_empty.h"
#include "store/queue_fs_entry.h"
#include "store/queue_fs_recover.h"
#include "store/queue_format.h"
#include "store/queue_journal.h"
#include "store/queue_fs_internal.h"
#include "store/queue_fs_spare.h"
#include "store/queue_fs_spool.h"

static const struct queue_ops fs_ops;

static struct fs_queue *fs_queue_of(struct queue *q)
{
    return (struct fs_queue *)q;
}

/* ---- small syscall helpers: 0 or errno ---- */

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_fd(int fd)
{
    return fsync(fd) == 0 ? 0 : errno;
}

static int close_checked(int fd)
{
    /* close() can report a deferred write error (NFS, some FUSE); EINTR leaves fd closed. */
    return close(fd) == 0 || errno == EINTR ? 0 : errno;
}

static int open_dir_at(int dirfd, const char *name)
{
    return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static bool accept_id(const char *name)
{
    return queue_id_valid(name);
}

/* ---- domain directories and index entries ---- */

static void entry_path(char *out, size_t outlen, const char *domain, const char *id)
{
    snprintf(out, outlen, "%s/%s", domain, id);
}

/* dom/<domain>/ exists afterwards. A newly created one is made durable with fsync(dom/), though
 * recovery would recreate it anyway from msg/. */
static int ensure_domain_dir(struct fs_queue *fq, const char *domain)
{
    if (mkdirat(fq->dom_fd, domain, 0700) == 0)
        return fsync_fd(fq->dom_fd);
    return errno == EEXIST ? 0 : errno;
}

/* An empty entry: a link to dom/.empty for the daemon (queue_fs_empty.c), else (a tool, or
 * no link possible) a file of its own, as before. */
static int make_entry_file(struct fs_queue *fq, const char *path)
{
    if (fq->empty != NULL) {
        int rc = queue_fs_empty_link(fq->empty, path);
        if (rc == 0 || rc == EEXIST || rc == ENOENT)
            return rc;
    }
    int fd = openat(fq->dom_fd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    return close_checked(fd);
}

/* Creates the empty entry dom/<domain>/<id> (empty = every recipient of that domain pending,
 * no attempts). An existing entry is kept: it may already hold outcomes. No fsync: see top.
 * The domain's directory is made only when the entry cannot be (its first message). */
static int create_empty_entry(struct fs_queue *fq, const char *domain, const char *id,
                              bool *created)
{
    char path[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 2];
    entry_path(path, sizeof path, domain, id);
    int rc = make_entry_file(fq, path);
    if (rc == ENOENT && (rc = ensure_domain_dir(fq, domain)) == 0)
        rc = make_entry_file(fq, path);
    if (rc == EEXIST)
        return 0;
    if (rc == 0 && created != NULL)
        *created = true;
    return rc;
}

/* Reads dom/<domain>/<id>: 0, ENOENT (no entry), EBADMSG (unparsable) or an I/O errno. */
static int read_entry(struct fs_queue *fq, const char *domain, const char *id,
                      struct queue_fs_entry *out)
{
    char path[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 2];
    struct stat st;
    memset(out, 0, sizeof *out);
    entry_path(path, sizeof path, domain, id);
    int fd = queue_fs_open_file(fq->dom_fd, path, O_RDONLY, 0);
    if (fd < 0)
        return errno;
    if (fstat(fd, &st) != 0) {
        int rc = errno;
        close(fd);
        return rc;
    }
    if (st.st_size > QUEUE_FS_HEADER_MAX) {
        close(fd);
        return EBADMSG;
    }
    size_t len = (size_t)st.st_size;
    char *text = malloc(len + 1);
    int rc = text == NULL ? ENOMEM : queue_format_pread(fd, text, len, 0);
    close(fd);
    if (rc == 0) {
        text[len] = '\0';
        rc = memchr(text, '\0', len) != NULL ? EBADMSG : queue_fs_entry_parse(text, len, out);
    }
    free(text);
    return rc;
}

static bool entry_has_pending(const struct queue_fs_entry *e)
{
    if (e->count == 0)
        return true;   /* the empty entry: nothing attempted yet */
    for (size_t i = 0; i < e->count; i++) {
        if (e->lines[i].state == QUEUE_RCPT_PENDING)
            return true;
    }
    return false;
}

/* Replaces dom/<domain>/<id> atomically and durably: write .<id>.tmp, fsync it, rename it over
 * the entry, fsync the directory (so the rename itself survives a crash). A crash leaves either
 * the old or the new entry, plus perhaps the temp file, which recovery deletes. */
static int write_entry(struct fs_queue *fq, const struct queue_envelope *env, const char *domain)
{
    char tmp[QUEUE_ID_MAX + 8];
    struct queue_text text = {0};
    int rc = ensure_domain_dir(fq, domain);
    if (rc == 0)
        rc = queue_fs_entry_format(&text, env, domain);
    int dirfd = rc == 0 ? open_dir_at(fq->dom_fd, domain) : -1;
    if (rc == 0 && dirfd < 0)
        rc = errno;
    snprintf(tmp, sizeof tmp, ".%s.tmp", env->id);
    int fd = -1;
    if (rc == 0 && (fd = queue_fs_open_file(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0)
        rc = errno;
    if (rc == 0)
        rc = write_all(fd, text.data, text.len);
    if (rc == 0)
        rc = fsync_fd(fd);
    if (fd >= 0) {
        int close_rc = close_checked(fd);
        rc = rc != 0 ? rc : close_rc;
    }
    if (rc == 0 && renameat(dirfd, tmp, dirfd, env->id) != 0)
        rc = errno;
    if (rc == 0)
        rc = fsync_fd(dirfd);
    if (rc != 0 && fd >= 0)
        unlinkat(dirfd, tmp, 0);
    if (dirfd >= 0)
        close(dirfd);
    queue_text_free(&text);
    return rc;
}

/* ---- message files: reading and validation ---- */

/* Reads only the envelope of msg/<id> (no checksum: for updates of a message that was validated
 * when it was opened for delivery). 0, ENOENT, EBADMSG or errno. */
static int read_envelope(struct fs_queue *fq, const char *id, struct queue_envelope *env)
{
    memset(env, 0, sizeof *env);
    if (!queue_id_valid(id))
        return ENOENT;
    int fd = queue_fs_open_file(fq->msg_fd, id, O_RDONLY, 0);
    if (fd < 0)
        return errno;
    int rc = queue_format_read_envelope(fd, env);
    close(fd);
    return rc;
}

/* Calls fn for each distinct recipient domain of env, in envelope order. */
static int for_each_domain(const struct queue_envelope *env,
                           int (*fn)(const char *domain, void *arg), void *arg)
{
    return queue_envelope_for_each_domain(env, fn, arg);
}

/* ---- quarantine ---- */

/* Moves dom/<d>/<id> of every domain to corrupt/<id>.<d>.state: the per-recipient history is
 * kept for a human; the message itself is no longer deliverable. */
static void quarantine_entries(struct fs_queue *fq, const char *id)
{
    struct queue_fs_names domains;
    if (queue_fs_list_dir(fq->dom_fd, ".", NULL, &domains) != 0)
        return;
    for (size_t i = 0; i < domains.count; i++) {
        char from[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 2], to[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 16];
        if (strlen(domains.names[i]) >= QUEUE_DOMAIN_MAX)
            continue;
        entry_path(from, sizeof from, domains.names[i], id);
        snprintf(to, sizeof to, "%s.%s.state", id, domains.names[i]);
        renameat(fq->dom_fd, from, fq->corrupt_fd, to);
    }
    queue_fs_names_free(&domains);
}

/* Picks a free name in corrupt/ for name: name, name.1, name.2 ... */
static void corrupt_target_name(struct fs_queue *fq, const char *name, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", name);
    for (unsigned n = 1; faccessat(fq->corrupt_fd, out, F_OK, 0) == 0 && n < 1000; n++)
        snprintf(out, outlen, "%s.%u", name, n);
}

/* Moves msg/<name> to corrupt/ durably (fsync of both directories) and logs it. A corrupt
 * message is never delivered and never silently dropped: a human looks at corrupt/. */
static int quarantine_message(struct fs_queue *fq, const char *name, const char *reason)
{
    char target[NAME_MAX + 8], quoted[600];
    corrupt_target_name(fq, name, target, sizeof target);
    log_quote(quoted, sizeof quoted, name, strlen(name));
    if (renameat(fq->msg_fd, name, fq->corrupt_fd, target) != 0) {
        int rc = errno;
        log_error("queue.corrupt", " file=msg/%s reason=\"%s\" moved=no error=\"%s\"", quoted,
                  reason, strerror(rc));
        return rc;
    }
    int rc = fsync_fd(fq->corrupt_fd);
    if (rc == 0)
        rc = fsync_fd(fq->msg_fd);
    if (queue_id_valid(name))
        quarantine_entries(fq, name);
    log_error("queue.corrupt", " file=msg/%s reason=\"%s\" moved=corrupt/%s", quoted, reason,
              target);
    return rc;
}

/* ---- per-recipient state ---- */

struct state_loader {
    struct fs_queue *fq;
    struct queue_envelope *env;
};

/* A damaged entry is moved to corrupt/ and replaced by an empty one: its recipients count as
 * pending again, which can cause a duplicate but never a loss. */
static int repair_entry(struct fs_queue *fq, const char *domain, const char *id)
{
    char from[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 2], name[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 16];
    char target[sizeof name + 8];
    entry_path(from, sizeof from, domain, id);
    snprintf(name, sizeof name, "%s.%s.state", id, domain);
    corrupt_target_name(fq, name, target, sizeof target);
    log_error("queue.corrupt_entry", " id=%s domain=%s moved=corrupt/%s effect=rcpts_pending", id,
              domain, target);
    if (renameat(fq->dom_fd, from, fq->corrupt_fd, target) != 0)
        return errno;
    return create_empty_entry(fq, domain, id, NULL);
}

static int load_domain_state(const char *domain, void *arg)
{
    struct state_loader *l = arg;
    struct queue_fs_entry e;
    int rc = read_entry(l->fq, domain, l->env->id, &e);
    if (rc == 0) {
        rc = queue_fs_entry_apply(l->env, domain, &e);
        queue_fs_entry_free(&e);
    }
    if (rc == ENOENT)
        return 0;   /* not yet (re)built: all of the domain's recipients pending */
    if (rc == EBADMSG && l->fq->read_only) {
        /* odmrctl shows the recipients as pending and leaves the repair to odmrd. */
        log_warn("queue.corrupt_entry", " id=%s domain=%s moved=no (read-only)", l->env->id,
                 domain);
        return 0;
    }
    if (rc == EBADMSG)
        return repair_entry(l->fq, domain, l->env->id);
    return rc;
}

static int load_states(struct fs_queue *fq, struct queue_envelope *env)
{
    struct state_loader loader = {fq, env};
    return for_each_domain(env, load_domain_state, &loader);
}

/* ---- writers ---- */

static void writer_free(struct fs_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    EVP_MD_CTX_free(w->digest);
    free(w->buffer);
    free(w->domains);
    free(w);
}

/* Writes the buffer out (hashing it first). Errors are sticky in w->error. */
static int writer_flush(struct fs_writer *w)
{
    if (w->error == 0 && w->buffered > 0) {
        if (EVP_DigestUpdate(w->digest, w->buffer, w->buffered) != 1)
            w->error = EIO;
        else
            w->error = write_all(w->fd, w->buffer, w->buffered);
        w->file_size += w->buffered;
        w->spilled = true;
    }
    w->buffered = 0;
    return w->error;
}

static int writer_append(struct fs_writer *w, const void *data, size_t len)
{
    const char *p = data;
    while (w->error == 0 && len > 0) {
        size_t room = QUEUE_FS_WRITE_BUFFER - w->buffered;
        size_t n = len < room ? len : room;
        memcpy(w->buffer + w->buffered, p, n);
        w->buffered += n;
        p += n;
        len -= n;
        if (w->buffered == QUEUE_FS_WRITE_BUFFER)
            writer_flush(w);
    }
    return w->error;
}

static int add_writer_domain(struct fs_writer *w, const char *domain)
{
    for (size_t i = 0; i < w->domain_count; i++) {
        if (strcmp(w->domains[i], domain) == 0)
            return 0;
    }
    memcpy(w->domains[w->domain_count++], domain, QUEUE_DOMAIN_MAX);
    return 0;
}

/* Checks the caller's envelope and makes a shallow copy whose recipient domains point into
 * normalized[] (lower-case, validated). Also fills w->domains with the distinct domains. */
static int prepare_envelope(struct fs_writer *w, const struct queue_envelope *env,
                            struct queue_envelope *copy, char (*normalized)[QUEUE_DOMAIN_MAX])
{
    if (env->sender == NULL || env->rcpt_count == 0 || env->rcpts == NULL)
        return EINVAL;
    *copy = *env;
    copy->rcpts = calloc(env->rcpt_count, sizeof *copy->rcpts);
    if (copy->rcpts == NULL)
        return ENOMEM;
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const struct queue_rcpt *r = &env->rcpts[i];
        if (r->address == NULL || r->domain == NULL ||
            queue_domain_normalize(r->domain, normalized[i]) != 0)
            return EINVAL;
        copy->rcpts[i] = *r;
        copy->rcpts[i].domain = normalized[i];
        add_writer_domain(w, normalized[i]);
    }
    return 0;
}

static struct fs_writer *writer_new(struct fs_queue *fq, size_t rcpt_count)
{
    struct fs_writer *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->base.queue = &fq->base;
    w->fq = fq;
    w->fd = -1;
    w->buffer = malloc(QUEUE_FS_WRITE_BUFFER);
    w->domains = calloc(rcpt_count, sizeof *w->domains);
    w->digest = EVP_MD_CTX_new();
    if (w->buffer == NULL || w->domains == NULL || w->digest == NULL ||
        EVP_DigestInit_ex(w->digest, EVP_sha256(), NULL) != 1) {
        writer_free(w);
        errno = ENOMEM;
        return NULL;
    }
    return w;
}

/* Takes a spare file (unnamed) or creates tmp/<id> exclusively, retrying with a fresh id in
 * the (unlikely) case of a clash. */
static int create_tmp_file(struct fs_writer *w, struct queue_envelope *copy)
{
    for (int tries = 0; tries < 5; tries++) {
        struct timeval now;
        gettimeofday(&now, NULL);
        int rc = queue_id_generate(w->id, &now);
        if (rc != 0)
            return rc;
        w->fd = queue_fs_spare_take(w->fq->spares);
        w->unnamed = w->fd >= 0;
        if (w->fd < 0)
            w->fd = openat(w->fq->tmp_fd, w->id, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (w->fd >= 0) {
            memcpy(copy->id, w->id, sizeof copy->id);
            copy->arrival = now.tv_sec;   /* the same clock reading as the id */
            return 0;
        }
        if (errno != EEXIST)
            return errno;
    }
    return EEXIST;
}

static int write_header(struct fs_writer *w, const struct queue_envelope *copy)
{
    struct queue_text text = {0};
    int rc = queue_text_append(&text, QUEUE_FS_MAGIC_LINE, strlen(QUEUE_FS_MAGIC_LINE));
    if (rc == 0)
        rc = queue_envelope_format(&text, copy);
    if (rc == 0)
        rc = queue_text_append(&text, "\n", 1);
    if (rc == 0)
        rc = writer_append(w, text.data, text.len);
    queue_text_free(&text);
    return rc;
}

static int fs_put(struct queue *q, struct queue_envelope *env, struct queue_writer **out)
{
    struct fs_queue *fq = fs_queue_of(q);
    struct queue_envelope copy = {0};
    char (*normalized)[QUEUE_DOMAIN_MAX] = NULL;
    *out = NULL;
    if (fq->read_only)
        return EROFS;
    struct fs_writer *w = writer_new(fq, env->rcpt_count > 0 ? env->rcpt_count : 1);
    int rc = w == NULL ? ENOMEM : 0;
    if (rc == 0)
        rc = (normalized = calloc(env->rcpt_count + 1, sizeof *normalized)) == NULL ? ENOMEM : 0;
    if (rc == 0)
        rc = prepare_envelope(w, env, &copy, normalized);
    if (rc == 0)
        rc = create_tmp_file(w, &copy);
    if (rc == 0)
        rc = write_header(w, &copy);
    free(copy.rcpts);
    free(normalized);
    if (rc != 0) {
        if (w != NULL && w->fd >= 0 && !w->unnamed)
            unlinkat(fq->tmp_fd, w->id, 0);
        if (w != NULL)
            writer_free(w);
        log_debug("queue.put_failed", " error=\"%s\"", strerror(rc));   /* caller logs */
        return rc;
    }
    memcpy(env->id, copy.id, sizeof env->id);
    env->arrival = copy.arrival;
    *out = &w->base;
    return 0;
}

static int fs_write(struct queue_writer *qw, const void *data, size_t len)
{
    struct fs_writer *w = (struct fs_writer *)qw;
    if (writer_append(w, data, len) != 0)
        return w->error;
    w->body_len += len;
    return 0;
}

static void fs_abort(struct queue_writer *qw)
{
    struct fs_writer *w = (struct fs_writer *)qw;
    /* No fsync: a tmp/ file that survives a crash is deleted by recovery. */
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
        if (!w->unnamed)
            unlinkat(w->fq->tmp_fd, w->id, 0);
    }
    writer_free(w);
}

/* ---- commit ---- */

/* Ends the file with its trailer (docs/queue.md "Message file") and writes out what is
 * buffered. The buffer keeps its octets: a file that never spilled (most messages are
 * small) is then all there, and the journal's record is written from it. */
static int write_trailer(struct fs_writer *w)
{
    unsigned char sha256[32];
    char trailer[QUEUE_FS_TRAILER_LEN + 1];
    if (QUEUE_FS_WRITE_BUFFER - w->buffered < QUEUE_FS_TRAILER_LEN && writer_flush(w) != 0)
        return w->error;
    if (w->error != 0)
        return w->error;
    if (EVP_DigestUpdate(w->digest, w->buffer, w->buffered) != 1 ||
        EVP_DigestFinal_ex(w->digest, sha256, NULL) != 1)
        return w->error = EIO;
    int n = snprintf(trailer, sizeof trailer, "%s%020" PRIu64 " ", QUEUE_FS_TRAILER_PREFIX,
                     w->body_len);
    for (size_t i = 0; i < 32; i++)
        n += snprintf(trailer + n, sizeof trailer - (size_t)n, "%02x", sha256[i]);
    trailer[n++] = '\n';
    memcpy(w->buffer + w->buffered, trailer, (size_t)n);
    w->buffered += (size_t)n;
    w->error = write_all(w->fd, w->buffer, w->buffered);
    w->file_size += w->buffered;
    return w->error;
}

static void remove_index_entries(struct fs_queue *fq, const char *id, char (*domains)[QUEUE_DOMAIN_MAX],
                                 size_t count)
{
    char path[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 2];
    for (size_t i = 0; i < count; i++) {
        entry_path(path, sizeof path, domains[i], id);
        unlinkat(fq->dom_fd, path, 0);
    }
}

/* Undoes a commit whose reply has not been sent: the client will see a 4xx and retry. The
 * entries go first so no entry ever points at a missing message for long. */
static void undo_commit(struct fs_writer *w)
{
    remove_index_entries(w->fq, w->id, w->domains, w->domain_count);
    unlinkat(w->fq->msg_fd, w->id, 0);
    fsync(w->fq->msg_fd);
}

static int create_entries(struct fs_writer *w)
{
    int rc = 0;
    /* Index entries need no fsync: recovery rebuilds lost ones from msg/ (docs/queue.md). */
    for (size_t i = 0; rc == 0 && i < w->domain_count; i++)
        rc = create_empty_entry(w->fq, w->domains[i], w->id, NULL);
    return rc;
}

/* The commit through the journal (the daemon), in three steps so that a batch of commits
 * shares one sync: append the record; sync (queue_journal_sync); then the file goes into msg/
 * and the entries are made, none of it synced: the journal holds the message until the
 * checkpointer has made the file durable (docs/queue.md "Group commit"). */
int queue_fs_journal_append(struct fs_writer *w)
{
    int rc = w->error != 0 ? w->error : write_trailer(w);
    if (rc == 0)
        rc = queue_journal_append(w->fq->journal, w->id, w->fd, w->file_size,
                                  w->spilled ? NULL : w->buffer, &w->seg);
    return rc;
}

/* rc: the append's or the sync's result. THE commit point was the sync of the record; the
 * rename only makes the file visible. */
int queue_fs_journal_finish(struct fs_writer *w, int rc)
{
    struct fs_queue *fq = w->fq;
    /* A spare file gets its name while open (the link names the open file). */
    if (rc == 0 && w->unnamed)
        rc = queue_fs_spare_link(w->fd, fq->msg_fd, w->id);
    int close_rc = close_checked(w->fd);
    w->fd = -1;
    rc = rc != 0 ? rc : close_rc;
    if (rc == 0 && !w->unnamed && renameat(fq->tmp_fd, w->id, fq->msg_fd, w->id) != 0)
        rc = errno;
    if (rc == 0)
        rc = create_entries(w);
    if (rc != 0) {
        if (!w->unnamed)
            unlinkat(fq->tmp_fd, w->id, 0);
        undo_commit(w);
    }
    if (w->seg != NULL)
        queue_journal_commit_done(fq->journal, w->seg);
    return rc;
}

static int commit_journaled(struct fs_writer *w)
{
    int rc = queue_fs_journal_append(w);
    if (rc == 0)
        rc = queue_journal_sync(w->seg);
    return queue_fs_journal_finish(w, rc);
}

/* A commit by the message's own file (docs/queue.md "Large messages under load", and every
 * commit of a tool): trailer, F1 (the file's octets durable), THE commit point (the rename
 * into msg/, or the link of a spare file, which has no name before), F2 (fsync(msg/), shared
 * by the commits and removals waiting for it: group_sync), then the entries. The octets are
 * written to disk once, where the journal writes them twice (record, then checkpoint). */
static int commit_own_file(struct fs_writer *w)
{
    struct fs_queue *fq = w->fq;
    int rc = w->error != 0 ? w->error : write_trailer(w);
    if (rc == 0)
        rc = fsync_fd(w->fd);
    bool in_msg = false;   /* msg/<id> exists: a failure from here on undoes the commit */
    if (rc == 0 && w->unnamed) {
        rc = queue_fs_spare_link(w->fd, fq->msg_fd, w->id);
        in_msg = rc == 0;
    }
    int close_rc = close_checked(w->fd);
    w->fd = -1;
    rc = rc != 0 ? rc : close_rc;
    if (rc == 0 && !w->unnamed) {
        rc = renameat(fq->tmp_fd, w->id, fq->msg_fd, w->id) == 0 ? 0 : errno;
        in_msg = rc == 0;
    }
    if (rc == 0)
        rc = group_sync(fq->msg_sync);
    if (rc == 0)
        rc = create_entries(w);
    if (rc != 0 && !w->unnamed && !in_msg)
        unlinkat(fq->tmp_fd, w->id, 0);
    if (rc != 0 && in_msg)
        undo_commit(w);
    return rc;
}

/* The durable part of a commit; runs on a worker thread (or inline for commit_sync). Returns 0
 * when the message is committed and indexed, else errno with nothing of the message left. */
static int commit_durable(struct fs_writer *w)
{
    if (w->fq->journal != NULL && !w->own_file)
        return commit_journaled(w);
    return commit_own_file(w);
}

static void log_commit(const struct fs_writer *w, int status)
{
    if (status == 0)
        log_debug("queue.commit", " id=%s size=%" PRIu64 " domains=%zu path=%s", w->id,
                  w->body_len, w->domain_count,
                  w->fq->journal != NULL && !w->own_file ? "journal" : "file");
    else   /* the caller reports it: intake logs storage errors once per burst */
        log_debug("queue.commit_failed", " id=%s error=\"%s\"", w->id, strerror(status));
}

int queue_fs_commit_sync(struct queue_writer *qw)
{
    struct fs_writer *w = (struct fs_writer *)qw;
    int status = commit_durable(w);
    log_commit(w, status);
    writer_free(w);
    return status;
}

/* Queues job for the workers. false when there is no loop or no worker (a tool) or no memory
 * for its event: the caller then runs the job inline. */
static bool job_submit(struct fs_queue *fq, struct worker_job *job)
{
    return fq->workers != NULL && worker_pool_submit(fq->workers, job);
}

static struct fs_writer *writer_of_job(struct worker_job *job)
{
    return (struct fs_writer *)((char *)job - offsetof(struct fs_writer, job));
}

static void commit_job_run(struct worker_job *job)
{
    struct fs_writer *w = writer_of_job(job);
    w->status = commit_durable(w);
}

void queue_fs_commit_report(struct worker_job *job)
{
    struct fs_writer *w = writer_of_job(job);
    w->fq->commits_in_flight--;
    log_commit(w, w->status);
    w->cb(w->status, w->id, w->cb_arg);
    writer_free(w);
}

void queue_fs_commit_drop(struct worker_job *job)
{
    struct fs_writer *w = writer_of_job(job);
    w->fq->commits_in_flight--;
    log_warn("queue.commit_unreported", " id=%s status=%d", w->id, w->status);
    writer_free(w);
}

static void fs_commit(struct queue_writer *qw, queue_commit_cb cb, void *arg)
{
    struct fs_writer *w = (struct fs_writer *)qw;
    w->cb = cb;
    w->cb_arg = arg;
    w->job.run = commit_job_run;
    w->job.report = queue_fs_commit_report;
    w->job.drop = queue_fs_commit_drop;
    struct fs_queue *fq = w->fq;
    /* docs/queue.md "Large messages under load": a message that outgrew the writer's buffer
     * commits by its own file while other commits are under way (the disk's bandwidth is what
     * they share); alone, through the journal (one sync instead of two in a row). */
    w->own_file = fq->journal != NULL && w->spilled && fq->commits_in_flight > 0;
    fq->commits_in_flight++;
    if (w->own_file || !queue_fs_batch_add(fq, w))   /* else with the loop turn's others */
        queue_fs_commit_submit_one(w);
}

void queue_fs_commit_submit_one(struct fs_writer *w)
{
    if (!job_submit(w->fq, &w->job)) {
        /* No loop (a tool) or no memory for the event: commit inline. */
        char id[QUEUE_ID_MAX];
        queue_commit_cb cb = w->cb;
        void *arg = w->cb_arg;
        memcpy(id, w->id, sizeof id);
        w->fq->commits_in_flight--;
        int status = queue_fs_commit_sync(&w->base);
        cb(status, id, arg);
    }
}

/* ---- listing ---- */

struct domain_listing {
    struct fs_queue *fq;
    const char *domain;
};

static bool entry_pending(struct fs_queue *fq, const char *domain, const char *id)
{
    struct queue_fs_entry e;
    int rc = read_entry(fq, domain, id, &e);
    if (rc == ENOENT)
        return false;   /* removed meanwhile */
    bool pending = rc != 0 || entry_has_pending(&e);   /* damaged: let the opener repair it */
    if (rc == 0)
        queue_fs_entry_free(&e);
    return pending;
}

static int fs_list_domain(struct queue *q, const char *domain, queue_id_fn fn, void *arg)
{
    struct fs_queue *fq = fs_queue_of(q);
    char name[QUEUE_DOMAIN_MAX];
    struct queue_fs_names ids;
    if (queue_domain_normalize(domain, name) != 0)
        return EINVAL;
    /* Only this domain's directory is read: ATRN never scans the whole queue. */
    int rc = queue_fs_list_dir(fq->dom_fd, name, accept_id, &ids);
    if (rc != 0)
        return rc == ENOENT ? 0 : rc;
    for (size_t i = 0; i < ids.count; i++) {
        if (entry_pending(fq, name, ids.names[i]) && fn(ids.names[i], arg) != 0)
            break;
    }
    queue_fs_names_free(&ids);
    return 0;
}

static void call_for_names(const struct queue_fs_names *names, queue_id_fn fn, void *arg)
{
    for (size_t i = 0; i < names->count; i++) {
        if (fn(names->names[i], arg) != 0)
            break;
    }
}

static int fs_list_all(struct queue *q, queue_id_fn fn, void *arg)
{
    struct fs_queue *fq = fs_queue_of(q);
    struct queue_fs_names ids;
    int rc = queue_fs_list_dir(fq->msg_fd, ".", accept_id, &ids);
    if (rc != 0)
        return rc;
    call_for_names(&ids, fn, arg);
    queue_fs_names_free(&ids);
    return 0;
}

static bool accept_domain(const char *name)
{
    char normalized[QUEUE_DOMAIN_MAX];
    return queue_domain_normalize(name, normalized) == 0 && strcmp(normalized, name) == 0;
}

static bool domain_dir_has_entries(struct fs_queue *fq, const char *domain)
{
    struct queue_fs_names ids;
    if (queue_fs_list_dir(fq->dom_fd, domain, accept_id, &ids) != 0)
        return false;
    bool any = ids.count > 0;
    queue_fs_names_free(&ids);
    return any;
}

static int fs_list_domains(struct queue *q, queue_id_fn fn, void *arg)
{
    struct fs_queue *fq = fs_queue_of(q);
    struct queue_fs_names domains, nonempty = {0};
    int rc = queue_fs_list_dir(fq->dom_fd, ".", accept_domain, &domains);
    for (size_t i = 0; rc == 0 && i < domains.count; i++) {
        if (domain_dir_has_entries(fq, domains.names[i]))
            rc = queue_fs_names_add(&nonempty, domains.names[i]);
    }
    queue_fs_names_free(&domains);
    if (rc == 0)
        call_for_names(&nonempty, fn, arg);
    queue_fs_names_free(&nonempty);
    return rc;
}

static int fs_expire_scan(struct queue *q, time_t max_age, queue_id_fn fn, void *arg)
{
    struct fs_queue *fq = fs_queue_of(q);
    struct queue_fs_names ids;
    int rc = queue_fs_list_dir(fq->msg_fd, ".", accept_id, &ids);
    if (rc != 0)
        return rc;
    time_t now = time(NULL);
    for (size_t i = 0; i < ids.count; i++) {
        /* Ids carry their arrival time, so the scan opens no file. */
        int64_t usec = queue_id_time_usec(ids.names[i]);
        if (usec < 0 || now - (time_t)(usec / 1000000) < max_age)
            continue;
        if (fn(ids.names[i], arg) != 0)
            break;
    }
    queue_fs_names_free(&ids);
    return 0;
}

/* ---- opening messages, outcomes, removal ---- */

/* A message that fails validation is quarantined; odmrctl's read-only queue only reports it
 * and leaves the quarantine to odmrd. EBADMSG either way. */
static int reject_message(struct fs_queue *fq, const char *id, const char *reason)
{
    if (fq->read_only)
        log_warn("queue.corrupt", " file=msg/%s reason=\"%s\" moved=no (read-only)", id, reason);
    else
        quarantine_message(fq, id, reason);
    return EBADMSG;
}

int queue_fs_open_message(struct queue *q, const char *id, bool stamped,
                          struct queue_message **out)
{
    struct fs_queue *fq = fs_queue_of(q);
    struct queue_format_validated v;
    const char *reason = "unknown";
    *out = NULL;
    if (!queue_id_valid(id))
        return ENOENT;
    int fd = queue_fs_open_file(fq->msg_fd, id, O_RDONLY, 0);
    if (fd < 0)
        return errno == EBADMSG ? reject_message(fq, id, "not a regular file") : errno;
    int rc = queue_format_validate(fd, id, &v, &reason);
    if (rc == EBADMSG) {
        close(fd);
        return reject_message(fq, id, reason);
    }
    struct queue_message *m = rc == 0 ? queue_fs_message_new(q, &v.env, stamped) : NULL;
    if (rc == 0 && m == NULL)
        rc = ENOMEM;
    if (rc == 0)
        rc = load_states(fq, &v.env);
    if (rc == 0 && lseek(fd, v.body_offset, SEEK_SET) < 0)
        rc = errno;
    if (rc != 0) {
        if (rc != ENOMEM && rc != ENOENT)
            log_error("queue.open_failed", " id=%s error=\"%s\"", id, strerror(rc));
        queue_envelope_clear(&v.env);
        free(m);
        close(fd);
        return rc;
    }
    m->env = v.env;
    m->fd = fd;
    m->body_offset = v.body_offset;
    *out = m;
    return 0;
}

static int fs_message_open(struct queue *q, const char *id, struct queue_message **out)
{
    return queue_fs_open_message(q, id, false, out);
}

/* Applies one outcome to the loaded envelope (no I/O). 0, EINVAL, EALREADY or ENOMEM. */
static int apply_outcome(struct queue_envelope *env, const struct queue_outcome *o, time_t now)
{
    if ((unsigned)o->state > QUEUE_OUTCOME_WARNED || o->rcpt_index >= env->rcpt_count)
        return EINVAL;
    struct queue_rcpt *r = &env->rcpts[o->rcpt_index];
    if (o->state == QUEUE_OUTCOME_WARNED)   /* the delay warning's mark: no attempt counted */
        return r->state == QUEUE_RCPT_PENDING ? (r->warned = true, 0) : EALREADY;
    bool notified = r->state == QUEUE_RCPT_FAILED && o->state == QUEUE_RCPT_BOUNCED;
    if (r->state != QUEUE_RCPT_PENDING && !notified)
        return EALREADY;   /* final; a FAILED one may only become BOUNCED */
    if (o->reply != NULL) {
        char *copy = strdup(o->reply);
        if (copy == NULL)
            return ENOMEM;
        free(r->last_reply);
        r->last_reply = copy;
    }
    r->state = o->state;
    r->attempts++;
    r->last_attempt = now;
    return 0;
}

/* Rewrites the entry of every domain that one of the outcomes touched, once each. */
static int write_touched_entries(struct fs_queue *fq, const struct queue_envelope *env,
                                 const bool *touched)
{
    for (size_t i = 0; i < env->rcpt_count; i++) {
        if (!touched[i])
            continue;
        bool written = false;
        for (size_t j = 0; j < i && !written; j++)
            written = touched[j] && strcmp(env->rcpts[j].domain, env->rcpts[i].domain) == 0;
        int rc = written ? 0 : write_entry(fq, env, env->rcpts[i].domain);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void log_outcome(const char *id, const struct queue_outcome *o, int rc, unsigned attempts)
{
    if (rc == 0)
        log_info("queue.outcome", " id=%s rcpt=%zu state=%s attempts=%u", id, o->rcpt_index,
                 queue_rcpt_state_name(o->state), attempts);
    else
        log_error("queue.outcome_failed", " id=%s rcpt=%zu error=\"%s\"", id, o->rcpt_index,
                  strerror(rc));
}

static int remove_message(struct fs_queue *fq, const char *id, const struct queue_envelope *env);

/* Every recipient delivered, or failed with its notice committed: nothing left to do. */
static bool all_delivered(const struct queue_envelope *env)
{
    for (size_t i = 0; i < env->rcpt_count; i++)
        if (env->rcpts[i].state != QUEUE_RCPT_DONE && env->rcpts[i].state != QUEUE_RCPT_BOUNCED)
            return false;
    return true;
}

/* Reads the envelope and states of id for a rewrite, with a "touched" flag per recipient
 * (all false). 0, EROFS (nothing read) or an errno (env is then safe to clear). Also used by
 * queue_fs_admin.c (requeue). */
int queue_fs_load_for_update(struct queue *q, const char *id, struct queue_envelope *env,
                             bool **touched)
{
    struct fs_queue *fq = fs_queue_of(q);
    if (fq->read_only)
        return EROFS;
    int rc = read_envelope(fq, id, env);
    if (rc == 0)
        rc = load_states(fq, env);
    *touched = rc == 0 ? calloc(env->rcpt_count, sizeof **touched) : NULL;
    return rc == 0 && *touched == NULL ? ENOMEM : rc;
}

/* Records n outcomes of one message, loaded in env with its states (touched: all false), with
 * one rewrite (F4, F5) per touched domain entry. An outcome that cannot apply (EALREADY,
 * EINVAL) is skipped and its error returned; the others are still recorded. With
 * remove_if_finished, a message whose every recipient is now DONE is removed instead, and its
 * entries are not rewritten first: the removal is the record (a crash before it leaves the old
 * states, so a duplicate delivery at worst, as a crash just before the rewrite always could).
 * *removed says whether it was. Returns 0 or the first error. */
static int record_loaded(struct fs_queue *fq, struct queue_envelope *env, bool *touched,
                         const struct queue_outcome *o, size_t n, bool remove_if_finished,
                         bool *removed)
{
    const char *id = env->id;
    int rc = 0, first = 0;
    time_t now = time(NULL);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int one = apply_outcome(env, &o[i], now);
        if (one == 0)
            touched[o[i].rcpt_index] = true;
        else if (one == ENOMEM)
            rc = ENOMEM;
        first = first != 0 ? first : one;
    }
    bool finish = rc == 0 && remove_if_finished && (first == 0 || first == EALREADY) &&
                  all_delivered(env);
    if (rc == 0)
        rc = finish ? remove_message(fq, id, env) : write_touched_entries(fq, env, touched);
    for (size_t i = 0; i < n; i++) {
        bool ok = rc == 0 && o[i].rcpt_index < env->rcpt_count && touched[o[i].rcpt_index];
        log_outcome(id, &o[i], ok ? 0 : (rc != 0 ? rc : first),
                    ok ? env->rcpts[o[i].rcpt_index].attempts : 0);
    }
    if (rc == 0 && finish) {
        *removed = true;
        log_info("queue.removed", " id=%s reason=delivered", id);
    }
    return rc != 0 ? rc : first;
}

/* The record of queue_record_outcomes_async(): envelope and states read from disk first. */
int queue_fs_record_by_id(struct queue *q, const char *id, const struct queue_outcome *o,
                          size_t n, bool remove_if_finished, bool *removed)
{
    struct queue_envelope env;
    bool *touched = NULL;
    *removed = false;
    int rc = queue_fs_load_for_update(q, id, &env, &touched);
    if (rc == 0)
        rc = record_loaded(fs_queue_of(q), &env, touched, o, n, remove_if_finished, removed);
    else if (rc != EROFS)
        queue_fs_log_failed(id, o, n, rc);
    free(touched);
    if (rc != EROFS)
        queue_envelope_clear(&env);
    return rc;
}

/* For queue_fs_async.c: the record of an opened message, and what it needs. */
int queue_fs_record_loaded(struct queue *q, struct queue_envelope *env, bool *touched,
                           const struct queue_outcome *o, size_t n, bool remove_if_finished,
                           bool *removed)
{
    return record_loaded(fs_queue_of(q), env, touched, o, n, remove_if_finished, removed);
}

void queue_fs_log_failed(const char *id, const struct queue_outcome *o, size_t n, int rc)
{
    for (size_t i = 0; i < n; i++)
        log_outcome(id, &o[i], rc, 0);
}

int queue_fs_load_domain(struct queue *q, struct queue_envelope *env, const char *domain)
{
    struct state_loader loader = {fs_queue_of(q), env};
    return load_domain_state(domain, &loader);
}

int queue_fs_for_each_domain(const struct queue_envelope *env,
                             int (*fn)(const char *domain, void *arg), void *arg)
{
    return for_each_domain(env, fn, arg);
}

int queue_fs_record_outcome(struct queue *q, const char *id, size_t rcpt_index,
                             enum queue_rcpt_state state, const char *reply)
{
    struct queue_outcome o = {rcpt_index, state, reply};
    bool removed;
    return queue_fs_record_by_id(q, id, &o, 1, false, &removed);
}

static int unlink_entry_of(const char *domain, void *arg)
{
    void **a = arg;
    struct fs_queue *fq = a[0];
    char path[QUEUE_DOMAIN_MAX + QUEUE_ID_MAX + 2];
    entry_path(path, sizeof path, domain, (const char *)a[1]);
    if (unlinkat(fq->dom_fd, path, 0) != 0 && errno != ENOENT)
        log_warn("queue.entry_unlink_failed", " entry=dom/%s error=\"%s\"", path, strerror(errno));
    return 0;
}

enum { JOURNAL_WAIT_MS = 5000, JOURNAL_POLL_MS = 100 };

/* Reads the ids of wal/'s records again (a tool's view of odmrd's journal). */
static int read_journal_held(struct fs_queue *fq)
{
    if (fq->journal_held == NULL && (fq->journal_held = calloc(1, sizeof *fq->journal_held)) == NULL)
        return ENOMEM;
    queue_fs_names_free(fq->journal_held);
    return queue_journal_held_ids(fq->spool_fd, fq->journal_held);
}

/* The ids are read once per process and again only while one of them is asked for: a message
 * selected for removal was in msg/ before that, so its record, if any, was appended before the
 * first read (msg/<id> appears only after its record's sync). */
int queue_fs_wait_out_of_journal(struct queue *q, const char *id)
{
    struct fs_queue *fq = fs_queue_of(q);
    if (fq->journal != NULL) {
        queue_journal_wait_retired(fq->journal, id);
        return 0;
    }
    int rc = fq->journal_held != NULL ? 0 : read_journal_held(fq);
    for (int waited = 0; rc == 0 && queue_fs_names_contains(fq->journal_held, id);
         waited += JOURNAL_POLL_MS) {
        if (waited >= JOURNAL_WAIT_MS)
            return EAGAIN;
        usleep(JOURNAL_POLL_MS * 1000);
        rc = read_journal_held(fq);
    }
    return rc;
}

int queue_fs_journal_state(struct queue *q, struct queue_journal_state *out)
{
    return queue_journal_read_state(fs_queue_of(q)->spool_fd, out);
}

/* Removal order: msg/<id> first, made durable with fsync(msg/), then the index entries. A crash
 * in between leaves orphan entries, which recovery deletes; never an entry-less message. */
static int remove_message(struct fs_queue *fq, const char *id, const struct queue_envelope *env)
{
    if (fq->read_only)
        return EROFS;
    /* A message still in an unretired journal segment would come back at a replay. */
    int held = queue_fs_wait_out_of_journal(&fq->base, id);
    if (held != 0)
        return held;
    if (unlinkat(fq->msg_fd, id, 0) != 0)
        return errno;
    int rc = group_sync(fq->msg_sync);
    void *arg[2] = {fq, (void *)id};
    if (env != NULL) {
        for_each_domain(env, unlink_entry_of, arg);
    } else {
        struct queue_fs_names domains;
        if (queue_fs_list_dir(fq->dom_fd, ".", accept_domain, &domains) == 0) {
            for (size_t i = 0; i < domains.count; i++)
                unlink_entry_of(domains.names[i], arg);
            queue_fs_names_free(&domains);
        }
    }
    return rc;
}

static int fs_remove_if_finished(struct queue *q, const char *id, bool *removed)
{
    struct fs_queue *fq = fs_queue_of(q);
    struct queue_envelope env;
    int rc = read_envelope(fq, id, &env);
    if (rc == 0)
        rc = load_states(fq, &env);
    bool finished = rc == 0 && all_delivered(&env);
    if (rc == 0 && finished)
        rc = remove_message(fq, id, &env);
    if (rc == 0 && finished)
        log_info("queue.removed", " id=%s reason=delivered", id);
    queue_envelope_clear(&env);
    *removed = rc == 0 && finished;
    return rc;
}

static int fs_remove(struct queue *q, const char *id)
{
    struct fs_queue *fq = fs_queue_of(q);
    struct queue_envelope env;
    if (!queue_id_valid(id))
        return ENOENT;
    int read_rc = read_envelope(fq, id, &env);
    if (read_rc == ENOENT)
        return ENOENT;
    /* Without a readable envelope the entries are found by looking in every domain. */
    int rc = remove_message(fq, id, read_rc == 0 ? &env : NULL);
    if (read_rc == 0)
        queue_envelope_clear(&env);
    if (rc == 0)
        log_info("queue.removed", " id=%s reason=admin", id);
    return rc;
}

/* For queue_fs_admin.c (requeue): rewrites the entries of the touched recipients. */
int queue_fs_write_touched(struct queue *q, const struct queue_envelope *env, const bool *touched)
{
    return write_touched_entries(fs_queue_of(q), env, touched);
}

/* ---- asynchronous outcomes (the jobs: queue_fs_async.c) ---- */

/* Openings run on threads of their own: queued behind the outcome records (each waiting for
 * its fsync) on the commit workers, they held the push to the pace of the records. Two: the
 * SHA-256 checks of two batches in parallel. */
enum { READER_THREADS = 2 };

bool queue_fs_submit(struct queue *q, struct worker_job *job, bool reading)
{
    struct fs_queue *fq = fs_queue_of(q);
    if (!reading || fq->workers == NULL)
        return job_submit(fq, job);
    if (fq->readers == NULL)
        fq->readers = worker_pool_new(fq->evbase, READER_THREADS);
    return fq->readers != NULL ? worker_pool_submit(fq->readers, job) : job_submit(fq, job);
}

/* ---- leases ---- */

static struct fs_lease *find_lease(struct fs_queue *fq, const char *domain)
{
    for (size_t i = 0; i < fq->lease_count; i++) {
        if (strcmp(fq->leases[i].domain, domain) == 0)
            return &fq->leases[i];
    }
    return NULL;
}

static int fs_lease_domain(struct queue *q, const char *domain)
{
    struct fs_queue *fq = fs_queue_of(q);
    char name[QUEUE_DOMAIN_MAX];
    if (queue_domain_normalize(domain, name) != 0)
        return EINVAL;
    /* flock() on a second open file description would conflict too; the table answers
     * without touching the file and keeps one fd per leased domain. */
    if (find_lease(fq, name) != NULL)
        return EBUSY;
    struct fs_lease *grown = realloc(fq->leases, (fq->lease_count + 1) * sizeof *grown);
    if (grown == NULL)
        return ENOMEM;
    fq->leases = grown;
    int fd = fq->read_only ? -1 : queue_fs_open_file(fq->lock_fd, name, O_RDWR | O_CREAT, 0600);
    if (fd < 0)
        return fq->read_only ? EROFS : errno;
    /* The kernel drops the lock when the process dies: a crash leaves no stale lease. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int rc = errno == EWOULDBLOCK ? EBUSY : errno;
        close(fd);
        return rc;
    }
    struct fs_lease *l = &fq->leases[fq->lease_count++];
    memcpy(l->domain, name, sizeof l->domain);
    l->fd = fd;
    return 0;
}

static void fs_release_domain(struct queue *q, const char *domain)
{
    struct fs_queue *fq = fs_queue_of(q);
    char name[QUEUE_DOMAIN_MAX];
    if (queue_domain_normalize(domain, name) != 0)
        return;
    struct fs_lease *l = find_lease(fq, name);
    if (l == NULL)
        return;
    close(l->fd);   /* closing the only descriptor releases the flock */
    *l = fq->leases[--fq->lease_count];
}

/* ---- start-up recovery ---- */

/* For queue_fs_recover.c, which runs the recovery itself: the quarantine and the entry
 * creation of this file (queue_fs_recover.h). */
int queue_fs_quarantine(struct queue *q, const char *name, const char *reason)
{
    return quarantine_message(fs_queue_of(q), name, reason);
}

int queue_fs_create_entry(struct queue *q, const char *domain, const char *id, bool *created)
{
    return create_empty_entry(fs_queue_of(q), domain, id, created);
}

/* For queue_fs_admin.c (holds, usage): a directory of the spool; QUEUE_FS_SUB_COUNT names
 * the spool directory itself. */
int queue_fs_dir_fd(struct queue *q, enum queue_fs_subdir sub, bool *read_only)
{
    struct fs_queue *fq = fs_queue_of(q);
    int fds[QUEUE_FS_SUB_COUNT + 1] = {fq->tmp_fd, fq->msg_fd, fq->dom_fd, fq->corrupt_fd,
                                       fq->lock_fd, fq->spool_fd};
    *read_only = fq->read_only;
    return fds[sub];
}

/* ---- open and close ---- */

static int open_spool(struct fs_queue *fq, bool create, const char **missing)
{
    int sub[QUEUE_FS_SUB_COUNT] = {-1, -1, -1, -1, -1};
    int rc = queue_fs_spool_open(fq->spool, create, &fq->spool_fd, sub, missing);
    fq->tmp_fd = sub[QUEUE_FS_SUB_TMP];
    fq->msg_fd = sub[QUEUE_FS_SUB_MSG];
    fq->dom_fd = sub[QUEUE_FS_SUB_DOM];
    fq->corrupt_fd = sub[QUEUE_FS_SUB_CORRUPT];
    fq->lock_fd = sub[QUEUE_FS_SUB_LOCK];
    if (rc == 0 && (fq->msg_sync = group_sync_new(fq->msg_fd, false)) == NULL)
        rc = ENOMEM;
    return rc;
}

/* The daemon owns the spool exclusively: recovery deletes tmp/ files, which would destroy the
 * messages another running daemon is receiving. */
static int lock_spool(struct fs_queue *fq)
{
    fq->spool_lock_fd = queue_fs_open_file(fq->lock_fd, QUEUE_FS_SPOOL_LOCK, O_RDWR | O_CREAT,
                                           0600);
    if (fq->spool_lock_fd < 0)
        return errno;
    if (flock(fq->spool_lock_fd, LOCK_EX | LOCK_NB) != 0)
        return errno == EWOULDBLOCK ? EBUSY : errno;
    return 0;
}

static void fs_close(struct queue *q)
{
    struct fs_queue *fq = fs_queue_of(q);
    queue_fs_batch_drop_unsubmitted(fq);
    worker_pool_free(fq->workers);
    queue_fs_spares_free(fq->spares);   /* after the workers: a queued refill was dropped */
    worker_pool_free(fq->readers);
    queue_journal_close(fq->journal);   /* after the workers: no commit is running */
    queue_fs_empty_close(fq->empty);
    group_sync_free(fq->msg_sync);
    for (size_t i = 0; i < fq->lease_count; i++)
        close(fq->leases[i].fd);
    int fds[] = {fq->spool_lock_fd, fq->tmp_fd, fq->msg_fd, fq->dom_fd, fq->corrupt_fd,
                 fq->lock_fd, fq->spool_fd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
    }
    if (fq->journal_held != NULL)
        queue_fs_names_free(fq->journal_held);
    free(fq->journal_held);
    free(fq->leases);
    free(fq->spool);
    free(fq);
}

static struct fs_queue *fs_queue_new(const char *spool, struct event_base *base)
{
    struct fs_queue *fq = calloc(1, sizeof *fq);
    if (fq == NULL)
        return NULL;
    fq->base.ops = &fs_ops;
    fq->evbase = base;
    fq->spool_fd = fq->tmp_fd = fq->msg_fd = fq->dom_fd = fq->corrupt_fd = fq->lock_fd = -1;
    fq->spool_lock_fd = -1;
    fq->spool = strdup(spool);
    if (fq->spool == NULL) {
        fs_close(&fq->base);
        return NULL;
    }
    return fq;
}

/* Runs what the daemon does on top of opening the spool: the lock, recovery, the workers. */
static int start_daemon_queue(struct fs_queue *fq, unsigned worker_count, const char **step)
{
    *step = "spool is in use by another odmrd (lock/.spool)";
    int rc = lock_spool(fq);
    if (rc == 0)
        *step = "recovery failed";
    if (rc == 0)
        rc = queue_fs_recover(&fq->base);
    /* Without dom/.empty, empty entries are files of their own: slower, nothing else. */
    if (rc == 0 && !fq->read_only)
        fq->empty = queue_fs_empty_open(fq->dom_fd);
    if (rc == 0)
        *step = "cannot open the commit journal";
    if (rc == 0)
        rc = queue_journal_open(fq->spool_fd, fq->tmp_fd, fq->msg_fd, &fq->journal);
    if (rc == 0)
        *step = "cannot start commit workers";
    if (rc == 0 && (fq->workers = worker_pool_new(fq->evbase, worker_count)) == NULL)
        rc = errno;
    if (rc == 0 && !fq->read_only)
        fq->spares = queue_fs_spares_new(fq->tmp_fd, fq->workers);
    return rc;
}

static struct queue *open_fs(const char *spool, struct event_base *base, unsigned worker_count,
                             bool create, bool read_only, char *err, size_t errlen)
{
    struct fs_queue *fq = fs_queue_new(spool, base);
    if (fq == NULL) {
        snprintf(err, errlen, "out of memory");
        errno = ENOMEM;
        return NULL;
    }
    fq->read_only = read_only;
    const char *step = "cannot open the spool", *missing = "";
    int rc = open_spool(fq, create, &missing);
    /* Only the daemon (with an event loop) owns the spool and recovers it; tools such as
     * odmrctl open it beside a running daemon and must not delete its tmp/ files. */
    if (rc == 0 && base != NULL)
        rc = start_daemon_queue(fq, worker_count, &step);
    if (rc == ENOENT && missing[0] != '\0')
        snprintf(err, errlen, "%s: not an odmrd spool: %s/ is missing (odmrd creates it at its "
                 "first start)", spool, missing);
    else if (rc != 0)
        snprintf(err, errlen, "%s: %s: %s", spool, step, strerror(rc));
    if (rc != 0) {
        fs_close(&fq->base);
        errno = rc;
        return NULL;
    }
    log_info("queue.opened", " spool=%s workers=%u recovered=%s", spool, worker_pool_size(fq->workers),
             base != NULL ? "yes" : "no");
    return &fq->base;
}

struct queue *queue_open_fs(const char *spool, struct event_base *base, unsigned worker_count,
                            char *err, size_t errlen)
{
    return open_fs(spool, base, worker_count, true, false, err, errlen);
}

struct queue *queue_open_fs_existing(const char *spool, bool read_only, char *err, size_t errlen)
{
    return open_fs(spool, NULL, 0, false, read_only, err, errlen);
}

static const struct queue_ops fs_ops = {
    .name = "fs",
    .close = fs_close,
    .put = fs_put,
    .write = fs_write,
    .abort = fs_abort,
    .commit = fs_commit,
    .list_domain = fs_list_domain,
    .list_all = fs_list_all,
    .list_domains = fs_list_domains,
    .message_open = fs_message_open,
    .messages_open_async = queue_fs_messages_open_async,
    .record_outcomes_async = queue_fs_record_outcomes_async,
    .record_message_outcomes_async = queue_fs_record_message_outcomes_async,
    .remove_if_finished = fs_remove_if_finished,
    .remove = fs_remove,
    .lease_domain = fs_lease_domain,
    .release_domain = fs_release_domain,
    .expire_scan = fs_expire_scan,
    .hold = queue_fs_hold,
    .is_held = queue_fs_is_held,
    .requeue = queue_fs_requeue,
    .domain_usage = queue_fs_domain_usage,
};
