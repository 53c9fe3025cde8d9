/* SPDX-License-Identifier: ISC */
/* odmrctl and the spool (docs/odmrctl.md, "Root and the spool").
 *
 * Decision, as Postfix's postsuper does (it runs as mail_owner, not as root, whatever invoked
 * it): run as root, odmrctl becomes the owner of the spool directory before it opens the queue.
 * Anything it creates then belongs to the account odmrd runs as, and nothing can be left owned
 * by root. Unlike Postfix, the account comes from the spool itself (odmrd hands the spool to
 * [server] user at start), so a config whose [server] user changed later cannot disagree. */
#include "ctl/ctl_spool.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

static int missing_spool(const char *spool, const char *why)
{
    fprintf(stderr, "odmrctl: %s: %s (check [server] spool; odmrd creates the spool at its "
                    "first start, odmrctl never does)\n", spool, why);
    return EX_NOINPUT;
}

int ctl_spool_become_owner(const char *spool)
{
    struct stat st;
    if (stat(spool, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return missing_spool(spool, "no such spool directory");
        fprintf(stderr, "odmrctl: %s: %s\n", spool, strerror(errno));
        return EX_IOERR;
    }
    if (!S_ISDIR(st.st_mode))
        return missing_spool(spool, "not a directory");
    if (geteuid() != 0 || st.st_uid == 0)
        return EX_OK;   /* an ordinary user acts as itself; a root-owned spool is root's */
    /* Group first: after setuid() the process may no longer change its groups. */
    if (setgroups(0, NULL) != 0 || setgid(st.st_gid) != 0 || setuid(st.st_uid) != 0 ||
        geteuid() != st.st_uid) {
        fprintf(stderr, "odmrctl: cannot switch to the owner of %s (uid %u): %s\n", spool,
                (unsigned)st.st_uid, strerror(errno));
        return EX_OSERR;
    }
    return EX_OK;
}

struct queue *ctl_spool_open(const char *spool, bool read_only, int *code)
{
    char err[512];
    struct queue *q = queue_open_fs_existing(spool, read_only, err, sizeof err);
    if (q != NULL)
        return q;
    int rc = errno;
    if (rc == ENOENT) {
        fprintf(stderr, "odmrctl: %s\n", err);
        *code = EX_NOINPUT;
    } else {
        fprintf(stderr, "odmrctl: %s%s\n", err,
                rc == EACCES ? " (run odmrctl as root or as the spool's owner)" : "");
        *code = EX_IOERR;
    }
    return NULL;
}
