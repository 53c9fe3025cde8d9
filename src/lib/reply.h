/* SPDX-License-Identifier: ISC */
/* SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 2034, RFC 3463). */
#ifndef ODMR_LIB_REPLY_H
#define ODMR_LIB_REPLY_H

#include <stddef.h>

struct evbuffer;

enum {
    REPLY_TEXT_MAX = 400,
    PEER_REPLY_TEXT = 1024,   /* kept text of a peer's reply (longer is cut) */
};

struct smtp_reply {
    int code;                      /* 0 = no reply set */
    char enhanced[16];             /* "2.1.0", or "" for none (greeting, 354, EHLO) */
    char text[REPLY_TEXT_MAX];
};

/* A reply as a peer sent it (or as a local target makes one up): the one reply type of every
 * client side (the smtp_client engine, odmr-client's exchange with its provider, its local
 * targets). The text is the wire form: every line with its code ("250-...", "250 ..."), joined
 * with '\n'; peer_reply_line() gives a line's text after the code. */
struct smtp_client_reply {
    int code;                      /* 0: no reply (not sent, or the connection ended) */
    size_t lines;
    char text[PEER_REPLY_TEXT];
};

/* A one-line reply made here: "CODE TEXT". */
void peer_reply_set(struct smtp_client_reply *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The text of line i after its "ddd-"/"ddd " (a NUL-terminated copy into buf), or NULL. */
const char *peer_reply_line(const struct smtp_client_reply *r, size_t i, char *buf, size_t len);
/* Every line's text after its code, joined with '\n' (a copy into buf). */
const char *peer_reply_text(const struct smtp_client_reply *r, char *buf, size_t len);
/* A peer's reply to pass on faithfully through the server engine (the enhanced code kept in
 * the text, the codes of the lines left off: reply_write() writes its own). */
void peer_reply_to_smtp(const struct smtp_client_reply *r, struct smtp_reply *out);

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
