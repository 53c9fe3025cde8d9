/* SPDX-License-Identifier: ISC */
/* The last successful ATRN of each user (docs/queue.md "Quotas and free space", odmrctl queue
 * summary). One empty file per user whose mtime is the time: a poll costs one openat and one
 * futimens, no write and no fsync (losing the newest time in a crash is harmless). User names
 * may hold '.', so the file name is "u-" + the name: never "." or "..", and names hold no '/'
 * (userdb_user_name_valid). */
#include "store/last_atrn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "store/userdb.h"

static int atrn_dir = -1;

static bool file_name(const char *user, char *out, size_t len)
{
    return userdb_user_name_valid(user) && (size_t)snprintf(out, len, "u-%s", user) < len;
}

int last_atrn_open(const char *spool)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", spool, LAST_ATRN_DIR) >= sizeof path)
        return ENAMETOOLONG;
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return errno;
    last_atrn_close();
    atrn_dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    return atrn_dir < 0 ? errno : 0;
}

void last_atrn_close(void)
{
    if (atrn_dir >= 0)
        close(atrn_dir);
    atrn_dir = -1;
}

void last_atrn_record(const char *user)
{
    char name[80];
    if (atrn_dir < 0 || !file_name(user, name, sizeof name))
        return;
    int fd = openat(atrn_dir, name, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
                    0600);
    if (fd < 0 || futimens(fd, NULL) != 0)
        log_debug("atrn.record_failed", " user=%s error=\"%s\"", user, strerror(errno));
    if (fd >= 0)
        close(fd);
}

time_t last_atrn_read(const char *spool, const char *user)
{
    char name[80], path[4200];
    struct stat st;
    if (!file_name(user, name, sizeof name))
        return 0;
    snprintf(path, sizeof path, "%s/%s/%s", spool, LAST_ATRN_DIR, name);
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    return st.st_mtim.tv_sec;
}
