/* SPDX-License-Identifier: ISC */
/* The local targets maildir: and mda: (target_local.h) over local.h's deliveries. */
#include "client/target_local.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

void target_local_caps(struct smtp_client_ext *caps)
{
    /* The message is stored or piped as it is: any 8-bit or UTF-8 content goes. */
    *caps = (struct smtp_client_ext){.esmtp = true, .eightbitmime = true, .smtputf8 = true};
}

int target_local_probe(const struct target_spec *spec, struct smtp_client_ext *caps, char *err,
                       size_t errlen)
{
    struct mda_command c;
    target_local_caps(caps);
    if (spec->kind == TARGET_MAILDIR)
        return maildir_probe(spec->local, err, errlen);
    if (mda_parse(spec->local, &c, err, errlen) != 0)
        return -1;
    return mda_probe(&c, err, errlen);
}

void target_local_reset(struct target_local *t)
{
    for (size_t i = 0; i < t->rcpt_count; i++) {
        free(t->rcpts[i].addr);
        free(t->rcpts[i].dest);
    }
    t->rcpt_count = 0;
    free(t->sender);
    t->sender = NULL;
}

static void local_mail(struct target_local *t, const char *sender, struct smtp_client_reply *out)
{
    target_local_reset(t);
    if (t->spec->kind == TARGET_MDA && mda_address_ok(sender) != 0) {
        peer_reply_set(out, 553, "5.1.7 Sender address starting with '-' refused "
                    "by the MDA target");
        return;
    }
    t->sender = strdup(sender);
    if (t->sender == NULL)
        peer_reply_set(out, 451, "4.3.0 Out of memory");
    else
        peer_reply_set(out, 250, "2.1.0 OK");
}

/* The recipient's destination: the expanded maildir, or nothing for an MDA. */
static int local_destination(struct target_local *t, const char *rcpt, char **dest,
                             struct smtp_client_reply *out)
{
    char path[LOCAL_PATH_MAX], err[200];
    *dest = NULL;
    if (t->spec->kind == TARGET_MDA) {
        if (mda_address_ok(rcpt) == 0)
            return 0;
        peer_reply_set(out, 553, "5.1.3 Recipient address starting with '-' refused "
                    "by the MDA target");
        return -1;
    }
    if (maildir_expand(t->spec->local, rcpt, path, sizeof path, err, sizeof err) != 0) {
        peer_reply_set(out, 553, "5.1.3 %s", err);
        return -1;
    }
    *dest = strdup(path);
    return 0;
}

static void local_rcpt(struct target_local *t, const char *rcpt, struct smtp_client_reply *out)
{
    char *dest;
    if (t->sender == NULL || t->rcpt_count == TARGET_MAX_RCPTS) {
        peer_reply_set(out, 452, "4.5.3 Too many recipients");
        return;
    }
    if (local_destination(t, rcpt, &dest, out) != 0)
        return;
    struct local_rcpt *r = &t->rcpts[t->rcpt_count];
    r->addr = strdup(rcpt);
    r->dest = dest;
    if (r->addr == NULL || (dest == NULL && t->spec->kind == TARGET_MAILDIR)) {
        free(r->addr);
        free(dest);
        peer_reply_set(out, 451, "4.3.0 Out of memory");
        return;
    }
    t->rcpt_count++;
    peer_reply_set(out, 250, "2.1.5 OK");
}

/* One delivery per recipient, each with its own verdict (folded by the relay). */
void target_local_data(struct target_local *t, int fd, struct smtp_client_reply *out,
                       size_t count)
{
    memset(out, 0, count * sizeof *out);
    for (size_t i = 0; i < count && i < t->rcpt_count; i++) {
        const struct local_rcpt *r = &t->rcpts[i];
        if (t->spec->kind == TARGET_MAILDIR)
            maildir_deliver(r->dest, fd, t->sender, r->addr, &out[i]);
        else
            mda_deliver(&t->mda, fd, t->sender, r->addr,
                        (double)client_timeout_seconds(t->opts, TIMEOUT_DATA_END), &out[i]);
        if (t->opts->verbose) {
            char qaddr[300], qtext[300], text[PEER_REPLY_TEXT];
            peer_reply_text(&out[i], text, sizeof text);
            log_debug("target.local", " rcpt=%s code=%d reply=%s",
                      log_quote(qaddr, sizeof qaddr, r->addr, strlen(r->addr)), out[i].code,
                      log_quote(qtext, sizeof qtext, text, strlen(text)));
        }
    }
    target_local_reset(t);
}

/* A group runs one command at a time and stops at the first refusal; DATA has nothing to do
 * here (the delivery is target_local_data()). */
void target_local_group(struct target_local *t, bool rset, const char *sender, const char *rcpt,
                        struct smtp_client_reply *mail_reply,
                        struct smtp_client_reply *rcpt_reply)
{
    memset(mail_reply, 0, sizeof *mail_reply);
    memset(rcpt_reply, 0, sizeof *rcpt_reply);
    if (rset)
        target_local_reset(t);
    if (sender != NULL)
        local_mail(t, sender, mail_reply);
    if (sender == NULL || mail_reply->code / 100 == 2)
        local_rcpt(t, rcpt, rcpt_reply);
}

/* The MDA's command is parsed once, here; an error is logged (the probe reported it). */
int target_local_init(struct target_local *t, const struct target_spec *spec,
                      const struct client_options *o)
{
    char err[256];
    t->spec = spec;
    t->opts = o;
    t->rcpts = calloc(TARGET_MAX_RCPTS, sizeof *t->rcpts);
    if (spec->kind == TARGET_MDA && mda_parse(spec->local, &t->mda, err, sizeof err) != 0)
        log_warn("target.mda", " error=\"%s\"", err);
    return t->rcpts != NULL ? 0 : -1;
}

void target_local_free(struct target_local *t)
{
    if (t->rcpts != NULL)
        target_local_reset(t);
    free(t->rcpts);
    t->rcpts = NULL;
}
