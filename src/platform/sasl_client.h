/* SPDX-License-Identifier: ISC */
/* SASL client side through GNU SASL (RFC 4422), for odmr-client's AUTH (RFC 4954):
 * SCRAM-SHA-256(-PLUS) (RFC 7677, RFC 5802, RFC 9266 tls-exporter), PLAIN (RFC 4616),
 * CRAM-MD5 (RFC 2195). Which mechanism to use when is the caller's policy. */
#ifndef ODMR_PLATFORM_SASL_CLIENT_H
#define ODMR_PLATFORM_SASL_CLIENT_H

#include <stdbool.h>

struct sasl_client;
struct sasl_client_exchange;

enum sasl_client_result {
    SASL_CLIENT_CONTINUE,   /* send *output_b64, expect another 334 (or the final reply) */
    SASL_CLIENT_DONE,       /* the mechanism is complete on our side (send *output_b64) */
    SASL_CLIENT_FAILED,     /* the server's data did not verify, or bad base64 */
};

struct sasl_client *sasl_client_new(void);
void sasl_client_free(struct sasl_client *c);
bool sasl_client_supports(const struct sasl_client *c, const char *mechanism);

/* tls_exporter_b64: RFC 9266 channel binding data (base64) or NULL. NULL on error. */
struct sasl_client_exchange *sasl_client_start(struct sasl_client *c, const char *mechanism,
                                               const char *user, const char *password,
                                               const char *service, const char *hostname,
                                               const char *tls_exporter_b64);
/* input_b64: the text of the server's 334 ("" for none). *output_b64: malloc'd, maybe "". */
enum sasl_client_result sasl_client_step(struct sasl_client_exchange *ex, const char *input_b64,
                                         char **output_b64);
void sasl_client_exchange_free(struct sasl_client_exchange *ex);

#endif
