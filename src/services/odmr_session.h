/* SPDX-License-Identifier: ISC */
/* The ODMR service (RFC 2645) before the turnaround, on the SMTP server engine
 * (engines/smtp_server.h): AUTH through SASL and ATRN; then the connection is handed to the
 * push (services/push.h), whose sessions the service owns. */
#ifndef ODMR_SERVICES_ODMR_SESSION_H
#define ODMR_SERVICES_ODMR_SESSION_H

#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <time.h>

#include "services/push.h"
#include "store/queue.h"
#include "store/userdb.h"

struct odmr_settings {
    const char *hostname;
    SSL_CTX *tls;                    /* STARTTLS and the implicit-TLS port; NULL = no TLS */
    time_t command_timeout;          /* RFC 5321 4.5.3.2.7: 5 min */
    unsigned max_errors;             /* bad or out-of-sequence commands, then 421: default 20 */
    unsigned max_junk_commands;      /* NOOP, RSET ... without mail: [intake]'s, default 100 */
    unsigned max_auth_failures;      /* per session, then 421: default 3 */
    unsigned max_address_failures;   /* per client address in failure_window: default 10 */
    time_t failure_window;           /* default 15 min */
    const unsigned char *auth_secret; /* SASL_SECRET_LEN octets for the SCRAM decoys, or NULL */
    unsigned max_sessions;               /* over it: 421 4.3.2 */
    unsigned max_sessions_per_address;   /* listen_peer_key(); over it: 421 4.7.0 */
    unsigned max_unauthenticated_per_address;   /* sessions not yet through AUTH: 421 4.7.0 */
    time_t tls_handshake_timeout;        /* STARTTLS and the implicit-TLS port */
    struct push_timeouts push_timeouts;
    unsigned push_open_files;            /* shared by every push beyond one each */
};

struct odmr_service;

struct odmr_service *odmr_service_new(struct event_base *base, struct queue *queue,
                                      struct userdb *const *users,
                                      const struct odmr_settings *settings);
/* Takes ownership of fd. implicit_tls: the [odmr] tls_listen port. */
void odmr_service_accept(struct odmr_service *service, evutil_socket_t fd,
                         const struct sockaddr *peer, int peer_len, bool implicit_tls);
/* Graceful stop: sessions before the turnaround get 421; pushes end at the next safe point.
 * on_idle runs once no session is left. */
void odmr_service_shutdown(struct odmr_service *service, void (*on_idle)(void *), void *arg);
size_t odmr_service_session_count(const struct odmr_service *service);
void odmr_service_free(struct odmr_service *service);

#endif
