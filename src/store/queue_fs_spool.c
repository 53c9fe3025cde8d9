/* SPDX-License-Identifier: ISC */
/* The spool directory of the filesystem queue: create it (odmrd) or only find it (odmrctl),
 * open the files in it safely, list its directories. */
#include "store/queue_fs_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/queue_fs.h"

static const char *const subdir_names[QUEUE_FS_SUB_COUNT] = {
    [QUEUE_FS_SUB_TMP] = QUEUE_FS_TMP_DIR,         [QUEUE_FS_SUB_MSG] = QUEUE_FS_MSG_DIR,
    [QUEUE_FS_SUB_DOM] = QUEUE_FS_DOM_DIR,         [QUEUE_FS_SUB_CORRUPT] = QUEUE_FS_CORRUPT_DIR,
    [QUEUE_FS_SUB_LOCK] = QUEUE_FS_LOCK_DIR,
};

/* mkdir -p for the spool path itself (0700). */
static int make_spool_dir(const char *spool)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", spool) >= (int)sizeof path)
        return ENAMETOOLONG;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return errno;
        *p = saved;
        if (saved == '\0')
            return 0;
    }
}

static int open_subdir(int spool_fd, const char *name, bool create, bool *created, int *out)
{
    if (create && mkdirat(spool_fd, name, 0700) == 0)
        *created = true;
    else if (create && errno != EEXIST)
        return errno;
    *out = openat(spool_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return *out < 0 ? errno : 0;
}

int queue_fs_spool_open(const char *spool, bool create, int *spool_fd,
                        int sub_fds[QUEUE_FS_SUB_COUNT], const char **missing)
{
    bool created = false;
    *missing = "";
    int rc = create ? make_spool_dir(spool) : 0;
    if (rc == 0 && (*spool_fd = open(spool, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        rc = errno;
    for (size_t i = 0; rc == 0 && i < QUEUE_FS_SUB_COUNT; i++) {
        rc = open_subdir(*spool_fd, subdir_names[i], create, &created, &sub_fds[i]);
        if (rc != 0)
            *missing = subdir_names[i];
    }
    /* New subdirectories are entries of the spool directory: make them durable (F8). */
    if (rc == 0 && created && fsync(*spool_fd) != 0)
        rc = errno;
    return rc;
}

int queue_fs_open_file(int dirfd, const char *name, int flags, mode_t mode)
{
    struct stat st;
    int fd = openat(dirfd, name, flags | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENXIO)   /* a symlink; a FIFO without a reader */
            errno = EBADMSG;
        return -1;
    }
    int rc = fstat(fd, &st) != 0 ? errno : !S_ISREG(st.st_mode) ? EBADMSG : 0;
    if (rc != 0) {
        close(fd);
        errno = rc;
        return -1;
    }
    /* Regular files ignore O_NONBLOCK; clear it anyway so reads and writes stay plain. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

/* ---- sorted name lists from readdir ---- */

void queue_fs_names_free(struct queue_fs_names *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

int queue_fs_names_add(struct queue_fs_names *l, const char *name)
{
    if (l->count == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 64;
        char **grown = realloc(l->names, cap * sizeof *grown);
        if (grown == NULL)
            return ENOMEM;
        l->names = grown;
        l->cap = cap;
    }
    l->names[l->count] = strdup(name);
    if (l->names[l->count] == NULL)
        return ENOMEM;
    l->count++;
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void queue_fs_names_sort(struct queue_fs_names *l)
{
    if (l->count > 1)
        qsort(l->names, l->count, sizeof *l->names, compare_names);
}

bool queue_fs_names_contains(const struct queue_fs_names *l, const char *name)
{
    return l->count > 0 &&
           bsearch(&name, l->names, l->count, sizeof *l->names, compare_names) != NULL;
}

int queue_fs_list_dir(int dirfd, const char *path, bool (*accept)(const char *),
                      struct queue_fs_names *out)
{
    memset(out, 0, sizeof *out);
    int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        int rc = errno;
        close(fd);
        return rc;
    }
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while (rc == 0 && (de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (accept == NULL || accept(de->d_name))
            rc = queue_fs_names_add(out, de->d_name);
        errno = 0;
    }
    if (rc == 0 && errno != 0)
        rc = errno;
    closedir(dir);
    if (rc != 0)
        queue_fs_names_free(out);
    else
        queue_fs_names_sort(out);
    return rc;
}
