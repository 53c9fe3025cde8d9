/* SPDX-License-Identifier: ISC */
/* What the Maildir and MDA targets share: replies and the CRLF -> LF copy. */
#include "client/local.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void local_reply_errno(struct smtp_client_reply *out, int err, const char *what)
{
    static const struct { int err; int code; const char *status; } table[] = {
        {ENOSPC, 452, "4.3.1"},   /* RFC 3463: mail system full */
        {EDQUOT, 452, "4.2.2"},   /* RFC 3463: mailbox full */
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].err == err) {
            peer_reply_set(out, table[i].code, "%s %s: %s", table[i].status, what, strerror(err));
            return;
        }
    peer_reply_set(out, 451, "4.3.0 %s: %s", what, strerror(err));
}

long long local_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_writable(int fd, long long deadline_ms)
{
    long long left = deadline_ms ? deadline_ms - local_now_ms() : -1;
    if (deadline_ms && left <= 0) {
        errno = ETIMEDOUT;
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int rc = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
    return rc < 0 && errno != EINTR ? -1 : 0;
}

int local_write_all(int fd, const char *buf, size_t len, long long deadline_ms)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_writable(fd, deadline_ms) != 0)
                return -1;
            continue;
        }
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Drops the CR of each CRLF; a CR at the end of one chunk waits for the next. The engine
 * refuses bare CR in DATA (DESIGN 4.3), so no other CR reaches here. */
int local_copy_lf(int spool_fd, int fd, long long deadline_ms)
{
    static char in[LOCAL_COPY_CHUNK], out[LOCAL_COPY_CHUNK + 1];
    bool pending_cr = false;
    if (lseek(spool_fd, 0, SEEK_SET) != 0)
        return -1;
    for (;;) {
        ssize_t n = read(spool_fd, in, sizeof in);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        size_t o = 0;
        if (pending_cr && (n == 0 || in[0] != '\n'))
            out[o++] = '\r';
        pending_cr = false;
        for (ssize_t i = 0; i < n; i++) {
            if (in[i] == '\r' && (i + 1 == n || in[i + 1] == '\n')) {
                pending_cr = i + 1 == n;
                continue;
            }
            out[o++] = in[i];
        }
        if (local_write_all(fd, out, o, deadline_ms) != 0)
            return -1;
        if (n == 0)
            return 0;
    }
}

void local_split_address(const char *addr, char *local, size_t llen, char *domain, size_t dlen)
{
    const char *at = strrchr(addr, '@');
    size_t l = at ? (size_t)(at - addr) : strlen(addr);
    snprintf(local, llen, "%.*s", (int)l, addr);
    snprintf(domain, dlen, "%s", at ? at + 1 : "");
}
