/* SPDX-License-Identifier: ISC */
/* The queue's file format (docs/queue.md "File formats"): the token codec, the envelope lines,
 * and the message file (magic, envelope, octets, checksummed trailer) with its validation.
 * Backend-neutral: no spool, no paths, only buffers and file descriptors. */
#ifndef ODMR_STORE_QUEUE_FORMAT_H
#define ODMR_STORE_QUEUE_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/queue.h"

/* ---- value encoding: any string becomes one token without space, CR, LF or NUL ---- */

/* A growable text buffer. */
struct queue_text {
    char *data;
    size_t len, cap;
};
int queue_text_append(struct queue_text *t, const void *data, size_t len);
int queue_text_printf(struct queue_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends value as one token: "-" for NULL; otherwise "=" followed by the value with every
 * octet outside 0x21..0x7e and '%' written as %XX. 0 or ENOMEM (for all the appenders). */
int queue_text_token(struct queue_text *t, const char *value);
void queue_text_free(struct queue_text *t);
/* Decodes one token made by queue_text_token() (len octets, no separators). *out is NULL for
 * "-", else a fresh NUL-terminated string. 0, EBADMSG or ENOMEM. Values containing NUL are
 * refused (EBADMSG). */
int queue_token_decode(const char *token, size_t len, char **out);

/* ---- the envelope as text (docs/queue.md "Envelope lines") ---- */

/* Appends the envelope lines (no magic line, no blank line). 0 or ENOMEM. */
int queue_envelope_format(struct queue_text *t, const struct queue_envelope *env);
/* Parses envelope lines (len octets, every line ending in LF, no blank line) into env, which
 * the caller clears. 0, EBADMSG (with a reason) or ENOMEM. */
int queue_envelope_parse(const char *text, size_t len, struct queue_envelope *env,
                         const char **reason);

const char *queue_rcpt_state_name(enum queue_rcpt_state state);
int queue_rcpt_state_parse(const char *name, size_t len, enum queue_rcpt_state *out);

/* ---- the message file ---- */

/* pread() of exactly len octets at offset; a short file is EIO. 0 or errno. */
int queue_format_pread(int fd, void *data, size_t len, off_t offset);

struct queue_format_validated {
    struct queue_envelope env;
    off_t body_offset;
    uint64_t body_len;
};
/* Validates a message file completely: size, magic, version, trailer, SHA-256, envelope, and
 * that its id is id. 0 (out filled; the caller clears out->env), EBADMSG (*reason set) or an
 * I/O errno (the file may be fine: never quarantine for that). */
int queue_format_validate(int fd, const char *id, struct queue_format_validated *out,
                          const char **reason);
/* The same checks for a whole message file already in memory (data, len octets): no
 * syscall, one SHA-256 pass (start-up recovery reads small files in one pread). */
int queue_format_validate_buffer(const char *data, size_t len, const char *id,
                                 struct queue_format_validated *out, const char **reason);
/* Reads only the magic and envelope of a message file (no checksum). 0, EBADMSG or errno. */
int queue_format_read_envelope(int fd, struct queue_envelope *env);

#endif
