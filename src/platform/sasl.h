/* SPDX-License-Identifier: ISC */
/* SASL server side through GNU SASL (RFC 4422): CRAM-MD5 (RFC 2195), PLAIN, LOGIN,
 * SCRAM-SHA-256 and -PLUS (RFC 7677, RFC 5802, RFC 9266 tls-exporter), EXTERNAL.
 * The caller supplies the credentials of a user through a lookup function, so this layer knows
 * nothing of the users file; which mechanisms are offered when is the protocol's policy. */
#ifndef ODMR_PLATFORM_SASL_H
#define ODMR_PLATFORM_SASL_H

#include <stdbool.h>
#include <stddef.h>

/* What odmrctl writes for a new SCRAM-SHA-256 verifier (RFC 7677 4: at least 4096 iterations;
 * RFC 5802 5.1: a random salt), and so what a user without one is shown (decoys, sasl.c). */
enum { SASL_SCRAM_ITERATIONS = 4096, SASL_SCRAM_SALT_LEN = 16, SASL_SECRET_LEN = 32 };

struct sasl_credentials {
    const char *password;              /* plaintext-equivalent secret, NULL when none stored */
    unsigned scram_iterations;         /* 0 when no SCRAM-SHA-256 verifier */
    const char *scram_salt_b64;
    const char *scram_stored_key_b64;
    const char *scram_server_key_b64;
    const char *tls_subject;           /* certificate CN accepted for EXTERNAL, or NULL */
};

/* Finds the credentials of authid; false when there is no such user. The strings must stay
 * valid until the exchange ends. */
typedef bool (*sasl_lookup_fn)(void *arg, const char *authid, struct sasl_credentials *out);

enum sasl_result {
    SASL_RESULT_OK,           /* authenticated: sasl_exchange_user() names the user */
    SASL_RESULT_CONTINUE,     /* send "334 <output>" and read one more line */
    SASL_RESULT_FAILED,       /* 535 5.7.8 */
    SASL_RESULT_BAD_INPUT,    /* 501 5.5.2: not base64, or a malformed message */
    SASL_RESULT_UNAVAILABLE,  /* 454 4.7.0: library failure */
};

struct sasl_server;
struct sasl_exchange;

/* The server starts with a random secret of its own; see sasl_server_set_secret(). */
struct sasl_server *sasl_server_new(sasl_lookup_fn lookup, void *arg);
void sasl_server_free(struct sasl_server *server);
/* The secret (SASL_SECRET_LEN octets) the SCRAM decoys of users without a verifier, unknown
 * users included, are derived from: the same one across restarts keeps them stable. */
void sasl_server_set_secret(struct sasl_server *server, const unsigned char *secret);
/* Is the mechanism implemented by the library (names are upper case)? */
bool sasl_server_supports(const struct sasl_server *server, const char *mechanism);

/* Starts one exchange. tls_exporter_b64: RFC 9266 channel binding data (base64) when TLS is
 * up, else NULL. tls_subject: verified client certificate CN, else NULL. */
struct sasl_exchange *sasl_exchange_start(struct sasl_server *server, const char *mechanism,
                                          const char *tls_exporter_b64, const char *tls_subject);
/* input_b64: the client's line ("" for an empty initial response). *output_b64 is set (malloc,
 * possibly "") for OK and CONTINUE; free it. */
enum sasl_result sasl_exchange_step(struct sasl_exchange *ex, const char *input_b64,
                                    char **output_b64);
/* The authenticated user (after SASL_RESULT_OK), else NULL. */
const char *sasl_exchange_user(const struct sasl_exchange *ex);
void sasl_exchange_free(struct sasl_exchange *ex);

#endif
