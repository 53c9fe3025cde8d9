/* SPDX-License-Identifier: ISC */
/* The client's side of the wire: reading SMTP replies (RFC 5321 4.2) with the project's line
 * reader (lib/reply.h: the one reply type), and opening connections (TCP host:port or a unix socket) with a timeout. */
#ifndef ODMR_CLIENT_WIRE_H
#define ODMR_CLIENT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/time.h>

#include "lib/reply.h"
#include "lib/reply_reader.h"

struct evbuffer;

struct wire_reader {
    struct reply_reader replies;    /* the bounds: lib/reply_reader.h */
    struct smtp_client_reply cur;
    enum reply_status error;        /* why wire_read_reply() last returned -1 */
};

void wire_reader_init(struct wire_reader *r);
void wire_reader_free(struct wire_reader *r);
/* 1: *out holds a complete reply; 0: need more input; -1: malformed or over-long reply. */
int wire_read_reply(struct wire_reader *r, struct evbuffer *in, struct smtp_client_reply *out);
/* After -1: what was wrong ("over-long reply line", ...). */
const char *wire_reader_error(const struct wire_reader *r);

/* Does an EHLO reply name keyword (case-insensitive, first word of a line after the first)?
 * *args (optional) gets the rest of that line. */
bool wire_ehlo_has(const struct smtp_client_reply *r, const char *keyword, char *args, size_t argslen);

/* Blocking connect with a timeout: "unix:/path" or host + port. Returns a non-blocking fd, or
 * -1 with err set. */
int wire_connect(const char *host, const char *port, const char *unix_path,
                 struct timeval timeout, char *err, size_t errlen);

#endif
