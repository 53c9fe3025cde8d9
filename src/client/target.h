/* SPDX-License-Identifier: ISC */
/* The local target odmr-client hands mail to: smtp:HOST:PORT, lmtp:HOST:PORT, lmtp:unix:/path,
 * or, without an MTA, maildir:/path and mda:COMMAND (local.h; one reply per recipient, like
 * LMTP). One connection, opened when first needed and again after it is lost; one operation at a
 * time: a group of commands ([RSET] [MAIL] RCPT [DATA], in one write when the target offers
 * PIPELINING, RFC 2920) or the body of the message. Replies come back through a callback,
 * always from the event loop, never from inside a target_* call. */
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
    bool esmtp, eightbitmime, smtputf8, dsn, pipelining, chunking;
    bool size_ext;       /* SIZE advertised (RFC 1870), with or without a limit */
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
/* The envelope of a group, as the provider gave it. The target composes MAIL and RCPT from it
 * when it sends them, from the EHLO/LHLO reply of the connection they go on: a parameter the
 * target does not advertise is left out (RFC 5321 4.1.1.11), and a message the target cannot
 * take is refused without sending its MAIL (SMTPUTF8: 553 5.6.7, 8BITMIME: 554 5.6.3). */
struct target_mail {
    const char *sender;        /* reverse-path without brackets, "" for <> */
    uint64_t size;             /* SIZE= the provider declared (RFC 1870), 0 when none */
    bool eightbit;             /* BODY=8BITMIME (RFC 6152) */
    bool smtputf8;             /* SMTPUTF8 (RFC 6531) */
    const char *ret, *envid;   /* RFC 3461 RET and ENVID, or NULL */
};
struct target_rcpt {
    const char *address;       /* forward-path without brackets */
    const char *notify, *orcpt;   /* RFC 3461 NOTIFY and ORCPT, or NULL */
};
/* The commands for one recipient, in this order; the callback gets one reply per command
 * asked for, in the same order. With PIPELINING they go in one write; without, one at a time,
 * stopping at the first refusal (no RCPT after a refused MAIL) and never sending DATA. A
 * command not sent, or not answered (connection lost), has a reply with code 0; a MAIL the
 * target cannot take (above) is not sent and has its refusal as its reply (a
 * RSET before it is still sent).
 * DATA (only when the message data is known to follow) answered 354 leaves the target
 * waiting for target_data(); any other operation first drops that connection (the message
 * was abandoned: no final dot, nothing delivered). When every recipient of the transaction
 * was refused and DATA still gets 354, a lone dot ends it (RFC 2920 3.1). */
struct target_group {
    bool rset;                      /* RSET first: a transaction is open on the target */
    const struct target_mail *mail; /* MAIL first, or NULL after the first recipient */
    struct target_rcpt rcpt;        /* RCPT */
    bool data;                      /* DATA last (pipelining targets only) */
    bool others_accepted;           /* an earlier RCPT of this transaction was accepted */
};
void target_group(struct target *t, const struct target_group *g, target_cb cb, void *arg);
/* The body from fd (CRLF lines, not dot-stuffed, read from offset 0 to EOF) and the final
 * dot, after DATA (sent now, or already answered 354 in a group); count replies after the
 * dot (LMTP: one per accepted recipient), or the one refusing DATA. A target that offers
 * CHUNKING gets the body as one BDAT <size> LAST instead (RFC 3030: no stuffing, no dot, no
 * 354 round trip; a group then carries no DATA), with the same replies. A connection lost
 * since the transaction began is not reopened: the replies have code 0. */
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
