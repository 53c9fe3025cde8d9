/* SPDX-License-Identifier: ISC */
/* Failed AUTH exchanges per client address within [odmr] failure_window, for the ODMR
 * service's max_address_failures (docs/odmr.md "Failed authentication"). */
#ifndef ODMR_SERVICES_AUTH_FAILURES_H
#define ODMR_SERVICES_AUTH_FAILURES_H

#include <time.h>

struct auth_failures;

struct auth_failures *auth_failures_new(time_t window);
void auth_failures_free(struct auth_failures *table);
/* One more failure of peer (an address's text); returns its failures in the window. */
unsigned auth_failures_record(struct auth_failures *table, const char *peer);
/* peer's failures in the window (0 when none or the window has passed). */
unsigned auth_failures_count(struct auth_failures *table, const char *peer);

#endif
