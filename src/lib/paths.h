/* SPDX-License-Identifier: ISC */
/* Default paths, chosen when odmrd is built:
 * - in the tree (`make`): the quick start's ./run layout, so `make run` works as it is: the
 *   spool, the users file and TLS under run/ next to the configuration file, or under the
 *   working directory without one; no default configuration file;
 * - installed (`make install`, the .deb: the Makefile's FHS=1 defines ODMR_SYSCONFDIR and
 *   ODMR_SPOOLDIR): /etc/odmrd/odmrd.conf, /etc/odmrd/users, /etc/odmrd/tls/{cert,key}.pem
 *   and /var/spool/odmrd, wherever the configuration file is. */
#ifndef ODMR_LIB_PATHS_H
#define ODMR_LIB_PATHS_H

#include <stddef.h>

enum default_path { DEFAULT_SPOOL, DEFAULT_USERS, DEFAULT_TLS_CERT, DEFAULT_TLS_KEY };

/* The configuration file read without -c when it exists; NULL in an in-tree build. */
const char *paths_default_config(void);
/* The default for `which`; base_dir is the configuration file's directory (NULL: none). */
void paths_default(enum default_path which, const char *base_dir, char *out, size_t outlen);

#endif
