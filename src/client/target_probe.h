/* SPDX-License-Identifier: ISC */
/* The check of the local target before ATRN (docs/client.md): odmr-client asks for its mail
 * only when it can hand it on. */
#ifndef ODMR_CLIENT_TARGET_PROBE_H
#define ODMR_CLIENT_TARGET_PROBE_H

#include <stddef.h>

#include "client/client.h"
#include "client/target_spec.h"
#include "engines/smtp_client.h"

/* Blocking: connect, the greeting, EHLO/LHLO, QUIT, through the client engine on a private
 * event loop (maildir: the fixed part of the path can be created; mda: the command is
 * executable). caps: what the target advertised. 0, or -1 with err. */
int target_probe(const struct target_spec *spec, const struct client_options *o,
                 const char *helo, struct smtp_client_ext *caps, char *err, size_t errlen);

#endif
