/* SPDX-License-Identifier: ISC */
/* One transaction for one queued message (txn_build.h): parameters, recipients, outcomes. */
#include "services/txn_build.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Envelope values come from the queue, checked at intake; still, nothing with a space or a
 * control octet is ever written into a command line. */
static bool safe_value(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    }
    return true;
}

static bool safe_address(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>')
            return false;
    }
    return true;
}

static void append_param(char *buf, size_t len, const char *name, const char *value)
{
    size_t used = strlen(buf);
    snprintf(buf + used, len - used, " %s%s%s", name, value != NULL ? "=" : "",
             value != NULL ? value : "");
}

/* RFC 3461 4: NOTIFY and ORCPT only to a server that advertises DSN. */
static char *rcpt_params(const struct smtp_client_ext *ext, const struct queue_rcpt *r)
{
    char buf[TXN_PARAMS_MAX] = "";
    if (ext->dsn && r->notify != NULL && safe_value(r->notify))
        append_param(buf, sizeof buf, "NOTIFY", r->notify);
    if (ext->dsn && r->orcpt != NULL && safe_value(r->orcpt))
        append_param(buf, sizeof buf, "ORCPT", r->orcpt);
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
        if (r->state != QUEUE_RCPT_PENDING || !wanted(r, arg) || !safe_address(r->address))
            continue;
        b->trcpts[b->count] = (struct txn_rcpt){i, rcpt_params(ext, r)};
        b->rcpts[b->count].address = r->address;
        b->rcpts[b->count].params = b->trcpts[b->count].params;
        b->count++;
    }
    return 0;
}

/* RFC 1870 (SIZE), RFC 6152 (BODY=8BITMIME), RFC 3030 (BINARYMIME), RFC 6531 (SMTPUTF8),
 * RFC 3461 (RET, ENVID: only to a server that advertises DSN). NULL, or why the server
 * cannot take the message. */
static const char *mail_params(const struct smtp_client_ext *ext, bool binarymime_ok,
                               const struct queue_envelope *env, char *buf, size_t len)
{
    static const char *const body_names[] = {[QUEUE_BODY_8BITMIME] = "8BITMIME",
                                             [QUEUE_BODY_BINARYMIME] = "BINARYMIME"};
    buf[0] = '\0';
    if (env->body == QUEUE_BODY_8BITMIME && !ext->eightbitmime)
        return "554 5.6.3 message needs 8BITMIME, which the customer does not support";
    if (env->body == QUEUE_BODY_BINARYMIME &&
        !(ext->binarymime && ext->chunking && binarymime_ok))
        return "554 5.6.3 message needs BINARYMIME and CHUNKING, which the customer does not "
               "support";
    if (env->smtputf8 && !ext->smtputf8)
        return "554 5.6.7 message needs SMTPUTF8, which the customer does not support";
    if (!safe_address(env->sender))
        return "554 5.6.0 unusable reverse-path in the queue";
    char size[32];
    snprintf(size, sizeof size, "%" PRIu64, env->body_size);
    if (ext->size)
        append_param(buf, len, "SIZE", size);
    if (env->body != QUEUE_BODY_7BIT)
        append_param(buf, len, "BODY", body_names[env->body]);
    if (env->smtputf8)
        append_param(buf, len, "SMTPUTF8", NULL);
    if (ext->dsn && env->ret != NULL && safe_value(env->ret))
        append_param(buf, len, "RET", env->ret);
    if (ext->dsn && env->envid != NULL && safe_value(env->envid))
        append_param(buf, len, "ENVID", env->envid);
    return NULL;
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
