/* odmr-client: the customer side of On-Demand Mail Relay (RFC 2645). Shared definitions of the
 * program's modules: options (main.c), the exchange before the turnaround (odmr.c), the local
 * target (target.c), the reversed session (relay.c), TLS (tls_client.c), the wire (wire.c). */
#ifndef ODMR_CLIENT_CLIENT_H
#define ODMR_CLIENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/time.h>
#include <time.h>

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

struct client_options {
    char *server;            /* HOST[:PORT] as given */
    char host[256];
    char port[16];
    char *user;
    char *password;          /* read from --password-file */
    char *password_file;
    enum tls_mode tls;
    bool tls_given;
    char *ca;
    char *tls_name;          /* name the certificate must carry; default: host */
    char *domains;           /* ATRN argument, or NULL for every domain of the user */
    char *deliver;
    char *mech;
    char *helo;              /* our name; default: gethostname() */
    double timeout_scale;    /* multiplies every timeout (tests) */
    unsigned every;          /* --every: seconds between sessions (daemon mode), 0 = once */
    bool verbose;
};

/* RFC 5321 4.5.3.2 (and RFC 2645 5.2.1 for ATRN), in seconds before scaling. */
enum {
    TIMEOUT_GREETING = 300,
    TIMEOUT_COMMAND = 300,
    TIMEOUT_ATRN = 600,      /* RFC 2645 5.2.1: the provider may take long to answer ATRN */
    TIMEOUT_DATA_INIT = 120,
    TIMEOUT_DATA_BLOCK = 180,
    TIMEOUT_DATA_END = 600,
    TIMEOUT_SERVER_COMMAND = 300,   /* RFC 5321 4.5.3.2.7: our server side */
    TIMEOUT_SERVER_DATA = 180,
};

/* A scaled timeout (at least 10 ms). */
struct timeval client_timeout(const struct client_options *o, double seconds);
/* Whole seconds, at least 1 (for the server engine's limits). */
time_t client_timeout_seconds(const struct client_options *o, double seconds);

#endif
