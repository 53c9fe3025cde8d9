/* SPDX-License-Identifier: ISC */
/* One transaction toward the target (target_txn.h): the envelope's copies, MAIL's and RCPT's
 * parameters, the recipients handed to the client engine. */
#include "client/target_txn.h"

#include <stdlib.h>
#include <string.h>

#include "engines/smtp_params.h"

/* engines/smtp_params.c has the rules; the wording is here. */

/* RFC 6531 3.5: a SMTPUTF8 message cannot go to a server without SMTPUTF8 (no downgrade
 * here): 553 5.6.7. RFC 6152 3: an 8-bit message to a server without 8BITMIME is converted or
 * returned; we do not convert: 554 5.6.3, the answer odmrd's own push gives a customer without
 * 8BITMIME (docs/client.md). */
int target_mail_params(const struct smtp_client_ext *caps, const struct target_mail *m,
                       char *params, size_t len, struct smtp_client_reply *refusal)
{
    const struct smtp_params_mail pm = {
        .sender = m->sender, .size = m->size, .size_known = m->size != 0,
        .body = m->eightbit ? SMTP_PARAMS_8BITMIME : SMTP_PARAMS_7BIT,
        .smtputf8 = m->smtputf8, .ret = m->ret, .envid = m->envid,
    };
    switch (smtp_params_mail(caps, false, &pm, params, len)) {
    case SMTP_PARAMS_OK:
        return 0;
    case SMTP_PARAMS_NEEDS_SMTPUTF8:
        peer_reply_set(refusal, 553, "5.6.7 The message needs SMTPUTF8, which the local "
                       "delivery target does not offer");
        return -1;
    case SMTP_PARAMS_NEEDS_8BITMIME:
    case SMTP_PARAMS_NEEDS_BINARYMIME:
        peer_reply_set(refusal, 554, "5.6.3 The message needs 8BITMIME, which the local "
                       "delivery target does not offer");
        return -1;
    default:
        peer_reply_set(refusal, 553, "5.1.7 Unusable reverse-path");
        return -1;
    }
}

void target_rcpt_params(const struct smtp_client_ext *caps, const struct target_rcpt *r,
                        char *params, size_t len)
{
    smtp_params_rcpt(caps, r->notify, r->orcpt, params, len);
}

void target_txn_free(struct target_txn *x)
{
    for (struct target_txn **p = x->list; *p != NULL; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            break;
        }
    for (size_t i = 0; i < x->txn.rcpt_count; i++) {
        free((char *)x->txn.rcpts[i].address);
        free((char *)x->txn.rcpts[i].params);
    }
    for (size_t i = 0; i < 2; i++)
        free(x->mail_strings[i]);
    for (size_t i = 0; i < 3; i++)
        free(x->first_strings[i]);
    free(x->txn.rcpts);
    free(x->sender);
    free(x);
}

/* Copies of the caller's strings, kept with the transaction. */
static int keep(char **slot, const char *from, const char **to)
{
    *to = NULL;
    if (from == NULL)
        return 0;
    *slot = strdup(from);
    *to = *slot;
    return *slot != NULL ? 0 : -1;
}

int target_txn_add_rcpt(struct target_txn *x, const struct smtp_client_ext *caps,
                        const struct target_rcpt *r, size_t *index)
{
    char params[TXN_PARAMS];
    if (x->txn.rcpt_count == x->cap) {
        size_t cap = x->cap != 0 ? x->cap * 2 : 4;
        struct smtp_client_rcpt *grown = realloc(x->txn.rcpts, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        x->txn.rcpts = grown;
        x->cap = cap;
    }
    target_rcpt_params(caps, r, params, sizeof params);
    struct smtp_client_rcpt *rc = &x->txn.rcpts[x->txn.rcpt_count];
    memset(rc, 0, sizeof *rc);
    rc->address = strdup(r->address);
    rc->params = params[0] != '\0' ? strdup(params) : NULL;
    if (rc->address == NULL || (params[0] != '\0' && rc->params == NULL)) {
        free((char *)rc->address);
        free((char *)rc->params);
        return -1;
    }
    *index = x->txn.rcpt_count++;
    return 0;
}

struct target_txn *target_txn_new(struct target_txn **list, struct target *t,
                                  const struct target_mail *mail, const struct target_rcpt *first,
                                  bool data)
{
    struct target_txn *x = calloc(1, sizeof *x);
    if (x == NULL)
        return NULL;
    *x = (struct target_txn){
        .t = t, .list = list, .next = *list, .mail = *mail, .first_data = data,
        .sender = strdup(mail->sender),
    };
    *list = x;
    int rc = keep(&x->mail_strings[0], mail->ret, &x->mail.ret);
    rc |= keep(&x->mail_strings[1], mail->envid, &x->mail.envid);
    rc |= keep(&x->first_strings[0], first->address, &x->first.address);
    rc |= keep(&x->first_strings[1], first->notify, &x->first.notify);
    rc |= keep(&x->first_strings[2], first->orcpt, &x->first.orcpt);
    x->mail.sender = x->sender;
    if (rc != 0 || x->sender == NULL) {
        target_txn_free(x);
        return NULL;
    }
    return x;
}

void target_txn_forget_rcpt(struct target_txn *x)
{
    free((char *)x->txn.rcpts[x->txn.rcpt_count].address);
    free((char *)x->txn.rcpts[x->txn.rcpt_count].params);
}
