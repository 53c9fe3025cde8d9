/* SPDX-License-Identifier: ISC */
/* odmrctl user ...: add, del, passwd, list. */
#ifndef ODMR_CTL_CTL_USER_H
#define ODMR_CTL_CTL_USER_H

#include "lib/config.h"

/* argv[0] is "user". Returns a sysexits.h code. */
int ctl_user_main(const struct config *cfg, int argc, char **argv);

#endif
