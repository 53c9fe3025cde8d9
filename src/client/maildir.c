/* SPDX-License-Identifier: ISC */
/* Maildir delivery (the layout of qmail's maildir(5), as Dovecot, Courier and mutt read it):
 * write tmp/<unique>, fsync, link into new/, fsync new/ -- the message exists in new/ or not at
 * all, and the provider gets 250 only after the directory fsync. */
#include "client/local.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { DIR_MODE = 0700, FILE_MODE = 0600, NAME_TRIES = 5 };

static const char *const subdirs[] = {"tmp", "new", "cur"};

/* ---- the template ---- */

static bool component_safe(const char *s)
{
    if (s[0] == '\0' || s[0] == '.' || strstr(s, "..") != NULL)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p == '/' || *p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

struct expansion {
    char escape;
    const char *what;
};

static const struct expansion escapes[] = {{'u', "local part"}, {'d', "domain"}, {'%', NULL}};

static const struct expansion *find_escape(char c)
{
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++)
        if (escapes[i].escape == c)
            return &escapes[i];
    return NULL;
}

int maildir_template_check(const char *templ, char *err, size_t errlen)
{
    if (templ[0] != '/' || strlen(templ) >= LOCAL_PATH_MAX) {
        snprintf(err, errlen, "maildir path must be absolute: '%s'", templ);
        return -1;
    }
    for (const char *p = strchr(templ, '%'); p != NULL; p = strchr(p + 2, '%'))
        if (find_escape(p[1]) == NULL) {
            snprintf(err, errlen, "unknown escape '%%%c' in maildir path (use %%u %%d %%%%)",
                     p[1] ? p[1] : ' ');
            return -1;
        }
    return 0;
}

static int path_append(char *out, size_t len, size_t *at, const char *s, size_t n)
{
    if (*at + n >= len)
        return -1;
    memcpy(out + *at, s, n);
    *at += n;
    out[*at] = '\0';
    return 0;
}

int maildir_expand(const char *templ, const char *addr, char *out, size_t len, char *err,
                   size_t errlen)
{
    char local[1024], domain[512];
    local_split_address(addr, local, sizeof local, domain, sizeof domain);
    for (char *p = domain; *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
    size_t at = 0;
    out[0] = '\0';
    for (const char *p = templ; *p != '\0'; p++) {
        const struct expansion *e = p[0] == '%' ? find_escape(p[1]) : NULL;
        const char *value = e == NULL ? p : e->escape == 'u' ? local : e->escape == 'd' ? domain : "%";
        size_t n = e == NULL || e->escape == '%' ? 1 : strlen(value);
        if (e != NULL && e->what != NULL && !component_safe(value)) {
            snprintf(err, errlen, "unsafe %s for a maildir path", e->what);
            return -1;
        }
        if (path_append(out, len, &at, value, n) != 0) {
            snprintf(err, errlen, "maildir path too long");
            return -1;
        }
        p += e != NULL;
    }
    return 0;
}

/* ---- directories ---- */

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static void parent_of(const char *path, char *out, size_t len)
{
    snprintf(out, len, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash != NULL)
        slash[slash == out] = '\0';
}

/* mkdir, and when it was created, fsync its parent so the new entry is durable. */
static int make_dir(const char *path)
{
    char parent[LOCAL_PATH_MAX];
    if (mkdir(path, DIR_MODE) != 0)
        return errno == EEXIST ? 0 : -1;
    parent_of(path, parent, sizeof parent);
    return fsync_dir(parent);
}

/* mkdir -p */
static int make_dirs(const char *path)
{
    char buf[LOCAL_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = strchr(buf + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
        *p = '\0';
        int rc = make_dir(buf);
        *p = '/';
        if (rc != 0)
            return -1;
    }
    return make_dir(buf);
}

static int make_maildir(const char *dir)
{
    char sub[LOCAL_PATH_MAX + 8];
    if (make_dirs(dir) != 0)
        return -1;
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, subdirs[i]);
        if (make_dir(sub) != 0)
            return -1;
    }
    return 0;
}

int maildir_probe(const char *templ, char *err, size_t errlen)
{
    char fixed[LOCAL_PATH_MAX];
    snprintf(fixed, sizeof fixed, "%.*s", (int)strcspn(templ, "%"), templ);
    bool whole = strchr(templ, '%') == NULL;
    if (!whole) {
        char *slash = strrchr(fixed, '/');   /* the template is absolute: there is one */
        slash[slash == fixed] = '\0';
    }
    int rc = whole ? make_maildir(fixed) : make_dirs(fixed);
    if (rc == 0 && access(fixed, W_OK | X_OK) != 0)
        rc = -1;
    if (rc != 0)
        snprintf(err, errlen, "maildir %s: %s", fixed, strerror(errno));
    return rc;
}

/* ---- one message ---- */

/* <seconds>.M<microseconds>P<pid>_<sequence>.<host>, host with '/' and ':' escaped as
 * maildir(5) asks. */
static void unique_name(char *out, size_t len)
{
    static unsigned sequence;
    char host[256], safe[256 * 4 + 1];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    size_t o = 0;
    for (const char *p = host; *p != '\0'; p++)
        o += (size_t)(*p == '/' ? snprintf(safe + o, 5, "\\057")
                      : *p == ':' ? snprintf(safe + o, 5, "\\072")
                      : snprintf(safe + o, 2, "%c", *p));
    snprintf(out, len, "%lld.M%06ldP%d_%u.%s", (long long)ts.tv_sec, ts.tv_nsec / 1000,
             (int)getpid(), ++sequence, safe);
}

static int write_message(int fd, int spool_fd, const char *sender, const char *rcpt)
{
    char head[2048];
    /* RFC 5322 3.6.7 Return-Path; Delivered-To as qmail and Postfix local(8) write it. */
    int n = snprintf(head, sizeof head, "Return-Path: <%s>\nDelivered-To: %s\n", sender, rcpt);
    if (n < 0 || (size_t)n >= sizeof head) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (local_write_all(fd, head, (size_t)n, 0) != 0 || local_copy_lf(spool_fd, fd, 0) != 0)
        return -1;
    return fsync(fd);
}

static int open_tmp(const char *dir, char *name, size_t nlen, char *path, size_t plen)
{
    for (int i = 0; i < NAME_TRIES; i++) {
        unique_name(name, nlen);
        snprintf(path, plen, "%s/tmp/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FILE_MODE);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}

/* link() refuses to replace an existing name (rename() would not); file systems without hard
 * links get rename(). */
static int publish(const char *tmp, const char *dir, const char *name)
{
    char path[LOCAL_PATH_MAX + 300], newdir[LOCAL_PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/new/%s", dir, name);
    snprintf(newdir, sizeof newdir, "%s/new", dir);
    if (link(tmp, path) == 0)
        unlink(tmp);
    else if ((errno != EPERM && errno != ENOSYS && errno != EXDEV) || rename(tmp, path) != 0)
        return -1;
    return fsync_dir(newdir);
}

void maildir_deliver(const char *dir, int spool_fd, const char *sender, const char *rcpt,
                     struct smtp_client_reply *out)
{
    char name[1400], tmp[LOCAL_PATH_MAX + 1500];
    if (make_maildir(dir) != 0) {
        local_reply_errno(out, errno, "Cannot create the maildir");
        return;
    }
    int fd = open_tmp(dir, name, sizeof name, tmp, sizeof tmp);
    if (fd < 0) {
        local_reply_errno(out, errno, "Cannot create a file in the maildir");
        return;
    }
    int rc = write_message(fd, spool_fd, sender, rcpt);
    int saved = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    if (rc == 0 && publish(tmp, dir, name) != 0) {
        rc = -1;
        saved = errno;
    }
    if (rc != 0) {
        unlink(tmp);
        local_reply_errno(out, saved, "Maildir delivery failed");
        return;
    }
    peer_reply_set(out, 250, "2.0.0 Delivered to maildir as %s", name);
}
