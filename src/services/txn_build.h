/* SPDX-License-Identifier: ISC */
/* One SMTP transaction for one queued message, as every sender of queued mail builds it: the
 * push to the customer (push.c) and the notice relay (notice_relay.c). The MAIL and RCPT
 * parameters follow what the server advertised (RFC 1870, 6152, 3030, 6531, 3461 4); the
 * recipients are the pending ones a caller's predicate selects; judge() reads the replies of
 * one recipient into its queue outcome (docs/push.md, "Outcome per recipient"). */
#ifndef ODMR_SERVICES_TXN_BUILD_H
#define ODMR_SERVICES_TXN_BUILD_H

#include <stdbool.h>
#include <stddef.h>

#include "engines/smtp_client.h"
#include "store/queue.h"

enum { TXN_PARAMS_MAX = 1024 };

struct txn_rcpt {
    size_t env_index;             /* index into the message's envelope */
    char *params;                 /* " NOTIFY=... ORCPT=..." or NULL */
};

struct txn_build {
    const struct queue_message *m;
    struct smtp_client_txn txn;
    struct smtp_client_rcpt *rcpts;   /* what the engine sends */
    struct txn_rcpt *trcpts;          /* the same recipients, with their envelope index */
    size_t count;
    char mail_params[TXN_PARAMS_MAX];
};

/* Which pending recipients go into the transaction. */
typedef bool (*txn_rcpt_wanted_fn)(const struct queue_rcpt *r, void *arg);

/* Selects the PENDING recipients of m that wanted() accepts (and whose address can go into a
 * command line), with their NOTIFY/ORCPT when ext advertises DSN. 0, or -1 out of memory. */
int txn_build_rcpts(struct txn_build *b, const struct queue_message *m,
                    const struct smtp_client_ext *ext, txn_rcpt_wanted_fn wanted, void *arg);

/* Composes MAIL's parameters and the transaction (body: the stored octets of m). NULL, or the
 * reply refusing the message because the server lacks what it needs (no downgrading).
 * binarymime_ok: the caller sends with CHUNKING (RFC 3030 needs it for BINARYMIME). */
const char *txn_build_mail(struct txn_build *b, const struct smtp_client_ext *ext,
                           bool binarymime_ok, void *user);

/* Keeps only the recipients with carry[i] set (in order) for a further transaction. */
void txn_build_keep(struct txn_build *b, const bool *carry);

/* Frees the recipient arrays (not the message). */
void txn_build_free(struct txn_build *b);

enum txn_verdict {
    TXN_RECORD,      /* *state and *reply are this recipient's outcome */
    TXN_CARRY,       /* after a 452: into a further transaction in the same session */
    TXN_UNTOUCHED,   /* never sent (the session ended first) */
};

/* The outcome table of docs/push.md for recipient r of txn. session_alive: a further
 * transaction could still go out. */
enum txn_verdict txn_judge(const struct smtp_client_txn *txn, const struct smtp_client_rcpt *r,
                           bool session_alive, enum queue_rcpt_state *state, const char **reply);

#endif
