/* SPDX-License-Identifier: ISC */
/* Spare message files (docs/queue.md "Spare files"). Creating a file allocates an inode, and
 * on ext4 without a journal that steps over every inode deleted in the last minutes (a spool
 * that delivers deletes all the time): 10-400 us on the event loop per message, during which
 * no session is served. Unnamed files made ahead on a worker take that off the loop; a
 * commit gives its file the name msg/<id> with one link, where it renamed tmp/<id> before.
 * A spare or an uncommitted message file that a crash leaves behind has no name: the
 * filesystem frees it, so recovery has nothing to clean up for it. */
#include "store/queue_fs_spare.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "platform/worker_pool.h"

/* Enough for the messages a loop turn of many sessions starts; refilled at half. */
enum { SPARES_MAX = 32, SPARES_LOW = SPARES_MAX / 2 };

struct spare_refill {
    struct worker_job job;   /* first: the job is the refill */
    struct queue_fs_spares *spares;
    int fds[SPARES_MAX];
    int count;
    int wanted;   /* what the spares lacked when it was asked for */
};

struct queue_fs_spares {
    int tmp_dir_fd;
    struct worker_pool *pool;
    int fds[SPARES_MAX];
    int count;
    bool refilling;   /* a refill job is under way: at most one */
    bool failed;      /* the last refill made nothing: no more tries until one is taken */
};

static int make_unnamed(int dir_fd)
{
    return openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

int queue_fs_spare_link(int fd, int dir_fd, const char *name)
{
    /* linkat(fd, "", ..., AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc path does not. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, path, dir_fd, name, AT_SYMLINK_FOLLOW) == 0 ? 0 : errno;
}

/* One unnamed file linked to a probe name and unlinked again: what every commit will do. */
static bool spares_work(int dir_fd)
{
    char name[64];
    int fd = make_unnamed(dir_fd);
    if (fd < 0)
        return false;
    snprintf(name, sizeof name, ".spare-probe.%ld", (long)getpid());
    unlinkat(dir_fd, name, 0);
    bool ok = queue_fs_spare_link(fd, dir_fd, name) == 0;
    if (ok)
        unlinkat(dir_fd, name, 0);
    close(fd);
    return ok;
}

static void refill_run(struct worker_job *job)
{
    struct spare_refill *r = (struct spare_refill *)job;
    while (r->count < r->wanted) {
        int fd = make_unnamed(r->spares->tmp_dir_fd);
        if (fd < 0)
            break;
        r->fds[r->count++] = fd;
    }
}

static void refill_drop(struct worker_job *job)
{
    struct spare_refill *r = (struct spare_refill *)job;
    for (int i = 0; i < r->count; i++)
        close(r->fds[i]);
    r->spares->refilling = false;
    free(r);
}

static void refill_report(struct worker_job *job)
{
    struct spare_refill *r = (struct spare_refill *)job;
    struct queue_fs_spares *s = r->spares;
    /* All fit: the refill asked for the room left then, and only takes happened since. */
    for (int i = 0; i < r->count; i++)
        s->fds[s->count++] = r->fds[i];
    s->failed = r->count == 0;
    s->refilling = false;
    free(r);
}

static void ask_for_more(struct queue_fs_spares *s)
{
    if (s->refilling || s->failed || s->count >= SPARES_LOW)
        return;
    struct spare_refill *r = calloc(1, sizeof *r);
    if (r == NULL)
        return;
    r->job.run = refill_run;
    r->job.report = refill_report;
    r->job.drop = refill_drop;
    r->spares = s;
    r->wanted = SPARES_MAX - s->count;
    s->refilling = true;
    if (!worker_pool_submit(s->pool, &r->job)) {
        s->refilling = false;
        free(r);
    }
}

struct queue_fs_spares *queue_fs_spares_new(int tmp_dir_fd, struct worker_pool *pool)
{
    if (!spares_work(tmp_dir_fd)) {
        log_info("queue.spares_off", " reason=\"%s\"",
                 "unnamed files (O_TMPFILE, /proc/self/fd) not available: files are created "
                 "on the event loop");
        return NULL;
    }
    struct queue_fs_spares *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->tmp_dir_fd = tmp_dir_fd;
    s->pool = pool;
    ask_for_more(s);
    return s;
}

int queue_fs_spare_take(struct queue_fs_spares *s)
{
    if (s == NULL)
        return -1;
    int fd = s->count > 0 ? s->fds[--s->count] : -1;
    s->failed = false;
    ask_for_more(s);
    return fd;
}

void queue_fs_spares_free(struct queue_fs_spares *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < s->count; i++)
        close(s->fds[i]);
    free(s);
}
