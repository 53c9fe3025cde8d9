/* SPDX-License-Identifier: ISC */
/* /metrics over libevent's evhttp. A scrape is answered at once when the queue snapshot is
 * fresh (services/metrics_queue.h); otherwise it waits, without blocking the loop, for the
 * snapshot the scan thread is making, and every scrape waiting then gets that one. */
#include "services/metrics_http.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "services/metrics.h"
#include "services/metrics_queue.h"

enum { MAX_WAITING = 64, HOST_MAX = 256 };

struct metrics_http {
    struct event_base *base;
    struct evhttp *http;
    struct metrics_queue *queue;
    struct evhttp_request *waiting[MAX_WAITING];
    size_t waiting_count;
};

/* ---- the listen address ---- */

/* "host:port" or "[v6]:port" into host and port; -1 when it is neither. */
static int split_spec(const char *spec, char host[HOST_MAX], unsigned *port)
{
    const char *colon;
    size_t len;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        len = (size_t)(close - spec - 1);
        spec++;
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL || memchr(spec, ':', (size_t)(colon - spec)) != NULL)
            return -1;
        len = (size_t)(colon - spec);
    }
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (len == 0 || len >= HOST_MAX || colon[1] == '\0' || *end != '\0' || p == 0 || p > 65535)
        return -1;
    memcpy(host, spec, len);
    host[len] = '\0';
    *port = (unsigned)p;
    return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* Every address the host resolves to must be loopback (a name such as "localhost" may have
 * several, and evhttp binds the first). */
static int check_loopback(const char *spec, const char *host, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "[metrics] listen: %s: %s", spec, gai_strerror(rc));
        return -1;
    }
    bool loopback = true;
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
        loopback = loopback && is_loopback(a->ai_addr);
    freeaddrinfo(res);
    if (!loopback)
        snprintf(err, errlen, "[metrics] listen: %s is not a loopback address; /metrics has no "
                 "authentication and names the hosted domains: set [metrics] allow_remote = yes "
                 "to serve it there (behind a firewall)", spec);
    return loopback ? 0 : -1;
}

int metrics_http_check(const char *spec, bool allow_remote, char *err, size_t errlen)
{
    char host[HOST_MAX];
    unsigned port;
    if (spec == NULL || spec[0] == '\0')
        return 0;
    if (split_spec(spec, host, &port) != 0) {
        snprintf(err, errlen, "[metrics] listen: \"%s\" is not host:port or [v6]:port", spec);
        return -1;
    }
    return allow_remote ? 0 : check_loopback(spec, host, err, errlen);
}

/* ---- scrapes ---- */

static void format_snapshot(const struct metrics_queue_snapshot *snap, void *arg)
{
    metrics_format(arg, snap);
}

static void answer(struct metrics_http *h, struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();
    if (body == NULL) {
        evhttp_send_error(req, HTTP_SERVUNAVAIL, NULL);
        return;
    }
    if (h->queue != NULL)
        metrics_queue_with(h->queue, format_snapshot, body);
    else
        metrics_format(body, NULL);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
}

/* A request whose connection closed meanwhile is freed by evhttp_send_reply (libevent keeps
 * a request the application has not answered yet, without its connection). */
static void answer_waiting(void *arg)
{
    struct metrics_http *h = arg;
    for (size_t i = 0; i < h->waiting_count; i++)
        answer(h, h->waiting[i]);
    h->waiting_count = 0;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct metrics_http *h = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (path == NULL || strcmp(path, "/metrics") != 0) {
        evhttp_send_error(req, HTTP_NOTFOUND, NULL);
        return;
    }
    if (h->queue == NULL || metrics_queue_fresh(h->queue)) {
        answer(h, req);
        return;
    }
    if (h->waiting_count == MAX_WAITING) {
        evhttp_send_error(req, HTTP_SERVUNAVAIL, NULL);
        return;
    }
    h->waiting[h->waiting_count++] = req;
}

/* ---- the listener ---- */

static void on_pause_over(evutil_socket_t fd, short events, void *arg)
{
    evconnlistener_enable(arg);
}

/* Out of descriptors (EMFILE): libevent would retry accept() at once, forever; instead the
 * metrics listener rests a second (the scraper waits in the backlog). */
static void on_accept_error(struct evconnlistener *listener, void *arg)
{
    const struct timeval pause = {1, 0};
    int error = EVUTIL_SOCKET_ERROR();
    log_warn("metrics.accept_failed", " errno=%d error=\"%s\" pause_ms=1000", error,
             evutil_socket_error_to_string(error));
    evconnlistener_disable(listener);
    event_base_once(evconnlistener_get_base(listener), -1, EV_TIMEOUT, on_pause_over, listener,
                    &pause);
}

struct metrics_http *metrics_http_listen(struct event_base *base, const char *spec, char *err,
                                         size_t errlen)
{
    char host[HOST_MAX];
    unsigned port;
    struct metrics_http *h = calloc(1, sizeof *h);
    if (h == NULL || split_spec(spec, host, &port) != 0 || (h->http = evhttp_new(base)) == NULL) {
        snprintf(err, errlen, "[metrics] listen: %s: cannot serve it", spec);
        free(h);
        return NULL;
    }
    h->base = base;
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(h->http, METRICS_HTTP_TIMEOUT);
    evhttp_set_max_headers_size(h->http, 8192);
    evhttp_set_max_body_size(h->http, 1024);
    evhttp_set_gencb(h->http, on_request, h);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(h->http, host,
                                                                       (ev_uint16_t)port);
    if (bound == NULL) {
        snprintf(err, errlen, "[metrics] listen: cannot bind %s", spec);
        metrics_http_free(h);
        return NULL;
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(bound), on_accept_error);
    return h;
}

int metrics_http_watch_queue(struct metrics_http *h, const char *spool, unsigned top_domains,
                             char *err, size_t errlen)
{
    h->queue = metrics_queue_start(h->base, spool, top_domains, answer_waiting, h, err, errlen);
    return h->queue != NULL ? 0 : -1;
}

void metrics_http_free(struct metrics_http *h)
{
    if (h == NULL)
        return;
    answer_waiting(h);
    evhttp_free(h->http);
    metrics_queue_free(h->queue);
    free(h);
}
