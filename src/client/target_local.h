/* SPDX-License-Identifier: ISC */
/* The local targets, maildir: and mda: (local.h), for target.c: a transaction held here, its
 * recipients checked and answered one by one, then one delivery and one reply per recipient
 * (like LMTP, RFC 2033 4.2). The replies are made at once; target.c hands them on from the
 * event loop. */
#ifndef ODMR_CLIENT_TARGET_LOCAL_H
#define ODMR_CLIENT_TARGET_LOCAL_H

#include <stdbool.h>
#include <stddef.h>

#include "client/client.h"
#include "client/local.h"
#include "client/target_spec.h"
#include "engines/smtp_client.h"

/* The most recipients of one transaction, so the most replies after its data. */
enum { TARGET_MAX_RCPTS = 1000 };

struct target_local {
    const struct target_spec *spec;      /* the target's; lives as long */
    const struct client_options *opts;
    struct mda_command mda;
    char *sender;                        /* the open transaction, or NULL */
    struct local_rcpt { char *addr; char *dest; } *rcpts;   /* [TARGET_MAX_RCPTS] */
    size_t rcpt_count;
};

/* 0, or -1 when out of memory (target_local_free() then). */
int target_local_init(struct target_local *t, const struct target_spec *spec,
                      const struct client_options *o);
void target_local_free(struct target_local *t);
/* What a local target offers: the message is stored or piped as it is. */
void target_local_caps(struct smtp_client_ext *caps);
/* Before ATRN: the maildir's fixed part can be created, the MDA is executable. */
int target_local_probe(const struct target_spec *spec, struct smtp_client_ext *caps, char *err,
                       size_t errlen);
/* Gives up the open transaction. */
void target_local_reset(struct target_local *t);
/* [RSET] [MAIL from sender, unless NULL] RCPT: the replies to MAIL and RCPT (code 0: not
 * asked). */
void target_local_group(struct target_local *t, bool rset, const char *sender, const char *rcpt,
                        struct smtp_client_reply *mail_reply,
                        struct smtp_client_reply *rcpt_reply);
/* The body from fd to each recipient: out[count], code 0 beyond the recipients. The
 * transaction is over after it. */
void target_local_data(struct target_local *t, int fd, struct smtp_client_reply *out,
                       size_t count);

#endif
