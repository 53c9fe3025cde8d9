/* SPDX-License-Identifier: ISC */
/* odmr-client before the turnaround: one step table, one reply handler per step. */
#include "client/odmr.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "client/target_probe.h"
#include "client/tls_client.h"
#include "client/wire.h"
#include "lib/log.h"
#include "platform/sasl_client.h"
#include "platform/tls.h"

enum step {
    STEP_CONNECTING,   /* implicit TLS handshake */
    STEP_GREETING,
    STEP_EHLO,
    STEP_STARTTLS,
    STEP_HANDSHAKE,    /* STARTTLS handshake */
    STEP_AUTH,
    STEP_ATRN,
    STEP_QUIT,
    STEP_DONE,
};

struct odmr {
    struct event_base *base;
    const struct client_options *opts;
    struct target_spec target;
    struct smtp_client_ext target_caps;
    char helo[256];
    struct odmr_callbacks cb;
    void *arg;
    struct bufferevent *bev;
    struct wire_reader reader;
    SSL_CTX *tls_ctx;
    struct tls_client_trust trust;   /* the CA and pins the handshake checks */
    bool tls_active;
    enum step step;
    enum client_exit exit_code;    /* reported after QUIT */
    struct sasl_client *sasl;
    struct sasl_client_exchange *exchange;
    char *pending_response;        /* a first client response kept for the server's 334 */
    char mech[32];
};

typedef void (*reply_handler)(struct odmr *c, const struct smtp_client_reply *r);

static void on_greeting(struct odmr *c, const struct smtp_client_reply *r);
static void on_ehlo(struct odmr *c, const struct smtp_client_reply *r);
static void on_starttls(struct odmr *c, const struct smtp_client_reply *r);
static void on_auth(struct odmr *c, const struct smtp_client_reply *r);
static void on_atrn(struct odmr *c, const struct smtp_client_reply *r);
static void on_quit(struct odmr *c, const struct smtp_client_reply *r);

/* What each step waits for, which timeout bounds the wait (settings.c: RFC 5321 4.5.3.2 and
 * RFC 2645 5.2.1 for ATRN), and who handles the reply. */
static const struct step_rule {
    const char *name;
    enum client_timeout_kind timeout;
    reply_handler handle;
} steps[] = {
    [STEP_CONNECTING] = {"tls-connect", TIMEOUT_GREETING, NULL},
    [STEP_GREETING] = {"greeting", TIMEOUT_GREETING, on_greeting},
    [STEP_EHLO] = {"EHLO", TIMEOUT_COMMAND, on_ehlo},
    [STEP_STARTTLS] = {"STARTTLS", TIMEOUT_COMMAND, on_starttls},
    [STEP_HANDSHAKE] = {"tls-handshake", TIMEOUT_COMMAND, NULL},
    [STEP_AUTH] = {"AUTH", TIMEOUT_COMMAND, on_auth},
    [STEP_ATRN] = {"ATRN", TIMEOUT_ATRN, on_atrn},
    [STEP_QUIT] = {"QUIT", TIMEOUT_COMMAND, on_quit},
    [STEP_DONE] = {"done", TIMEOUT_COMMAND, NULL},
};

/* The 221 to QUIT is only waited for out of courtesy (RFC 5321 4.1.1.10): the session's outcome
 * is already known, so a tenth of the command timeout. */
static struct timeval step_timeout(const struct odmr *c, enum step step)
{
    struct timeval tv = client_timeout(c->opts, steps[step].timeout);
    if (step == STEP_QUIT) {
        long long us = ((long long)tv.tv_sec * 1000000 + tv.tv_usec) / 10;
        tv = (struct timeval){(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    }
    return tv;
}

static void enter_step(struct odmr *c, enum step next)
{
    log_debug("client.step", " from=%s to=%s", steps[c->step].name, steps[next].name);
    c->step = next;
    if (c->bev != NULL) {
        struct timeval tv = step_timeout(c, next);
        bufferevent_set_timeouts(c->bev, &tv, &tv);
    }
}

static void send_command(struct odmr *c, enum step next, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_command(struct odmr *c, enum step next, const char *fmt, ...)
{
    va_list ap;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
    enter_step(c, next);
}

/* The provider's words in our log: escaped (log_quote), so a reply with a line break or a
 * quote cannot forge a log line or a key=value pair. */
static const char *peer_text(char *buf, size_t len, const struct smtp_client_reply *r)
{
    char text[PEER_REPLY_TEXT];
    peer_reply_text(r, text, sizeof text);
    return log_escape(buf, len, text, strlen(text));   /* inside reason="..." */
}

/* Ends the exchange: QUIT first when the connection still works (RFC 5321 4.1.1.10). */
static void finish(struct odmr *c, enum client_exit code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(struct odmr *c, enum client_exit code, const char *fmt, ...)
{
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    log_info("client.end", " exit=%d step=%s reason=\"%s\"", (int)code, steps[c->step].name, why);
    c->exit_code = code;
    if (c->bev != NULL && c->step != STEP_QUIT && c->step != STEP_CONNECTING &&
        c->step != STEP_HANDSHAKE) {
        send_command(c, STEP_QUIT, "QUIT");
        return;
    }
    enter_step(c, STEP_DONE);
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->cb.finished(c->arg, code);
}

static void on_quit(struct odmr *c, const struct smtp_client_reply *r)
{
    enter_step(c, STEP_DONE);
    bufferevent_free(c->bev);
    c->bev = NULL;
    c->cb.finished(c->arg, c->exit_code);
}

static void on_greeting(struct odmr *c, const struct smtp_client_reply *r)
{
    if (r->code != 220) {
        finish(c, EXIT_PROTOCOL, "greeting %d", r->code);
        return;
    }
    send_command(c, STEP_EHLO, "EHLO %s", c->helo);
}

/* ---- AUTH (RFC 4954) ---- */

/* Strongest first (docs/client.md); PLAIN only over TLS. client_first: the mechanism starts
 * with the client's message, which goes with the AUTH command as its initial response (RFC
 * 4954 4: one round trip less); CRAM-MD5 starts with the server's challenge. */
static const struct mech_rule {
    const char *name;
    bool needs_tls;
    bool client_first;
} mech_rules[] = {
    {"SCRAM-SHA-256-PLUS", true, true},
    {"SCRAM-SHA-256", false, true},
    {"PLAIN", true, true},
    {"CRAM-MD5", false, false},
};

enum { AUTH_LINE_MAX = 512 };   /* RFC 5321 4.5.3.1.4: keep the AUTH line a plain command line */

static bool client_first(const char *mech)
{
    for (size_t i = 0; i < sizeof mech_rules / sizeof mech_rules[0]; i++)
        if (strcasecmp(mech, mech_rules[i].name) == 0)
            return mech_rules[i].client_first;
    return false;
}

static bool offered(const char *list, const char *mech)
{
    char copy[512];
    char *save = NULL;
    snprintf(copy, sizeof copy, "%s", list);
    for (char *w = strtok_r(copy, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save))
        if (strcasecmp(w, mech) == 0)
            return true;
    return false;
}

static bool plaintext_mech(const char *mech)
{
    return strcasecmp(mech, "PLAIN") == 0 || strcasecmp(mech, "LOGIN") == 0;
}

static const char *choose_mech(struct odmr *c, const char *list)
{
    if (c->opts->mech != NULL)
        return offered(list, c->opts->mech) ? c->opts->mech : NULL;
    for (size_t i = 0; i < sizeof mech_rules / sizeof mech_rules[0]; i++)
        if ((c->tls_active || !mech_rules[i].needs_tls) && offered(list, mech_rules[i].name) &&
            sasl_client_supports(c->sasl, mech_rules[i].name))
            return mech_rules[i].name;
    return NULL;
}

/* RFC 5802 6: a SCRAM client that can bind says so ("y") only when the server did not offer
 * the -PLUS variant; choosing plain SCRAM while -PLUS is offered must go without binding
 * ("n"), or the server rightly suspects a downgrade and fails the exchange. */
static bool offer_channel_binding(const char *list, const char *mech)
{
    char plus[64];
    size_t n = strlen(mech);
    if (n >= 5 && strcasecmp(mech + n - 5, "-PLUS") == 0)
        return true;
    snprintf(plus, sizeof plus, "%s-PLUS", mech);
    return !offered(list, plus);
}

static void begin_auth(struct odmr *c, const char *list)
{
    char quoted[200];
    const char *mech = choose_mech(c, list);
    if (mech == NULL) {
        finish(c, EXIT_AUTH, "no usable AUTH mechanism among %s",
               log_quote(quoted, sizeof quoted, list, strlen(list)));
        return;
    }
    if (plaintext_mech(mech) && !c->tls_active) {
        finish(c, EXIT_USAGE, "%s would send the password in clear: refused without TLS", mech);
        return;
    }
    char cb[128];
    const char *binding = NULL;
    if (c->tls_active && offer_channel_binding(list, mech) &&
        tls_channel_binding(c->bev, cb, sizeof cb) == 0)
        binding = cb;
    snprintf(c->mech, sizeof c->mech, "%s", mech);
    c->exchange = sasl_client_start(c->sasl, mech, c->opts->user, c->opts->password, "smtp",
                                    c->opts->tls_name ? c->opts->tls_name : c->opts->host, binding);
    if (c->exchange == NULL) {
        finish(c, EXIT_AUTH, "SASL mechanism %s cannot start", mech);
        return;
    }
    log_info("client.auth", " mech=%s user=%s", mech, c->opts->user);
    if (client_first(mech)) {
        char *ir = NULL;
        if (sasl_client_step(c->exchange, "", &ir) == SASL_CLIENT_FAILED) {
            free(ir);
            finish(c, EXIT_AUTH, "SASL mechanism %s cannot start", mech);
            return;
        }
        /* RFC 4954 4: "=" is an empty initial response. */
        if (strlen(ir) + strlen(mech) + 8 <= AUTH_LINE_MAX) {
            send_command(c, STEP_AUTH, "AUTH %s %s", mech, ir[0] != '\0' ? ir : "=");
            free(ir);
            return;
        }
        /* Too long for one line: wait for the server's empty challenge and send it then. */
        c->pending_response = ir;
    }
    send_command(c, STEP_AUTH, "AUTH %s", mech);
}

static void on_ehlo(struct odmr *c, const struct smtp_client_reply *r)
{
    char mechs[512] = "";
    if (r->code / 100 != 2) {
        finish(c, EXIT_PROTOCOL, "EHLO refused: %d", r->code);
        return;
    }
    if (!wire_ehlo_has(r, "ATRN", NULL, 0))
        log_warn("client.no_atrn", " detail=\"the server does not advertise ATRN\"");
    if (c->opts->tls == TLS_MODE_STARTTLS && !c->tls_active) {
        if (!wire_ehlo_has(r, "STARTTLS", NULL, 0)) {
            finish(c, EXIT_TLS, "the server does not offer STARTTLS");
            return;
        }
        send_command(c, STEP_STARTTLS, "STARTTLS");
        return;
    }
    if (!wire_ehlo_has(r, "AUTH", mechs, sizeof mechs)) {
        finish(c, EXIT_AUTH, "the server offers no AUTH");
        return;
    }
    begin_auth(c, mechs);
}

static void after_auth(struct odmr *c)
{
    char err[300];
    /* Ask for mail only when it can be handed on (docs/client.md). */
    if (target_probe(&c->target, c->opts, c->helo, &c->target_caps, err, sizeof err) != 0) {
        log_warn("client.target_unavailable", " target=%s error=\"%s\"", c->opts->deliver, err);
        finish(c, EXIT_TARGET, "local target unavailable: %s", err);
        return;
    }
    /* RFC 2645 5.2.1: ATRN [domain *("," domain)]. */
    if (c->opts->domains != NULL)
        send_command(c, STEP_ATRN, "ATRN %s", c->opts->domains);
    else
        send_command(c, STEP_ATRN, "ATRN");
}

static void on_auth(struct odmr *c, const struct smtp_client_reply *r)
{
    if (r->code == 235) {
        sasl_client_exchange_free(c->exchange);
        c->exchange = NULL;
        log_info("client.authenticated", " mech=%s", c->mech);
        after_auth(c);
        return;
    }
    if (r->code != 334) {
        char quoted[200];
        finish(c, EXIT_AUTH, "AUTH %s refused: %d %s", c->mech, r->code,
               peer_text(quoted, sizeof quoted, r));
        return;
    }
    char *out = NULL;
    if (c->pending_response != NULL) {
        out = c->pending_response;
        c->pending_response = NULL;
        send_command(c, STEP_AUTH, "%s", out);
        free(out);
        return;
    }
    char challenge[REPLY_LINE_MAX];
    enum sasl_client_result res = sasl_client_step(
        c->exchange, peer_reply_line(r, 0, challenge, sizeof challenge), &out);
    if (res == SASL_CLIENT_FAILED) {
        free(out);
        /* RFC 4954 4: "*" cancels the exchange; the server answers 501. */
        send_command(c, STEP_AUTH, "*");
        return;
    }
    send_command(c, STEP_AUTH, "%s", out);
    free(out);
}

/* ---- STARTTLS (RFC 3207) ---- */

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static void on_starttls(struct odmr *c, const struct smtp_client_reply *r)
{
    if (r->code != 220) {
        finish(c, EXIT_TLS, "STARTTLS refused: %d", r->code);
        return;
    }
    /* Nothing arrived behind the 220 (unsolicited_input(): RFC 3207 5, CVE-2011-0411). */
    struct bufferevent *tls = tls_client_start(c->base, c->bev, c->tls_ctx,
                                               c->opts->tls_name ? c->opts->tls_name : c->opts->host);
    if (tls == NULL) {
        finish(c, EXIT_TLS, "cannot start TLS");
        return;
    }
    c->bev = tls;
    bufferevent_setcb(tls, on_read, NULL, on_event, c);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    enter_step(c, STEP_HANDSHAKE);
}

static void tls_up(struct odmr *c)
{
    c->tls_active = true;
    log_info("client.tls", " step=%s", steps[c->step].name);
    if (c->step == STEP_CONNECTING)
        enter_step(c, STEP_GREETING);
    else
        send_command(c, STEP_EHLO, "EHLO %s", c->helo);   /* RFC 3207 4.2: EHLO again */
}

/* ---- ATRN (RFC 2645 5.2.1) ---- */

static const struct atrn_rule {
    int code;
    enum client_exit exit;
    const char *meaning;
} atrn_rules[] = {
    {453, EXIT_NO_MAIL, "no mail"},
    {450, EXIT_REFUSED, "refused"},
    {451, EXIT_BUSY, "busy, try later"},
    {530, EXIT_AUTH, "authentication required"},
};

static void turn_around(struct odmr *c)
{
    /* Nothing is buffered behind the 250 (unsolicited_input(), DESIGN 4.4). */
    struct bufferevent *bev = c->bev;
    c->bev = NULL;
    enter_step(c, STEP_DONE);
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    log_info("client.turnaround", " tls=%d", c->tls_active);
    c->cb.turnaround(c->arg, bev, c->tls_active);
}

static void on_atrn(struct odmr *c, const struct smtp_client_reply *r)
{
    char quoted[200];
    if (r->code == 250) {
        turn_around(c);
        return;
    }
    for (size_t i = 0; i < sizeof atrn_rules / sizeof atrn_rules[0]; i++)
        if (atrn_rules[i].code == r->code) {
            finish(c, atrn_rules[i].exit, "ATRN: %s (%d %s)", atrn_rules[i].meaning, r->code,
                   peer_text(quoted, sizeof quoted, r));
            return;
        }
    finish(c, EXIT_PROTOCOL, "ATRN answered %d %s", r->code,
           peer_text(quoted, sizeof quoted, r));
}

/* ---- events ---- */

/* A peer out of step with the protocol gets no QUIT: we close at once (a QUIT would only wait
 * for a 221 that cannot be told from the rest of its bytes). */
static void hang_up(struct odmr *c)
{
    bufferevent_free(c->bev);
    c->bev = NULL;
}

/* We never pipeline before the turnaround: one command, one reply. Bytes buffered behind a
 * complete reply answer nothing we sent: a reply pushed ahead of our command (a 235 before
 * AUTH, a 250 before ATRN), data hidden behind the 220 to STARTTLS that would be taken as the
 * first bytes after the handshake (RFC 3207 5, CVE-2011-0411 class), or the provider's SMTP
 * commands behind its 250 to ATRN (DESIGN 4.4). Each is a protocol error. QUIT is exempt: we
 * are leaving anyway. */
static bool unsolicited_input(struct odmr *c)
{
    if (c->step == STEP_QUIT || evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
        return false;
    hang_up(c);
    finish(c, EXIT_PROTOCOL, "data after the reply to %s (nothing was asked for it)",
           steps[c->step].name);
    return true;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct odmr *c = arg;
    struct smtp_client_reply r;
    while (c->bev != NULL && c->step != STEP_DONE) {
        int rc = wire_read_reply(&c->reader, bufferevent_get_input(c->bev), &r);
        if (rc == 0)
            return;
        if (rc < 0 && c->step == STEP_QUIT) {
            on_quit(c, NULL);   /* leaving anyway: the exit code stays the reason we left */
            return;
        }
        if (rc < 0) {
            hang_up(c);
            finish(c, EXIT_PROTOCOL, "%s while waiting for %s", wire_reader_error(&c->reader),
                   steps[c->step].name);
            return;
        }
        if (c->opts->verbose) {
            char q[200];
            log_debug("client.reply", " step=%s code=%d text=\"%s\"", steps[c->step].name, r.code,
                      peer_text(q, sizeof q, &r));
        }
        if (steps[c->step].handle == NULL) {
            finish(c, EXIT_PROTOCOL, "unexpected reply %d", r.code);
            return;
        }
        if (unsolicited_input(c))
            return;
        steps[c->step].handle(c, &r);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct odmr *c = arg;
    char why[600];
    if (what & BEV_EVENT_CONNECTED) {
        tls_up(c);
        return;
    }
    if (c->step == STEP_QUIT) {
        on_quit(c, NULL);
        return;
    }
    if ((what & BEV_EVENT_ERROR) && (c->step == STEP_CONNECTING || c->step == STEP_HANDSHAKE)) {
        tls_client_failure(bev, &c->trust, why, sizeof why);
        bufferevent_free(c->bev);
        c->bev = NULL;
        finish(c, EXIT_TLS, "%s", why);
        return;
    }
    bufferevent_free(c->bev);
    c->bev = NULL;
    finish(c, EXIT_PROTOCOL, "%s while waiting for %s",
           what & BEV_EVENT_TIMEOUT ? "timeout" : what & BEV_EVENT_EOF ? "connection closed" : "error",
           steps[c->step].name);
}

/* ---- life cycle ---- */

struct odmr *odmr_new(struct event_base *base, const struct client_options *o,
                      const struct target_spec *target, const char *helo,
                      const struct odmr_callbacks *cb, void *arg)
{
    struct odmr *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->base = base;
    c->opts = o;
    c->target = *target;
    c->cb = *cb;
    c->arg = arg;
    c->step = STEP_GREETING;
    snprintf(c->helo, sizeof c->helo, "%s", helo);
    wire_reader_init(&c->reader);
    c->sasl = sasl_client_new();
    return c;
}

static int make_tls_context(struct odmr *c)
{
    char err[300];
    if (c->opts->tls == TLS_MODE_NONE)
        return 0;
    c->trust = (struct tls_client_trust){.ca = c->opts->ca, .pins = c->opts->pins,
                                         .pin_count = c->opts->pin_count};
    c->tls_ctx = tls_client_context(&c->trust, err, sizeof err);
    if (c->tls_ctx == NULL) {
        finish(c, EXIT_USAGE, "%s", err);
        return -1;
    }
    return 0;
}

void odmr_start(struct odmr *c)
{
    char err[300];
    if (c->sasl == NULL) {
        finish(c, EXIT_PROTOCOL, "GNU SASL initialisation failed");
        return;
    }
    if (make_tls_context(c) != 0)
        return;
    int fd = wire_connect(c->opts->host, c->opts->port, NULL,
                          client_timeout(c->opts, TIMEOUT_CONNECT), err, sizeof err);
    if (fd < 0) {
        finish(c, EXIT_PROTOCOL, "cannot connect to %s:%s: %s", c->opts->host, c->opts->port, err);
        return;
    }
    log_info("client.connected", " server=%s port=%s tls=%s", c->opts->host, c->opts->port,
             c->opts->tls == TLS_MODE_IMPLICIT ? "implicit" : c->opts->tls == TLS_MODE_NONE ? "none" : "starttls");
    if (c->opts->tls == TLS_MODE_IMPLICIT) {
        c->bev = tls_client_socket(c->base, fd, c->tls_ctx,
                                   c->opts->tls_name ? c->opts->tls_name : c->opts->host);
        c->step = STEP_CONNECTING;
    } else {
        c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (c->bev == NULL) {
        close(fd);
        finish(c, EXIT_PROTOCOL, "out of memory");
        return;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    enter_step(c, c->step);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

const struct smtp_client_ext *odmr_target_caps(const struct odmr *c)
{
    return &c->target_caps;
}

void odmr_free(struct odmr *c)
{
    if (c == NULL)
        return;
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    sasl_client_exchange_free(c->exchange);
    free(c->pending_response);
    sasl_client_free(c->sasl);
    if (c->tls_ctx != NULL)
        SSL_CTX_free(c->tls_ctx);
    wire_reader_free(&c->reader);
    free(c);
}
