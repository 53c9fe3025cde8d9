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
