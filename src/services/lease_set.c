/* SPDX-License-Identifier: ISC */
/* A set of held domain leases (lease_set.h). */
#include "services/lease_set.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void lease_set_release(struct queue *q, struct lease_set *set)
{
    for (size_t i = 0; i < set->count; i++) {
        queue_release_domain(q, set->domains[i]);
        free(set->domains[i]);
    }
    free(set->domains);
    set->domains = NULL;
    set->count = 0;
}

int lease_set_take(struct queue *q, struct lease_set *set, const char *domain)
{
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->domains[i], domain) == 0)
            return 0;
    char **grown = realloc(set->domains, (set->count + 1) * sizeof *grown);
    if (grown == NULL)
        return ENOMEM;
    set->domains = grown;
    int rc = queue_lease_domain(q, domain);
    if (rc != 0)
        return rc;
    if ((set->domains[set->count] = strdup(domain)) == NULL) {
        queue_release_domain(q, domain);
        return ENOMEM;
    }
    set->count++;
    return 0;
}
