/* SPDX-License-Identifier: ISC */
/* The reversed session (RFC 2645 5.3): odmr-client is the SMTP server on the connection it
 * opened, through the project's smtp_server engine, and relays each transaction to the local
 * target with end-to-end acknowledgement: every RCPT is relayed at once and answered with the
 * target's reply; the reply after the provider's final dot is sent only once the target has
 * answered its own final dot (docs/client.md). */
#ifndef ODMR_CLIENT_RELAY_H
#define ODMR_CLIENT_RELAY_H

#include <stdbool.h>

#include "client/client.h"
#include "client/target.h"

struct bufferevent;
struct event_base;
struct relay;

struct relay_stats {
    unsigned messages;      /* final dots answered */
    unsigned delivered;     /* answered 2xx */
    unsigned deferred;      /* answered 4xx */
    unsigned failed;        /* answered 5xx */
    unsigned long long bytes;   /* octets of the delivered messages (as received) */
    bool clean;             /* the provider ended the session outside a transaction */
    const char *end;        /* how it ended, for the log */
};

/* target_dsn: the target's probe found DSN; only then is DSN advertised to the provider. */
struct relay *relay_new(struct event_base *base, const struct client_options *o,
                        struct target *t, const char *hostname, uint64_t max_size,
                        bool target_dsn, void (*on_end)(void *arg), void *arg);
/* Takes the connection just turned around and greets the provider with 220. -1 on error. */
int relay_start(struct relay *r, struct bufferevent *bev, const char *peer, bool tls_active);
const struct relay_stats *relay_stats(const struct relay *r);
void relay_free(struct relay *r);

/* RFC 2033 4.2 replies after the dot, one per recipient, folded into the single SMTP reply the
 * provider records for every recipient: all 2xx -> the first; all refused -> the first 4xx if
 * any (a retry is safe), else the first 5xx; mixed success -> 451 (nothing is lost, the
 * accepted ones are delivered again later). Exposed for the unit test. */
void relay_fold_lmtp(const struct smtp_client_reply *replies, size_t count, struct smtp_reply *out);

#endif
