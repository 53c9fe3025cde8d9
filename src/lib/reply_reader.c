/* SPDX-License-Identifier: ISC */
/* SMTP reply reader (see reply_reader.h). */
#include "lib/reply_reader.h"

#include <stdio.h>
#include <string.h>

#include "lib/reply.h"

void reply_reader_init(struct reply_reader *r, bool allow_bare_lf)
{
    memset(r, 0, sizeof *r);
    line_reader_init(&r->lines, REPLY_LINE_MAX);
    r->allow_bare_lf = allow_bare_lf;
}

void reply_reader_free(struct reply_reader *r)
{
    line_reader_free(&r->lines);
}

static bool in_range(char c, char low, char high)
{
    return c >= low && c <= high;
}

/* RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39; Reply-line = *( Reply-code "-"
 * [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF. RFC 5321 2.3.8: CRLF only, so a bare
 * CR is never text; NUL is never text either. */
static bool well_formed(const struct reply_reader *r, const struct line *l)
{
    const char *t = l->text;
    if (l->len < 3 || !in_range(t[0], '2', '5') || !in_range(t[1], '0', '5') ||
        !in_range(t[2], '0', '9'))
        return false;
    if (l->len > 3 && t[3] != ' ' && t[3] != '-')
        return false;
    if (l->bare_cr || (l->bare_lf && !r->allow_bare_lf))
        return false;
    return memchr(t, '\0', l->len) == NULL;
}

static enum reply_status fail(struct reply_reader *r, enum reply_status status)
{
    r->code = 0;
    r->count = 0;
    return status;
}

enum reply_status reply_reader_next(struct reply_reader *r, struct evbuffer *in,
                                    struct reply_line *out)
{
    struct line l;
    enum line_status st = line_reader_next(&r->lines, in, &l);
    /* Inside a line already over the limit: no need to wait for its end to know. */
    if (st == LINE_TOO_LONG || (st == LINE_AGAIN && r->lines.skipping))
        return fail(r, REPLY_TOO_LONG);
    if (st == LINE_AGAIN)
        return REPLY_AGAIN;
    if (!well_formed(r, &l))
        return fail(r, REPLY_MALFORMED);
    int code = (l.text[0] - '0') * 100 + (l.text[1] - '0') * 10 + (l.text[2] - '0');
    if (r->count > 0 && code != r->code)
        return fail(r, REPLY_CODE_CHANGED);
    if (r->count == REPLY_LINES_MAX)
        return fail(r, REPLY_TOO_MANY_LINES);
    *out = (struct reply_line){
        .code = code,
        .last = l.len == 3 || l.text[3] == ' ',
        .index = r->count,
        .line = l.text,
        .len = l.len,
        .text = l.len > 4 ? l.text + 4 : "",
    };
    r->code = code;
    r->count = out->last ? 0 : r->count + 1;
    return REPLY_LINE;
}

const char *reply_status_name(enum reply_status status)
{
    static const char *const names[] = {
        [REPLY_AGAIN] = "incomplete",
        [REPLY_LINE] = "ok",
        [REPLY_TOO_LONG] = "over-long reply line",
        [REPLY_MALFORMED] = "malformed reply line",
        [REPLY_CODE_CHANGED] = "reply code changed within a multi-line reply",
        [REPLY_TOO_MANY_LINES] = "too many lines in one reply",
    };
    return names[status];
}

void reply_reader_keep(struct smtp_client_reply *cur, const struct reply_line *l)
{
    size_t used = strlen(cur->text);
    cur->code = l->code;
    cur->lines = l->index + 1;
    snprintf(cur->text + used, sizeof cur->text - used, "%s%s", used > 0 ? "\n" : "", l->line);
}
