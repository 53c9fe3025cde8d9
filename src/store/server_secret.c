/* SPDX-License-Identifier: ISC */
/* The server secret file (docs/users.md). */
#include "store/server_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Made atomically: random octets into a fresh temporary file (mode 0600), fsync, then link()
 * to the name, which fails if another process made it meanwhile (that one is kept), and an
 * fsync of the spool directory. No reader ever sees a partial file. */
static int make_secret(int spool_fd, char *err, size_t errlen)
{
    unsigned char secret[SERVER_SECRET_LEN];
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", SERVER_SECRET_FILE, (long)getpid());
    (void)unlinkat(spool_fd, tmp, 0);
    int fd = openat(spool_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    int rc = -1;
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    if (RAND_bytes(secret, sizeof secret) != 1)
        snprintf(err, errlen, "no random octets for %s", SERVER_SECRET_FILE);
    /* 32 octets to a new regular file: a short write only comes with an error (ENOSPC). */
    else if (write(fd, secret, sizeof secret) != (ssize_t)sizeof secret || fsync(fd) != 0)
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    else if (linkat(spool_fd, tmp, spool_fd, SERVER_SECRET_FILE, 0) != 0 && errno != EEXIST)
        snprintf(err, errlen, "cannot create %s: %s", SERVER_SECRET_FILE, strerror(errno));
    else if (fsync(spool_fd) != 0)
        snprintf(err, errlen, "cannot fsync the spool: %s", strerror(errno));
    else
        rc = 0;
    OPENSSL_cleanse(secret, sizeof secret);
    close(fd);
    (void)unlinkat(spool_fd, tmp, 0);
    return rc;
}

static int read_secret(int spool_fd, unsigned char *out, char *err, size_t errlen)
{
    struct stat st;
    int fd = openat(spool_fd, SERVER_SECRET_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", SERVER_SECRET_FILE, strerror(errno));
        return -1;
    }
    int rc = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != SERVER_SECRET_LEN)
        snprintf(err, errlen, "%s: not a regular file of %d octets; remove it to make a new one",
                 SERVER_SECRET_FILE, SERVER_SECRET_LEN);
    else if ((st.st_mode & 077) != 0)
        snprintf(err, errlen, "%s: group or others have access (mode 0%o); run chmod 600",
                 SERVER_SECRET_FILE, (unsigned)(st.st_mode & 0777));
    else if (read(fd, out, SERVER_SECRET_LEN) != SERVER_SECRET_LEN)
        snprintf(err, errlen, "%s: cannot read: %s", SERVER_SECRET_FILE, strerror(errno));
    else
        rc = 0;
    close(fd);
    return rc;
}

int server_secret_load(const char *spool, unsigned char out[SERVER_SECRET_LEN], char *err,
                       size_t errlen)
{
    int spool_fd = open(spool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (spool_fd < 0) {
        snprintf(err, errlen, "%s: %s", spool, strerror(errno));
        return -1;
    }
    int rc = 0;
    if (faccessat(spool_fd, SERVER_SECRET_FILE, F_OK, AT_SYMLINK_NOFOLLOW) != 0)
        rc = make_secret(spool_fd, err, errlen);
    if (rc == 0)
        rc = read_secret(spool_fd, out, err, errlen);
    close(spool_fd);
    return rc;
}
