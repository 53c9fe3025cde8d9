/* SPDX-License-Identifier: ISC */
/* The open files odmrd's configuration needs (RLIMIT_NOFILE), computed at start. */
#ifndef ODMR_ODMRD_NOFILE_H
#define ODMR_ODMRD_NOFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/config.h"

/* Per session: intake = the socket and the message file being received; ODMR = the socket,
 * a domain lease and the message file being pushed (compat profile: one at a time). */
/* NOFILE_SPARE_FILES: the queue's spare message files (store/queue_fs_spare.c, SPARES_MAX). */
enum { NOFILE_PER_INTAKE = 2, NOFILE_PER_ODMR = 3, NOFILE_MARGIN = 64, NOFILE_SPARE_FILES = 32 };

/* The descriptors the configuration needs in all. */
unsigned long nofile_needed(const struct config *cfg);
/* Raises the soft RLIMIT_NOFILE to nofile_needed() when it is lower. 0 when it fits; -1 with
 * a message naming the keys when even the hard limit is too low. */
int nofile_ensure(const struct config *cfg, char *err, size_t errlen);

#endif
