/* TLS for the customer: a client context that verifies the provider's certificate against
 * the system store or --ca, and the name check (RFC 6125 via OpenSSL's host check). */
#ifndef ODMR_CLIENT_TLS_CLIENT_H
#define ODMR_CLIENT_TLS_CLIENT_H

#include <openssl/ssl.h>
#include <stddef.h>

struct bufferevent;
struct event_base;

/* TLS 1.2+, peer verification required. ca: a PEM file, or NULL for the system store. */
SSL_CTX *tls_client_context(const char *ca, char *err, size_t errlen);
/* STARTTLS (RFC 3207): wraps plain; the new bufferevent owns it. NULL on error. */
struct bufferevent *tls_client_start(struct event_base *base, struct bufferevent *plain,
                                     SSL_CTX *ctx, const char *name);
/* Implicit TLS on a connected socket. NULL on error. */
struct bufferevent *tls_client_socket(struct event_base *base, int fd, SSL_CTX *ctx,
                                      const char *name);
/* Why the handshake failed: the verification result, else the OpenSSL error queue. */
void tls_client_failure(struct bufferevent *bev, char *out, size_t outlen);

#endif
