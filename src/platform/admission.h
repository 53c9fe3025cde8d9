/* SPDX-License-Identifier: ISC */
/* The connection limits applied at accept, shared by the intake servers and the ODMR service:
 * a server that cannot serve a client now answers 421 and closes (RFC 5321 3.8). */
#ifndef ODMR_PLATFORM_ADMISSION_H
#define ODMR_PLATFORM_ADMISSION_H

#include <event2/util.h>
#include <stdbool.h>
#include <stddef.h>

struct peer_count;

struct admission_rule {
    bool refuse;                 /* refuse outright (max_sessions reached, shutting down) */
    struct peer_count *peers;    /* else, when set: at most limit sessions per address */
    unsigned limit;
    const char *reason;          /* for the log */
    const char *reply;           /* the whole "421 ...\r\n" line */
};

/* Rules in order; the first that refuses wins: its reply is written (if say) and fd closed,
 * and the counts taken by earlier rules are given back. Returns NULL when every rule admitted
 * (the counts stay taken under key, see listen_peer_key()), else the refusing rule's reason. */
const char *admission_check(evutil_socket_t fd, const char *key,
                            const struct admission_rule *rules, size_t count, bool say);

#endif
