/* SPDX-License-Identifier: ISC */
/* Domain index entries of the filesystem queue (docs/queue.md "Index entry"): parse, format,
 * and apply to a loaded envelope. Version 2 adds a flags field per recipient ("w": its delay
 * warning was sent); version 1 entries are still read (no flags). */
#ifndef ODMR_STORE_QUEUE_FS_ENTRY_H
#define ODMR_STORE_QUEUE_FS_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store/queue.h"
#include "store/queue_backend.h"

/* One recipient line of an index entry. */
struct queue_fs_entry_line {
    size_t index;
    enum queue_rcpt_state state;
    unsigned attempts;
    time_t last_attempt;
    bool warned;
    char *reply;
};

struct queue_fs_entry {
    struct queue_fs_entry_line *lines;
    size_t count;
};

void queue_fs_entry_free(struct queue_fs_entry *e);
/* Parses text (len octets, NUL-terminated, modified): empty = all pending. 0, EBADMSG, ENOMEM. */
int queue_fs_entry_parse(char *text, size_t len, struct queue_fs_entry *out);
/* Copies the entry's per-recipient state into env; each line must name a recipient of domain.
 * 0 or EBADMSG. The replies move into env. */
int queue_fs_entry_apply(struct queue_envelope *env, const char *domain, struct queue_fs_entry *e);
/* The entry (current version) of env's recipients in domain. 0 or ENOMEM. */
int queue_fs_entry_format(struct queue_text *t, const struct queue_envelope *env,
                          const char *domain);

/* Decimal digits only, at most max. */
bool queue_fs_parse_number(const char *s, uint64_t max, uint64_t *out);

#endif
