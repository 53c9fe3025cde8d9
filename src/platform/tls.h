/* SPDX-License-Identifier: ISC */
/* TLS contexts (OpenSSL 3) and the self-signed certificate made on first run. */
#ifndef ODMR_PLATFORM_TLS_H
#define ODMR_PLATFORM_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* When neither cert nor key exists, writes a self-signed certificate for hostname (RSA 2048,
 * SHA-256, 10 years) and its key (mode 0600), creating the directory. Returns 1 when made,
 * 0 when both already existed, -1 on error (err set). */
int tls_ensure_self_signed(const char *cert_path, const char *key_path, const char *hostname,
                           char *err, size_t errlen);
/* Server context: TLS 1.2+, cert chain and key checked against each other; with ca_path,
 * client certificates are requested (not required) and verified against it. */
SSL_CTX *tls_server_context(const char *cert_path, const char *key_path, const char *ca_path,
                            char *err, size_t errlen);

struct bufferevent;
struct event_base;

/* Wraps an established plaintext connection in a server-side TLS filter (STARTTLS, RFC 3207).
 * The plaintext output still queued (the 220) is sent first. Returns the new bufferevent, which
 * owns plain, or NULL (plain untouched). */
struct bufferevent *tls_start_server(struct event_base *base, struct bufferevent *plain,
                                     SSL_CTX *ctx);
/* A server-side TLS bufferevent on a fresh socket (implicit TLS). NULL on error. */
struct bufferevent *tls_accept_socket(struct event_base *base, int fd, SSL_CTX *ctx);
/* ssl as a bufferevent, for either side (connecting: client, else server): a filter over plain
 * (STARTTLS), or, plain NULL, on the socket fd. It closes what it wraps when freed and defers
 * its callbacks. NULL when ssl is NULL or on error (ssl then freed, plain untouched). */
struct bufferevent *tls_bufferevent(struct event_base *base, struct bufferevent *plain, int fd,
                                    SSL *ssl, bool connecting);
/* True once the TLS handshake of a TLS bufferevent has completed. */
bool tls_handshake_done(struct bufferevent *bev);
/* RFC 9266 tls-exporter channel binding of the connection, base64, into out. -1 if none. */
int tls_channel_binding(struct bufferevent *bev, char *out, size_t outlen);
/* The EXTERNAL identity of a client certificate that verified against [tls] ca, into out (see
 * tls_certificate_identity). -1 if none. */
int tls_peer_subject(struct bufferevent *bev, char *out, size_t outlen);
/* The EXTERNAL identity of cert: its subject's one CN, whole, as UTF-8. -1 when the subject has
 * no CN or several, or the CN holds a NUL or another control character, or does not fit. */
int tls_certificate_identity(X509 *cert, char *out, size_t outlen);

/* True for a plain connection and for a TLS one whose handshake has finished: only then can
 * what waits in its output still be written. */
bool tls_can_write(struct bufferevent *bev);

/* Frees a connection; a TLS one first sends its close_notify alert (RFC 8446 6.1), which
 * bufferevent_free() alone does not. Plain connections are just freed. */
void tls_bufferevent_close(struct bufferevent *bev);

#endif
