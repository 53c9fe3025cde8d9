/* SPDX-License-Identifier: ISC */
/* The MAIL and RCPT parameters of a message sent on (the push, the notice relay, odmr-client's
 * hand-off to its target): what the message declares, limited to what the server advertised
 * (RFC 5321 4.1.1.11), and whether the server can take the message at all (no downgrading).
 * The one place these rules live; each caller words its own refusal. */
#ifndef ODMR_ENGINES_SMTP_PARAMS_H
#define ODMR_ENGINES_SMTP_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engines/smtp_client.h"

enum smtp_params_body { SMTP_PARAMS_7BIT, SMTP_PARAMS_8BITMIME, SMTP_PARAMS_BINARYMIME };

struct smtp_params_mail {
    const char *sender;           /* reverse-path without brackets, "" for <> */
    uint64_t size;                /* RFC 1870 SIZE= */
    bool size_known;              /* size is worth declaring */
    enum smtp_params_body body;   /* RFC 6152 / RFC 3030 BODY= */
    bool smtputf8;                /* RFC 6531 */
    const char *ret, *envid;      /* RFC 3461, or NULL */
};

enum smtp_params_refusal {
    SMTP_PARAMS_OK,
    SMTP_PARAMS_NEEDS_8BITMIME,     /* RFC 6152 3: we do not convert */
    SMTP_PARAMS_NEEDS_BINARYMIME,   /* RFC 3030 3: BINARYMIME needs CHUNKING too */
    SMTP_PARAMS_NEEDS_SMTPUTF8,     /* RFC 6531 3.5: no downgrade */
    SMTP_PARAMS_BAD_SENDER,         /* a reverse-path that cannot go into a command line */
};

/* MAIL's parameters (" SIZE=... BODY=...", leading space, or "") into buf, or why the server
 * cannot take the message (buf is then ""). binarymime_ok: the caller sends with CHUNKING. */
enum smtp_params_refusal smtp_params_mail(const struct smtp_client_ext *ext, bool binarymime_ok,
                                          const struct smtp_params_mail *m, char *buf,
                                          size_t len);
/* RCPT's parameters: RFC 3461 NOTIFY and ORCPT (either may be NULL) to a server that offers
 * DSN, none to one that does not (5.2.2 (a)). */
void smtp_params_rcpt(const struct smtp_client_ext *ext, const char *notify, const char *orcpt,
                      char *buf, size_t len);
/* Can this address go between < and > in a command line (no control octet, no brackets)? */
bool smtp_params_address_ok(const char *address);

#endif
