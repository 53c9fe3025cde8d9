/* SPDX-License-Identifier: ISC */
/* Listeners that survive running out of descriptors. Without an error callback libevent
 * retries a failing accept() at once, forever (EMFILE: the pending connection stays in the
 * backlog, the listener stays readable): 100 % CPU and a log line per try. The guard keeps a
 * reserve descriptor (/dev/null); on an accept error it closes the reserve, accepts the pending
 * connection and closes it after a "421 4.3.2" (so the client is told, and the backlog
 * drains), reopens the reserve, and pauses every listener for a moment. One error line per
 * burst, and one line with the count when the burst is over. */
#ifndef ODMR_PLATFORM_ACCEPT_GUARD_H
#define ODMR_PLATFORM_ACCEPT_GUARD_H

#include <event2/listener.h>
#include <stddef.h>
#include <sys/time.h>

struct accept_guard;

/* pause: how long every listener stays off after an accept error. NULL on error (err set). */
struct accept_guard *accept_guard_new(struct event_base *base, const struct timeval *pause,
                                      char *err, size_t errlen);
/* listen_open() under the guard: on_accept(listener, fd, addr, len, arg) for every connection.
 * NULL with err set. The guard owns the listener. */
struct evconnlistener *accept_guard_listen(struct accept_guard *g, const char *spec,
                                           evconnlistener_cb on_accept, void *arg, char *err,
                                           size_t errlen);
/* Changes the callback and argument of a listener made by accept_guard_listen(). */
void accept_guard_set_target(struct accept_guard *g, struct evconnlistener *listener,
                             evconnlistener_cb on_accept, void *arg);
/* Shutdown: every listener off for good. */
void accept_guard_stop(struct accept_guard *g);
/* Connections refused because accept() failed, since the start. */
unsigned long accept_guard_refused(const struct accept_guard *g);
/* Frees the listeners and the guard. */
void accept_guard_free(struct accept_guard *g);

#endif
