/* SPDX-License-Identifier: ISC */
/* odmrctl queue ...: list, show, cat and delete held messages. */
#ifndef ODMR_CTL_CTL_QUEUE_H
#define ODMR_CTL_CTL_QUEUE_H

#include "lib/config.h"

/* argv[0] is "queue". Returns a sysexits.h code. */
int ctl_queue_main(const struct config *cfg, int argc, char **argv);

#endif
