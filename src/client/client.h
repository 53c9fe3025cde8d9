/* SPDX-License-Identifier: ISC */
/* odmr-client: the customer side of On-Demand Mail Relay (RFC 2645). Shared definitions of the
 * program's modules: settings (settings.c: flags and the config file), the run (main.c), the
 * exchange before the turnaround (odmr.c), the local target (target.c), the reversed session
 * (relay.c), TLS (tls_client.c), the wire (wire.c). */
#ifndef ODMR_CLIENT_CLIENT_H
#define ODMR_CLIENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/time.h>
#include <time.h>

#include "platform/tls_pin.h"

/* Exit codes: documented in --help and docs/client.md. */
enum client_exit {
    EXIT_DELIVERED = 0,     /* turned around, the session ended cleanly */
    EXIT_NO_MAIL = 1,       /* 453 to ATRN */
    EXIT_AUTH = 2,          /* AUTH failed, or ATRN answered 530 */
    EXIT_TLS = 3,           /* TLS handshake or certificate verification failed */
    EXIT_REFUSED = 4,       /* 450 to ATRN */
    EXIT_BUSY = 5,          /* 451 to ATRN */
    EXIT_TARGET = 6,        /* the local target is unavailable: ATRN not sent */
    EXIT_PROTOCOL = 7,      /* protocol or network error */
    EXIT_USAGE = 64,        /* EX_USAGE: bad options or configuration */
};

enum tls_mode { TLS_MODE_STARTTLS, TLS_MODE_IMPLICIT, TLS_MODE_NONE };

/* Every wait of the client has one of these timeouts (docs/client.md "Timeouts"); the values
 * come from settings.c (RFC 5321 4.5.3.2 defaults, the config file, the flags). */
enum client_timeout_kind {
    TIMEOUT_CONNECT,          /* TCP connect: provider and local target */
    TIMEOUT_GREETING,         /* 220 (and the implicit-TLS handshake) */
    TIMEOUT_COMMAND,          /* a reply to EHLO, STARTTLS, AUTH, MAIL, RCPT, RSET */
    TIMEOUT_ATRN,             /* the reply to ATRN */
    TIMEOUT_DATA_INIT,        /* the target's 354 */
    TIMEOUT_DATA_BLOCK,       /* each write of message data to the target */
    TIMEOUT_DATA_END,         /* the target's reply to the final dot; an MDA's run */
    TIMEOUT_SERVER_COMMAND,   /* after the turnaround: the provider's next command */
    TIMEOUT_SERVER_DATA,      /* after the turnaround: each block of the provider's data */
    TIMEOUT_KIND_COUNT,
};

enum { CLIENT_PIN_MAX = 4 };

struct client_options {
    char *config_file;       /* -c FILE, or NULL */
    char *server;            /* HOST[:PORT] as given */
    char host[256];
    char port[16];
    char *user;
    char *password;          /* read from the password file */
    char *password_file;
    enum tls_mode tls;
    char *ca;
    char *tls_name;          /* name the certificate must carry; default: host */
    struct tls_pin pins[CLIENT_PIN_MAX];   /* accepted provider keys (--pin) */
    size_t pin_count;
    bool pins_from_flags;    /* --pin replaces the file's pins instead of adding to them */
    char *domains;           /* ATRN argument, or NULL for every domain of the user */
    char *deliver;
    char *mech;
    char *helo;              /* our name; default: gethostname() */
    double timeout_scale;    /* --timeout FACTOR: multiplies every timeout (tests) */
    unsigned timeouts[TIMEOUT_KIND_COUNT];   /* seconds, before scaling */
    unsigned every;          /* --every: seconds between sessions (daemon mode), 0 = once */
    bool verbose;
};

/* The timeout of a kind, scaled (at least 10 ms). */
struct timeval client_timeout(const struct client_options *o, enum client_timeout_kind kind);
/* Whole seconds, at least 1 (for the server engine's limits and the MDA's run). */
time_t client_timeout_seconds(const struct client_options *o, enum client_timeout_kind kind);

#endif
