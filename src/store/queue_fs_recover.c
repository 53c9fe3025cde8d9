/* SPDX-License-Identifier: ISC */
/* Start-up recovery of the filesystem queue (queue_fs_recover.h; docs/queue.md "Start-up
 * recovery"). It reads the spool with few syscalls per message: msg/ and every dom/<domain>/
 * are listed once; each message file is opened, read whole in one pread (up to
 * RECOVER_READ_MAX octets) and validated completely in memory (SHA-256 included), on one
 * thread per CPU; an index entry is created only when the listing lacks it. Quarantines,
 * rebuilt entries and log lines then happen on the calling thread, in msg/ order. */
#include "store/queue_fs_recover.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "store/queue_backend.h"
#include "store/queue_format.h"
#include "store/queue_fs.h"
#include "store/queue_fs_admin.h"
#include "store/queue_fs_spool.h"
#include "store/queue_journal.h"

enum {
    RECOVER_READ_MAX = 256 << 10,   /* larger files are validated in chunks from the fd */
    RECOVER_THREADS_MAX = 8,
    RECOVER_BATCH = 64,             /* messages a check thread claims at a time */
    RECOVER_PARALLEL_MIN = 512,     /* fewer messages are checked on the calling thread */
};

struct recovery_stats {
    size_t messages, tmp_removed, corrupt, unreadable, entries_rebuilt, orphans_removed,
        temps_removed, domain_dirs_removed;
    unsigned replayed, torn;
};

/* One dom/<domain>/ as listed before the messages are checked. */
struct domain_listing {
    const char *name;               /* points into recovery.domains */
    struct queue_fs_names entries;
};

/* The check of one msg/ file, filled by a check thread. */
struct message_check {
    int rc;                         /* 0; EBADMSG: quarantine; else an errno */
    bool fatal;                     /* rc ends the recovery (the file could not be opened) */
    const char *reason;             /* for EBADMSG */
    char **missing;                 /* domains whose listing lacks the message's entry */
    size_t missing_count;
};

struct recovery {
    struct queue *q;
    int tmp_fd, msg_fd, dom_fd;
    struct queue_fs_names messages, domains;   /* msg/ and dom/, sorted */
    struct domain_listing *listings;           /* the valid domain directories, sorted */
    size_t listing_count;
    struct message_check *checks;              /* one per messages.names[i] */
    atomic_size_t next_check;                  /* the next message a thread claims */
    struct recovery_stats st;
};

/* tmp/ holds only uncommitted messages: nobody was told 250 for them. */
static int recover_tmp(struct recovery *r)
{
    struct queue_fs_names names;
    int rc = queue_fs_list_dir(r->tmp_fd, ".", NULL, &names);
    for (size_t i = 0; rc == 0 && i < names.count; i++) {
        if (unlinkat(r->tmp_fd, names.names[i], 0) == 0)
            r->st.tmp_removed++;
        else
            rc = errno;
    }
    queue_fs_names_free(&names);
    return rc;
}

/* A directory name in dom/ that the queue itself would have made. */
static bool domain_dir_name(const char *name)
{
    char normalized[QUEUE_DOMAIN_MAX];
    return queue_domain_normalize(name, normalized) == 0 && strcmp(normalized, name) == 0;
}

/* Lists dom/ and every domain directory in it once: the entry checks and the orphan sweep
 * look names up in memory instead of asking the filesystem per message. */
static int list_domains(struct recovery *r)
{
    int rc = queue_fs_list_dir(r->dom_fd, ".", NULL, &r->domains);
    if (rc == 0 && r->domains.count > 0 &&
        (r->listings = calloc(r->domains.count, sizeof *r->listings)) == NULL)
        rc = ENOMEM;
    for (size_t i = 0; rc == 0 && i < r->domains.count; i++) {
        const char *name = r->domains.names[i];
        if (strcmp(name, QUEUE_FS_EMPTY_ENTRY) == 0)
            continue;   /* the daemon's empty entries link to it */
        if (!domain_dir_name(name)) {
            log_warn("queue.unexpected_file", " file=dom/%s action=kept", name);
            continue;
        }
        struct domain_listing *l = &r->listings[r->listing_count];
        rc = queue_fs_list_dir(r->dom_fd, name, NULL, &l->entries);
        if (rc == ENOTDIR) {
            rc = 0;   /* a plain file named like a domain: left alone, as before */
            continue;
        }
        l->name = name;
        r->listing_count += rc == 0;
    }
    return rc;
}

static int compare_listing(const void *key, const void *elem)
{
    return strcmp(key, ((const struct domain_listing *)elem)->name);
}

static const struct domain_listing *find_listing(const struct recovery *r, const char *domain)
{
    if (r->listing_count == 0)
        return NULL;
    return bsearch(domain, r->listings, r->listing_count, sizeof *r->listings,
                   compare_listing);
}

/* ---- checking one message (on a check thread) ---- */

struct missing_finder {
    const struct recovery *r;
    const char *id;
    struct message_check *check;
};

static int note_missing_entry(const char *domain, void *arg)
{
    struct missing_finder *f = arg;
    const struct domain_listing *l = find_listing(f->r, domain);
    if (l != NULL && l->entries.count > 0 && queue_fs_names_contains(&l->entries, f->id))
        return 0;
    struct message_check *c = f->check;
    char **grown = realloc(c->missing, (c->missing_count + 1) * sizeof *grown);
    if (grown == NULL)
        return ENOMEM;
    c->missing = grown;
    if ((grown[c->missing_count] = strdup(domain)) == NULL)
        return ENOMEM;
    c->missing_count++;
    return 0;
}

/* Opens msg/<name> without following a symlink or blocking on a FIFO (docs/queue.md "Spool
 * layout"): EBADMSG for anything but a regular file. */
static int open_message(int msg_fd, const char *name, int *fd, struct stat *st)
{
    *fd = openat(msg_fd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (*fd < 0)
        return errno == ELOOP || errno == ENXIO ? EBADMSG : errno;
    if (fstat(*fd, st) != 0)
        return errno;
    return S_ISREG(st->st_mode) ? 0 : EBADMSG;
}

/* The complete validation of docs/queue.md "Message file": a small file from one read into
 * buffer, a large one in chunks. */
static int validate_message(int fd, const struct stat *st, const char *id, char *buffer,
                            struct queue_format_validated *v, const char **reason)
{
    if (st->st_size > RECOVER_READ_MAX || buffer == NULL)
        return queue_format_validate(fd, id, v, reason);
    size_t len = (size_t)st->st_size;
    int rc = queue_format_pread(fd, buffer, len, 0);
    return rc != 0 ? rc : queue_format_validate_buffer(buffer, len, id, v, reason);
}

static void check_message(const struct recovery *r, size_t index, char *buffer)
{
    const char *name = r->messages.names[index];
    struct message_check *c = &r->checks[index];
    struct queue_format_validated v;
    struct stat st;
    int fd = -1;
    c->reason = "unknown";
    if (!queue_id_valid(name)) {
        c->rc = EBADMSG;
        c->reason = "not a queue id";
        return;
    }
    c->rc = open_message(r->msg_fd, name, &fd, &st);
    c->fatal = c->rc != 0 && c->rc != EBADMSG;
    if (c->rc == EBADMSG)
        c->reason = "not a regular file";   /* a FIFO, socket, directory or symlink */
    if (c->rc == 0)
        c->rc = validate_message(fd, &st, name, buffer, &v, &c->reason);
    if (fd >= 0)
        close(fd);
    if (c->rc != 0)
        return;
    struct missing_finder finder = {r, name, c};
    if (queue_envelope_for_each_domain(&v.env, note_missing_entry, &finder) != 0) {
        c->rc = ENOMEM;
        c->fatal = true;
    }
    queue_envelope_clear(&v.env);
}

static void *check_thread(void *arg)
{
    struct recovery *r = arg;
    char *buffer = malloc(RECOVER_READ_MAX);   /* NULL: every file is read in chunks */
    for (;;) {
        size_t first = atomic_fetch_add(&r->next_check, RECOVER_BATCH);
        if (first >= r->messages.count)
            break;
        size_t end = r->messages.count - first < RECOVER_BATCH ? r->messages.count
                                                               : first + RECOVER_BATCH;
        for (size_t i = first; i < end; i++)
            check_message(r, i, buffer);
    }
    free(buffer);
    return NULL;
}

/* Checks every message, on one thread per CPU (the calling thread is one of them). The
 * checks only read files and the listings; everything that changes the spool comes after. */
static int check_messages(struct recovery *r)
{
    if (r->messages.count == 0)
        return 0;
    r->checks = calloc(r->messages.count, sizeof *r->checks);
    if (r->checks == NULL)
        return ENOMEM;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t helpers = r->messages.count < RECOVER_PARALLEL_MIN || cpus < 2 ? 0
                     : (size_t)(cpus < RECOVER_THREADS_MAX ? cpus : RECOVER_THREADS_MAX) - 1;
    pthread_t threads[RECOVER_THREADS_MAX];
    size_t started = 0;
    atomic_init(&r->next_check, 0);
    while (started < helpers && pthread_create(&threads[started], NULL, check_thread, r) == 0)
        started++;   /* a thread that cannot start leaves its share to the others */
    check_thread(r);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    return 0;
}

/* ---- acting on the checks (calling thread) ---- */

/* A valid message is committed by its rename (or the journal) alone, so a crash may have lost
 * its index entries, created without fsync: an empty entry ("all pending") is made again. */
static int rebuild_entries(struct recovery *r, const char *id, const struct message_check *c)
{
    for (size_t i = 0; i < c->missing_count; i++) {
        bool created = false;
        int rc = queue_fs_create_entry(r->q, c->missing[i], id, &created);
        if (rc != 0)
            return rc;
        if (created) {
            r->st.entries_rebuilt++;
            log_info("queue.entry_rebuilt", " id=%s domain=%s", id, c->missing[i]);
        }
    }
    return 0;
}

static int apply_check(struct recovery *r, size_t index)
{
    const char *name = r->messages.names[index];
    const struct message_check *c = &r->checks[index];
    if (c->rc == EBADMSG) {
        r->st.corrupt++;
        return queue_fs_quarantine(r->q, name, c->reason);
    }
    if (c->fatal)
        return c->rc;
    if (c->rc != 0) {
        /* A read error is not a validation failure: the file may be fine (docs/queue.md). */
        r->st.unreadable++;
        log_error("queue.unreadable", " id=%s error=\"%s\" action=kept", name, strerror(c->rc));
        return 0;
    }
    r->st.messages++;
    return rebuild_entries(r, name, c);
}

static int compare_name(const void *key, const void *elem)
{
    return strcmp(key, *(char *const *)elem);
}

/* Deletes leftover temp files and entries whose message is not in msg/ (orphans of an
 * interrupted removal; live is msg/ after the quarantines, sorted), then the directory if it
 * is empty. An entry already gone (moved by a quarantine) is no error. */
static int sweep_domain(struct recovery *r, const struct domain_listing *l, char **live,
                        size_t live_count)
{
    int dirfd = openat(r->dom_fd, l->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOTDIR || errno == ENOENT ? 0 : errno;
    size_t kept = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < l->entries.count; i++) {
        const char *n = l->entries.names[i];
        bool temp = n[0] == '.';
        bool orphan = !temp && queue_id_valid(n) &&
                      (live_count == 0 ||
                       bsearch(n, live, live_count, sizeof *live, compare_name) == NULL);
        if (!temp && !orphan)
            kept++;
        else if (unlinkat(dirfd, n, 0) != 0)
            rc = errno == ENOENT ? 0 : errno;
        else if (temp)
            r->st.temps_removed++;
        else
            r->st.orphans_removed++;
    }
    close(dirfd);
    if (rc == 0 && kept == 0 && unlinkat(r->dom_fd, l->name, AT_REMOVEDIR) == 0)
        r->st.domain_dirs_removed++;
    return rc;
}

/* Quarantines, rebuilds entries, then sweeps every domain against what stayed in msg/. */
static int apply_checks(struct recovery *r)
{
    char **live = r->messages.count > 0 ? malloc(r->messages.count * sizeof *live) : NULL;
    size_t live_count = 0;
    int rc = r->messages.count > 0 && live == NULL ? ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < r->messages.count; i++) {
        rc = apply_check(r, i);
        if (r->checks[i].rc != EBADMSG)
            live[live_count++] = r->messages.names[i];   /* stays sorted */
    }
    for (size_t i = 0; rc == 0 && i < r->listing_count; i++)
        rc = sweep_domain(r, &r->listings[i], live, live_count);
    free(live);
    return rc;
}

static void recovery_free(struct recovery *r)
{
    for (size_t i = 0; r->checks != NULL && i < r->messages.count; i++) {
        for (size_t j = 0; j < r->checks[i].missing_count; j++)
            free(r->checks[i].missing[j]);
        free(r->checks[i].missing);
    }
    free(r->checks);
    for (size_t i = 0; i < r->listing_count; i++)
        queue_fs_names_free(&r->listings[i].entries);
    free(r->listings);
    queue_fs_names_free(&r->messages);
    queue_fs_names_free(&r->domains);
}

int queue_fs_recover(struct queue *q)
{
    bool read_only;
    struct recovery r = {.q = q};
    r.tmp_fd = queue_fs_dir_fd(q, QUEUE_FS_SUB_TMP, &read_only);
    r.msg_fd = queue_fs_dir_fd(q, QUEUE_FS_SUB_MSG, &read_only);
    r.dom_fd = queue_fs_dir_fd(q, QUEUE_FS_SUB_DOM, &read_only);
    /* The journal first: it may write back messages whose file in msg/ did not survive. */
    int rc = queue_journal_replay(queue_fs_dir_fd(q, QUEUE_FS_SUB_COUNT, &read_only),
                                  r.tmp_fd, r.msg_fd, &r.st.replayed, &r.st.torn);
    if (rc == 0)
        rc = recover_tmp(&r);
    if (rc == 0)
        rc = queue_fs_list_dir(r.msg_fd, ".", NULL, &r.messages);
    if (rc == 0)
        rc = list_domains(&r);
    if (rc == 0)
        rc = check_messages(&r);
    if (rc == 0)
        rc = apply_checks(&r);
    recovery_free(&r);
    if (rc != 0)
        return rc;
    log_info("queue.recovered",
             " messages=%zu tmp_removed=%zu corrupt=%zu unreadable=%zu entries_rebuilt=%zu"
             " orphans_removed=%zu temps_removed=%zu journal_replayed=%u journal_torn=%u",
             r.st.messages, r.st.tmp_removed, r.st.corrupt, r.st.unreadable,
             r.st.entries_rebuilt, r.st.orphans_removed, r.st.temps_removed, r.st.replayed,
             r.st.torn);
    return 0;
}
