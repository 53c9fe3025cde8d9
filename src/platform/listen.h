/* SPDX-License-Identifier: ISC */
/* Listening sockets: "host:port", "[v6addr]:port" and "unix:/path" (stream). */
#ifndef ODMR_PLATFORM_LISTEN_H
#define ODMR_PLATFORM_LISTEN_H

#include <event2/listener.h>
#include <stddef.h>

/* Binds and listens; returns a disabled-on-error libevent listener or NULL with err set.
 * A unix socket path is unlinked first and made mode 0666 (peers such as Postfix run as
 * other users; protect it with the directory's permissions). */
struct evconnlistener *listen_open(struct event_base *base, const char *spec,
                                   evconnlistener_cb on_accept, void *arg, char *err,
                                   size_t errlen);
/* Checks the syntax of a listen address without binding. 0 or -1 with err set. */
int listen_check(const char *spec, char *err, size_t errlen);
/* Formats a peer address as text ("127.0.0.1", "::1", "unix"). */
void listen_peer_text(const struct sockaddr *addr, int len, char *out, size_t outlen);

/* The key a peer is counted under for the per-address session limits: the IPv4 address;
 * an IPv6 address's /64 prefix ("2001:db8:1:2::/64": one customer network usually gets a
 * whole /64, so counting single IPv6 addresses would let one host take every slot); an
 * IPv4-mapped IPv6 address as IPv4; "" for unix-socket peers (local, exempt). */
void listen_peer_key(const struct sockaddr *addr, int len, char *out, size_t outlen);

/* Refuses a just-accepted connection: writes reply (a whole "421 ...\r\n" line) if the socket
 * takes it at once, never waiting, then closes fd. reply NULL: just closes. */
void listen_refuse(evutil_socket_t fd, const char *reply);

/* TCP_NODELAY on an accepted TCP socket: SMTP is request/response, and a reply or the last
 * piece of a message must not wait for the peer's delayed ACK (Nagle). No-op on unix sockets. */
void listen_set_nodelay(evutil_socket_t fd);

#endif
