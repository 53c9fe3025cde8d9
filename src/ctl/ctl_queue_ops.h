/* SPDX-License-Identifier: ISC */
/* odmrctl queue hold, release, requeue, bounce and delete (docs/odmrctl.md, "Queue control"),
 * and list --json. */
#ifndef ODMR_CTL_CTL_QUEUE_OPS_H
#define ODMR_CTL_CTL_QUEUE_OPS_H

#include <time.h>

#include "store/queue.h"

/* argv[0] is "queue", argv[1] the command. Each returns a sysexits.h code. */
int ctl_queue_hold(struct queue *q, int argc, char **argv);
int ctl_queue_release(struct queue *q, int argc, char **argv);
int ctl_queue_requeue(struct queue *q, int argc, char **argv);
int ctl_queue_bounce(struct queue *q, int argc, char **argv);
int ctl_queue_delete(struct queue *q, int argc, char **argv);

/* One JSON document with every message (or those of domain), held ones included. */
int ctl_queue_list_json(struct queue *q, const char *domain);

/* queue summary (ctl_queue_summary.c): per domain (queued and hosted) and per user (when
 * users is not NULL). An exit code. */
struct userdb;
int ctl_queue_summary_run(struct queue *q, const struct userdb *users, const char *spool);

/* "42s", "5m", "3h", "2d" (ctl_queue.c). */
void ctl_format_age(time_t seconds, char *out, size_t outlen);

/* Shared with ctl_queue.c: prints why a message could not be opened; EX_DATAERR or EX_IOERR. */
int ctl_queue_open_error(const char *id, int rc);

#endif
