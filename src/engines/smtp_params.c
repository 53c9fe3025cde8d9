/* SPDX-License-Identifier: ISC */
/* MAIL and RCPT parameters for a message sent on (smtp_params.h). */
#include "engines/smtp_params.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Envelope values were checked when they came in; still, nothing with a space or a control
 * octet is ever written into a command line. */
static bool safe_value(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    }
    return true;
}

bool smtp_params_address_ok(const char *address)
{
    for (const unsigned char *p = (const unsigned char *)address; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>')
            return false;
    }
    return true;
}

/* Appends " NAME" or " NAME=value"; a value that cannot go on the wire leaves it out. */
static void append_param(char *buf, size_t len, const char *name, const char *value)
{
    size_t used = strlen(buf);
    if (value != NULL && !safe_value(value))
        return;
    if (used < len)
        snprintf(buf + used, len - used, " %s%s%s", name, value != NULL ? "=" : "",
                 value != NULL ? value : "");
}

static enum smtp_params_refusal needs(const struct smtp_client_ext *ext, bool binarymime_ok,
                                      const struct smtp_params_mail *m)
{
    if (m->body == SMTP_PARAMS_8BITMIME && !ext->eightbitmime)
        return SMTP_PARAMS_NEEDS_8BITMIME;
    if (m->body == SMTP_PARAMS_BINARYMIME && !(ext->binarymime && ext->chunking && binarymime_ok))
        return SMTP_PARAMS_NEEDS_BINARYMIME;
    if (m->smtputf8 && !ext->smtputf8)
        return SMTP_PARAMS_NEEDS_SMTPUTF8;
    if (!smtp_params_address_ok(m->sender))
        return SMTP_PARAMS_BAD_SENDER;
    return SMTP_PARAMS_OK;
}

/* Only what the server advertised (RFC 5321 4.1.1.11): SIZE with SIZE (RFC 1870 6), BODY with
 * 8BITMIME (RFC 6152) or BINARYMIME (RFC 3030), SMTPUTF8 with SMTPUTF8 (RFC 6531), RET and
 * ENVID with DSN (RFC 3461 4, 5.2.1/5.2.2). */
enum smtp_params_refusal smtp_params_mail(const struct smtp_client_ext *ext, bool binarymime_ok,
                                          const struct smtp_params_mail *m, char *buf,
                                          size_t len)
{
    static const char *const body_names[] = {[SMTP_PARAMS_8BITMIME] = "8BITMIME",
                                             [SMTP_PARAMS_BINARYMIME] = "BINARYMIME"};
    char size[32];
    buf[0] = '\0';
    enum smtp_params_refusal refusal = needs(ext, binarymime_ok, m);
    if (refusal != SMTP_PARAMS_OK)
        return refusal;
    snprintf(size, sizeof size, "%" PRIu64, m->size);
    if (ext->size && m->size_known)
        append_param(buf, len, "SIZE", size);
    if (m->body != SMTP_PARAMS_7BIT)
        append_param(buf, len, "BODY", body_names[m->body]);
    if (m->smtputf8)
        append_param(buf, len, "SMTPUTF8", NULL);
    if (ext->dsn && m->ret != NULL)
        append_param(buf, len, "RET", m->ret);
    if (ext->dsn && m->envid != NULL)
        append_param(buf, len, "ENVID", m->envid);
    return SMTP_PARAMS_OK;
}

void smtp_params_rcpt(const struct smtp_client_ext *ext, const char *notify, const char *orcpt,
                      char *buf, size_t len)
{
    buf[0] = '\0';
    if (ext->dsn && notify != NULL)
        append_param(buf, len, "NOTIFY", notify);
    if (ext->dsn && orcpt != NULL)
        append_param(buf, len, "ORCPT", orcpt);
}
