/* SPDX-License-Identifier: ISC */
/* ATRN on the ODMR port (RFC 2645 5.2.1), a verb the ODMR service registers with the SMTP
 * server engine: which domains, whether the user may have them, the leases (store/queue.h),
 * and after its 250 the turnaround (services/odmr_session.c). */
#ifndef ODMR_SERVICES_ODMR_ATRN_H
#define ODMR_SERVICES_ODMR_ATRN_H

struct odmr_session;
struct smtp_session;

/* The ATRN verb's handler (struct smtp_server_command). */
void odmr_cmd_atrn(void *ctx, struct smtp_session *smtp, const char *arg);
/* Gives back the session's leased domains (the push is done, or never began). */
void odmr_atrn_release_leases(struct odmr_session *s);

#endif
