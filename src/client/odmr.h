/* SPDX-License-Identifier: ISC */
/* The customer's side before the turnaround (RFC 2645 5.1-5.2): connect, 220, EHLO, STARTTLS
 * (RFC 3207) or implicit TLS, EHLO again, AUTH (RFC 4954) through GNU SASL, the check that the
 * local target answers, then ATRN. On 250 the connection is handed over for the reversed
 * session; otherwise QUIT and an exit code. */
#ifndef ODMR_CLIENT_ODMR_H
#define ODMR_CLIENT_ODMR_H

#include <stdbool.h>

#include "client/client.h"
#include "client/target.h"

struct bufferevent;
struct event_base;
struct odmr;

struct odmr_callbacks {
    /* 250 to ATRN: bev is now the caller's (input buffer empty). */
    void (*turnaround)(void *arg, struct bufferevent *bev, bool tls_active);
    /* The exchange ended without a turnaround. */
    void (*finished)(void *arg, enum client_exit code);
};

struct odmr *odmr_new(struct event_base *base, const struct client_options *o,
                      const struct target_spec *target, const char *helo,
                      const struct odmr_callbacks *cb, void *arg);
/* Connects; errors are reported through finished(). */
void odmr_start(struct odmr *c);
/* What the target probe learnt (valid after a turnaround). */
const struct smtp_client_ext *odmr_target_caps(const struct odmr *c);
void odmr_free(struct odmr *c);

#endif
