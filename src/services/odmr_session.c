/* SPDX-License-Identifier: ISC */
/* ODMR (RFC 2645) before the turnaround, on the SMTP server engine: the service registers
 * AUTH (RFC 4954, through SASL) and ATRN (RFC 2645 5.2.1) and hands the connection to the
 * push after its 250 to ATRN. Everything else of the session (greeting, EHLO, STARTTLS,
 * deadlines, error limit, half-close, shutdown) is the engine's (docs/odmr.md). */
#include "services/odmr_session.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engines/smtp_server.h"
#include "lib/domain_list.h"
#include "lib/log.h"
#include "lib/peer_count.h"
#include "lib/reply.h"
#include "platform/sasl.h"
#include "platform/tls.h"
#include "services/auth_failures.h"
#include "services/metrics.h"
#include "store/last_atrn.h"

/* RFC 4954 4: AUTH lines may be longer than commands (12288 like Postfix's
 * line_length_limit for SASL). */
enum { AUTH_LINE_MAX = 12288 };

/* What a failed or aborted AUTH exchange is answered with, after the delay. */
struct failure_reply {
    int code;
    const char *enhanced;
    const char *text;
    const char *reason;    /* for the log */
};

struct odmr_service {
    struct event_base *base;
    struct queue *queue;
    struct userdb *const *users;
    struct odmr_settings settings;
    struct sasl_server *sasl;
    struct smtp_server *server;
    struct push_service *pushes;
    struct peer_count *peers;           /* sessions per address */
    struct peer_count *unauthenticated; /* sessions per address not yet through AUTH */
    struct peer_count *exchanges;       /* AUTH exchanges under way per address */
    struct auth_failures *failures;     /* failed AUTH per address (services/auth_failures.h) */
};

/* The service's part of one session (the engine session's user pointer), until the session
 * ends or, after a turnaround, until the push is done. */
struct odmr_session {
    struct odmr_service *service;
    struct smtp_session *smtp;   /* NULL once detached */
    char id[24];
    char peer[64];
    unsigned auth_failures;
    struct sasl_exchange *exchange;
    const char *mechanism;       /* of the exchange under way */
    const struct failure_reply *failure;   /* sent when the delay ends */
    bool exchange_sent_final;   /* server's last SASL data sent as 334, awaiting empty line */
    char *user;                  /* authenticated user */
    char **leased;               /* domains leased for the push (malloc) */
    size_t leased_count;
    struct event *delay;         /* slows down the reply to a failed AUTH */
    struct smtp_detached detached;   /* the connection handed to the push */
};

static struct evbuffer *out(struct odmr_session *s)
{
    return smtp_session_output(s->smtp);
}

static void release_leases(struct odmr_session *s)
{
    for (size_t i = 0; i < s->leased_count; i++) {
        queue_release_domain(s->service->queue, s->leased[i]);
        free(s->leased[i]);
    }
    free(s->leased);
    s->leased = NULL;
    s->leased_count = 0;
}

/* ---------------------------------------------------------------- failure accounting */

/* An exchange may start only while the failures of the address plus its exchanges under way
 * stay below the limit: parallel sessions that all send AUTH at once can never together
 * exceed it (each one would fail only after the check of the others). */
static bool address_may_start(struct odmr_session *s)
{
    unsigned failures = auth_failures_count(s->service->failures, s->peer);
    unsigned in_flight = peer_count_get(s->service->exchanges, s->peer);
    if (failures + in_flight < s->service->settings.max_address_failures)
        return true;
    log_warn("odmr.auth_refused", " session=%s peer=%s address_failures=%u in_flight=%u", s->id,
             s->peer, failures, in_flight);
    return false;
}

/* ---------------------------------------------------------------- sessions */

static struct odmr_session *session_of(struct odmr_service *service, struct smtp_session *smtp)
{
    struct odmr_session *s = smtp_session_user(smtp);
    if (s != NULL)
        return s;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->service = service;
    s->smtp = smtp;
    snprintf(s->id, sizeof s->id, "%s", smtp_session_id(smtp));
    snprintf(s->peer, sizeof s->peer, "%s", smtp_session_peer(smtp));
    smtp_session_set_user(smtp, s);
    return s;
}

static void end_exchange(struct odmr_session *s)
{
    if (s->exchange != NULL)
        peer_count_release(s->service->exchanges, s->peer);
    sasl_exchange_free(s->exchange);
    s->exchange = NULL;
    s->exchange_sent_final = false;
    if (s->smtp != NULL)
        smtp_session_release_lines(s->smtp);
}

static void session_free(struct odmr_session *s)
{
    release_leases(s);
    end_exchange(s);
    if (s->delay)
        event_free(s->delay);
    free(s->user);
    free(s);
}

/* The engine ends the session (QUIT, EOF, timeout, error, shutdown). An exchange cut off is a
 * failed one (the table is the service's, so it is recorded although the session ends). */
static void hook_session_closed(void *ctx, struct smtp_session *smtp)
{
    struct odmr_session *s = smtp_session_user(smtp);
    if (s == NULL)
        return;
    if (s->exchange != NULL) {
        unsigned address_failures = auth_failures_record(s->service->failures, s->peer);
        metrics_count_auth_failure();
        log_warn("odmr.auth", " session=%s peer=%s mechanism=%s result=aborted "
                 "address_failures=%u", s->id, s->peer, s->mechanism, address_failures);
    }
    s->smtp = NULL;
    session_free(s);
}

/* RFC 2645 5.1.1: the EHLO reply MUST include AUTH and ATRN. Strongest mechanism first; RFC
 * 4954 4: no plaintext mechanism without TLS; RFC 2645 5.1.2: CRAM-MD5 is mandatory to
 * implement; EXTERNAL only with a verified certificate. */
static size_t hook_ehlo_keywords(void *ctx, struct smtp_session *smtp, char lines[][200],
                                 size_t max)
{
    char subject[256];
    if (max < 2)
        return 0;
    if (smtp_session_tls_active(smtp))
        snprintf(lines[0], 200, "AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN CRAM-MD5%s",
                 tls_peer_subject(smtp_session_bev(smtp), subject, sizeof subject) == 0
                     ? " EXTERNAL" : "");
    else
        snprintf(lines[0], 200, "AUTH SCRAM-SHA-256 CRAM-MD5");
    snprintf(lines[1], 200, "ATRN");
    return 2;
}

/* ---------------------------------------------------------------- AUTH (RFC 4954) */

struct mechanism_rule {
    const char *name;
    bool needs_tls;        /* never offered nor accepted without TLS */
};

static const struct mechanism_rule mechanisms[] = {
    {"SCRAM-SHA-256-PLUS", true}, {"SCRAM-SHA-256", false}, {"PLAIN", true},
    {"LOGIN", true},              {"CRAM-MD5", false},       {"EXTERNAL", true},
};

static const struct mechanism_rule *find_mechanism(const char *name)
{
    for (size_t i = 0; i < sizeof mechanisms / sizeof mechanisms[0]; i++)
        if (strcasecmp(mechanisms[i].name, name) == 0)
            return &mechanisms[i];
    return NULL;
}

static bool lookup_credentials(void *arg, const char *authid, struct sasl_credentials *c)
{
    struct odmr_service *service = arg;
    const struct odmr_user *u = userdb_find_user(*service->users, authid);
    if (u == NULL)
        return false;
    c->password = u->cram_secret;
    c->scram_iterations = u->scram_iterations;
    c->scram_salt_b64 = u->scram_salt_b64;
    c->scram_stored_key_b64 = u->scram_stored_key_b64;
    c->scram_server_key_b64 = u->scram_server_key_b64;
    c->tls_subject = u->tls_subject;
    return true;
}

static void auth_succeeded(struct odmr_session *s)
{
    s->user = strdup(sasl_exchange_user(s->exchange));
    smtp_session_set_authenticated(s->smtp);
    log_info("odmr.auth", " session=%s peer=%s user=%s result=ok", s->id, s->peer, s->user);
    end_exchange(s);
    reply_send(out(s), 235, "2.7.0", "Authentication successful");
}

/* RFC 4954 6 and 4 (the "*" cancel and the 500 5.5.6 line limit end the exchange too). */
static const struct failure_reply invalid_credentials = {
    535, "5.7.8", "Authentication credentials invalid", "failed"};
static const struct failure_reply cancelled = {
    501, "5.0.0", "Authentication cancelled", "cancelled"};
static const struct failure_reply undecodable = {
    501, "5.5.2", "Cannot decode the response", "bad_input"};
static const struct failure_reply not_empty = {
    501, "5.5.2", "Expected an empty response", "bad_input"};
static const struct failure_reply line_too_long = {
    500, "5.5.6", "Authentication exchange line is too long", "too_long"};

/* The held reply to a failed exchange; the session reads again (smtp_session_resume). */
static void on_delay_done(evutil_socket_t fd, short events, void *arg)
{
    struct odmr_session *s = arg;
    if (!smtp_session_paused(s->smtp))
        return;   /* closing already (shutdown): its 421 was the last reply */
    if (s->auth_failures >= s->service->settings.max_auth_failures) {
        reply_send(out(s), 421, "4.7.0", "%s Too many authentication failures",
                   s->service->settings.hostname);
        smtp_session_close(s->smtp);
        return;
    }
    reply_send(out(s), s->failure->code, s->failure->enhanced, "%s", s->failure->text);
    smtp_session_resume(s->smtp);
}

/* Every exchange that does not succeed (wrong credentials, unknown user, "*", undecodable or
 * over-long responses) is a failure: logged with the address, answered after a delay (1 s,
 * 2 s, ...), the session ends after max_auth_failures (RFC 4954 9 allows dropping it after at
 * least 3), and it counts against the address across sessions. */
static void auth_failed(struct odmr_session *s, const struct failure_reply *reply)
{
    unsigned address_failures = auth_failures_record(s->service->failures, s->peer);
    s->auth_failures++;
    metrics_count_auth_failure();
    log_warn("odmr.auth", " session=%s peer=%s mechanism=%s result=%s session_failures=%u "
             "address_failures=%u", s->id, s->peer, s->mechanism, reply->reason,
             s->auth_failures, address_failures);
    end_exchange(s);
    s->failure = reply;
    struct timeval delay = {s->auth_failures, 0};
    if (s->delay == NULL)
        s->delay = evtimer_new(s->service->base, on_delay_done, s);
    smtp_session_pause(s->smtp);
    evtimer_add(s->delay, &delay);
}

static void auth_step(struct odmr_session *s, const char *input)
{
    char *reply_data = NULL;
    enum sasl_result result = sasl_exchange_step(s->exchange, input, &reply_data);
    switch (result) {
    case SASL_RESULT_OK:
        /* RFC 4954 4: additional data with success goes in a 334; the client answers with an
         * empty line, then 235. */
        if (reply_data[0] != '\0') {
            s->exchange_sent_final = true;
            reply_send(out(s), 334, NULL, "%s", reply_data);
        } else {
            auth_succeeded(s);
        }
        break;
    case SASL_RESULT_CONTINUE:
        reply_send(out(s), 334, NULL, "%s", reply_data);
        break;
    case SASL_RESULT_BAD_INPUT:
        auth_failed(s, &undecodable);
        break;
    case SASL_RESULT_UNAVAILABLE:
        end_exchange(s);
        reply_send(out(s), 454, "4.7.0", "Temporary authentication failure");
        break;
    case SASL_RESULT_FAILED:
        auth_failed(s, &invalid_credentials);
        break;
    }
    free(reply_data);
}

/* A line of the exchange (smtp_session_take_lines); NULL: it was over AUTH_LINE_MAX. */
static void auth_response_line(void *ctx, struct smtp_session *smtp, const char *text)
{
    struct odmr_session *s = smtp_session_user(smtp);
    if (text == NULL) {
        auth_failed(s, &line_too_long);
        return;
    }
    /* RFC 4954 4: "*" cancels the exchange (501); it still counts as a failed one. */
    if (strcmp(text, "*") == 0) {
        auth_failed(s, &cancelled);
        return;
    }
    if (s->exchange_sent_final) {
        if (text[0] != '\0') {
            auth_failed(s, &not_empty);
            return;
        }
        auth_succeeded(s);
        return;
    }
    auth_step(s, text);
}

/* The mechanism named by AUTH's argument, or NULL after an error reply (RFC 4954 4: 504 for
 * an unknown one, 538 for a plaintext one without TLS). */
static const struct mechanism_rule *auth_mechanism(struct odmr_session *s, const char *arg,
                                                   size_t len)
{
    char mechanism[32];
    const struct mechanism_rule *rule = NULL;
    if (len > 0 && len < sizeof mechanism) {
        memcpy(mechanism, arg, len);
        mechanism[len] = '\0';
        rule = find_mechanism(mechanism);
    }
    if (rule == NULL || !sasl_server_supports(s->service->sasl, rule->name)) {
        smtp_session_error(s->smtp, 504, "5.5.4", "Unrecognized authentication type");
        return NULL;
    }
    if (rule->needs_tls && !smtp_session_tls_active(s->smtp)) {
        smtp_session_error(s->smtp, 538, "5.7.11",
                           "Encryption required for requested authentication mechanism");
        return NULL;
    }
    return rule;
}

static struct sasl_exchange *start_exchange(struct odmr_session *s, const char *mechanism)
{
    char binding[64], subject[256];
    struct bufferevent *bev = smtp_session_bev(s->smtp);
    bool tls = smtp_session_tls_active(s->smtp);
    bool has_binding = tls && tls_channel_binding(bev, binding, sizeof binding) == 0;
    bool has_subject = tls && tls_peer_subject(bev, subject, sizeof subject) == 0;
    return sasl_exchange_start(s->service->sasl, mechanism, has_binding ? binding : NULL,
                               has_subject ? subject : NULL);
}

/* The engine's flags already refused AUTH after AUTH, before EHLO and after HELO. */
static void cmd_auth(void *ctx, struct smtp_session *smtp, const char *arg)
{
    struct odmr_session *s = session_of(ctx, smtp);
    if (s == NULL) {
        reply_send(smtp_session_output(smtp), 454, "4.7.0", "Temporary authentication failure");
        return;
    }
    /* RFC 4954 6: 454 4.7.0, a temporary failure: the client should not ask for another
     * password (the one it has may be right) and the session stays (RFC 4954 9: not dropped
     * before 3 attempts); each refusal counts as an error. */
    if (!address_may_start(s)) {
        smtp_session_error(smtp, 454, "4.7.0",
                           "Too many failed authentications from your address; try later");
        return;
    }
    size_t len = strcspn(arg, " ");
    const struct mechanism_rule *rule = auth_mechanism(s, arg, len);
    if (rule == NULL)
        return;
    s->exchange = start_exchange(s, rule->name);
    if (s->exchange == NULL) {
        reply_send(out(s), 454, "4.7.0", "Temporary authentication failure");
        return;
    }
    peer_count_take(s->service->exchanges, s->peer, 0);
    s->mechanism = rule->name;
    smtp_session_take_lines(smtp, auth_response_line, s, AUTH_LINE_MAX);
    const char *initial = arg + len;
    while (*initial == ' ')
        initial++;
    /* RFC 4954 4: "=" is an empty initial response; no argument means none was sent. */
    auth_step(s, strcmp(initial, "=") == 0 ? "" : initial);
}

/* ---------------------------------------------------------------- ATRN (RFC 2645 5.2.1) */

static int count_id(const char *id, void *arg)
{
    (*(size_t *)arg)++;
    return 1;   /* one is enough */
}

static bool any_mail(struct odmr_session *s)
{
    for (size_t i = 0; i < s->leased_count; i++) {
        size_t found = 0;
        queue_list_domain(s->service->queue, s->leased[i], count_id, &found);
        if (found > 0)
            return true;
    }
    return false;
}

/* The domains of one ATRN: the argument's (at most DOMAIN_LIST_MAX), or every domain of the
 * user, however many. names points into parsed or into the users file; lease_all() copies
 * them before the event loop runs again (a SIGHUP may replace the users file then). */
struct atrn_domains {
    struct domain_list parsed;
    const char *argument[DOMAIN_LIST_MAX];
    const char *const *names;
    size_t count;
};

/* Leases every domain or none: 0, or -1 with *busy naming the domain another session holds
 * (NULL when out of memory). */
static int lease_all(struct odmr_session *s, const struct atrn_domains *d, const char **busy)
{
    *busy = NULL;
    s->leased = calloc(d->count, sizeof *s->leased);
    if (s->leased == NULL)
        return -1;
    for (size_t i = 0; i < d->count; i++) {
        char *copy = strdup(d->names[i]);
        if (copy == NULL || queue_lease_domain(s->service->queue, d->names[i]) != 0) {
            *busy = copy ? d->names[i] : NULL;
            free(copy);
            release_leases(s);
            return -1;
        }
        s->leased[s->leased_count++] = copy;
    }
    return 0;
}

/* Every reply to ATRN goes through here, so the metrics count each one by its code. */
static void atrn_reply(struct odmr_session *s, int code, const char *enhanced, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
static void atrn_reply(struct odmr_session *s, int code, const char *enhanced, const char *fmt,
                       ...)
{
    char text[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    metrics_count_atrn(code);
    reply_send(out(s), code, enhanced, "%s", text);
}

static bool resolve_domains(struct odmr_session *s, const char *arg, struct atrn_domains *d)
{
    const char *why = NULL;
    const struct odmr_user *u = userdb_find_user(*s->service->users, s->user);
    if (domain_list_parse(arg, &d->parsed, &why) != 0) {
        char text[200];
        snprintf(text, sizeof text, "Syntax: ATRN [domain[,domain...]]: %s", why);
        metrics_count_atrn(501);
        smtp_session_error(s->smtp, 501, "5.5.4", text);
        return false;
    }
    if (u == NULL) {
        atrn_reply(s, 450, "4.7.1", "ATRN request refused: the user no longer exists");
        return false;
    }
    for (size_t i = 0; i < d->parsed.count; i++)
        d->argument[i] = d->parsed.names[i];
    d->names = d->argument;
    d->count = d->parsed.count;
    /* RFC 2645 5.2.1: no domains means every domain the customer may have: all of them. */
    if (d->count == 0) {
        d->names = (const char *const *)u->domains;
        d->count = u->domain_count;
    }
    if (d->count == 0) {
        atrn_reply(s, 450, "4.7.1", "ATRN request refused: no domains for this user");
        return false;
    }
    /* RFC 2645 5.2.1: not authorized for one domain -> nothing is sent for any (450). */
    for (size_t i = 0; i < d->count; i++) {
        if (!userdb_user_has_domain(u, d->names[i])) {
            log_warn("odmr.atrn_refused", " session=%s user=%s domain=%s", s->id, s->user,
                     d->names[i]);
            atrn_reply(s, 450, "4.7.1", "ATRN request refused: not authorized for %s",
                       d->names[i]);
            return false;
        }
    }
    return true;
}

static void on_push_done(void *arg, const struct push_result *r)
{
    struct odmr_session *s = arg;
    char reason[4 * sizeof r->reason];   /* the customer's words: quoted (lib/log.h) */
    log_info("odmr.push_done", " session=%s user=%s messages=%u delivered=%u deferred=%u "
             "failed=%u clean=%d reason=%s", s->id, s->user, r->messages, r->delivered,
             r->deferred, r->failed, r->clean,
             log_quote(reason, sizeof reason, r->reason, strlen(r->reason)));
    smtp_server_detached_end(s->service->server, &s->detached);
    session_free(s);
}

/* RFC 2645 5.3: after our 250 the connection is the push's; this session's engine part ends
 * (the slot and the address's count stay taken until the push is done). */
static void turn_around(struct odmr_session *s)
{
    const struct odmr_user *u = userdb_find_user(*s->service->users, s->user);
    if (smtp_session_detach(s->smtp, &s->detached) != 0)
        return;
    smtp_session_set_user(s->smtp, NULL);
    s->smtp = NULL;
    struct push_request req = {
        .base = s->service->base,
        .bev = s->detached.bev,
        .tls_active = s->detached.tls_active,
        .queue = s->service->queue,
        .domains = (const char *const *)s->leased,
        .domain_count = s->leased_count,
        .hostname = s->service->settings.hostname,
        .session_id = s->id,
        .peer = s->peer,
        .user = s->user,
        .profile = u && u->profile == ODMR_PROFILE_FAST ? PUSH_PROFILE_FAST : PUSH_PROFILE_COMPAT,
        .timeouts = s->service->settings.push_timeouts,
    };
    log_info("odmr.turnaround", " session=%s user=%s domains=%zu profile=%s", s->id, s->user,
             s->leased_count, req.profile == PUSH_PROFILE_FAST ? "fast" : "compat");
    if (push_start(s->service->pushes, &req, on_push_done, s) != 0) {
        smtp_server_detached_end(s->service->server, &s->detached);
        session_free(s);
    }
}

/* 451 when another session holds a domain (RFC 2645 5.2.1), 453 without mail. */
static bool lease_with_mail(struct odmr_session *s, const struct atrn_domains *domains)
{
    const char *busy;
    if (lease_all(s, domains, &busy) != 0) {
        if (busy != NULL)
            atrn_reply(s, 451, "4.3.0", "Unable to process ATRN request now: %s is being "
                       "delivered by another session", busy);
        else
            atrn_reply(s, 451, "4.3.0", "Unable to process ATRN request now");
        return false;
    }
    if (!any_mail(s)) {
        release_leases(s);
        last_atrn_record(s->user);   /* odmrctl queue summary: when the customer last polled */
        atrn_reply(s, 453, "4.3.0", "You have no mail");
        return false;
    }
    return true;
}

/* The engine's flags (require_auth) already answered 530 before AUTH. */
static void cmd_atrn(void *ctx, struct smtp_session *smtp, const char *arg)
{
    struct odmr_session *s = smtp_session_user(smtp);
    struct atrn_domains domains;
    if (!resolve_domains(s, arg, &domains) || !lease_with_mail(s, &domains))
        return;
    /* docs/odmr.md "Turnaround": the customer must wait for our 250 before its 220; anything
     * already buffered is a protocol error, never the next phase's input. */
    if (smtp_session_input_pending(smtp)) {
        log_warn("odmr.atrn_pipelined", " session=%s user=%s", s->id, s->user);
        release_leases(s);
        atrn_reply(s, 554, "5.5.0", "Pipelined data after ATRN; closing");
        smtp_session_close(smtp);
        return;
    }
    last_atrn_record(s->user);
    atrn_reply(s, 250, "2.0.0", "OK, now reversing the connection");
    turn_around(s);
}

/* ---------------------------------------------------------------- service */

static const struct smtp_server_hooks odmr_hooks = {
    .session_closed = hook_session_closed,
    .ehlo_keywords = hook_ehlo_keywords,
};

/* RFC 2645 5.1/5.2: AUTH and ATRN; RFC 4954 4: AUTH only after EHLO, once, never inside a
 * transaction (there is none here). */
static const struct smtp_server_command odmr_commands[] = {
    {"AUTH", SMTP_CMD_SMTP | SMTP_CMD_PRE_TLS | SMTP_CMD_PRE_AUTH | SMTP_CMD_NOT_AFTER_AUTH |
             SMTP_CMD_NEEDS_ESMTP | SMTP_CMD_NO_TXN, cmd_auth},
    {"ATRN", SMTP_CMD_SMTP, cmd_atrn},
};

static struct smtp_server *make_server(struct odmr_service *service)
{
    const struct odmr_settings *c = &service->settings;
    struct smtp_server_settings settings = {
        .mode = SMTP_SERVER_SMTP,
        .hostname = c->hostname,
        .role = "odmr",
        .tls = c->tls,
        .limits = {.max_errors = c->max_errors, .max_junk_commands = c->max_junk_commands,
                   .command_timeout = c->command_timeout,
                   .tls_handshake_timeout = c->tls_handshake_timeout},
        .hooks = &odmr_hooks,
        .hooks_ctx = service,
        .max_sessions = c->max_sessions,
        .peers = service->peers,
        .max_sessions_per_address = c->max_sessions_per_address,
        .no_mail = true,
        .require_auth = true,
        .unauthenticated = service->unauthenticated,
        .max_unauthenticated_per_address = c->max_unauthenticated_per_address,
        .greeting = "ESMTP odmrd ODMR service ready",
        .log_prefix = "odmr",
        .id_letter = 'O',
    };
    struct smtp_server *server = smtp_server_new(service->base, &settings);
    for (size_t i = 0; server && i < sizeof odmr_commands / sizeof odmr_commands[0]; i++)
        smtp_server_register(server, &odmr_commands[i]);
    return server;
}

struct odmr_service *odmr_service_new(struct event_base *base, struct queue *queue,
                                      struct userdb *const *users,
                                      const struct odmr_settings *settings)
{
    struct odmr_service *service = calloc(1, sizeof *service);
    if (service == NULL)
        return NULL;
    service->base = base;
    service->queue = queue;
    service->users = users;
    service->settings = *settings;
    service->sasl = sasl_server_new(lookup_credentials, service);
    /* every counted address holds at least one live session */
    service->peers = peer_count_new(settings->max_sessions);
    service->unauthenticated = peer_count_new(settings->max_sessions);
    service->exchanges = peer_count_new(settings->max_sessions);
    service->failures = auth_failures_new(settings->failure_window);
    service->pushes = push_service_new();
    service->server = service->peers && service->unauthenticated ? make_server(service) : NULL;
    if (service->sasl == NULL || service->server == NULL || service->exchanges == NULL ||
        service->pushes == NULL || service->failures == NULL) {
        odmr_service_free(service);
        return NULL;
    }
    if (settings->auth_secret != NULL)
        sasl_server_set_secret(service->sasl, settings->auth_secret);
    service->settings.auth_secret = NULL;   /* copied; the caller's buffer may go */
    return service;
}

void odmr_service_accept(struct odmr_service *service, evutil_socket_t fd,
                         const struct sockaddr *peer, int peer_len, bool implicit_tls)
{
    if (implicit_tls)
        smtp_server_accept_tls(service->server, fd, peer, peer_len);
    else
        smtp_server_accept(service->server, fd, peer, peer_len);
}

/* Graceful stop: the engine answers 421 to the sessions before the turnaround; the pushes end
 * at their next safe point, and each one's end frees its slot (on_idle after the last). */
void odmr_service_shutdown(struct odmr_service *service, void (*on_idle)(void *), void *arg)
{
    push_service_shutdown(service->pushes);
    smtp_server_shutdown(service->server, on_idle, arg);
}

size_t odmr_service_session_count(const struct odmr_service *service)
{
    return smtp_server_session_count(service->server);
}

void odmr_service_free(struct odmr_service *service)
{
    if (service->server != NULL)
        smtp_server_free(service->server);
    push_service_free(service->pushes);
    sasl_server_free(service->sasl);
    peer_count_free(service->peers);
    peer_count_free(service->unauthenticated);
    peer_count_free(service->exchanges);
    auth_failures_free(service->failures);
    free(service);
}
