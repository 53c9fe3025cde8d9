/* SPDX-License-Identifier: ISC */
/* Local delivery without an MTA: a Maildir (maildir.c) or an MDA command (mda.c). Both are
 * blocking and run one recipient at a time; their verdict is an SMTP reply (lib/reply.h,
 * peer_reply_set(): the text starts with the enhanced status code, RFC 3463), so the relay
 * treats them like an LMTP target (one reply per recipient, folded, docs/client.md).
 * local.c holds what both need: the CRLF -> LF copy of the spooled message and the replies. */
#ifndef ODMR_CLIENT_LOCAL_H
#define ODMR_CLIENT_LOCAL_H

#include <stdbool.h>
#include <stddef.h>

#include "client/wire.h"

enum {
    LOCAL_PATH_MAX = 4096, MDA_MAX_ARGS = 64, MDA_TEXT_MAX = 1024,
    LOCAL_COPY_CHUNK = 64 << 10,   /* octets of the spooled message read per step */
};

/* ---- local.c ---- */

/* A delivery error from errno: ENOSPC/EDQUOT 452 (RFC 3463 4.3.1 / 4.2.2), else 451 4.3.0. */
void local_reply_errno(struct smtp_client_reply *out, int err, const char *what);
/* Writes all of buf to fd, waiting (poll) while fd is non-blocking and full, until deadline_ms
 * (CLOCK_MONOTONIC milliseconds; 0 = none). 0, or -1 with errno (ETIMEDOUT on the deadline). */
int local_write_all(int fd, const char *buf, size_t len, long long deadline_ms);
/* Copies the spooled message (CRLF lines, read from offset 0) to fd with LF line ends, the
 * Unix form every Maildir reader and MDA expects. 0, or -1 with errno. */
int local_copy_lf(int spool_fd, int fd, long long deadline_ms);
long long local_now_ms(void);
/* Splits "local@domain" at the last '@' (a quoted local part may hold '@'). */
void local_split_address(const char *addr, char *local, size_t llen, char *domain, size_t dlen);

/* ---- maildir.c: maildir:/path with %u (local part), %d (domain, lower-cased), %% ---- */

/* The template must be an absolute path with known escapes. */
int maildir_template_check(const char *templ, char *err, size_t errlen);
/* Expands the template for one recipient. Each expanded component is refused when empty, when
 * it starts with '.', holds "..", '/', or a control character: a recipient can never name a
 * directory outside the template's shape. 0, or -1 with err. */
int maildir_expand(const char *templ, const char *addr, char *out, size_t len, char *err,
                   size_t errlen);
/* Before ATRN: the fixed part of the template (up to the first escape) can be created. */
int maildir_probe(const char *templ, char *err, size_t errlen);
/* Creates dir and its tmp/ new/ cur/ (0700) if missing, writes tmp/<unique> with Return-Path
 * and Delivered-To on top, fsync, link into new/, fsync new/. *out is 250 only after that. */
void maildir_deliver(const char *dir, int spool_fd, const char *sender, const char *rcpt,
                     struct smtp_client_reply *out);

/* ---- mda.c: mda:/path/to/command arg %s %r (no shell) ---- */

struct mda_command {
    char text[MDA_TEXT_MAX];
    char *argv[MDA_MAX_ARGS + 1];
    size_t argc;
};

/* Splits at spaces and tabs; argv[0] must be an absolute path; escapes %s %r %%. */
int mda_parse(const char *text, struct mda_command *out, char *err, size_t errlen);
/* Before ATRN: argv[0] is an executable file. */
int mda_probe(const struct mda_command *c, char *err, size_t errlen);
/* An address that could be read as an option (leading '-') is refused: 0 ok, -1 refused. */
int mda_address_ok(const char *addr);
/* argument with %s -> sender, %r -> rcpt, %% -> %; the value is never split further. */
int mda_expand_arg(const char *arg, const char *sender, const char *rcpt, char *out, size_t len);
/* fork, exec (no shell), the message on stdin; exit 0 -> 250, 75 (EX_TEMPFAIL), a signal or
 * the timeout -> 451, other -> 554. */
void mda_deliver(const struct mda_command *c, int spool_fd, const char *sender, const char *rcpt,
                 double timeout_seconds, struct smtp_client_reply *out);

#endif
