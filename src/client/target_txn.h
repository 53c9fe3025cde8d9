/* SPDX-License-Identifier: ISC */
/* One transaction toward an SMTP or LMTP target, for target.c: the envelope as the provider
 * gave it, copied until the connection is ready; MAIL's and RCPT's parameters composed for what
 * the target advertised; the recipients as the client engine takes them
 * (engines/smtp_client.h). */
#ifndef ODMR_CLIENT_TARGET_TXN_H
#define ODMR_CLIENT_TARGET_TXN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/wire.h"
#include "engines/smtp_client.h"

enum {
    TXN_PARAMS = 1024,       /* MAIL's or a RCPT's parameters */
};

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
/* MAIL's parameters for the target's capabilities (engines/smtp_params.c), or -1 with the
 * refusal of a message the target cannot take (SMTPUTF8: 553 5.6.7, 8BITMIME: 554 5.6.3). */
int target_mail_params(const struct smtp_client_ext *caps, const struct target_mail *m,
                       char *params, size_t len, struct smtp_client_reply *refusal);
/* RCPT's parameters: NOTIFY and ORCPT to a target that offers DSN (RFC 3461 5.2.1, 5.2.2). */
void target_rcpt_params(const struct smtp_client_ext *caps, const struct target_rcpt *r,
                        char *params, size_t len);

struct target;

/* One transaction on the engine: its recipients' strings are copies, kept until txn_done. */
struct target_txn {
    struct smtp_client_txn txn;
    struct target *t;                 /* NULL once given up (detach_txn) */
    struct target_txn **list;         /* the target's: every one the engine may still hand back */
    struct target_txn *next;
    size_t cap;
    char *sender;
    char mail_params[TXN_PARAMS];
    struct target_mail mail;          /* the envelope until MAIL is composed (ready) */
    char *mail_strings[2];            /* ret, envid */
    struct target_rcpt first;         /* the first recipient until then */
    char *first_strings[3];           /* address, notify, orcpt */
    bool started, first_data;
};

/* A new transaction: copies of MAIL's envelope and of its first recipient, first on *list;
 * t is the target it is open on; data: DATA follows the first recipient. NULL when out of
 * memory. */
struct target_txn *target_txn_new(struct target_txn **list, struct target *t,
                                  const struct target_mail *mail, const struct target_rcpt *first,
                                  bool data);
/* Off its list, its copies freed. */
void target_txn_free(struct target_txn *x);
/* Appends a recipient, its parameters composed for caps: 0 with its index, or -1 (out of
 * memory). */
int target_txn_add_rcpt(struct target_txn *x, const struct smtp_client_ext *caps,
                        const struct target_rcpt *r, size_t *index);
/* The engine did not take the recipient last appended (its list was closed): its copies go. */
void target_txn_forget_rcpt(struct target_txn *x);

#endif
