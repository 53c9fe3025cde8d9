/* SPDX-License-Identifier: ISC */
/* Reading SMTP replies (RFC 5321 4.2) off a libevent buffer with the bounded line reader: the
 * one reply grammar of both client sides (odmr-client's wire.c, the smtp_client engine). It
 * hands out one reply line at a time and says when the reply is complete; the caller keeps
 * whatever text it needs. Every bound is checked here, before the caller sees a line. */
#ifndef ODMR_LIB_REPLY_READER_H
#define ODMR_LIB_REPLY_READER_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/linereader.h"

struct evbuffer;

enum {
    /* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including the CRLF. */
    REPLY_LINE_MAX = 512,
    /* RFC 5321 4.5.3.1 lets an implementation limit what the RFC leaves open: the number of
     * lines of one multi-line reply. 100 lines of at most 512 octets: 50 KiB per reply at most,
     * so a peer sending "250-" forever is cut off instead of being buffered. */
    REPLY_LINES_MAX = 100,
};

enum reply_status {
    REPLY_AGAIN,          /* no complete line buffered yet */
    REPLY_LINE,           /* *out holds one line; out->last: the reply is complete */
    REPLY_TOO_LONG,       /* a line over REPLY_LINE_MAX (reported before its end arrives) */
    REPLY_MALFORMED,      /* not code [SP / "-" text], a bare CR or NUL, or a bare LF (strict) */
    REPLY_CODE_CHANGED,   /* a continuation line with another code than the first line */
    REPLY_TOO_MANY_LINES, /* over REPLY_LINES_MAX lines in one reply */
};

struct reply_line {
    int code;           /* 200..559 */
    bool last;          /* "ddd " or "ddd": the last line of the reply */
    size_t index;       /* 0 for the first line of a reply */
    const char *line;   /* the whole line without its CRLF, NUL-terminated (reader-owned) */
    size_t len;
    const char *text;   /* the text after "ddd-" / "ddd " ("" when there is none) */
};

struct reply_reader {
    struct line_reader lines;
    bool allow_bare_lf;   /* tolerate LF without CR as a line end (the push: fetchmail relays) */
    int code;             /* code of the reply being read */
    size_t count;         /* its lines so far */
};

void reply_reader_init(struct reply_reader *r, bool allow_bare_lf);
void reply_reader_free(struct reply_reader *r);
/* Takes at most one line out of in. After an error the reply is forgotten; the caller is
 * expected to end the session (the stream is out of step). */
enum reply_status reply_reader_next(struct reply_reader *r, struct evbuffer *in,
                                    struct reply_line *out);
struct smtp_client_reply;
/* Adds one line to the reply being assembled in cur (cut at its size; a first line starts it
 * afresh only after the caller cleared it). */
void reply_reader_keep(struct smtp_client_reply *cur, const struct reply_line *l);
/* "malformed", "over-long", ... for logs and error messages. */
const char *reply_status_name(enum reply_status status);

#endif
