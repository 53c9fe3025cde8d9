/* SPDX-License-Identifier: ISC */
/* One transaction for one queued message (txn_build.h): parameters, recipients, outcomes. */
#include "services/txn_build.h"

#include "engines/smtp_params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* NOTIFY and ORCPT as engines/smtp_params.c allows them (RFC 3461 4: only with DSN). */
static char *rcpt_params(const struct smtp_client_ext *ext, const struct queue_rcpt *r)
{
    char buf[TXN_PARAMS_MAX];
    smtp_params_rcpt(ext, r->notify, r->orcpt, buf, sizeof buf);
    return buf[0] != '\0' ? strdup(buf) : NULL;
}

int txn_build_rcpts(struct txn_build *b, const struct queue_message *m,
                    const struct smtp_client_ext *ext, txn_rcpt_wanted_fn wanted, void *arg)
{
    const struct queue_envelope *env = &m->env;
    b->m = m;
    b->count = 0;
    b->rcpts = calloc(env->rcpt_count, sizeof *b->rcpts);
    b->trcpts = calloc(env->rcpt_count, sizeof *b->trcpts);
    if (b->rcpts == NULL || b->trcpts == NULL)
        return -1;
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const struct queue_rcpt *r = &env->rcpts[i];
        if (r->state != QUEUE_RCPT_PENDING || !wanted(r, arg) ||
            !smtp_params_address_ok(r->address))
            continue;
        b->trcpts[b->count] = (struct txn_rcpt){i, rcpt_params(ext, r)};
        b->rcpts[b->count].address = r->address;
        b->rcpts[b->count].params = b->trcpts[b->count].params;
        b->count++;
    }
    return 0;
}

/* The message's parameters (engines/smtp_params.c), or why the customer cannot take it. */
static const char *mail_params(const struct smtp_client_ext *ext, bool binarymime_ok,
                               const struct queue_envelope *env, char *buf, size_t len)
{
    static const enum smtp_params_body bodies[] = {[QUEUE_BODY_7BIT] = SMTP_PARAMS_7BIT,
                                                   [QUEUE_BODY_8BITMIME] = SMTP_PARAMS_8BITMIME,
                                                   [QUEUE_BODY_BINARYMIME] =
                                                       SMTP_PARAMS_BINARYMIME};
    static const char *const refusals[] = {
        [SMTP_PARAMS_NEEDS_8BITMIME] =
            "554 5.6.3 message needs 8BITMIME, which the customer does not support",
        [SMTP_PARAMS_NEEDS_BINARYMIME] = "554 5.6.3 message needs BINARYMIME and CHUNKING, "
                                         "which the customer does not support",
        [SMTP_PARAMS_NEEDS_SMTPUTF8] =
            "554 5.6.7 message needs SMTPUTF8, which the customer does not support",
        [SMTP_PARAMS_BAD_SENDER] = "554 5.6.0 unusable reverse-path in the queue",
    };
    const struct smtp_params_mail m = {
        .sender = env->sender, .size = env->body_size, .size_known = true,
        .body = bodies[env->body], .smtputf8 = env->smtputf8, .ret = env->ret,
        .envid = env->envid,
    };
    enum smtp_params_refusal refusal = smtp_params_mail(ext, binarymime_ok, &m, buf, len);
    return refusal != SMTP_PARAMS_OK ? refusals[refusal] : NULL;
}

const char *txn_build_mail(struct txn_build *b, const struct smtp_client_ext *ext,
                           bool binarymime_ok, void *user)
{
    const struct queue_message *m = b->m;
    const char *refusal = mail_params(ext, binarymime_ok, &m->env, b->mail_params,
                                      sizeof b->mail_params);
    if (refusal != NULL)
        return refusal;
    b->txn = (struct smtp_client_txn){
        .mail_from = m->env.sender,
        .mail_params = b->mail_params,
        .rcpts = b->rcpts,
        .rcpt_count = b->count,
        .body = {.fd = m->fd, .offset = m->body_offset, .length = m->env.body_size},
        .user = user,
    };
    return NULL;
}

void txn_build_keep(struct txn_build *b, const bool *carry)
{
    size_t out = 0;
    for (size_t i = 0; i < b->count; i++) {
        if (!carry[i]) {
            free(b->trcpts[i].params);
            continue;
        }
        b->trcpts[out] = b->trcpts[i];
        b->rcpts[out] = b->rcpts[i];
        b->rcpts[out].params = b->trcpts[out].params;
        out++;
    }
    b->count = out;
    b->txn.rcpts = b->rcpts;
    b->txn.rcpt_count = out;
}

void txn_build_free(struct txn_build *b)
{
    for (size_t i = 0; b->trcpts != NULL && i < b->count; i++)
        free(b->trcpts[i].params);
    free(b->trcpts);
    free(b->rcpts);
    b->trcpts = NULL;
    b->rcpts = NULL;
    b->count = 0;
}

enum txn_verdict txn_judge(const struct smtp_client_txn *txn, const struct smtp_client_rcpt *r,
                           bool session_alive, enum queue_rcpt_state *state, const char **reply)
{
    static const enum queue_rcpt_state by_class[6] = {
        [2] = QUEUE_RCPT_DONE, [4] = QUEUE_RCPT_PENDING, [5] = QUEUE_RCPT_FAILED};
    const struct smtp_client_reply *decisive;
    if (txn->mail_reply.code == 0)
        return TXN_UNTOUCHED;                     /* never got as far as MAIL */
    if (txn->mail_reply.code / 100 != 2) {
        decisive = &txn->mail_reply;              /* MAIL refused: it answers for all */
    } else if (r->reply.code == 0 || (r->reply.code == 452 && txn->accepted > 0)) {
        /* RFC 5321 4.5.3.1.10: after 452 the rest go in a later transaction. */
        return session_alive && txn->accepted > 0 ? TXN_CARRY : TXN_UNTOUCHED;
    } else if (r->reply.code / 100 != 2) {
        decisive = &r->reply;
    } else if (r->data_reply.code != 0) {
        decisive = &r->data_reply;
    } else {
        /* Accepted, but no reply to the data: delivered or not, we cannot know. Keep it:
         * a duplicate later, never a loss. */
        *state = QUEUE_RCPT_PENDING;
        *reply = txn->data_sent ? "no reply to the end of data (connection lost)"
                                : "connection lost during the data";
        return TXN_RECORD;
    }
    int cls = decisive->code / 100;
    *state = cls >= 2 && cls <= 5 && cls != 3 ? by_class[cls] : QUEUE_RCPT_PENDING;
    *reply = decisive->text;
    return TXN_RECORD;
}
