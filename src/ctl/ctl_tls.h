/* SPDX-License-Identifier: ISC */
/* odmrctl tls ...: pin. */
#ifndef ODMR_CTL_CTL_TLS_H
#define ODMR_CTL_CTL_TLS_H

#include "lib/config.h"

/* argv[0] is "tls". Returns a sysexits.h code. */
int ctl_tls_main(const struct config *cfg, int argc, char **argv);

#endif
