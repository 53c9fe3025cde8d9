/* SPDX-License-Identifier: ISC */
/* The domain leases one piece of work holds at once (the expiry scan's message, the notice
 * relay's batch): taken one by one, a domain already held is not taken twice, all released
 * together (docs/queue.md "Leases"). */
#ifndef ODMR_SERVICES_LEASE_SET_H
#define ODMR_SERVICES_LEASE_SET_H

#include <stddef.h>

#include "store/queue.h"

struct lease_set {
    char **domains;
    size_t count;
};

/* 0 (taken, or already held here), EBUSY (another holder) or ENOMEM. */
int lease_set_take(struct queue *q, struct lease_set *set, const char *domain);
void lease_set_release(struct queue *q, struct lease_set *set);

#endif
