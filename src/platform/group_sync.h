/* SPDX-License-Identifier: ISC */
/* Group commit of one file descriptor (docs/queue.md "Every fsync"): threads that need the
 * changes they made to a file or directory durable call group_sync(); one fsync() then covers
 * every caller that arrived before it started, so N concurrent callers cost about two fsyncs,
 * not N. A lone caller pays one fsync, as with fsync() itself. */
#ifndef ODMR_PLATFORM_GROUP_SYNC_H
#define ODMR_PLATFORM_GROUP_SYNC_H

#include <stdbool.h>

struct group_sync;

/* For fd (not owned: the caller closes it after group_sync_free). data_only: fdatasync()
 * instead of fsync() (an appended file: its size is still synced). NULL with errno ENOMEM. */
struct group_sync *group_sync_new(int fd, bool data_only);
void group_sync_free(struct group_sync *gs);
/* Returns once an fsync() of the fd that started after this call was made has returned: every
 * change the caller made before the call is then durable. 0 or errno. An fsync error is sticky:
 * after it every later call fails with the same errno (Linux may report a writeback error only
 * once, so a later fsync's success would not prove the earlier changes durable). */
int group_sync(struct group_sync *gs);

#endif
