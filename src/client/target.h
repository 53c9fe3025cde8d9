/* SPDX-License-Identifier: ISC */
/* The local target odmr-client hands mail to: smtp:HOST:PORT, lmtp:HOST:PORT, lmtp:unix:/path,
 * or, without an MTA, maildir:/path and mda:COMMAND (target_local.h; one reply per recipient,
 * like LMTP). SMTP and LMTP go through the client engine (engines/smtp_client.h: PIPELINING,
 * CHUNKING, LMTP's replies per recipient, the one dot-stuffing); this module keeps the
 * connection (opened when first needed and again after it is lost, target_connect.h) and the
 * transactions; the spec is target_spec.h, the check before ATRN target_probe.h. A
 * transaction is built as the provider's commands come: each recipient's verdict, then the
 * replies after the data, always from the event loop, never from inside a target_* call. */
#ifndef ODMR_CLIENT_TARGET_H
#define ODMR_CLIENT_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/client.h"
#include "client/target_spec.h"
#include "client/target_txn.h"
#include "client/wire.h"
#include "engines/smtp_client.h"

struct event_base;

struct target;
/* replies[count]; a reply with code 0 means no reply (target unavailable, lost, timeout). */
typedef void (*target_cb)(void *arg, const struct smtp_client_reply *replies, size_t count);
/* A recipient's verdict: mail is the reply to the MAIL its group opened the transaction with
 * (NULL when the transaction was open already; a refusal made here when the target cannot take
 * the message, its MAIL then not sent), rcpt the RCPT's reply (code 0: not sent, or no reply:
 * the target is unavailable, lost, timed out). */
typedef void (*target_rcpt_cb)(void *arg, const struct smtp_client_reply *mail,
                               const struct smtp_client_reply *rcpt);

struct target *target_new(struct event_base *base, const struct target_spec *spec,
                          const struct client_options *o, const char *helo);
void target_free(struct target *t);
/* One recipient of the provider's transaction: [RSET] [MAIL] RCPT [DATA]. The first one
 * opens the transaction (MAIL; a transaction left open is given up first: RSET, or the
 * connection dropped when the target was already waiting for its data); later ones join it.
 * With PIPELINING they go in one write; without, MAIL's reply comes before the RCPT goes (no
 * RCPT after a refused MAIL). data: the provider's DATA is already here, no recipient follows:
 * with PIPELINING (and without CHUNKING) DATA goes along and the target's 354 waits for
 * target_data() (RFC 2920 3.1); when every recipient was refused and DATA still gets 354, a
 * lone dot ends it. */
struct target_group {
    bool rset;                      /* a transaction is open on the target: give it up */
    const struct target_mail *mail; /* MAIL first, or NULL after the first recipient */
    struct target_rcpt rcpt;        /* RCPT */
    bool data;                      /* DATA last (pipelining targets only) */
};
void target_group(struct target *t, const struct target_group *g, target_rcpt_cb cb, void *arg);
/* The body from fd (CRLF lines, not dot-stuffed, read from offset 0 to EOF) after DATA (sent
 * now, or already answered 354 in a group), or as one BDAT <size> LAST to a target that offers
 * CHUNKING (RFC 3030: no stuffing, no dot, no 354 round trip); count replies after it (LMTP:
 * one per accepted recipient, RFC 2033 4.2), or the one refusing DATA. fd -1: the message will
 * not come (the transaction is given up). A connection lost since the transaction began is not
 * reopened: the replies have code 0. */
void target_data(struct target *t, int fd, size_t count, target_cb cb, void *arg);
/* Changes each time a new connection is opened: a transaction cannot span two. */
unsigned target_generation(const struct target *t);
const struct smtp_client_ext *target_capabilities(const struct target *t);
bool target_is_lmtp(const struct target *t);
/* One reply per recipient after the data (LMTP, maildir, mda). */
bool target_per_recipient(const struct target *t);
/* QUIT if connected (best effort, without waiting). */
void target_quit(struct target *t);

#endif
