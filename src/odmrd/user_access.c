/* SPDX-License-Identifier: ISC */
/* odmrd -t: [server] user's access to the users file and the spool (see user_access.h). */
#include "odmrd/user_access.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* In the child, as the account: the first problem into msg, or "" when there is none. */
static void probe(const struct config *cfg, char *msg, size_t msglen)
{
    char path[PATH_MAX];
    msg[0] = '\0';
    if (access(cfg->users, R_OK) != 0) {
        snprintf(msg, msglen, "users file %.400s: %s", cfg->users, strerror(errno));
        return;
    }
    snprintf(path, sizeof path, "%s", cfg->spool);
    char *slash = strrchr(path, '/');
    if (slash != NULL) {
        *(slash == path ? slash + 1 : slash) = '\0';
        if (access(path, X_OK) != 0)
            snprintf(msg, msglen, "spool's directory %.400s: %s", path, strerror(errno));
    }
}

/* As root: odmrd hands the spool itself to the account at start, not what is in it; a
 * subdirectory made by root (a restored backup, a copy, a tool run as root) stays root's. */
static int check_spool_owner(const struct config *cfg, uid_t uid, char *err, size_t errlen)
{
    char path[PATH_MAX];
    struct stat st;
    DIR *dir = opendir(cfg->spool);
    if (dir == NULL)
        return 0;                       /* odmrd makes it at start */
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", cfg->spool, e->d_name);
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid != uid) {
            snprintf(err, errlen, "[server] user %s does not own spool directory %.400s "
                     "(chown -R %s %.400s)", cfg->user, path, cfg->user, cfg->spool);
            rc = -1;
        }
    }
    closedir(dir);
    return rc;
}

/* The child: the switch as odmrd makes it, the probe, its answer on the pipe. */
static void run_child(const struct config *cfg, const struct passwd *pw, int out)
{
    char msg[600];
    if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        snprintf(msg, sizeof msg, "cannot switch to %s: %s", cfg->user, strerror(errno));
    else
        probe(cfg, msg, sizeof msg);
    ssize_t ignored = write(out, msg, strlen(msg));
    (void)ignored;
    _exit(0);
}

int user_access_check(const struct config *cfg, char *err, size_t errlen)
{
    if (geteuid() != 0 || cfg->user == NULL)
        return 0;
    struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL || pw->pw_uid == 0) {
        snprintf(err, errlen, "[server] user %s: no such unprivileged account", cfg->user);
        return -1;
    }
    if (check_spool_owner(cfg, pw->pw_uid, err, errlen) != 0)
        return -1;
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        run_child(cfg, pw, fds[1]);
    }
    close(fds[1]);
    char msg[600];
    ssize_t n = pid < 0 ? -1 : read(fds[0], msg, sizeof msg - 1);
    close(fds[0]);
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    if (n < 0) {
        snprintf(err, errlen, "cannot check as %s: %s", cfg->user, strerror(errno));
        return -1;
    }
    msg[n] = '\0';
    if (n == 0)
        return 0;
    snprintf(err, errlen, "[server] user %s cannot use %s", cfg->user, msg);
    return -1;
}
