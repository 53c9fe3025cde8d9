/* SPDX-License-Identifier: ISC */
/* The filesystem queue's spool directory, the one way it opens files in it, and sorted
 * directory listings (docs/queue.md, "Spool layout"). Split from queue_fs.c. */
#ifndef ODMR_STORE_QUEUE_FS_SPOOL_H
#define ODMR_STORE_QUEUE_FS_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The subdirectories, in the order of the fds a caller passes in. */
enum queue_fs_subdir {
    QUEUE_FS_SUB_TMP,
    QUEUE_FS_SUB_MSG,
    QUEUE_FS_SUB_DOM,
    QUEUE_FS_SUB_CORRUPT,
    QUEUE_FS_SUB_LOCK,
    QUEUE_FS_SUB_COUNT,
};

/* Opens the spool directory and its subdirectories into *spool_fd and sub_fds[]. create: make
 * what is missing (odmrd, tests), 0700, made durable with fsync of the spool; otherwise
 * (odmrctl) nothing is created and a missing spool or subdirectory is ENOENT. 0 or errno; on
 * error *missing names the path that was missing or failed ("" for the spool itself). The fds
 * opened so far stay in the arrays for the caller to close. */
int queue_fs_spool_open(const char *spool, bool create, int *spool_fd,
                        int sub_fds[QUEUE_FS_SUB_COUNT], const char **missing);

/* openat() for every file the queue keeps: never follows a symlink, never blocks (a FIFO named
 * like a queue id would hang start-up otherwise), and only regular files pass. flags are
 * O_RDONLY / O_RDWR / O_WRONLY plus O_CREAT etc.; O_CLOEXEC is added. Returns the fd, or -1
 * with errno; a symlink or anything but a regular file is EBADMSG (corrupt: the caller
 * quarantines or skips it like any file that fails validation). */
int queue_fs_open_file(int dirfd, const char *name, int flags, mode_t mode);

/* A sorted list of directory entry names. */
struct queue_fs_names {
    char **names;
    size_t count, cap;
};
void queue_fs_names_free(struct queue_fs_names *l);
int queue_fs_names_add(struct queue_fs_names *l, const char *name);   /* 0 or ENOMEM */
bool queue_fs_names_contains(const struct queue_fs_names *l, const char *name);   /* sorted l */
void queue_fs_names_sort(struct queue_fs_names *l);
/* Reads every name of directory dirfd/path except "." and "..", sorted. accept may be NULL.
 * ENOENT when the directory does not exist. out is always safe to queue_fs_names_free(). */
int queue_fs_list_dir(int dirfd, const char *path, bool (*accept)(const char *),
                      struct queue_fs_names *out);

#endif
