/* SPDX-License-Identifier: ISC */
/* odmrd -t started as root: can [server] user use what odmrd opens after switching to it?
 * The users file (re-read on SIGHUP) must be readable and the spool's parent searchable: a
 * child process switches to the account and asks the kernel. The spool's subdirectories must
 * belong to the account (odmrd hands it only the spool itself at start; checked as root). The
 * TLS key is read as root before the switch, so it is not checked. */
#ifndef ODMR_ODMRD_USER_ACCESS_H
#define ODMR_ODMRD_USER_ACCESS_H

#include <stddef.h>

#include "lib/config.h"

/* 0 when the account can, or there is nothing to check (not root, no [server] user);
 * -1 with the first problem in err. */
int user_access_check(const struct config *cfg, char *err, size_t errlen);

#endif
