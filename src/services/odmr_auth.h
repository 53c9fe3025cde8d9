/* SPDX-License-Identifier: ISC */
/* AUTH on the ODMR port (RFC 4954, RFC 2645 5.1), a verb the ODMR service registers with the
 * SMTP server engine: mechanisms by TLS state, the SASL exchange (platform/sasl.h), failed
 * exchanges delayed and counted per session and per address (services/auth_failures.h). */
#ifndef ODMR_SERVICES_ODMR_AUTH_H
#define ODMR_SERVICES_ODMR_AUTH_H

#include <stdbool.h>
#include <stddef.h>

struct odmr_session;
struct sasl_credentials;
struct smtp_session;

/* The AUTH verb's handler (struct smtp_server_command); ctx is the struct odmr_service. */
void odmr_cmd_auth(void *ctx, struct smtp_session *smtp, const char *arg);
/* The users file's credentials of authid for the SASL server; arg is the struct odmr_service. */
bool odmr_auth_lookup_credentials(void *arg, const char *authid, struct sasl_credentials *c);
/* EHLO's AUTH line: the mechanisms this session may use. */
void odmr_auth_ehlo_keyword(struct smtp_session *smtp, char *line, size_t len);
/* Ends the exchange under way, if any, without a verdict. */
void odmr_auth_end_exchange(struct odmr_session *s);
/* The session ends: an exchange still under way counts as a failed one. */
void odmr_auth_session_ended(struct odmr_session *s);

#endif
