/* SPDX-License-Identifier: ISC */
/* Per-address session counters: linear probing over a power-of-two table at most half full,
 * deletion by backward shift (no tombstones, so lookups stay short however long odmrd runs). */
#include "lib/peer_count.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct peer_entry {
    char key[PEER_KEY_MAX];   /* "" = free slot */
    unsigned count;
};

struct peer_count {
    struct peer_entry *slots;
    size_t mask;       /* slot count - 1 */
    size_t capacity;   /* addresses allowed at once */
    size_t used;
};

static size_t hash_key(const char *key)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return (size_t)(h ^ (h >> 29));
}

struct peer_count *peer_count_new(size_t capacity)
{
    if (capacity == 0)
        capacity = 1;
    size_t slots = 4;
    while (slots < 2 * capacity) {
        if (slots > SIZE_MAX / 4 / sizeof(struct peer_entry))
            return NULL;
        slots *= 2;
    }
    struct peer_count *pc = calloc(1, sizeof *pc);
    if (pc == NULL)
        return NULL;
    pc->slots = calloc(slots, sizeof *pc->slots);
    if (pc->slots == NULL) {
        free(pc);
        return NULL;
    }
    pc->mask = slots - 1;
    pc->capacity = capacity;
    return pc;
}

void peer_count_free(struct peer_count *pc)
{
    if (pc == NULL)
        return;
    free(pc->slots);
    free(pc);
}

/* The slot holding key, or the free slot where it would go. */
static size_t find_slot(const struct peer_count *pc, const char *key)
{
    size_t i = hash_key(key) & pc->mask;
    while (pc->slots[i].key[0] != '\0' && strcmp(pc->slots[i].key, key) != 0)
        i = (i + 1) & pc->mask;
    return i;
}

bool peer_count_take(struct peer_count *pc, const char *key, unsigned limit)
{
    if (key[0] == '\0')
        return true;
    if (strlen(key) >= PEER_KEY_MAX)
        return false;
    struct peer_entry *e = &pc->slots[find_slot(pc, key)];
    if (e->key[0] == '\0') {
        if (pc->used >= pc->capacity)
            return false;
        strcpy(e->key, key);
        e->count = 0;
        pc->used++;
    }
    if (limit != 0 && e->count >= limit)
        return false;
    e->count++;
    return true;
}

/* Backward-shift deletion: later entries of the same probe run move up into the hole. */
static void remove_slot(struct peer_count *pc, size_t hole)
{
    size_t i = hole;
    for (;;) {
        i = (i + 1) & pc->mask;
        if (pc->slots[i].key[0] == '\0')
            break;
        size_t home = hash_key(pc->slots[i].key) & pc->mask;
        /* Moves entry i into the hole unless its home lies cyclically in (hole, i]. */
        bool stays = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            pc->slots[hole] = pc->slots[i];
            hole = i;
        }
    }
    pc->slots[hole].key[0] = '\0';
    pc->slots[hole].count = 0;
    pc->used--;
}

void peer_count_release(struct peer_count *pc, const char *key)
{
    if (pc == NULL || key[0] == '\0' || strlen(key) >= PEER_KEY_MAX)
        return;
    size_t i = find_slot(pc, key);
    struct peer_entry *e = &pc->slots[i];
    if (e->key[0] == '\0')
        return;
    if (--e->count == 0)
        remove_slot(pc, i);
}

unsigned peer_count_get(const struct peer_count *pc, const char *key)
{
    if (key[0] == '\0' || strlen(key) >= PEER_KEY_MAX)
        return 0;
    return pc->slots[find_slot(pc, key)].count;
}

size_t peer_count_addresses(const struct peer_count *pc)
{
    return pc->used;
}
