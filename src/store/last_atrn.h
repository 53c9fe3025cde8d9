/* SPDX-License-Identifier: ISC */
/* When each user last polled: SPOOL/atrn/u-<user>, whose mtime is the time of that user's last
 * successful ATRN (answered 250 or 453). Shown by odmrctl queue summary (docs/queue.md). */
#ifndef ODMR_STORE_LAST_ATRN_H
#define ODMR_STORE_LAST_ATRN_H

#include <time.h>

#define LAST_ATRN_DIR "atrn"

/* odmrd, at start (as the spool's owner): makes atrn/ if needed and keeps it open for
 * last_atrn_record(). 0 or an errno; without it, recording does nothing. */
int last_atrn_open(const char *spool);
void last_atrn_close(void);
/* Sets atrn/u-<user>'s mtime to now (creating it). No fsync: a crash may lose the newest
 * time, never anything else. Errors are logged at debug level only. */
void last_atrn_record(const char *user);
/* odmrctl: the time of user's last recorded ATRN; 0 when there is none (ever, or since the
 * record was made). */
time_t last_atrn_read(const char *spool, const char *user);

#endif
