/* SPDX-License-Identifier: ISC */
/* Reply reading and connecting for odmr-client. */
#include "platform/listen.h"
#include "client/wire.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/util.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void wire_reader_init(struct wire_reader *r)
{
    memset(r, 0, sizeof *r);
    /* RFC 5321 2.3.8: the provider and the local target are held to CRLF line ends. */
    reply_reader_init(&r->replies, false);
}

void wire_reader_free(struct wire_reader *r)
{
    reply_reader_free(&r->replies);
}

int wire_read_reply(struct wire_reader *r, struct evbuffer *in, struct smtp_client_reply *out)
{
    for (;;) {
        struct reply_line l;
        enum reply_status st = reply_reader_next(&r->replies, in, &l);
        if (st == REPLY_AGAIN)
            return 0;
        if (st != REPLY_LINE) {
            memset(&r->cur, 0, sizeof r->cur);
            r->error = st;
            return -1;
        }
        reply_reader_keep(&r->cur, &l);
        if (l.last) {
            *out = r->cur;
            memset(&r->cur, 0, sizeof r->cur);
            return 1;
        }
    }
}

const char *wire_reader_error(const struct wire_reader *r)
{
    return reply_status_name(r->error);
}

bool wire_ehlo_has(const struct smtp_client_reply *r, const char *keyword, char *args, size_t argslen)
{
    char line[REPLY_LINE_MAX];
    size_t klen = strlen(keyword);
    for (size_t i = 1; peer_reply_line(r, i, line, sizeof line) != NULL; i++) {
        if (strncasecmp(line, keyword, klen) != 0 || (line[klen] != '\0' && line[klen] != ' '))
            continue;
        if (args != NULL)
            snprintf(args, argslen, "%s", line[klen] == ' ' ? line + klen + 1 : "");
        return true;
    }
    return false;
}

/* ---- connecting ---- */

static int wait_connected(int fd, struct timeval timeout, char *err, size_t errlen)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int ms = (int)(timeout.tv_sec * 1000 + timeout.tv_usec / 1000);
    int n;
    do
        n = poll(&p, 1, ms);
    while (n < 0 && errno == EINTR);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (n == 0) {
        snprintf(err, errlen, "connection timed out");
        return -1;
    }
    if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        snprintf(err, errlen, "%s", strerror(soerr != 0 ? soerr : errno));
        return -1;
    }
    return 0;
}

static int connect_addr(const struct sockaddr *sa, socklen_t len, struct timeval timeout,
                        char *err, size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, sa, len) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    if (wait_connected(fd, timeout, err, errlen) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_unix(const char *path, struct timeval timeout, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        snprintf(err, errlen, "socket path too long: %s", path);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    return connect_addr((struct sockaddr *)&sun, sizeof sun, timeout, err, errlen);
}

int wire_connect(const char *host, const char *port, const char *unix_path,
                 struct timeval timeout, char *err, size_t errlen)
{
    if (unix_path != NULL)
        return connect_unix(unix_path, timeout, err, errlen);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    struct addrinfo *list = NULL;
    int rc = getaddrinfo(host, port, &hints, &list);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = list; a != NULL && fd < 0; a = a->ai_next)
        fd = connect_addr(a->ai_addr, a->ai_addrlen, timeout, err, errlen);
    freeaddrinfo(list);
    if (fd >= 0)
        listen_set_nodelay(fd);
    return fd;
}
