/* SPDX-License-Identifier: ISC */
/* Listening sockets for the intake and ODMR services. */
#include "platform/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct parsed_address {
    struct sockaddr_storage storage;
    socklen_t length;
    bool is_unix;
};

static int parse_unix(const char *path, struct parsed_address *out, char *err, size_t errlen)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&out->storage;
    if (path[0] != '/' || strlen(path) >= sizeof sun->sun_path) {
        snprintf(err, errlen, "unix:%s: need an absolute path shorter than %zu octets", path,
                 sizeof sun->sun_path);
        return -1;
    }
    sun->sun_family = AF_UNIX;
    strcpy(sun->sun_path, path);
    out->length = sizeof *sun;
    out->is_unix = true;
    return 0;
}

static int parse_port(const char *text, unsigned *port)
{
    char *end;
    unsigned long value = strtoul(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value == 0 || value > 65535)
        return -1;
    *port = (unsigned)value;
    return 0;
}

static int parse_inet(const char *spec, struct parsed_address *out, char *err, size_t errlen)
{
    char host[128];
    const char *colon = strrchr(spec, ':');
    unsigned port;
    if (colon == NULL || parse_port(colon + 1, &port) != 0 ||
        (size_t)(colon - spec) >= sizeof host) {
        snprintf(err, errlen, "\"%s\": expected host:port, [ipv6]:port or unix:/path", spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->storage;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->storage;
    size_t hl = strlen(host);
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons((uint16_t)port);
            out->length = sizeof *v6;
            return 0;
        }
    } else if (strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        if (strcmp(host, "localhost") == 0)
            v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        out->length = sizeof *v4;
        return 0;
    }
    snprintf(err, errlen, "\"%s\": the host must be a numeric IPv4 address, [IPv6] or localhost",
             spec);
    return -1;
}

static int parse_address(const char *spec, struct parsed_address *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strncmp(spec, "unix:", 5) == 0)
        return parse_unix(spec + 5, out, err, errlen);
    return parse_inet(spec, out, err, errlen);
}

int listen_check(const char *spec, char *err, size_t errlen)
{
    struct parsed_address address;
    return parse_address(spec, &address, err, errlen);
}

struct evconnlistener *listen_open(struct event_base *base, const char *spec,
                                   evconnlistener_cb on_accept, void *arg, char *err,
                                   size_t errlen)
{
    struct parsed_address address;
    if (parse_address(spec, &address, err, errlen) != 0)
        return NULL;
    if (address.is_unix)
        unlink(((struct sockaddr_un *)&address.storage)->sun_path);
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE;
    struct evconnlistener *listener = evconnlistener_new_bind(
        base, on_accept, arg, flags, 128, (struct sockaddr *)&address.storage, (int)address.length);
    if (listener == NULL) {
        snprintf(err, errlen, "%s: cannot listen: %s", spec, strerror(errno));
        return NULL;
    }
    if (address.is_unix)
        chmod(((struct sockaddr_un *)&address.storage)->sun_path, 0666);
    return listener;
}

void listen_peer_text(const struct sockaddr *addr, int len, char *out, size_t outlen)
{
    snprintf(out, outlen, "unknown");
    if (addr == NULL || len <= 0)
        return;
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, out, (socklen_t)outlen);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, out,
                  (socklen_t)outlen);
    else if (addr->sa_family == AF_UNIX)
        snprintf(out, outlen, "unix");
}

void listen_peer_key(const struct sockaddr *addr, int len, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", "");
    if (addr == NULL || len <= 0)
        return;
    if (addr->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, out, (socklen_t)outlen);
    } else if (addr->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        char text[INET6_ADDRSTRLEN];
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)outlen);
            return;
        }
        struct in6_addr prefix = {0};
        memcpy(prefix.s6_addr, a->s6_addr, 8);
        inet_ntop(AF_INET6, &prefix, text, sizeof text);
        snprintf(out, outlen, "%s/64", text);
    }
}

void listen_refuse(evutil_socket_t fd, const char *reply)
{
    if (reply != NULL) {
        ssize_t ignored = send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)ignored;
    }
    evutil_closesocket(fd);
}

void listen_set_nodelay(evutil_socket_t fd)
{
    int on = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}
