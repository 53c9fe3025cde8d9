/* SPDX-License-Identifier: ISC */
/* The one bounded CRLF line reader (DESIGN 4.3). Lines end at LF; the reader reports whether
 * the LF had a CR before it (RFC 5321 2.3.8: only CRLF ends a line) and whether a bare CR
 * appeared inside the line. A line longer than the limit is skipped up to its LF and reported
 * once as LINE_TOO_LONG, so the session can answer 500 and carry on. */
#ifndef ODMR_LIB_LINEREADER_H
#define ODMR_LIB_LINEREADER_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

enum line_status {
    LINE_OK,        /* *out holds one line */
    LINE_AGAIN,     /* no complete line buffered yet */
    LINE_TOO_LONG,  /* a line over the limit was discarded, through its LF; only
                       bare_lf is set in *out */
};

struct line {
    char *text;       /* NUL-terminated, without the CRLF (or bare LF); owned by the reader */
    size_t len;       /* length without the line ending */
    bool bare_lf;     /* ended with LF not preceded by CR */
    bool bare_cr;     /* contains a CR not followed by LF */
};

struct line_reader {
    size_t limit;         /* max octets including the line ending */
    char *buf;
    size_t cap;
    bool skipping;        /* inside an over-long line; discarding up to the next LF */
    char last_skipped;    /* last octet discarded before that LF */
};

void line_reader_init(struct line_reader *reader, size_t limit);
void line_reader_set_limit(struct line_reader *reader, size_t limit);
void line_reader_free(struct line_reader *reader);
/* Takes at most one line out of in. */
enum line_status line_reader_next(struct line_reader *reader, struct evbuffer *in,
                                  struct line *out);

#endif
