/* SPDX-License-Identifier: ISC */
/* The server secret: 32 random octets made on first start in the spool (SPOOL/auth-secret,
 * mode 0600, docs/users.md). odmrd derives the SCRAM decoys of unknown users from it, so they
 * stay the same across restarts. Never part of the users file. */
#ifndef ODMR_STORE_SERVER_SECRET_H
#define ODMR_STORE_SERVER_SECRET_H

#include <stddef.h>

#include "platform/sasl.h"

/* The key of the SCRAM decoys (platform/sasl.h). */
enum { SERVER_SECRET_LEN = SASL_SECRET_LEN };

#define SERVER_SECRET_FILE "auth-secret"

/* Reads SPOOL/auth-secret into out, making it first when it does not exist. 0 on success,
 * -1 with err set (a file of the wrong size, type or mode is an error, never replaced). */
int server_secret_load(const char *spool, unsigned char out[SERVER_SECRET_LEN], char *err,
                       size_t errlen);

#endif
