/* SPDX-License-Identifier: ISC */
/* odmrctl and the spool: find it (never create it) and act as its owner when run as root. */
#ifndef ODMR_CTL_CTL_SPOOL_H
#define ODMR_CTL_CTL_SPOOL_H

#include <stdbool.h>

#include "store/queue.h"

/* Checks that the spool directory exists and, when odmrctl runs as root, switches to the
 * spool's owner (uid and gid of the directory, no supplementary groups) for good. Returns a
 * sysexits.h code after printing the error: EX_NOINPUT for a missing spool, EX_OSERR when the
 * switch fails. Call it after everything that must be read as root has been read. */
int ctl_spool_become_owner(const char *spool);

/* Opens the existing spool (read_only for list, show, cat). NULL after printing the error;
 * *code is then the exit code. */
struct queue *ctl_spool_open(const char *spool, bool read_only, int *code);

#endif
