/* SPDX-License-Identifier: ISC */
/* SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 2034, RFC 3463). */
#ifndef ODMR_LIB_REPLY_H
#define ODMR_LIB_REPLY_H

#include <stddef.h>

struct evbuffer;

enum { REPLY_TEXT_MAX = 400 };

struct smtp_reply {
    int code;                      /* 0 = no reply set */
    char enhanced[16];             /* "2.1.0", or "" for none (greeting, 354, EHLO) */
    char text[REPLY_TEXT_MAX];
};

/* Fills r; fmt is printf-like. Returns r. */
struct smtp_reply *reply_set(struct smtp_reply *r, int code, const char *enhanced,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Appends "CODE ENH TEXT\r\n" to out. A text with '\n' becomes a multi-line reply
 * ("CODE-..." lines, the last "CODE ..."), each line carrying the enhanced code. */
void reply_write(struct evbuffer *out, const struct smtp_reply *r);
/* Shorthand: set and write in one go. */
void reply_send(struct evbuffer *out, int code, const char *enhanced, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Writes a multi-line reply from separate lines (EHLO). */
void reply_send_lines(struct evbuffer *out, int code, const char *const *lines, size_t count);
/* The reply class: 2, 3, 4 or 5. */
static inline int reply_class(int code) { return code / 100; }

#endif
