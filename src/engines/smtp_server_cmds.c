/* SPDX-License-Identifier: ISC */
/* SMTP server engine: the command table and its flags (every per-command rule is checked in
 * command_allowed(), before the handler), the verbs services register, and the handlers of
 * the engine's own verbs: EHLO/HELO/LHLO, MAIL, RCPT and their parameters, STARTTLS, RSET,
 * NOOP, QUIT, VRFY, EXPN, HELP. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engines/smtp_server_internal.h"
#include "lib/log.h"
#include "platform/tls.h"

/* ---- EHLO / HELO / LHLO ---- */

static bool check_helo_argument(struct smtp_session *s, const char *arg)
{
    if (arg[0] != '\0' && smtp_helo_valid(arg))
        return true;
    reply_error(s, 501, "5.5.4", "Syntax: EHLO domain-or-address-literal");
    return false;
}

enum { EHLO_SERVICE_MAX = 4, EHLO_LINES_MAX = 12 + EHLO_SERVICE_MAX };

/* The mail service's keywords (RFC 1870 SIZE, RFC 2920, RFC 6152, RFC 6531, RFC 3461,
 * RFC 3030); none on a server without mail transactions (the ODMR port). */
static size_t mail_keywords(struct smtp_session *s, const char **lines, char *size,
                            size_t size_len)
{
    const struct smtp_server_settings *c = &s->server->settings;
    size_t n = 0;
    if (c->no_mail)
        return 0;
    snprintf(size, size_len, "SIZE %llu", (unsigned long long)limits(s)->max_message_size);
    lines[n++] = "PIPELINING";
    lines[n++] = size;
    lines[n++] = "8BITMIME";
    lines[n++] = "SMTPUTF8";
    if (!c->no_dsn)
        lines[n++] = "DSN";
    if (c->chunking)
        lines[n++] = "CHUNKING";
    for (size_t i = 0; c->ehlo_extra != NULL && c->ehlo_extra[i] != NULL &&
                       i < SMTP_SERVER_EHLO_EXTRA_MAX; i++)
        lines[n++] = c->ehlo_extra[i];
    return n;
}

static void send_ehlo_reply(struct smtp_session *s)
{
    char first[300], size[48], service[EHLO_SERVICE_MAX][200];
    const char *lines[EHLO_LINES_MAX];
    size_t n = 0;
    snprintf(first, sizeof first, "%s Hello %s", s->server->settings.hostname, s->helo);
    lines[n++] = first;
    n += mail_keywords(s, lines + n, size, sizeof size);
    size_t own = hooks(s)->ehlo_keywords == NULL ? 0
                 : hooks(s)->ehlo_keywords(hooks_ctx(s), s, service, EHLO_SERVICE_MAX);
    for (size_t i = 0; i < own && i < EHLO_SERVICE_MAX; i++)
        lines[n++] = service[i];
    if (s->server->settings.tls != NULL && !s->tls_active && !is_lmtp(s))
        lines[n++] = "STARTTLS";
    lines[n++] = "ENHANCEDSTATUSCODES";
    reply_send_lines(output(s), 250, lines, n);
}

/* RFC 5321 4.1.4: a greeting resets the session (any transaction is dropped). false when the
 * argument was refused (answered). */
static bool greet(struct smtp_session *s, const char *arg, bool esmtp)
{
    if (!check_helo_argument(s, arg))
        return false;
    reset_transaction(s);
    snprintf(s->helo, sizeof s->helo, "%s", arg);
    s->esmtp = esmtp;
    enter_state(s, STATE_READY);
    return true;
}

/* EHLO and LHLO (RFC 2033 4.1: LHLO is EHLO's LMTP name). */
static void cmd_ehlo(struct smtp_session *s, const char *arg)
{
    if (greet(s, arg, true))
        send_ehlo_reply(s);
}

static void cmd_helo(struct smtp_session *s, const char *arg)
{
    if (greet(s, arg, false))
        reply_send(output(s), 250, NULL, "%s", s->server->settings.hostname);
}

/* ---- MAIL parameters (RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN) ---- */

typedef int (*param_handler)(struct smtp_session *s, const struct smtp_param *p);

static int param_size(struct smtp_session *s, const struct smtp_param *p)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(p->value, &end, 10);
    if (!p->has_value || p->value[0] < '0' || p->value[0] > '9' || *end != '\0' ||
        errno != 0 || strlen(p->value) > 20) {
        reply_error(s, 501, "5.5.4", "Syntax: SIZE=number");
        return -1;
    }
    /* RFC 1870 6.1: refuse at MAIL when the declared size is over our limit. */
    if (value > limits(s)->max_message_size) {
        reply_error(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
        return -1;
    }
    s->txn.declared_size = value;
    return 0;
}

static int param_body(struct smtp_session *s, const struct smtp_param *p)
{
    if (p->has_value && strcasecmp(p->value, "7BIT") == 0) {
        s->txn.body = SMTP_BODY_7BIT;
        return 0;
    }
    if (p->has_value && strcasecmp(p->value, "8BITMIME") == 0) {
        s->txn.body = SMTP_BODY_8BITMIME;
        return 0;
    }
    reply_error(s, 555, "5.5.4", "Unsupported BODY type (7BIT or 8BITMIME)");
    return -1;
}

static int param_smtputf8(struct smtp_session *s, const struct smtp_param *p)
{
    if (p->has_value) {
        reply_error(s, 555, "5.5.4", "SMTPUTF8 takes no value");
        return -1;
    }
    s->txn.smtputf8 = true;
    return 0;
}

static int param_ret(struct smtp_session *s, const struct smtp_param *p)
{
    if (s->txn.ret != NULL || !p->has_value ||
        (strcasecmp(p->value, "FULL") != 0 && strcasecmp(p->value, "HDRS") != 0)) {
        reply_error(s, 501, "5.5.4", "Syntax: RET=FULL or RET=HDRS (RFC 3461 4.3)");
        return -1;
    }
    s->txn.ret = strdup(p->value);
    return 0;
}

/* RFC 3461 4.4: ENVID is xtext, at most 100 characters. */
static int param_envid(struct smtp_session *s, const struct smtp_param *p)
{
    if (s->txn.envid != NULL || !p->has_value || strlen(p->value) > 100 ||
        !smtp_xtext_valid(p->value)) {
        reply_error(s, 501, "5.5.4", "Syntax: ENVID=xtext of at most 100 characters (RFC 3461 4.4)");
        return -1;
    }
    s->txn.envid = strdup(p->value);
    return 0;
}

struct param_entry {
    const char *keyword;
    param_handler handler;
};

static const struct param_entry mail_params[] = {
    {"SIZE", param_size}, {"BODY", param_body},   {"SMTPUTF8", param_smtputf8},
    {"RET", param_ret},   {"ENVID", param_envid},
};

static int apply_params(struct smtp_session *s, const struct smtp_path_command *cmd,
                        const struct param_entry *table, size_t table_len,
                        int (*rcpt_handler)(struct smtp_session *, const struct smtp_param *,
                                            struct smtp_txn_rcpt *),
                        struct smtp_txn_rcpt *rcpt)
{
    for (size_t i = 0; i < cmd->param_count; i++) {
        const struct smtp_param *p = &cmd->params[i];
        /* RFC 5321 4.1.1.11: no service extensions after HELO. */
        if (!s->esmtp) {
            reply_error(s, 555, "5.5.4", "Parameters need EHLO");
            return -1;
        }
        size_t j;
        for (j = 0; j < table_len; j++)
            if (strcasecmp(p->keyword, table[j].keyword) == 0)
                break;
        int rc;
        if (j < table_len)
            rc = table[j].handler(s, p);
        else if (rcpt_handler)
            rc = rcpt_handler(s, p, rcpt);
        else
            rc = 1;
        if (rc > 0) {
            reply_error(s, 555, "5.5.4", "Unsupported parameter");
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void report_parse_error(struct smtp_session *s, enum smtp_parse_status status,
                               const char *why)
{
    char text[200];
    snprintf(text, sizeof text, "Syntax error: %s", why ? why : "bad address");
    if (status == SMTP_PARSE_TOO_MANY)
        reply_error(s, 501, "5.5.4", text);
    else
        reply_error(s, 501, status == SMTP_PARSE_TOO_LONG ? "5.5.2" : "5.1.7", text);
}

static char *mailbox_text(const struct smtp_mailbox *m)
{
    size_t n = strlen(m->local) + strlen(m->domain) + 2;
    char *text = malloc(n);
    if (text == NULL)
        return NULL;
    if (m->domain[0] != '\0')
        snprintf(text, n, "%s@%s", m->local, m->domain);
    else
        snprintf(text, n, "%s", m->local);
    return text;
}

/* The check_mail hook (intake: disk space). true when it refused MAIL (the reply is sent). */
static bool mail_refused_by_hook(struct smtp_session *s)
{
    struct smtp_reply verdict = {0};
    if (hooks(s)->check_mail == NULL)
        return false;
    hooks(s)->check_mail(hooks_ctx(s), s, &verdict);
    if (verdict.code == 0 || reply_class(verdict.code) == 2)
        return false;
    write_hook_reply(s, &verdict);
    return true;
}

static void cmd_mail(struct smtp_session *s, const char *arg)
{
    struct smtp_path_command cmd;
    const char *why = NULL;
    enum smtp_parse_status status = smtp_parse_mail_from(arg, s->esmtp, &cmd, &why);
    if (status != SMTP_PARSE_OK) {
        report_parse_error(s, status, why);
        return;
    }
    transaction_clear(&s->txn);
    if (apply_params(s, &cmd, mail_params, sizeof mail_params / sizeof mail_params[0], NULL,
                     NULL) != 0) {
        transaction_clear(&s->txn);
        return;
    }
    /* RFC 6531 3.5: a UTF-8 address needs the SMTPUTF8 parameter. */
    if (!cmd.null_path && cmd.mailbox.needs_smtputf8 && !s->txn.smtputf8) {
        transaction_clear(&s->txn);
        reply_error(s, 553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8");
        return;
    }
    if (mail_refused_by_hook(s)) {
        transaction_clear(&s->txn);
        return;
    }
    s->txn.sender = cmd.null_path ? strdup("") : mailbox_text(&cmd.mailbox);
    s->txn.active = true;
    enter_state(s, STATE_MAIL);
    reply_send(output(s), 250, "2.1.0", "Sender OK");
}

/* ---- RCPT parameters (RFC 3461 4.1 NOTIFY, 4.2 ORCPT) ---- */

static bool notify_valid(const char *value)
{
    char copy[SMTP_PARAM_VALUE_MAX + 1];
    char *save = NULL;
    bool never = false, other = false;
    snprintf(copy, sizeof copy, "%s", value);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcasecmp(tok, "NEVER") == 0)
            never = true;
        else if (strcasecmp(tok, "SUCCESS") == 0 || strcasecmp(tok, "FAILURE") == 0 ||
                 strcasecmp(tok, "DELAY") == 0)
            other = true;
        else
            return false;
    }
    /* RFC 3461 4.1: NEVER must appear alone. */
    return never != other && value[strlen(value) - 1] != ',' && value[0] != ',';
}

/* RFC 3461 4.2: ORCPT=addr-type ";" xtext, addr-type an atom such as rfc822 or utf-8. */
static bool orcpt_valid(const char *value)
{
    const char *semi = strchr(value, ';');
    if (semi == NULL || semi == value || semi[1] == '\0' || strlen(value) > 500)
        return false;
    for (const char *p = value; p < semi; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-'))
            return false;
    return strncasecmp(value, "utf-8;", 6) == 0 || smtp_xtext_valid(semi + 1);
}

/* RCPT's parameters: each once, with a value its rule accepts, else 501 with its syntax. */
static const struct rcpt_param_rule {
    const char *keyword;
    bool (*valid)(const char *value);
    const char *syntax;
    size_t field;   /* of the value's copy in struct smtp_txn_rcpt */
} rcpt_params[] = {
    {"NOTIFY", notify_valid, "Syntax: NOTIFY=NEVER or SUCCESS,FAILURE,DELAY (RFC 3461 4.1)",
     offsetof(struct smtp_txn_rcpt, notify)},
    {"ORCPT", orcpt_valid, "Syntax: ORCPT=addr-type;xtext (RFC 3461 4.2)",
     offsetof(struct smtp_txn_rcpt, orcpt)},
};

static int rcpt_param(struct smtp_session *s, const struct smtp_param *p,
                      struct smtp_txn_rcpt *rcpt)
{
    for (size_t i = 0; i < sizeof rcpt_params / sizeof rcpt_params[0]; i++) {
        const struct rcpt_param_rule *rule = &rcpt_params[i];
        if (strcasecmp(p->keyword, rule->keyword) != 0)
            continue;
        char **slot = (char **)((char *)rcpt + rule->field);
        if (*slot != NULL || !p->has_value || !rule->valid(p->value)) {
            reply_error(s, 501, "5.5.4", rule->syntax);
            return -1;
        }
        *slot = strdup(p->value);
        return 0;
    }
    return 1;
}

static int add_recipient(struct smtp_session *s, struct smtp_txn_rcpt *rcpt)
{
    struct smtp_transaction *t = &s->txn;
    if (t->rcpt_count == t->rcpt_capacity) {
        size_t cap = t->rcpt_capacity ? t->rcpt_capacity * 2 : 8;
        struct smtp_txn_rcpt *grown = realloc(t->rcpts, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        t->rcpts = grown;
        t->rcpt_capacity = cap;
    }
    t->rcpts[t->rcpt_count++] = *rcpt;
    return 0;
}



/* check_rcpt_async: stop reading (later pipelined commands wait in the buffer) until
 * smtp_session_rcpt_done(). */
static void start_async_rcpt(struct smtp_session *s, const struct smtp_path_command *cmd,
                             struct smtp_txn_rcpt *rcpt)
{
    rcpt->address = mailbox_text(&cmd->mailbox);
    s->pending_rcpt = *rcpt;
    enter_state(s, STATE_RCPT_WAIT);
    bufferevent_disable(s->bev, EV_READ);
    hooks(s)->check_rcpt_async(hooks_ctx(s), s, cmd, s->pending_rcpt.domain);
}


static void settle_async_rcpt(struct smtp_session *s, const struct smtp_reply *reply)
{
    struct smtp_txn_rcpt rcpt = s->pending_rcpt;
    memset(&s->pending_rcpt, 0, sizeof s->pending_rcpt);
    enter_state(s, s->txn.rcpt_count > 0 ? STATE_RCPT : STATE_MAIL);
    if (reply_class(reply->code) != 2 || rcpt.address == NULL) {
        free_rcpt(&rcpt);
        write_hook_reply(s, reply);
        if (reply_class(reply->code) == 5)
            count_error(s);
        return;
    }
    if (add_recipient(s, &rcpt) != 0) {
        free_rcpt(&rcpt);
        reply_send(output(s), 452, "4.3.1", "Out of memory");
        return;
    }
    enter_state(s, STATE_RCPT);
    write_hook_reply(s, reply);
}

void smtp_session_rcpt_done(struct smtp_session *s, const struct smtp_reply *reply)
{
    if (free_if_peer_gone(s))
        return;
    settle_async_rcpt(s, reply);
    if (s->state == STATE_CLOSING)
        return;   /* too many errors */
    resume_after_hook(s);
}

static void cmd_rcpt(struct smtp_session *s, const char *arg)
{
    struct smtp_path_command cmd;
    struct smtp_txn_rcpt rcpt = {0};
    struct smtp_reply verdict = {0};
    const char *why = NULL;
    /* RFC 5321 4.5.3.1.8 / 3.3: "452 too many recipients" lets the client retry the rest. */
    if (s->txn.rcpt_count >= limits(s)->max_recipients) {
        reply_send(output(s), 452, "4.5.3", "Too many recipients");
        return;
    }
    enum smtp_parse_status status = smtp_parse_rcpt_to(arg, s->esmtp, &cmd, &why);
    if (status != SMTP_PARSE_OK) {
        report_parse_error(s, status, why);
        return;
    }
    if (cmd.mailbox.needs_smtputf8 && !s->txn.smtputf8) {
        reply_error(s, 553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8 on MAIL");
        return;
    }
    if (apply_params(s, &cmd, NULL, 0, rcpt_param, &rcpt) != 0) {
        free_rcpt(&rcpt);
        return;
    }
    rcpt.domain = strdup(cmd.mailbox.domain);
    smtp_domain_lower(rcpt.domain);
    if (hooks(s)->check_rcpt_async != NULL) {
        start_async_rcpt(s, &cmd, &rcpt);
        return;
    }
    hooks(s)->check_rcpt(hooks_ctx(s), s, &cmd, rcpt.domain, &verdict);
    if (verdict.code != 0 && reply_class(verdict.code) != 2) {
        free_rcpt(&rcpt);
        write_hook_reply(s, &verdict);
        if (reply_class(verdict.code) == 5)
            count_error(s);
        return;
    }
    rcpt.address = mailbox_text(&cmd.mailbox);
    if (add_recipient(s, &rcpt) != 0) {
        free_rcpt(&rcpt);
        reply_send(output(s), 452, "4.3.1", "Out of memory");
        return;
    }
    enter_state(s, STATE_RCPT);
    reply_send(output(s), 250, "2.1.5", "Recipient OK");
}

/* ---- the other commands ---- */

/* Postfix's smtpd_junk_command_limit: commands that carry no mail (SMTP_CMD_JUNK). */
static bool count_junk(struct smtp_session *s)
{
    if (++s->junk_commands <= limits(s)->max_junk_commands)
        return true;
    reply_send(output(s), 421, "4.7.0", "%s Too many commands without mail, closing",
               s->server->settings.hostname);
    close_after_flush(s);
    return false;
}

static void cmd_rset(struct smtp_session *s, const char *arg)
{
    reset_transaction(s);
    reply_send(output(s), 250, "2.0.0", "Reset OK");
}

static void cmd_noop(struct smtp_session *s, const char *arg)
{
    reply_send(output(s), 250, "2.0.0", "OK");
}

static void cmd_quit(struct smtp_session *s, const char *arg)
{
    s->quit_received = true;
    reply_send(output(s), 221, "2.0.0", "%s Bye", s->server->settings.hostname);
    close_after_flush(s);
}

/* RFC 5321 3.5.3: 252 when the server will not verify but will accept mail. */
static void cmd_vrfy(struct smtp_session *s, const char *arg)
{
    reply_send(output(s), 252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_expn(struct smtp_session *s, const char *arg)
{
    reply_send(output(s), 502, "5.5.1", "EXPN not available");
}

static void cmd_help(struct smtp_session *s, const char *arg)
{
    reply_send(output(s), 214, "2.0.0",
                   "Commands: %s MAIL RCPT DATA RSET NOOP VRFY HELP QUIT%s\nSee RFC 5321",
                   is_lmtp(s) ? "LHLO" : "EHLO HELO", s->server->settings.tls ? " STARTTLS" : "");
}

/* RFC 3207 4.2: after 220 the server forgets everything from before, and input sent before
 * the handshake must never be taken as a command (CVE-2011-0411 class). */
static void cmd_starttls(struct smtp_session *s, const char *arg)
{
    if (s->tls_active) {
        reply_error(s, 503, "5.5.1", "TLS already active");
        return;
    }
    if (arg[0] != '\0') {
        reply_error(s, 501, "5.5.4", "STARTTLS takes no argument");
        return;
    }
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
        log_warn("starttls.pipelined", " session=%s peer=%s", s->id, s->peer);
        reply_send(output(s), 554, "5.5.0", "Pipelined data after STARTTLS; closing");
        close_after_flush(s);
        return;
    }
    reply_send(output(s), 220, "2.0.0", "Ready to start TLS");
    smtp_session_end_direct_replies(s);   /* the 220 leaves now; TLS writes from here on */
    struct bufferevent *tls = tls_start_server(s->server->base, s->bev, s->server->settings.tls);
    if (tls == NULL) {
        close_after_flush(s);
        return;
    }
    s->bev = tls;
    start_reading(s);
    reset_transaction(s);
    s->helo[0] = '\0';
    s->esmtp = false;
    s->tls_active = true;
    enter_state(s, STATE_GREETING);
    deadline_start(&s->deadline, DEADLINE_HANDSHAKE, handshake_timeout(s), 0);
}

/* ---- the command table and its flags ---- */

typedef void (*command_handler)(struct smtp_session *s, const char *arg);

struct command_entry {
    const char *verb;
    unsigned flags;
    command_handler handler;
};

enum {
    BOTH = SMTP_CMD_SMTP | SMTP_CMD_LMTP,
    ANYTIME = SMTP_CMD_PRE_TLS | SMTP_CMD_PRE_AUTH | SMTP_CMD_PRE_GREETING,
    GREETING = SMTP_CMD_PRE_TLS | SMTP_CMD_PRE_AUTH | SMTP_CMD_PRE_GREETING |
               SMTP_CMD_NOT_AFTER_AUTH,   /* RFC 5321 4.1.4: EHLO resets; not the identity */
    JUNK = BOTH | ANYTIME | SMTP_CMD_JUNK,
};

/* RFC 2033 4.1: EHLO and HELO are not LMTP (500), LHLO only LMTP. RFC 3030 2: a BDAT chunk's
 * octets are always read, so its sequence rules are checked by cmd_bdat once they are, and no
 * flag rule may refuse it before. */
static const struct command_entry commands[] = {
    {"EHLO", SMTP_CMD_SMTP | GREETING, cmd_ehlo},
    {"HELO", SMTP_CMD_SMTP | GREETING, cmd_helo},
    {"LHLO", SMTP_CMD_LMTP | GREETING, cmd_ehlo},
    {"MAIL", BOTH | SMTP_CMD_MAIL_SERVICE | SMTP_CMD_NO_TXN, cmd_mail},
    {"RCPT", BOTH | SMTP_CMD_MAIL_SERVICE | SMTP_CMD_NEEDS_MAIL, cmd_rcpt},
    {"DATA", BOTH | SMTP_CMD_MAIL_SERVICE | SMTP_CMD_NEEDS_RCPT, cmd_data},
    {"BDAT", BOTH | ANYTIME | SMTP_CMD_MAIL_SERVICE | SMTP_CMD_IF_CHUNKING, cmd_bdat},
    {"RSET", JUNK, cmd_rset},
    {"NOOP", JUNK, cmd_noop},
    {"QUIT", BOTH | ANYTIME, cmd_quit},
    {"VRFY", JUNK | SMTP_CMD_MAIL_SERVICE, cmd_vrfy},
    {"EXPN", JUNK | SMTP_CMD_MAIL_SERVICE, cmd_expn},
    {"HELP", JUNK | SMTP_CMD_MAIL_SERVICE, cmd_help},
    /* RFC 3207 4.2; RFC 4954 4: no TLS negotiation after AUTH. */
    {"STARTTLS", SMTP_CMD_SMTP | SMTP_CMD_IF_TLS | GREETING, cmd_starttls},
};

static bool wrong_protocol(const struct smtp_session *s, unsigned flags)
{
    return !(flags & (is_lmtp(s) ? SMTP_CMD_LMTP : SMTP_CMD_SMTP));
}

static bool not_offered(const struct smtp_session *s, unsigned flags)
{
    const struct smtp_server_settings *c = &s->server->settings;
    return ((flags & SMTP_CMD_MAIL_SERVICE) && c->no_mail) ||
           ((flags & SMTP_CMD_IF_TLS) && c->tls == NULL) ||
           ((flags & SMTP_CMD_IF_CHUNKING) && !c->chunking);
}

static bool needs_tls(const struct smtp_session *s, unsigned flags)
{
    return s->server->settings.require_tls && !s->tls_active && !(flags & SMTP_CMD_PRE_TLS);
}

static bool after_auth(const struct smtp_session *s, unsigned flags)
{
    return s->authenticated && (flags & SMTP_CMD_NOT_AFTER_AUTH);
}

static bool needs_auth(const struct smtp_session *s, unsigned flags)
{
    return s->server->settings.require_auth && !s->authenticated &&
           !(flags & SMTP_CMD_PRE_AUTH);
}

static bool needs_greeting(const struct smtp_session *s, unsigned flags)
{
    return s->state == STATE_GREETING && !(flags & SMTP_CMD_PRE_GREETING);
}

static bool needs_esmtp(const struct smtp_session *s, unsigned flags)
{
    return (flags & SMTP_CMD_NEEDS_ESMTP) && !s->esmtp;
}

static bool in_transaction(const struct smtp_session *s, unsigned flags)
{
    return (flags & SMTP_CMD_NO_TXN) && s->txn.active;
}

/* After BDAT (a message under way) neither RCPT nor DATA: RFC 3030 3. */
static bool needs_mail(const struct smtp_session *s, unsigned flags)
{
    return (flags & SMTP_CMD_NEEDS_MAIL) && (!s->txn.active || s->data != NULL);
}

static bool needs_rcpt(const struct smtp_session *s, unsigned flags)
{
    return (flags & SMTP_CMD_NEEDS_RCPT) && (s->state != STATE_RCPT || s->data != NULL);
}

/* The flag rules in the order they are checked; the first that refuses answers. */
static const struct flag_rule {
    bool (*refuses)(const struct smtp_session *s, unsigned flags);
    int code;
    const char *enhanced, *text;
} flag_rules[] = {
    /* RFC 2033 4.1 (LMTP: EHLO and HELO are 500); RFC 3463 X.5.1 "unsupported" */
    {wrong_protocol, 500, "5.5.1", "Command not used in this protocol"},
    /* RFC 5321 4.2.4: 502 for a command recognized but not implemented here */
    {not_offered, 502, "5.5.1", "Command not implemented"},
    {needs_tls, 530, "5.7.0", "Must issue a STARTTLS command first"},   /* RFC 3207 4 */
    {after_auth, 503, "5.5.1", "Already authenticated"},                /* RFC 4954 4 */
    {needs_auth, 530, "5.7.0", "Authentication required"},              /* RFC 4954 6 */
    /* RFC 5321 4.1.4 / 3.3: a session starts with EHLO; 503 for a bad sequence */
    {needs_greeting, 503, "5.5.1", "Send EHLO first"},
    {needs_esmtp, 503, "5.5.1", "This command needs EHLO, not HELO"},   /* RFC 5321 4.1.1.1 */
    {in_transaction, 503, "5.5.1", "Not allowed inside a mail transaction"},
    {needs_mail, 503, "5.5.1", "Need MAIL first"},
    {needs_rcpt, 503, "5.5.1", "Need MAIL and RCPT first"},
};

/* Every per-command rule, in one place: false when the command was refused (answered). */
static bool command_allowed(struct smtp_session *s, unsigned flags)
{
    for (size_t i = 0; i < sizeof flag_rules / sizeof flag_rules[0]; i++) {
        if (flag_rules[i].refuses(s, flags)) {
            reply_error(s, flag_rules[i].code, flag_rules[i].enhanced, flag_rules[i].text);
            return false;
        }
    }
    return (flags & SMTP_CMD_JUNK) == 0 || count_junk(s);
}

static bool verb_is(const char *name, const char *verb, size_t len)
{
    return strlen(name) == len && strncasecmp(name, verb, len) == 0;
}

const struct smtp_server_command *find_registered(const struct smtp_server *server,
                                                  const char *verb, size_t len)
{
    for (size_t i = 0; i < server->registered_count; i++)
        if (verb_is(server->registered[i].verb, verb, len))
            return &server->registered[i];
    return NULL;
}

static const struct command_entry *find_command(const char *verb, size_t len)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (verb_is(commands[i].verb, verb, len))
            return &commands[i];
    return NULL;
}

void command_line(struct smtp_session *s, const struct line *line)
{
    /* RFC 5321 2.3.8: lines end with CRLF only; NUL is never valid in a command. */
    if (line->bare_lf || line->bare_cr || memchr(line->text, '\0', line->len) != NULL) {
        reply_error(s, 500, "5.5.2", "Command line must end with CRLF and contain no CR, LF or NUL");
        return;
    }
    const char *verb = line->text;
    size_t verb_len = strcspn(verb, " ");
    const char *arg = verb + verb_len;
    while (*arg == ' ')
        arg++;
    const struct smtp_server_command *own = find_registered(s->server, verb, verb_len);
    const struct command_entry *entry = own ? NULL : find_command(verb, verb_len);
    /* RFC 5321 4.2.3 "500 Syntax error, command unrecognized"; RFC 3463 X.5.2: "the command
     * is unrecognized". The same reply on every port (docs/architecture.md). */
    if (own == NULL && entry == NULL) {
        reply_error(s, 500, "5.5.2", "Command unrecognized");
        return;
    }
    if (!command_allowed(s, own ? own->flags : entry->flags))
        return;
    if (own != NULL)
        own->handler(s->server->settings.hooks_ctx, s, arg);
    else
        entry->handler(s, arg);
}
