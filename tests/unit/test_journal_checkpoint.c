/* SPDX-License-Identifier: ISC */
/* A failed checkpoint of the commit journal (docs/queue.md "A failed checkpoint"): this
 * program's own fdatasync() (it takes the place of libc's for the whole program) fails the
 * first sync of a message file in msg/ with EIO, as a disk's write error would. The retry must
 * not trust a second sync of the same files: it writes every message back from the journal's
 * records (new files renamed over the old ones), byte for byte. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "store/queue.h"
#include "store/queue_fs.h"

#define TMP_SPOOL_TEMPLATE "/tmp/odmr-checkpoint-XXXXXX"
#include "tmp_spool.h"

enum { MESSAGES = 12 };

/* A failure this program's fdatasync() or fsync() makes, armed by a test: the next `left`
 * calls on a file whose path contains `path_part` (or ends with it: `at_end`) fail with EIO;
 * with `after_unlink`, only a call that follows the unlink of a segment. */
struct injected_failure {
    const char *path_part;
    bool at_end, after_unlink;
    atomic_int left, made;
};

static struct injected_failure message_sync = {.path_part = "/msg/"};
static struct injected_failure wal_dir_sync = {.path_part = "/wal", .at_end = true,
                                               .after_unlink = true};
static atomic_bool segment_unlinked;   /* since the last sync that looked */

static bool path_matches(int fd, const struct injected_failure *f)
{
    char link[64], target[512];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return false;
    target[n] = '\0';
    size_t part = strlen(f->path_part);
    if (f->at_end)
        return (size_t)n >= part && strcmp(target + n - part, f->path_part) == 0;
    return strstr(target, f->path_part) != NULL;
}

static bool take_failure(struct injected_failure *f, int fd)
{
    if (atomic_load(&f->left) <= 0 || !path_matches(fd, f))
        return false;
    if (f->after_unlink && !atomic_exchange(&segment_unlinked, false))
        return false;
    if (atomic_fetch_sub(&f->left, 1) <= 0)
        return false;
    atomic_fetch_add(&f->made, 1);
    errno = EIO;
    return true;
}

int fdatasync(int fd);
int fdatasync(int fd)
{
    static int (*real_fdatasync)(int);
    if (real_fdatasync == NULL)
        *(void **)&real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    return take_failure(&message_sync, fd) ? -1 : real_fdatasync(fd);
}

int fsync(int fd);
int fsync(int fd)
{
    static int (*real_fsync)(int);
    if (real_fsync == NULL)
        *(void **)&real_fsync = dlsym(RTLD_NEXT, "fsync");
    return take_failure(&wal_dir_sync, fd) ? -1 : real_fsync(fd);
}

int unlinkat(int dirfd, const char *name, int flags);
int unlinkat(int dirfd, const char *name, int flags)
{
    static int (*real_unlinkat)(int, const char *, int);
    if (real_unlinkat == NULL)
        *(void **)&real_unlinkat = dlsym(RTLD_NEXT, "unlinkat");
    int rc = real_unlinkat(dirfd, name, flags);
    if (rc == 0 && strlen(name) == 20 && strspn(name, "0123456789") == 20)
        atomic_store(&segment_unlinked, true);
    return rc;
}

static struct queue *open_daemon_queue(struct event_base *base)
{
    char err[256];
    struct queue *q = queue_open_fs(spool, base, 2, err, sizeof err);
    if (q == NULL)
        fail_msg("queue_open_fs: %s", err);
    return q;
}

static void store_message(struct queue *q, unsigned n, char id[QUEUE_ID_MAX])
{
    struct queue_rcpt rcpt = {.address = "bob@a.example", .domain = "a.example"};
    struct queue_envelope env = {.sender = "alice@sender.example", .helo = "c.sender.example",
                                 .client_addr = "192.0.2.7", .protocol = "ESMTP",
                                 .rcpts = &rcpt, .rcpt_count = 1};
    struct queue_writer *w;
    char body[200];
    int len = snprintf(body, sizeof body, "Subject: message %u\r\n\r\nbody of %u\r\n", n, n);
    assert_int_equal(queue_put(q, &env, &w), 0);
    assert_int_equal(queue_write(w, body, (size_t)len), 0);
    assert_int_equal(queue_fs_commit_sync(w), 0);
    snprintf(id, QUEUE_ID_MAX, "%s", env.id);
}

struct stored {
    char id[QUEUE_ID_MAX];
    int fd;                         /* msg/<id> as it was first written */
    char octets[4096];
    ssize_t len;
};

/* Opens msg/<id> and reads it whole; the file stays open in s->fd. */
static void read_stored(struct stored *s)
{
    char path[512];
    snprintf(path, sizeof path, "%s/msg/%s", spool, s->id);
    s->fd = open(path, O_RDONLY);
    assert_true(s->fd >= 0);
    s->len = read(s->fd, s->octets, sizeof s->octets);
    assert_true(s->len > 0 && (size_t)s->len < sizeof s->octets);
}

static nlink_t links_of(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_nlink;
}

/* True when no file in wal/ starts with a record: every segment with records is gone. */
static bool no_records_left(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/wal", spool);
    DIR *dir = opendir(path);
    assert_non_null(dir);
    struct dirent *e;
    bool none = true;
    while ((e = readdir(dir)) != NULL) {
        char head[8] = {0};
        int fd = e->d_name[0] != '.' ? openat(dirfd(dir), e->d_name, O_RDONLY) : -1;
        none &= fd < 0 || read(fd, head, sizeof head) < 1 || head[0] == '\0';
        if (fd >= 0)
            close(fd);
    }
    closedir(dir);
    return none;
}

/* Opens a daemon queue with a time limit on the test (a retry that can never succeed would
 * leave a removal waiting for ever), arms failure f for `failures` calls and stores the
 * messages of before. */
static struct queue *store_with_failures(struct injected_failure *f, int failures,
                                         struct event_base **base, struct stored *before)
{
    alarm(60);
    evthread_use_pthreads();
    *base = event_base_new();
    struct queue *q = open_daemon_queue(*base);
    atomic_store(&segment_unlinked, false);   /* not an unlink of an earlier test */
    atomic_store(&f->made, 0);
    atomic_store(&f->left, failures);
    for (unsigned i = 0; i < MESSAGES; i++) {
        store_message(q, i, before[i].id);
        read_stored(&before[i]);
    }
    return q;
}

/* Stores the messages with failure f armed once, then removes the last one, which waits until
 * every segment is retired: the first checkpoint that meets the failure fails, the one a
 * second later retires its segment. */
static struct queue *fail_once_and_remove_the_last(struct injected_failure *f,
                                                   struct event_base **base,
                                                   struct stored *before)
{
    struct queue *q = store_with_failures(f, 1, base, before);
    assert_int_equal(queue_remove(q, before[MESSAGES - 1].id), 0);
    assert_int_equal(atomic_load(&f->made), 1);
    assert_true(no_records_left());
    return q;
}

static void finish_test(struct queue *q, struct event_base *base, struct stored *before)
{
    for (unsigned i = 0; i < MESSAGES; i++)
        close(before[i].fd);
    queue_close(q);
    event_base_free(base);
    alarm(0);
}

/* Every message but the first `count` has the octets first written; returns how many are
 * new files (written back) rather than the ones first written. */
static unsigned assert_same_octets(const struct stored *before, unsigned count)
{
    struct stored after = {0};
    unsigned rewritten = 0;
    for (unsigned i = 0; i < count; i++) {
        memcpy(after.id, before[i].id, sizeof after.id);
        read_stored(&after);
        assert_int_equal(after.len, before[i].len);
        assert_memory_equal(after.octets, before[i].octets, (size_t)after.len);
        assert_int_equal(links_of(after.fd), 1);
        rewritten += links_of(before[i].fd) == 0;
        close(after.fd);
    }
    return rewritten;
}

/* The messages of the segment whose checkpoint failed (at least the first message's: the
 * first checkpoint fails) are written back, not synced again: a new file under the old name.
 * Which other messages shared that segment depends on timing (a segment takes records for a
 * second); those of later segments are checkpointed the usual way. */
static void test_failed_checkpoint_rewrites_from_the_records(void **state)
{
    struct event_base *base;
    struct stored before[MESSAGES];
    struct queue *q = fail_once_and_remove_the_last(&message_sync, &base, before);
    unsigned rewritten = assert_same_octets(before, MESSAGES - 1);
    assert_true(rewritten >= 1);
    queue_close(q);
    /* Nothing left to replay: the rewritten segment is gone, the messages stay. */
    q = open_daemon_queue(base);
    assert_int_equal(assert_same_octets(before, MESSAGES - 1), rewritten);
    finish_test(q, base, before);
}

/* The segment was unlinked, then fsync(wal/) failed: the messages are durable, the retry syncs
 * wal/ again and rewrites nothing (the records are gone with the segment). */
static void test_failed_wal_sync_after_the_unlink_is_retried_alone(void **state)
{
    struct event_base *base;
    struct stored before[MESSAGES];
    struct queue *q = fail_once_and_remove_the_last(&wal_dir_sync, &base, before);
    assert_int_equal(assert_same_octets(before, MESSAGES - 1), 0);
    finish_test(q, base, before);
}

static bool rewrite_marked(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/wal/.rewrite", spool);
    return access(path, F_OK) == 0;
}

/* Every checkpoint fails and odmrd stops before a retry: the segments stay, and wal/.rewrite
 * tells the next start not to trust the files in msg/ (their pages may never have reached the
 * disk), so its replay writes every record back instead of keeping the files. */
static void test_a_stop_before_the_retry_rewrites_at_the_next_start(void **state)
{
    struct event_base *base;
    struct stored before[MESSAGES];
    struct queue *q = store_with_failures(&message_sync, 1 << 20, &base, before);
    queue_close(q);
    assert_true(atomic_load(&message_sync.made) >= 1);
    assert_true(rewrite_marked());
    assert_false(no_records_left());
    atomic_store(&message_sync.left, 0);
    q = open_daemon_queue(base);
    assert_int_equal(assert_same_octets(before, MESSAGES), MESSAGES);
    assert_true(no_records_left());
    assert_false(rewrite_marked());
    finish_test(q, base, before);
}

int main(void)
{
    log_init("test_journal_checkpoint", (enum log_level)(LOG_LEVEL_ERROR + 1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failed_checkpoint_rewrites_from_the_records,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_failed_wal_sync_after_the_unlink_is_retried_alone,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_a_stop_before_the_retry_rewrites_at_the_next_start,
                                        setup_spool, teardown_spool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
