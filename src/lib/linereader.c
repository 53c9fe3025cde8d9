/* SPDX-License-Identifier: ISC */
/* Bounded CRLF line reader over a libevent input buffer (see linereader.h). */
#include "lib/linereader.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

void line_reader_init(struct line_reader *reader, size_t limit)
{
    memset(reader, 0, sizeof *reader);
    reader->limit = limit;
}

void line_reader_set_limit(struct line_reader *reader, size_t limit)
{
    reader->limit = limit;
}

void line_reader_free(struct line_reader *reader)
{
    free(reader->buf);
    memset(reader, 0, sizeof *reader);
}

static int ensure_capacity(struct line_reader *reader, size_t need)
{
    if (need <= reader->cap)
        return 0;
    size_t cap = reader->cap ? reader->cap : 256;
    while (cap < need)
        cap *= 2;
    char *grown = realloc(reader->buf, cap);
    if (grown == NULL)
        return -1;
    reader->buf = grown;
    reader->cap = cap;
    return 0;
}

/* Discards input of an over-long line up to and including its LF, remembering whether that
 * LF had a CR before it (the DATA end rule needs to know). Returns true once the LF is gone. */
static bool skip_to_lf(struct line_reader *reader, struct evbuffer *in)
{
    struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
    size_t upto = lf.pos < 0 ? evbuffer_get_length(in) : (size_t)lf.pos;
    if (upto > 0) {
        struct evbuffer_ptr last;
        evbuffer_ptr_set(in, &last, upto - 1, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(in, &last, &reader->last_skipped, 1);
    }
    if (lf.pos < 0) {
        evbuffer_drain(in, upto);
        return false;
    }
    evbuffer_drain(in, upto + 1);
    return true;
}

/* RFC 5321 2.3.8: a CR is only a line ending together with the LF after it. */
static bool has_bare_cr(const char *text, size_t len)
{
    return memchr(text, '\r', len) != NULL;
}

enum line_status line_reader_next(struct line_reader *reader, struct evbuffer *in,
                                  struct line *out)
{
    if (reader->skipping) {
        if (!skip_to_lf(reader, in))
            return LINE_AGAIN;
        reader->skipping = false;
        out->text = NULL;
        out->len = 0;
        out->bare_lf = reader->last_skipped != '\r';
        out->bare_cr = false;
        return LINE_TOO_LONG;
    }
    size_t available = evbuffer_get_length(in);
    size_t window = available < reader->limit ? available : reader->limit;
    struct evbuffer_ptr lf = evbuffer_search_range(in, "\n", 1, NULL, NULL);
    if (lf.pos < 0 || (size_t)lf.pos >= window) {
        if (available < reader->limit)
            return LINE_AGAIN;
        /* No LF within the limit: the line is over-long whatever follows. */
        reader->skipping = true;
        return line_reader_next(reader, in, out);
    }
    size_t total = (size_t)lf.pos + 1;
    if (ensure_capacity(reader, total + 1) != 0)
        return LINE_TOO_LONG;
    evbuffer_remove(in, reader->buf, total);
    size_t len = total - 1;
    bool crlf = len > 0 && reader->buf[len - 1] == '\r';
    if (crlf)
        len--;
    reader->buf[len] = '\0';
    out->text = reader->buf;
    out->len = len;
    out->bare_lf = !crlf;
    out->bare_cr = has_bare_cr(reader->buf, len);
    return LINE_OK;
}
