/* The local target odmr-client hands mail to: smtp:HOST:PORT, lmtp:HOST:PORT, lmtp:unix:/path,
 * or, without an MTA, maildir:/path and mda:COMMAND (local.h; one reply per recipient, like
 * LMTP). One connection, opened when first needed and again after it is lost; one operation at a
 * time (the reversed session waits for each verdict, so no pipelining is needed here).
 * Replies come back through a callback, always from the event loop, never from inside a
 * target_* call. */
#ifndef ODMR_CLIENT_TARGET_H
#define ODMR_CLIENT_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/client.h"
#include "client/local.h"
#include "client/wire.h"

struct event_base;

enum target_kind { TARGET_SMTP, TARGET_LMTP, TARGET_MAILDIR, TARGET_MDA };

struct target_spec {
    enum target_kind kind;
    bool is_unix;
    char host[256];
    char port[16];
    char unix_path[108];
    char local[LOCAL_PATH_MAX];   /* maildir path template or mda command */
};

struct target_caps {
    bool esmtp, eightbitmime, smtputf8, dsn;
    uint64_t size;       /* SIZE n, 0 when none given */
};

/* "smtp:HOST:PORT", "lmtp:HOST:PORT", "lmtp:unix:/path", "[v6]" hosts allowed;
 * "maildir:/path/%d/%u", "mda:/usr/sbin/sendmail -i -f %s -- %r". */
int target_parse(const char *text, struct target_spec *out, char *err, size_t errlen);
/* Blocking check before ATRN: connect, the 220 greeting, EHLO/LHLO, QUIT (maildir: the fixed
 * part of the path can be created; mda: the command is executable). 0, or -1 with err. */
int target_probe(const struct target_spec *spec, const struct client_options *o,
                 const char *helo, struct target_caps *caps, char *err, size_t errlen);

struct target;
/* replies[count]; a reply with code 0 means no reply (target unavailable, lost, timeout). */
typedef void (*target_cb)(void *arg, const struct wire_reply *replies, size_t count);

struct target *target_new(struct event_base *base, const struct target_spec *spec,
                          const struct client_options *o, const char *helo);
void target_free(struct target *t);
/* One command line (without CRLF), one reply. */
void target_command(struct target *t, const char *line, target_cb cb, void *arg);
/* MAIL and RCPT: the line for an SMTP/LMTP target, the bare address for a local one. */
void target_mail(struct target *t, const char *line, const char *sender, target_cb cb, void *arg);
void target_rcpt(struct target *t, const char *line, const char *rcpt, target_cb cb, void *arg);
/* DATA, the body from fd (CRLF lines, not dot-stuffed, read from offset 0), the final dot;
 * count replies after the dot (LMTP: one per accepted recipient), or the one refusing DATA. */
void target_data(struct target *t, int fd, size_t count, target_cb cb, void *arg);
/* Changes each time a new connection is opened: a transaction cannot span two. */
unsigned target_generation(const struct target *t);
const struct target_caps *target_capabilities(const struct target *t);
bool target_is_lmtp(const struct target *t);
/* One reply per recipient after the data (LMTP, maildir, mda). */
bool target_per_recipient(const struct target *t);
/* QUIT if connected (best effort, without waiting). */
void target_quit(struct target *t);

#endif
