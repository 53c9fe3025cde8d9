/* SPDX-License-Identifier: ISC */
/* The per-recipient delivery line, in Postfix's shape so grep users and pflogsumm-style tools
 * read it (docs/push.md "Log lines"):
 *   level=info event=delivery id=ID to=RCPT relay=RELAY delay=1.5 dsn=2.0.0 status=sent (REPLY)
 * One line for every recipient outcome odmrd decides: push, expiry, notices through the relay. */
#ifndef ODMR_SERVICES_DELIVERY_LOG_H
#define ODMR_SERVICES_DELIVERY_LOG_H

#include <stddef.h>
#include <time.h>

#include "store/queue.h"

enum delivery_status { DELIVERY_SENT, DELIVERY_DEFERRED, DELIVERY_BOUNCED, DELIVERY_EXPIRED };

/* A recorded recipient state as a status: pending deferred, done sent, failed bounced. */
enum delivery_status delivery_status_of(enum queue_rcpt_state state);

/* relay: already a safe token sequence ("customer[192.0.2.1] user=alice", "host:port", "none").
 * reply: the reply as received (or odmrd's own text); its enhanced status code, when it has a
 * well-formed one, is the dsn=, else the status's default (2.0.0, 4.0.0, 5.0.0, 5.4.7). */
void delivery_log(const char *id, const char *rcpt, const char *relay, time_t arrival,
                  enum delivery_status status, const char *reply);

/* The dsn= value of reply (exposed for the unit test): into out (at least 16 octets). */
const char *delivery_dsn(char *out, size_t outlen, enum delivery_status status,
                         const char *reply);

#endif
