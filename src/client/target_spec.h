/* SPDX-License-Identifier: ISC */
/* The --deliver target spec: what kind of target, where, and how (docs/client.md "Local
 * delivery target"). Parsing only; the target itself is target.h. */
#ifndef ODMR_CLIENT_TARGET_SPEC_H
#define ODMR_CLIENT_TARGET_SPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "client/local.h"

enum target_kind { TARGET_SMTP, TARGET_LMTP, TARGET_MAILDIR, TARGET_MDA };

struct target_spec {
    enum target_kind kind;
    bool is_unix;
    bool starttls_required;   /* smtp+starttls: / lmtp+starttls: (docs/client.md) */
    char host[256];
    char port[16];
    char unix_path[108];
    char local[LOCAL_PATH_MAX];   /* maildir path template or mda command */
};

/* "smtp:HOST:PORT", "lmtp:HOST:PORT", "lmtp:unix:/path", "[v6]" hosts allowed; STARTTLS
 * (RFC 3207) when a host that is not loopback offers it, or "smtp+starttls:HOST:PORT",
 * "lmtp+starttls:HOST:PORT": STARTTLS required, the certificate verified (system CAs, HOST);
 * "maildir:/path/%d/%u", "mda:/usr/sbin/sendmail -i -f %s -- %r". */
int target_parse(const char *text, struct target_spec *out, char *err, size_t errlen);
/* maildir: or mda: (target_local.h), no connection. */
bool target_spec_is_local(const struct target_spec *spec);

#endif
