/* SPDX-License-Identifier: ISC */
/* Empty index entries as hard links (queue_fs_empty.h, docs/queue.md "Empty entries").
 *
 * An empty entry means "every recipient of this domain pending"; the daemon makes one per
 * domain of every message it commits. A hard link to one shared empty file allocates no
 * inode, where a new file does: on ext4 without a journal each inode allocation also steps
 * over every inode deleted in the last minutes, one block lookup each. Entries are only ever
 * replaced by a rename (write_entry in queue_fs.c), never written in place, so the shared
 * inode stays empty; it is made read-only against hand edits, and checked before each link:
 * should it ever hold octets, it is replaced by a new one and the event logged. */
#include "store/queue_fs_empty.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "store/queue_fs.h"

#define EMPTY_NEXT QUEUE_FS_EMPTY_ENTRY ".new"

struct queue_fs_empty {
    int dom_fd;
    pthread_mutex_t lock;      /* renewal: commit workers link concurrently */
};

/* A new empty dom/.empty, made beside and renamed into place: entries that link to the old
 * one keep it. Under the lock (or before the commit workers start). */
static int renew(struct queue_fs_empty *e)
{
    unlinkat(e->dom_fd, EMPTY_NEXT, 0);
    int fd = openat(e->dom_fd, EMPTY_NEXT, O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0400);
    if (fd < 0)
        return errno;
    close(fd);
    if (renameat(e->dom_fd, EMPTY_NEXT, e->dom_fd, QUEUE_FS_EMPTY_ENTRY) != 0) {
        int rc = errno;
        unlinkat(e->dom_fd, EMPTY_NEXT, 0);
        return rc;
    }
    return 0;
}

static int renew_locked(struct queue_fs_empty *e)
{
    pthread_mutex_lock(&e->lock);
    int rc = renew(e);
    pthread_mutex_unlock(&e->lock);
    return rc;
}

struct queue_fs_empty *queue_fs_empty_open(int dom_fd)
{
    struct queue_fs_empty *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->dom_fd = dom_fd;
    pthread_mutex_init(&e->lock, NULL);
    int rc = renew(e);
    if (rc != 0) {
        queue_fs_empty_close(e);
        errno = rc;
        return NULL;
    }
    return e;
}

/* dom/.empty still an empty regular file; else a new one (the links that share the written
 * one carry what was written: the loader reads each such entry as it finds it). */
static int check_still_empty(struct queue_fs_empty *e)
{
    struct stat st;
    if (fstatat(e->dom_fd, QUEUE_FS_EMPTY_ENTRY, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? renew_locked(e) : errno;
    if (S_ISREG(st.st_mode) && st.st_size == 0)
        return 0;
    log_error("queue.empty_entry_written", " file=dom/%s size=%lld action=replaced",
              QUEUE_FS_EMPTY_ENTRY, (long long)st.st_size);
    return renew_locked(e);
}

int queue_fs_empty_link(struct queue_fs_empty *e, const char *path)
{
    int rc = check_still_empty(e);
    for (int tries = 0; rc == 0 && tries < 2; tries++) {
        rc = linkat(e->dom_fd, QUEUE_FS_EMPTY_ENTRY, e->dom_fd, path, 0) == 0 ? 0 : errno;
        /* As many links as the filesystem allows (65 000 on ext4): a new file, once. */
        if (rc != EMLINK || tries == 1)
            break;
        rc = renew_locked(e);
    }
    if (rc == ENOENT && faccessat(e->dom_fd, QUEUE_FS_EMPTY_ENTRY, F_OK, AT_SYMLINK_NOFOLLOW) != 0)
        return EAGAIN;   /* dom/.empty itself went meanwhile: a file instead */
    return rc;
}

void queue_fs_empty_close(struct queue_fs_empty *e)
{
    if (e == NULL)
        return;
    pthread_mutex_destroy(&e->lock);
    free(e);
}
