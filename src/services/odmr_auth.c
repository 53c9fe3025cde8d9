/* SPDX-License-Identifier: ISC */
/* AUTH on the ODMR port (RFC 4954 through GNU SASL, RFC 2645 5.1): the mechanisms and when
 * they are offered, the exchange's continuation lines, the failures (delayed replies, the
 * per-session and per-address limits, docs/odmr.md). */
#include "services/odmr_auth.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"
#include "lib/peer_count.h"
#include "lib/reply.h"
#include "platform/sasl.h"
#include "platform/tls.h"
#include "services/auth_failures.h"
#include "services/metrics.h"
#include "services/odmr_session_internal.h"

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

void odmr_auth_end_exchange(struct odmr_session *s)
{
    if (s->exchange != NULL)
        peer_count_release(s->service->exchanges, s->peer);
    sasl_exchange_free(s->exchange);
    s->exchange = NULL;
    s->exchange_sent_final = false;
    if (s->smtp != NULL)
        smtp_session_release_lines(s->smtp);
}


/* An exchange cut off by the session's end is a failed one (the table is the service's, so it
 * is recorded although the session ends). */
void odmr_auth_session_ended(struct odmr_session *s)
{
    if (s->exchange == NULL)
        return;
    unsigned address_failures = auth_failures_record(s->service->failures, s->peer);
    metrics_count_auth_failure();
    log_warn("odmr.auth", " session=%s peer=%s mechanism=%s result=aborted "
             "address_failures=%u", s->id, s->peer, s->mechanism, address_failures);
}

/* RFC 2645 5.1.1: the EHLO reply MUST include AUTH. Strongest mechanism first; RFC 4954 4: no
 * plaintext mechanism without TLS; RFC 2645 5.1.2: CRAM-MD5 is mandatory to implement;
 * EXTERNAL only with a verified certificate. */
void odmr_auth_ehlo_keyword(struct smtp_session *smtp, char *line, size_t len)
{
    char subject[256];
    if (smtp_session_tls_active(smtp))
        snprintf(line, len, "AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN CRAM-MD5%s",
                 tls_peer_subject(smtp_session_bev(smtp), subject, sizeof subject) == 0
                     ? " EXTERNAL" : "");
    else
        snprintf(line, len, "AUTH SCRAM-SHA-256 CRAM-MD5");
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

bool odmr_auth_lookup_credentials(void *arg, const char *authid, struct sasl_credentials *c)
{
    struct odmr_service *service = arg;
    const struct odmr_user *u = userdb_find_user(*service->users, authid);
    if (u == NULL)
        return false;
    *c = (struct sasl_credentials){
        .password = u->cram_secret,
        .scram_iterations = u->scram_iterations,
        .scram_salt_b64 = u->scram_salt_b64,
        .scram_stored_key_b64 = u->scram_stored_key_b64,
        .scram_server_key_b64 = u->scram_server_key_b64,
        .tls_subject = u->tls_subject,
    };
    return true;
}

static void auth_succeeded(struct odmr_session *s)
{
    s->user = strdup(sasl_exchange_user(s->exchange));
    smtp_session_set_authenticated(s->smtp);
    log_info("odmr.auth", " session=%s peer=%s user=%s result=ok", s->id, s->peer, s->user);
    odmr_auth_end_exchange(s);
    reply_send(odmr_out(s), 235, "2.7.0", "Authentication successful");
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
        reply_send(odmr_out(s), 421, "4.7.0", "%s Too many authentication failures",
                   s->service->settings.hostname);
        smtp_session_close(s->smtp);
        return;
    }
    reply_send(odmr_out(s), s->failure->code, s->failure->enhanced, "%s", s->failure->text);
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
    odmr_auth_end_exchange(s);
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
            reply_send(odmr_out(s), 334, NULL, "%s", reply_data);
        } else {
            auth_succeeded(s);
        }
        break;
    case SASL_RESULT_CONTINUE:
        reply_send(odmr_out(s), 334, NULL, "%s", reply_data);
        break;
    case SASL_RESULT_BAD_INPUT:
        auth_failed(s, &undecodable);
        break;
    case SASL_RESULT_UNAVAILABLE:
        odmr_auth_end_exchange(s);
        reply_send(odmr_out(s), 454, "4.7.0", "Temporary authentication failure");
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
void odmr_cmd_auth(void *ctx, struct smtp_session *smtp, const char *arg)
{
    struct odmr_session *s = odmr_session_of(ctx, smtp);
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
        reply_send(odmr_out(s), 454, "4.7.0", "Temporary authentication failure");
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

