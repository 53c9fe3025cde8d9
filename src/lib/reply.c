/* SPDX-License-Identifier: ISC */
/* SMTP reply formatting. */
#include "lib/reply.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct smtp_reply *reply_set(struct smtp_reply *r, int code, const char *enhanced,
                             const char *fmt, ...)
{
    va_list ap;
    r->code = code;
    snprintf(r->enhanced, sizeof r->enhanced, "%s", enhanced ? enhanced : "");
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
    return r;
}

static void write_one_line(struct evbuffer *out, int code, char separator, const char *enhanced,
                           const char *text, size_t len)
{
    if (enhanced[0] != '\0')
        evbuffer_add_printf(out, "%03d%c%s %.*s\r\n", code, separator, enhanced, (int)len, text);
    else
        evbuffer_add_printf(out, "%03d%c%.*s\r\n", code, separator, (int)len, text);
}

void reply_write(struct evbuffer *out, const struct smtp_reply *r)
{
    const char *text = r->text;
    const char *newline;
    while ((newline = strchr(text, '\n')) != NULL) {
        write_one_line(out, r->code, '-', r->enhanced, text, (size_t)(newline - text));
        text = newline + 1;
    }
    write_one_line(out, r->code, ' ', r->enhanced, text, strlen(text));
}

void reply_send(struct evbuffer *out, int code, const char *enhanced, const char *fmt, ...)
{
    struct smtp_reply r;
    va_list ap;
    r.code = code;
    snprintf(r.enhanced, sizeof r.enhanced, "%s", enhanced ? enhanced : "");
    va_start(ap, fmt);
    vsnprintf(r.text, sizeof r.text, fmt, ap);
    va_end(ap);
    reply_write(out, &r);
}

void reply_send_lines(struct evbuffer *out, int code, const char *const *lines, size_t count)
{
    for (size_t i = 0; i < count; i++)
        evbuffer_add_printf(out, "%03d%c%s\r\n", code, i + 1 < count ? '-' : ' ', lines[i]);
}

/* ---- a peer's reply ---- */

void peer_reply_set(struct smtp_client_reply *r, int code, const char *fmt, ...)
{
    va_list ap;
    memset(r, 0, sizeof *r);
    r->code = code;
    r->lines = 1;
    int n = snprintf(r->text, sizeof r->text, "%03d ", code);
    va_start(ap, fmt);
    vsnprintf(r->text + n, sizeof r->text - (size_t)n, fmt, ap);
    va_end(ap);
}

/* The text of a wire line after "ddd-"/"ddd " ("" after a bare "ddd"). */
static const char *after_code(const char *line, size_t len)
{
    return len > 4 ? line + 4 : line + len;
}

const char *peer_reply_line(const struct smtp_client_reply *r, size_t i, char *buf, size_t len)
{
    const char *p = r->text;
    for (size_t n = 0; n < i; n++) {
        p = strchr(p, '\n');
        if (p == NULL)
            return NULL;
        p++;
    }
    size_t l = strcspn(p, "\n");
    if (l == 0 && i > 0)
        return NULL;
    const char *text = after_code(p, l);
    snprintf(buf, len, "%.*s", (int)(l - (size_t)(text - p)), text);
    return buf;
}

const char *peer_reply_text(const struct smtp_client_reply *r, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (const char *p = r->text; *p != '\0' && used + 1 < len;) {
        size_t l = strcspn(p, "\n");
        const char *text = after_code(p, l);
        int n = snprintf(buf + used, len - used, "%s%.*s", p == r->text ? "" : "\n",
                         (int)(l - (size_t)(text - p)), text);
        used += (size_t)n < len - used ? (size_t)n : len - used - 1;
        p += l;
        if (*p == '\n')
            p++;
    }
    return buf;
}

void peer_reply_to_smtp(const struct smtp_client_reply *r, struct smtp_reply *out)
{
    out->code = r->code;
    out->enhanced[0] = '\0';
    peer_reply_text(r, out->text, sizeof out->text);
}
