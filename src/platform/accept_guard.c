/* SPDX-License-Identifier: ISC */
/* Accept-error handling for every listener of odmrd (see accept_guard.h). */
#include "platform/accept_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "platform/listen.h"

enum { GUARD_MAX_LISTENERS = 64 };

struct guarded {
    struct accept_guard *guard;
    struct evconnlistener *listener;
    evconnlistener_cb on_accept;
    void *arg;
};

struct accept_guard {
    struct event_base *base;
    struct timeval pause;
    struct event *timer;
    int reserve;                /* "/" opened, given up to accept one connection */
    bool paused, burst, stopped;
    unsigned long burst_refused, burst_pauses, refused;
    struct guarded listeners[GUARD_MAX_LISTENERS];
    size_t count;
};

static void set_enabled(struct accept_guard *g, bool on)
{
    for (size_t i = 0; i < g->count; i++)
        if (on)
            evconnlistener_enable(g->listeners[i].listener);
        else
            evconnlistener_disable(g->listeners[i].listener);
}

/* The pause is over: listen again. The timer runs once more after that; no error meanwhile
 * means the burst is over. */
static void on_timer(evutil_socket_t fd, short events, void *arg)
{
    struct accept_guard *g = arg;
    if (g->stopped)
        return;
    if (g->paused) {
        g->paused = false;
        set_enabled(g, true);
        evtimer_add(g->timer, &g->pause);
        return;
    }
    if (g->burst) {
        log_warn("accept.resumed", " refused=%lu pauses=%lu", g->burst_refused, g->burst_pauses);
        g->burst = false;
    }
}

/* Any descriptor will do; the root directory exists in every mount namespace (a sandbox with
 * a private /dev may have no /dev/null). */
static int open_reserve(void)
{
    return open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* One pending connection is taken with the reserve descriptor and refused, so the client
 * learns why at once (RFC 5321 3.8: 421 and close) instead of waiting in the backlog. */
static void shed_one(struct accept_guard *g, evutil_socket_t listen_fd)
{
    if (g->reserve >= 0)
        close(g->reserve);
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        listen_refuse(fd, "421 4.3.2 Service temporarily overloaded, try again later\r\n");
        g->burst_refused++;
        g->refused++;
    }
    g->reserve = open_reserve();
}

static void on_error(struct evconnlistener *listener, void *arg)
{
    struct guarded *l = arg;
    struct accept_guard *g = l->guard;
    int error = EVUTIL_SOCKET_ERROR();
    if (!g->burst) {
        log_error("accept.failed", " errno=%d error=\"%s\" pause_ms=%ld", error,
                  strerror(error), (long)(g->pause.tv_sec * 1000 + g->pause.tv_usec / 1000));
        g->burst = true;
        g->burst_refused = g->burst_pauses = 0;
    }
    shed_one(g, evconnlistener_get_fd(listener));
    set_enabled(g, false);
    g->paused = true;
    g->burst_pauses++;
    if (!g->stopped)
        evtimer_add(g->timer, &g->pause);
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                      int len, void *arg)
{
    struct guarded *l = arg;
    l->on_accept(listener, fd, addr, len, l->arg);
}

struct accept_guard *accept_guard_new(struct event_base *base, const struct timeval *pause,
                                      char *err, size_t errlen)
{
    struct accept_guard *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->base = base;
    g->pause = *pause;
    g->reserve = open_reserve();
    g->timer = evtimer_new(base, on_timer, g);
    if (g->reserve < 0 || g->timer == NULL) {
        snprintf(err, errlen, "cannot keep a reserve descriptor: %s", strerror(errno));
        accept_guard_free(g);
        return NULL;
    }
    return g;
}

struct evconnlistener *accept_guard_listen(struct accept_guard *g, const char *spec,
                                           evconnlistener_cb cb, void *arg, char *err,
                                           size_t errlen)
{
    if (g->count == GUARD_MAX_LISTENERS) {
        snprintf(err, errlen, "%s: too many listeners", spec);
        return NULL;
    }
    struct guarded *l = &g->listeners[g->count];
    *l = (struct guarded){g, NULL, cb, arg};
    l->listener = listen_open(g->base, spec, on_accept, l, err, errlen);
    if (l->listener == NULL)
        return NULL;
    evconnlistener_set_error_cb(l->listener, on_error);
    g->count++;
    return l->listener;
}

void accept_guard_set_target(struct accept_guard *g, struct evconnlistener *listener,
                             evconnlistener_cb cb, void *arg)
{
    for (size_t i = 0; i < g->count; i++)
        if (g->listeners[i].listener == listener) {
            g->listeners[i].on_accept = cb;
            g->listeners[i].arg = arg;
        }
}

void accept_guard_stop(struct accept_guard *g)
{
    g->stopped = true;
    evtimer_del(g->timer);
    set_enabled(g, false);
}

unsigned long accept_guard_refused(const struct accept_guard *g)
{
    return g->refused;
}

void accept_guard_free(struct accept_guard *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->count; i++)
        evconnlistener_free(g->listeners[i].listener);
    if (g->timer)
        event_free(g->timer);
    if (g->reserve >= 0)
        close(g->reserve);
    free(g);
}
