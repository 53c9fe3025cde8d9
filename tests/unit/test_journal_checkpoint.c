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

static atomic_int msg_sync_failures_left;   /* armed by a test */
static atomic_int msg_sync_failures_made;

static bool is_message_file(int fd)
{
    char link[64], target[512];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return false;
    target[n] = '\0';
    return strstr(target, "/msg/") != NULL;
}

int fdatasync(int fd);
int fdatasync(int fd)
{
    static int (*real_fdatasync)(int);
    if (real_fdatasync == NULL)
        *(void **)&real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    if (is_message_file(fd) && atomic_load(&msg_sync_failures_left) > 0 &&
        atomic_fetch_sub(&msg_sync_failures_left, 1) > 0) {
        atomic_fetch_add(&msg_sync_failures_made, 1);
        errno = EIO;
        return -1;
    }
    return real_fdatasync(fd);
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

/* Waits (at most 10 s) until wal/ holds a standby: a segment of zeros written ahead. */
static void wait_for_standby(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/wal", spool);
    for (int tries = 0; tries < 1000; tries++) {
        DIR *dir = opendir(path);
        assert_non_null(dir);
        struct dirent *e;
        struct stat st;
        bool found = false;
        while (!found && (e = readdir(dir)) != NULL)
            found = e->d_name[0] != '.' && fstatat(dirfd(dir), e->d_name, &st, 0) == 0 &&
                    st.st_size >= 1 << 20;
        closedir(dir);
        if (found)
            return;
        usleep(10 * 1000);
    }
    fail_msg("no standby segment in %s", path);
}

static void test_failed_checkpoint_rewrites_from_the_records(void **state)
{
    evthread_use_pthreads();
    struct event_base *base = event_base_new();
    struct queue *q = open_daemon_queue(base);
    struct stored before[MESSAGES], after;
    memset(&after, 0, sizeof after);
    /* The first commit opens a segment and has a standby prepared, which the next commit
     * takes (sealing the first; its removal waits until it is retired). The other messages
     * then all go to the standby. */
    store_message(q, 0, before[0].id);
    wait_for_standby();
    for (unsigned i = 1; i < MESSAGES; i++) {
        store_message(q, i, before[i].id);
        read_stored(&before[i]);
    }
    assert_int_equal(queue_remove(q, before[0].id), 0);
    atomic_store(&msg_sync_failures_left, 1);
    /* A removal waits until the segment holding the message is retired: the first checkpoint
     * fails, the one a second later rewrites and retires it. */
    assert_int_equal(queue_remove(q, before[MESSAGES - 1].id), 0);
    assert_int_equal(atomic_load(&msg_sync_failures_made), 1);
    for (unsigned i = 1; i < MESSAGES - 1; i++) {
        memcpy(after.id, before[i].id, sizeof after.id);
        read_stored(&after);
        assert_int_equal(after.len, before[i].len);
        assert_memory_equal(after.octets, before[i].octets, (size_t)after.len);
        /* written back, not synced again: a new file took the name of the first one */
        assert_int_equal(links_of(before[i].fd), 0);
        assert_int_equal(links_of(after.fd), 1);
        close(after.fd);
    }
    queue_close(q);
    /* Nothing left to replay: the rewritten segment is gone, the messages stay. */
    q = open_daemon_queue(base);
    for (unsigned i = 1; i < MESSAGES - 1; i++) {
        memcpy(after.id, before[i].id, sizeof after.id);
        read_stored(&after);
        assert_int_equal(after.len, before[i].len);
        assert_memory_equal(after.octets, before[i].octets, (size_t)before[i].len);
        close(after.fd);
        close(before[i].fd);
    }
    close(before[MESSAGES - 1].fd);
    queue_close(q);
    event_base_free(base);
}

int main(void)
{
    log_init("test_journal_checkpoint", (enum log_level)(LOG_LEVEL_ERROR + 1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failed_checkpoint_rewrites_from_the_records,
                                        setup_spool, teardown_spool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
