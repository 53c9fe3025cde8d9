/* SPDX-License-Identifier: ISC */
/* Failed AUTH exchanges per client address in a sliding window: a fixed table (no memory grows
 * with the addresses an attacker uses), docs/odmr.md "Failed authentication". */
#include "services/auth_failures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FAILURE_SLOTS = 4096 };

/* Failed AUTH exchanges of one client address in the window that began at first. */
struct address_failures {
    char address[64];
    unsigned count;
    time_t first;
};

struct auth_failures {
    time_t window;
    struct address_failures slots[FAILURE_SLOTS];
};

struct auth_failures *auth_failures_new(time_t window)
{
    struct auth_failures *table = calloc(1, sizeof *table);
    if (table != NULL)
        table->window = window;
    return table;
}

void auth_failures_free(struct auth_failures *table)
{
    free(table);
}

/* The record of peer, NULL when it has none (a record whose window has passed is free). */
static struct address_failures *failures_of(struct auth_failures *table, const char *peer)
{
    time_t now = time(NULL);
    for (size_t i = 0; i < FAILURE_SLOTS; i++) {
        struct address_failures *f = &table->slots[i];
        if (f->count > 0 && now - f->first > table->window)
            f->count = 0;
        if (f->count > 0 && strcmp(f->address, peer) == 0)
            return f;
    }
    return NULL;
}

/* A slot for a new record: a free one, else the record with the fewest failures, the oldest of
 * those. So addresses sprayed with one failure each never push out a record with more: to
 * evict its own record an attacker must first give every other slot as many failures, from
 * other addresses, as the evicted record held, which buys him no more guesses than using those
 * addresses directly would (docs/odmr.md). */
static struct address_failures *free_slot(struct auth_failures *table)
{
    struct address_failures *best = &table->slots[0];
    for (size_t i = 0; i < FAILURE_SLOTS && best->count > 0; i++) {
        struct address_failures *f = &table->slots[i];
        if (f->count < best->count || (f->count == best->count && f->first < best->first))
            best = f;
    }
    return best;
}

unsigned auth_failures_record(struct auth_failures *table, const char *peer)
{
    struct address_failures *f = failures_of(table, peer);
    if (f == NULL) {
        f = free_slot(table);
        memset(f, 0, sizeof *f);
        snprintf(f->address, sizeof f->address, "%s", peer);
        f->first = time(NULL);
    }
    return ++f->count;
}

unsigned auth_failures_count(struct auth_failures *table, const char *peer)
{
    const struct address_failures *f = failures_of(table, peer);
    return f ? f->count : 0;
}
