/* SPDX-License-Identifier: ISC */
/* The connection to an SMTP or LMTP target, for the target (target.c) and its probe
 * (target_probe.c) alike: whether and how STARTTLS goes toward it (RFC 3207, RFC 7435), the
 * client engine's settings (engines/smtp_client.h), the blocking, bounded connect. */
#ifndef ODMR_CLIENT_TARGET_CONNECT_H
#define ODMR_CLIENT_TARGET_CONNECT_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "client/client.h"
#include "client/target_spec.h"
#include "engines/smtp_client.h"

struct event_base;

/* Where and how to connect. */
struct target_link {
    const struct target_spec *spec;
    const struct client_options *opts;   /* the timeouts */
    const char *helo;
    SSL_CTX *tls_ctx;                    /* target_tls_context(), or NULL */
};

/* The context for STARTTLS toward the target, or NULL: none (loopback, a unix socket, a local
 * target), or out of memory (a required STARTTLS then refuses to go on in clear). */
SSL_CTX *target_tls_context(const struct target_spec *spec);
/* Connects (blocking, bounded by the connect timeout) and hands the socket to a new client
 * engine on base; NULL with err. */
struct smtp_client *target_connect(struct event_base *base, const struct target_link *t,
                                   const struct smtp_client_callbacks *cb, void *arg, char *err,
                                   size_t errlen);

#endif
