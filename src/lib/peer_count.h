/* SPDX-License-Identifier: ISC */
/* Concurrent sessions per client address: a small open-addressing hash table of counters,
 * shared by the intake servers (SMTP and LMTP together) and, in other tables, by the ODMR
 * service. Memory is bounded: the table is sized at creation for the most addresses that can
 * hold a session at once (every entry belongs to at least one live session), so a full table
 * only refuses, it never grows. */
#ifndef ODMR_LIB_PEER_COUNT_H
#define ODMR_LIB_PEER_COUNT_H

#include <stdbool.h>
#include <stddef.h>

enum { PEER_KEY_MAX = 64 };   /* "ffff:...:ffff/64" and IPv4 text fit */

struct peer_count;

/* A table for at most `capacity` distinct addresses at once (at least 1). NULL on ENOMEM. */
struct peer_count *peer_count_new(size_t capacity);
void peer_count_free(struct peer_count *pc);
/* Counts one more session for key unless it already has `limit` (0 = no limit) or the table
 * is full. Returns true when counted. An empty key (unix-socket peers) is never counted and
 * always taken. */
bool peer_count_take(struct peer_count *pc, const char *key, unsigned limit);
/* Gives one back; the entry goes when its count reaches 0. Unknown keys (and pc NULL) are
 * ignored. */
void peer_count_release(struct peer_count *pc, const char *key);
/* The current count for key (0 when absent). */
unsigned peer_count_get(const struct peer_count *pc, const char *key);
/* Distinct addresses currently counted. */
size_t peer_count_addresses(const struct peer_count *pc);

#endif
