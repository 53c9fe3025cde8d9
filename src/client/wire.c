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
    line_reader_init(&r->lines, WIRE_LINE_MAX);
}

void wire_reader_free(struct wire_reader *r)
{
    line_reader_free(&r->lines);
}

/* RFC 5321 4.2: reply-line = *( code "-" text CRLF ) code [ SP text ] CRLF; the same code on
 * every line. 0 = more lines follow, 1 = last line, -1 = malformed. */
static int take_line(struct wire_reply *cur, const struct line *l)
{
    const char *t = l->text;
    if (l->len < 3 || t[0] < '2' || t[0] > '5' || t[1] < '0' || t[1] > '9' || t[2] < '0' ||
        t[2] > '9' || (l->len > 3 && t[3] != ' ' && t[3] != '-') || l->bare_cr ||
        memchr(t, '\0', l->len) != NULL)
        return -1;
    int code = (t[0] - '0') * 100 + (t[1] - '0') * 10 + (t[2] - '0');
    if ((cur->lines > 0 && code != cur->code) || ++cur->lines > WIRE_REPLY_LINES)
        return -1;
    cur->code = code;
    size_t used = strlen(cur->text);
    snprintf(cur->text + used, sizeof cur->text - used, "%s%s", cur->lines > 1 ? "\n" : "",
             l->len > 4 ? t + 4 : "");
    return l->len > 3 && t[3] == '-' ? 0 : 1;
}

int wire_read_reply(struct wire_reader *r, struct evbuffer *in, struct wire_reply *out)
{
    for (;;) {
        struct line l;
        enum line_status st = line_reader_next(&r->lines, in, &l);
        if (st == LINE_AGAIN)
            return 0;
        int rc = st == LINE_OK ? take_line(&r->cur, &l) : -1;
        if (rc < 0) {
            memset(&r->cur, 0, sizeof r->cur);
            return -1;
        }
        if (rc == 1) {
            *out = r->cur;
            memset(&r->cur, 0, sizeof r->cur);
            return 1;
        }
    }
}

const char *wire_reply_line(const struct wire_reply *r, size_t i, char *buf, size_t len)
{
    const char *p = r->text;
    for (size_t n = 0; n < i; n++) {
        p = strchr(p, '\n');
        if (p == NULL)
            return NULL;
        p++;
    }
    size_t l = strcspn(p, "\n");
    snprintf(buf, len, "%.*s", (int)l, p);
    return buf;
}

bool wire_ehlo_has(const struct wire_reply *r, const char *keyword, char *args, size_t argslen)
{
    char line[WIRE_LINE_MAX];
    size_t klen = strlen(keyword);
    for (size_t i = 1; wire_reply_line(r, i, line, sizeof line) != NULL; i++) {
        if (strncasecmp(line, keyword, klen) != 0 || (line[klen] != '\0' && line[klen] != ' '))
            continue;
        if (args != NULL)
            snprintf(args, argslen, "%s", line[klen] == ' ' ? line + klen + 1 : "");
        return true;
    }
    return false;
}

void wire_to_smtp_reply(const struct wire_reply *w, struct smtp_reply *out)
{
    out->code = w->code;
    out->enhanced[0] = '\0';
    size_t n = strnlen(w->text, sizeof out->text - 1);
    memcpy(out->text, w->text, n);
    out->text[n] = '\0';
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
