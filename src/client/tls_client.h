/* SPDX-License-Identifier: ISC */
/* TLS for the customer: a client context that verifies the provider's certificate against
 * the system store or --ca with the name check (RFC 6125 via OpenSSL's host check), or against
 * public-key pins (docs/client.md "Certificate pinning"). */
#ifndef ODMR_CLIENT_TLS_CLIENT_H
#define ODMR_CLIENT_TLS_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "platform/tls_pin.h"

struct bufferevent;
struct event_base;

/* What authenticates the provider. Without pins: the chain (ca, or the system store when NULL)
 * and the name. With pins: the certificate's public key must be one of them; with ca as well,
 * the chain and the name must verify too; without ca the pin alone is enough (no store is
 * loaded: a self-signed certificate is accepted when its key matches). */
struct tls_client_trust {
    const char *ca;
    const struct tls_pin *pins;
    size_t pin_count;
    /* set by the handshake: the provider's key when it matched no pin */
    bool pin_mismatch;
    struct tls_pin seen;
};

/* TLS 1.2+, peer verification required. trust must outlive the context. */
SSL_CTX *tls_client_context(struct tls_client_trust *trust, char *err, size_t errlen);
/* STARTTLS (RFC 3207): wraps plain; the new bufferevent owns it. NULL on error. */
struct bufferevent *tls_client_start(struct event_base *base, struct bufferevent *plain,
                                     SSL_CTX *ctx, const char *name);
/* Implicit TLS on a connected socket. NULL on error. */
struct bufferevent *tls_client_socket(struct event_base *base, int fd, SSL_CTX *ctx,
                                      const char *name);
/* Why the handshake failed: a pin mismatch (the expected pins and the provider's), the
 * verification result, else the OpenSSL error queue. */
void tls_client_failure(struct bufferevent *bev, const struct tls_client_trust *trust, char *out,
                        size_t outlen);

#endif
