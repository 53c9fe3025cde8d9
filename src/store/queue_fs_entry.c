/* SPDX-License-Identifier: ISC */
/* Domain index entries (queue_fs_entry.h, docs/queue.md "Index entry").
 *
 *   ODMRD 2
 *   rcpt INDEX STATE ATTEMPTS LAST-ATTEMPT FLAGS REPLY     FLAGS: "-" or "w" (warned)
 *   end
 *
 * Version 1 lines have no FLAGS field; they are read as "-". */
#include "store/queue_fs_entry.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "store/queue_fs.h"

void queue_fs_entry_free(struct queue_fs_entry *e)
{
    for (size_t i = 0; i < e->count; i++)
        free(e->lines[i].reply);
    free(e->lines);
    memset(e, 0, sizeof *e);
}

/* Splits line (NUL-terminated, no LF) at spaces into exactly n fields; modifies line. */
static bool split_fields(char *line, char **fields, size_t n)
{
    size_t count = 0;
    for (char *p = line;;) {
        if (count == n || *p == '\0' || *p == ' ')
            return false;
        fields[count++] = p;
        char *sp = strchr(p, ' ');
        if (sp == NULL)
            return count == n;
        *sp = '\0';
        p = sp + 1;
    }
}

bool queue_fs_parse_number(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0' || strlen(s) > 20)
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* version 1: 6 fields; version 2: 7 (FLAGS before the reply). */
static int parse_line(char *line, unsigned version, struct queue_fs_entry_line *out)
{
    char *f[7];
    size_t n = version == 1 ? 6 : 7;
    uint64_t index, attempts, when;
    memset(out, 0, sizeof *out);
    if (!split_fields(line, f, n) || strcmp(f[0], "rcpt") != 0 ||
        !queue_fs_parse_number(f[1], SIZE_MAX, &index) ||
        queue_rcpt_state_parse(f[2], strlen(f[2]), &out->state) != 0 ||
        !queue_fs_parse_number(f[3], UINT32_MAX, &attempts) ||
        !queue_fs_parse_number(f[4], INT64_MAX, &when))
        return EBADMSG;
    if (n == 7 && strcmp(f[5], "-") != 0 && strcmp(f[5], "w") != 0)
        return EBADMSG;
    out->index = (size_t)index;
    out->attempts = (unsigned)attempts;
    out->last_attempt = (time_t)when;
    out->warned = n == 7 && f[5][0] == 'w';
    return queue_token_decode(f[n - 1], strlen(f[n - 1]), &out->reply);
}

/* 1 or 2 for a known magic line (its length in *magic_len), else 0. */
static unsigned entry_version(const char *text, size_t len, size_t *magic_len)
{
    static const char *const magics[] = {QUEUE_FS_ENTRY_MAGIC_V1, QUEUE_FS_ENTRY_MAGIC_LINE};
    for (unsigned v = 0; v < 2; v++) {
        *magic_len = strlen(magics[v]);
        if (len >= *magic_len && memcmp(text, magics[v], *magic_len) == 0)
            return v + 1;
    }
    return 0;
}

int queue_fs_entry_parse(char *text, size_t len, struct queue_fs_entry *out)
{
    memset(out, 0, sizeof *out);
    if (len == 0)
        return 0;   /* empty entry: all pending */
    size_t magic_len = 0;
    size_t end_len = strlen(QUEUE_FS_ENTRY_END_LINE);
    unsigned version = entry_version(text, len, &magic_len);
    if (version == 0 || len < magic_len + end_len ||
        memcmp(text + len - end_len, QUEUE_FS_ENTRY_END_LINE, end_len) != 0 ||
        (len > magic_len + end_len && text[len - end_len - 1] != '\n'))
        return EBADMSG;
    text[len - end_len] = '\0';
    char *p = text + magic_len;
    int rc = 0;
    while (rc == 0 && *p != '\0') {
        char *nl = strchr(p, '\n');   /* present: the text before "end" ends in LF */
        *nl = '\0';
        struct queue_fs_entry_line *grown = realloc(out->lines, (out->count + 1) * sizeof *grown);
        if (grown == NULL) {
            rc = ENOMEM;
            break;
        }
        out->lines = grown;
        rc = parse_line(p, version, &out->lines[out->count]);
        if (rc == 0)
            out->count++;
        p = nl + 1;
    }
    if (rc != 0)
        queue_fs_entry_free(out);
    return rc;
}

int queue_fs_entry_apply(struct queue_envelope *env, const char *domain, struct queue_fs_entry *e)
{
    for (size_t i = 0; i < e->count; i++) {
        struct queue_fs_entry_line *l = &e->lines[i];
        if (l->index >= env->rcpt_count || strcmp(env->rcpts[l->index].domain, domain) != 0)
            return EBADMSG;
        struct queue_rcpt *r = &env->rcpts[l->index];
        r->state = l->state;
        r->attempts = l->attempts;
        r->last_attempt = l->last_attempt;
        r->warned = l->warned;
        free(r->last_reply);
        r->last_reply = l->reply;
        l->reply = NULL;
    }
    return 0;
}

int queue_fs_entry_format(struct queue_text *t, const struct queue_envelope *env,
                          const char *domain)
{
    int rc = queue_text_append(t, QUEUE_FS_ENTRY_MAGIC_LINE, strlen(QUEUE_FS_ENTRY_MAGIC_LINE));
    for (size_t i = 0; rc == 0 && i < env->rcpt_count; i++) {
        const struct queue_rcpt *r = &env->rcpts[i];
        if (strcmp(r->domain, domain) != 0)
            continue;
        rc = queue_text_printf(t, "rcpt %zu %s %u %" PRId64 " %s ", i,
                               queue_rcpt_state_name(r->state), r->attempts,
                               (int64_t)r->last_attempt, r->warned ? "w" : "-");
        if (rc == 0)
            rc = queue_text_token(t, r->last_reply);
        if (rc == 0)
            rc = queue_text_append(t, "\n", 1);
    }
    if (rc == 0)
        rc = queue_text_append(t, QUEUE_FS_ENTRY_END_LINE, strlen(QUEUE_FS_ENTRY_END_LINE));
    return rc;
}
