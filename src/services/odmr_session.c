/* SPDX-License-Identifier: ISC */
/* ODMR (RFC 2645) sessions before the turnaround. */
#include "services/odmr_session.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/domain_list.h"
#include "lib/linereader.h"
#include "lib/log.h"
#include "lib/peer_count.h"
#include "lib/reply.h"
#include "platform/admission.h"
#include "platform/deadline.h"
#include "platform/listen.h"
#include "platform/sasl.h"
#include "platform/tls.h"
#include "services/metrics.h"
#include "store/last_atrn.h"

/* RFC 5321 4.5.3.1.4 command lines; RFC 4954 4: AUTH lines may be longer (12288 like
 * Postfix's line_length_limit for SASL). */
enum { COMMAND_LINE_MAX = 512, AUTH_LINE_MAX = 12288, FAILURE_SLOTS = 4096 };

enum odmr_state {
    ODMR_GREETED,        /* 220 sent; EHLO (or HELO) expected */
    ODMR_INITIAL,        /* RFC 2645 5.1 initial state, after EHLO */
    ODMR_AUTH_EXCHANGE,  /* inside an AUTH exchange: lines are SASL responses */
    ODMR_AUTHENTICATED,  /* RFC 2645 5.2 */
    ODMR_REVERSED,       /* the push owns the connection */
    ODMR_CLOSING,
};

static const char *const odmr_state_names[] = {
    [ODMR_GREETED] = "greeted",          [ODMR_INITIAL] = "initial",
    [ODMR_AUTH_EXCHANGE] = "auth",       [ODMR_AUTHENTICATED] = "authenticated",
    [ODMR_REVERSED] = "reversed",        [ODMR_CLOSING] = "closing",
};

/* Failed AUTH exchanges of one client address in the window that began at first. */
struct address_failures {
    char address[64];
    unsigned count;
    time_t first;
};

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
    struct peer_count *peers;           /* sessions per address */
    struct peer_count *unauthenticated; /* sessions per address not yet through AUTH */
    struct odmr_session *sessions;
    size_t session_count;
    unsigned long next_id;
    bool shutting_down;
    void (*on_idle)(void *);
    void *on_idle_arg;
    struct address_failures failures[FAILURE_SLOTS];
};

struct odmr_session {
    struct odmr_service *service;
    struct odmr_session *prev, *next;
    struct bufferevent *bev;
    struct line_reader reader;
    enum odmr_state state;
    char id[24];
    char peer[64];
    bool esmtp;
    bool tls_active;
    bool input_ended;            /* the customer ended its sending side (FIN, close_notify) */
    unsigned auth_failures;
    unsigned errors;
    struct sasl_exchange *exchange;
    const char *mechanism;       /* of the exchange under way */
    const struct failure_reply *failure;   /* sent when the delay ends */
    bool exchange_sent_final;   /* server's last SASL data sent as 334, awaiting empty line */
    char *user;                  /* authenticated user */
    char **leased;               /* domains leased for the push (malloc) */
    size_t leased_count;
    struct event *delay;         /* slows down the reply to a failed AUTH */
    struct deadline deadline;    /* per command, TLS handshake; the closing flush */
    char peer_key[PEER_KEY_MAX]; /* counted in service->peers (listen_peer_key) */
    bool unauthenticated;        /* still counted in service->unauthenticated */
};

static unsigned record_address_failure(struct odmr_service *service, const char *peer);

/* ---------------------------------------------------------------- helpers */

static struct evbuffer *out(struct odmr_session *s)
{
    return bufferevent_get_output(s->bev);
}

static const char *hostname(const struct odmr_session *s)
{
    return s->service->settings.hostname;
}

static void enter(struct odmr_session *s, enum odmr_state next)
{
    log_debug("odmr.state", " session=%s from=%s to=%s", s->id, odmr_state_names[s->state],
              odmr_state_names[next]);
    s->state = next;
}

/* Writes only: reading has the session's deadline (next_command_deadline), which octets
 * trickling in do not restart. */
static void set_timeout(struct odmr_session *s, time_t seconds)
{
    struct timeval tv = {seconds, 0};
    bufferevent_set_timeouts(s->bev, NULL, &tv);
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

/* The session no longer counts toward max_unauthenticated_per_address (AUTH succeeded, or
 * it ends). */
static void peer_authenticated(struct odmr_session *s)
{
    if (s->unauthenticated)
        peer_count_release(s->service->unauthenticated, s->peer_key);
    s->unauthenticated = false;
}

static void session_free(struct odmr_session *s)
{
    struct odmr_service *service = s->service;
    release_leases(s);
    /* An exchange cut off by EOF, a timeout or an error is a failed one (the table is the
     * service's, so it is recorded although the session ends). */
    if (s->exchange != NULL) {
        unsigned address_failures = record_address_failure(service, s->peer);
        metrics_count_auth_failure();
        log_warn("odmr.auth", " session=%s peer=%s mechanism=%s result=aborted "
                 "address_failures=%u", s->id, s->peer, s->mechanism, address_failures);
    }
    sasl_exchange_free(s->exchange);
    line_reader_free(&s->reader);
    if (s->delay)
        event_free(s->delay);
    deadline_free(&s->deadline);
    peer_authenticated(s);
    peer_count_release(service->peers, s->peer_key);
    if (s->bev)
        tls_bufferevent_close(s->bev);
    if (s->prev)
        s->prev->next = s->next;
    else
        service->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    service->session_count--;
    metrics_session_closed("odmr");
    log_info("odmr.end", " session=%s user=%s", s->id, s->user ? s->user : "-");
    free(s->user);
    free(s);
    if (service->shutting_down && service->session_count == 0 && service->on_idle)
        service->on_idle(service->on_idle_arg);
}

static void on_drained_close(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        session_free(arg);
}

static void on_event(struct bufferevent *bev, short events, void *arg);

/* The last reply gets 30 s (the command timeout if shorter) to leave, on a timer of our own: a
 * peer that is gone or never reads again (a TLS peer that never did its handshake cannot be
 * written to at all, and a bufferevent's own timeouts do not run then) no longer keeps the
 * session, and SIGTERM with it, waiting forever. A write error ends it at once (on_event). */
static void close_after_flush(struct odmr_session *s)
{
    time_t command = s->service->settings.command_timeout;
    enter(s, ODMR_CLOSING);
    bufferevent_disable(s->bev, EV_READ);
    bufferevent_setcb(s->bev, NULL, on_drained_close, on_event, s);
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    bufferevent_enable(s->bev, EV_WRITE);
    deadline_start(&s->deadline, DEADLINE_CLOSE, command < 30 ? command : 30, 0);
    /* As in the SMTP engine: a TLS bufferevent may have written the last reply already,
     * inside reply_send(), so no write callback would come; this one runs on the next turn
     * of the loop (not here: the caller still holds s). */
    bufferevent_trigger(s->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

static void count_error(struct odmr_session *s)
{
    if (++s->errors < 20)
        return;
    reply_send(out(s), 421, "4.7.0", "%s Too many errors, closing", hostname(s));
    close_after_flush(s);
}

/* ---------------------------------------------------------------- failure accounting */

/* The record of peer, NULL when it has none (a record whose window has passed is free). */
static struct address_failures *failures_of(struct odmr_service *service, const char *peer)
{
    time_t now = time(NULL);
    for (size_t i = 0; i < FAILURE_SLOTS; i++) {
        struct address_failures *f = &service->failures[i];
        if (f->count > 0 && now - f->first > service->settings.failure_window)
            f->count = 0;
        if (f->count > 0 && strcmp(f->address, peer) == 0)
            return f;
    }
    return NULL;
}

/* A slot for a new record: a free one, else the record with the fewest failures, the oldest of
 * those. So addresses sprayed with one failure each never push out a record with more: to
 * evict its own record an attacker must first give every other slot as many failures, from
 * other addresses, as the evicted record held, which buys him no more guesses than using those
 * addresses directly would (docs/odmr.md). */
static struct address_failures *free_slot(struct odmr_service *service)
{
    struct address_failures *best = &service->failures[0];
    for (size_t i = 0; i < FAILURE_SLOTS && best->count > 0; i++) {
        struct address_failures *f = &service->failures[i];
        if (f->count < best->count || (f->count == best->count && f->first < best->first))
            best = f;
    }
    return best;
}

static unsigned record_address_failure(struct odmr_service *service, const char *peer)
{
    struct address_failures *f = failures_of(service, peer);
    if (f == NULL) {
        f = free_slot(service);
        memset(f, 0, sizeof *f);
        snprintf(f->address, sizeof f->address, "%s", peer);
        f->first = time(NULL);
    }
    return ++f->count;
}

/* AUTH exchanges under way from peer: each may still fail. */
static unsigned exchanges_in_flight(const struct odmr_service *service, const char *peer)
{
    unsigned n = 0;
    for (const struct odmr_session *s = service->sessions; s; s = s->next)
        n += s->exchange != NULL && strcmp(s->peer, peer) == 0;
    return n;
}

/* An exchange may start only while the failures of the address plus its exchanges under way
 * stay below the limit: parallel sessions that all send AUTH at once can never together
 * exceed it (each one would fail only after the check of the others). */
static bool address_may_start(struct odmr_session *s)
{
    const struct address_failures *f = failures_of(s->service, s->peer);
    unsigned failures = f ? f->count : 0;
    unsigned in_flight = exchanges_in_flight(s->service, s->peer);
    if (failures + in_flight < s->service->settings.max_address_failures)
        return true;
    log_warn("odmr.auth_refused", " session=%s peer=%s address_failures=%u in_flight=%u", s->id,
             s->peer, failures, in_flight);
    return false;
}

/* ---------------------------------------------------------------- EHLO / HELO */

static void send_ehlo(struct odmr_session *s)
{
    char first[300], auth[200], subject[256];
    const char *lines[6];
    size_t n = 0;
    /* Strongest first. RFC 4954 4: never offer plaintext mechanisms without TLS. RFC 2645
     * 5.1.2: CRAM-MD5 is mandatory to implement. EXTERNAL only with a verified certificate. */
    if (s->tls_active)
        snprintf(auth, sizeof auth, "AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN CRAM-MD5%s",
                 tls_peer_subject(s->bev, subject, sizeof subject) == 0 ? " EXTERNAL" : "");
    else
        snprintf(auth, sizeof auth, "AUTH SCRAM-SHA-256 CRAM-MD5");
    snprintf(first, sizeof first, "%s Hello", hostname(s));
    lines[n++] = first;
    lines[n++] = auth;
    lines[n++] = "ATRN";   /* RFC 2645 5.1.1: the reply MUST include AUTH and ATRN */
    if (s->service->settings.tls != NULL && !s->tls_active)
        lines[n++] = "STARTTLS";
    lines[n++] = "ENHANCEDSTATUSCODES";
    reply_send_lines(out(s), 250, lines, n);
}

static bool helo_argument_ok(struct odmr_session *s, const char *arg)
{
    if (arg[0] != '\0' && smtp_helo_valid(arg))
        return true;
    reply_send(out(s), 501, "5.5.4", "Syntax: EHLO domain-or-address-literal");
    count_error(s);
    return false;
}

/* RFC 5321 4.1.4: EHLO resets the session; after AUTH it would throw the identity away, so an
 * authenticated customer may not EHLO again (503). */
static bool greeting_allowed(struct odmr_session *s)
{
    if (s->user == NULL)
        return true;
    reply_send(out(s), 503, "5.5.1", "Already authenticated");
    count_error(s);
    return false;
}

static void cmd_ehlo(struct odmr_session *s, const char *arg)
{
    if (!greeting_allowed(s) || !helo_argument_ok(s, arg))
        return;
    s->esmtp = true;
    enter(s, ODMR_INITIAL);
    send_ehlo(s);
}

static void cmd_helo(struct odmr_session *s, const char *arg)
{
    if (!greeting_allowed(s) || !helo_argument_ok(s, arg))
        return;
    s->esmtp = false;
    enter(s, ODMR_INITIAL);
    reply_send(out(s), 250, NULL, "%s", hostname(s));
}

/* ---------------------------------------------------------------- STARTTLS (RFC 3207) */

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short events, void *arg);

static void cmd_starttls(struct odmr_session *s, const char *arg)
{
    if (s->service->settings.tls == NULL) {
        reply_send(out(s), 502, "5.5.1", "STARTTLS not available");
        return;
    }
    if (s->tls_active || s->user != NULL) {
        reply_send(out(s), 503, "5.5.1", s->tls_active ? "TLS already active"
                                                       : "STARTTLS after AUTH is not allowed");
        count_error(s);
        return;
    }
    if (arg[0] != '\0') {
        reply_send(out(s), 501, "5.5.4", "STARTTLS takes no argument");
        return;
    }
    /* RFC 3207 4.2 and DESIGN 4.4: input already buffered is never taken as TLS-protected. */
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
        log_warn("odmr.starttls_pipelined", " session=%s peer=%s", s->id, s->peer);
        reply_send(out(s), 554, "5.5.0", "Pipelined data after STARTTLS; closing");
        close_after_flush(s);
        return;
    }
    reply_send(out(s), 220, "2.0.0", "Ready to start TLS");
    struct bufferevent *tls = tls_start_server(s->service->base, s->bev, s->service->settings.tls);
    if (tls == NULL) {
        close_after_flush(s);
        return;
    }
    s->bev = tls;
    bufferevent_setcb(tls, on_read, NULL, on_event, s);
    set_timeout(s, s->service->settings.command_timeout);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    s->tls_active = true;
    s->esmtp = false;
    enter(s, ODMR_GREETED);
    deadline_start(&s->deadline, DEADLINE_HANDSHAKE, s->service->settings.tls_handshake_timeout,
                   0);
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

static void end_exchange(struct odmr_session *s)
{
    sasl_exchange_free(s->exchange);
    s->exchange = NULL;
    s->exchange_sent_final = false;
    line_reader_set_limit(&s->reader, COMMAND_LINE_MAX);
    enter(s, s->user ? ODMR_AUTHENTICATED : ODMR_INITIAL);
}

static void auth_succeeded(struct odmr_session *s)
{
    peer_authenticated(s);
    s->user = strdup(sasl_exchange_user(s->exchange));
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

static void on_delay_done(evutil_socket_t fd, short events, void *arg)
{
    struct odmr_session *s = arg;
    if (s->state == ODMR_CLOSING)
        return;
    if (!s->input_ended)
        bufferevent_enable(s->bev, EV_READ);
    if (s->auth_failures >= s->service->settings.max_auth_failures) {
        reply_send(out(s), 421, "4.7.0", "%s Too many authentication failures", hostname(s));
        close_after_flush(s);
        return;
    }
    reply_send(out(s), s->failure->code, s->failure->enhanced, "%s", s->failure->text);
    on_read(s->bev, s);
}

/* Every exchange that does not succeed (wrong credentials, unknown user, "*", undecodable or
 * over-long responses) is a failure: logged with the address, answered after a delay (1 s,
 * 2 s, ...), the session ends after max_auth_failures (RFC 4954 9 allows dropping it after at
 * least 3), and it counts against the address across sessions. */
static void auth_failed(struct odmr_session *s, const struct failure_reply *reply)
{
    unsigned address_failures = record_address_failure(s->service, s->peer);
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
    bufferevent_disable(s->bev, EV_READ);
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

static bool auth_allowed_now(struct odmr_session *s)
{
    if (s->user != NULL) {
        reply_send(out(s), 503, "5.5.1", "Already authenticated");
    } else if (!s->esmtp) {
        /* RFC 4954 3: AUTH is an ESMTP extension; after HELO it is out of sequence. */
        reply_send(out(s), 503, "5.5.1", s->state == ODMR_GREETED ? "Send EHLO first"
                                                                  : "AUTH needs EHLO, not HELO");
    } else if (!address_may_start(s)) {
        /* RFC 4954 6: 454 4.7.0, a temporary failure: the client should not ask for another
         * password (the one it has may be right) and the session stays (RFC 4954 9: not
         * dropped before 3 attempts); each refusal counts as an error. */
        reply_send(out(s), 454, "4.7.0", "Too many failed authentications from your address; try later");
    } else {
        return true;
    }
    count_error(s);
    return false;
}

static void cmd_auth(struct odmr_session *s, const char *arg)
{
    char mechanism[32];
    if (!auth_allowed_now(s))
        return;
    size_t len = strcspn(arg, " ");
    const struct mechanism_rule *rule = NULL;
    if (len > 0 && len < sizeof mechanism) {
        memcpy(mechanism, arg, len);
        mechanism[len] = '\0';
        rule = find_mechanism(mechanism);
    }
    if (rule == NULL || !sasl_server_supports(s->service->sasl, rule->name)) {
        reply_send(out(s), 504, "5.5.4", "Unrecognized authentication type");
        count_error(s);
        return;
    }
    if (rule->needs_tls && !s->tls_active) {
        reply_send(out(s), 538, "5.7.11", "Encryption required for requested authentication mechanism");
        count_error(s);
        return;
    }
    char binding[64], subject[256];
    bool has_binding = s->tls_active && tls_channel_binding(s->bev, binding, sizeof binding) == 0;
    bool has_subject = s->tls_active && tls_peer_subject(s->bev, subject, sizeof subject) == 0;
    s->exchange = sasl_exchange_start(s->service->sasl, rule->name, has_binding ? binding : NULL,
                                      has_subject ? subject : NULL);
    if (s->exchange == NULL) {
        reply_send(out(s), 454, "4.7.0", "Temporary authentication failure");
        return;
    }
    s->mechanism = rule->name;
    enter(s, ODMR_AUTH_EXCHANGE);
    line_reader_set_limit(&s->reader, AUTH_LINE_MAX);
    const char *initial = arg + len;
    while (*initial == ' ')
        initial++;
    /* RFC 4954 4: "=" is an empty initial response; no argument means none was sent. */
    auth_step(s, strcmp(initial, "=") == 0 ? "" : initial);
}

static void auth_response_line(struct odmr_session *s, const char *text)
{
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

/* ---------------------------------------------------------------- ATRN (RFC 2645 5.2.1) */

static void on_push_done(void *arg, const struct push_result *r)
{
    struct odmr_session *s = arg;
    log_info("odmr.push_done", " session=%s user=%s messages=%u delivered=%u deferred=%u "
             "failed=%u clean=%d reason=\"%s\"", s->id, s->user, r->messages, r->delivered,
             r->deferred, r->failed, r->clean, r->reason);
    s->bev = NULL;   /* the push freed the connection */
    session_free(s);
}

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

static bool resolve_domains(struct odmr_session *s, const char *arg, struct atrn_domains *d)
{
    const char *why = NULL;
    const struct odmr_user *u = userdb_find_user(*s->service->users, s->user);
    if (domain_list_parse(arg, &d->parsed, &why) != 0) {
        metrics_count_atrn(501);
        reply_send(out(s), 501, "5.5.4", "Syntax: ATRN [domain[,domain...]]: %s", why);
        count_error(s);
        return false;
    }
    if (u == NULL) {
        metrics_count_atrn(450);
        reply_send(out(s), 450, "4.7.1", "ATRN request refused: the user no longer exists");
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
        metrics_count_atrn(450);
        reply_send(out(s), 450, "4.7.1", "ATRN request refused: no domains for this user");
        return false;
    }
    /* RFC 2645 5.2.1: not authorized for one domain -> nothing is sent for any (450). */
    for (size_t i = 0; i < d->count; i++) {
        if (!userdb_user_has_domain(u, d->names[i])) {
            log_warn("odmr.atrn_refused", " session=%s user=%s domain=%s", s->id, s->user,
                     d->names[i]);
            metrics_count_atrn(450);
            reply_send(out(s), 450, "4.7.1", "ATRN request refused: not authorized for %s",
                       d->names[i]);
            return false;
        }
    }
    return true;
}

static void turn_around(struct odmr_session *s)
{
    const struct odmr_user *u = userdb_find_user(*s->service->users, s->user);
    struct push_request req = {
        .base = s->service->base,
        .bev = s->bev,
        .tls_active = s->tls_active,
        .queue = s->service->queue,
        .domains = (const char *const *)s->leased,
        .domain_count = s->leased_count,
        .hostname = hostname(s),
        .session_id = s->id,
        .peer = s->peer,
        .user = s->user,
        .profile = u && u->profile == ODMR_PROFILE_FAST ? PUSH_PROFILE_FAST : PUSH_PROFILE_COMPAT,
        .timeouts = s->service->settings.push_timeouts,
    };
    enter(s, ODMR_REVERSED);
    log_info("odmr.turnaround", " session=%s user=%s domains=%zu profile=%s", s->id, s->user,
             s->leased_count, req.profile == PUSH_PROFILE_FAST ? "fast" : "compat");
    bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
    if (push_start(&req, on_push_done, s) != 0) {
        s->bev = NULL;
        session_free(s);
    }
}

static void cmd_atrn(struct odmr_session *s, const char *arg)
{
    struct atrn_domains domains;
    const char *busy;
    if (s->user == NULL) {
        metrics_count_atrn(530);
        reply_send(out(s), 530, "5.7.0", "Authentication required");
        count_error(s);
        return;
    }
    if (!resolve_domains(s, arg, &domains))
        return;
    if (lease_all(s, &domains, &busy) != 0) {
        metrics_count_atrn(451);
        if (busy != NULL)
            reply_send(out(s), 451, "4.3.0", "Unable to process ATRN request now: %s is being "
                       "delivered by another session", busy);
        else
            reply_send(out(s), 451, "4.3.0", "Unable to process ATRN request now");
        return;
    }
    if (!any_mail(s)) {
        release_leases(s);
        last_atrn_record(s->user);   /* odmrctl queue summary: when the customer last polled */
        metrics_count_atrn(453);
        reply_send(out(s), 453, "4.3.0", "You have no mail");
        return;
    }
    /* DESIGN 4.4: the customer must wait for our 250 before its 220; anything already
     * buffered is a protocol error, never the next phase's input. */
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
        log_warn("odmr.atrn_pipelined", " session=%s user=%s", s->id, s->user);
        release_leases(s);
        metrics_count_atrn(554);
        reply_send(out(s), 554, "5.5.0", "Pipelined data after ATRN; closing");
        close_after_flush(s);
        return;
    }
    last_atrn_record(s->user);
    metrics_count_atrn(250);
    reply_send(out(s), 250, "2.0.0", "OK, now reversing the connection");
    turn_around(s);
}

/* ---------------------------------------------------------------- the rest */

static void cmd_quit(struct odmr_session *s, const char *arg)
{
    reply_send(out(s), 221, "2.0.0", "%s Bye", hostname(s));
    close_after_flush(s);
}

static void cmd_noop(struct odmr_session *s, const char *arg)
{
    reply_send(out(s), 250, "2.0.0", "OK");
}

typedef void (*odmr_handler)(struct odmr_session *s, const char *arg);

/* RFC 2645 5.1/5.2 and 5.4: EHLO, AUTH, ATRN and QUIT, plus STARTTLS, NOOP and RSET which do
 * no harm; every other command is 502. */
static const struct {
    const char *verb;
    odmr_handler handler;
} odmr_commands[] = {
    {"EHLO", cmd_ehlo}, {"HELO", cmd_helo}, {"AUTH", cmd_auth}, {"ATRN", cmd_atrn},
    {"STARTTLS", cmd_starttls}, {"NOOP", cmd_noop}, {"RSET", cmd_noop}, {"QUIT", cmd_quit},
};

static void command_line(struct odmr_session *s, const struct line *line)
{
    if (line->bare_lf || line->bare_cr || strlen(line->text) != line->len) {
        reply_send(out(s), 500, "5.5.2", "Command line must end with CRLF and contain no CR, LF or NUL");
        count_error(s);
        return;
    }
    size_t verb_len = strcspn(line->text, " ");
    const char *arg = line->text + verb_len;
    while (*arg == ' ')
        arg++;
    for (size_t i = 0; i < sizeof odmr_commands / sizeof odmr_commands[0]; i++) {
        if (strlen(odmr_commands[i].verb) == verb_len &&
            strncasecmp(odmr_commands[i].verb, line->text, verb_len) == 0) {
            odmr_commands[i].handler(s, arg);
            return;
        }
    }
    reply_send(out(s), 502, "5.5.1", "Command not implemented");
    count_error(s);
}

static bool auth_delay_pending(const struct odmr_session *s)
{
    return s->delay != NULL && evtimer_pending(s->delay, NULL);
}

/* Every command received before the customer ended its input has been answered: close once
 * the replies have left (as in the SMTP engine, docs/architecture.md). */
static void close_if_input_done(struct odmr_session *s)
{
    if (s->input_ended && s->state != ODMR_CLOSING && s->state != ODMR_REVERSED &&
        !auth_delay_pending(s))
        close_after_flush(s);
}

/* RFC 5321 4.5.3.2.7: a whole command line (or AUTH response) within command_timeout from when
 * the server was ready for it; octets trickling in do not extend it. A TLS handshake under way
 * keeps its own deadline; after the turnaround the push has its timeouts. */
static void next_command_deadline(struct odmr_session *s)
{
    if (s->state == ODMR_REVERSED)
        deadline_stop(&s->deadline);
    else if (s->state != ODMR_CLOSING &&
             (deadline_kind(&s->deadline) != DEADLINE_HANDSHAKE || tls_handshake_done(s->bev)))
        deadline_start(&s->deadline, DEADLINE_COMMAND, s->service->settings.command_timeout, 0);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct odmr_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    struct line line;
    if (deadline_kind(&s->deadline) == DEADLINE_NONE)
        next_command_deadline(s);   /* ready again after a failed AUTH's delay */
    while (s->state != ODMR_CLOSING && s->state != ODMR_REVERSED && !auth_delay_pending(s)) {
        enum line_status st = line_reader_next(&s->reader, in, &line);
        if (st == LINE_AGAIN)
            break;
        if (st == LINE_TOO_LONG) {
            if (s->state == ODMR_AUTH_EXCHANGE) {
                auth_failed(s, &line_too_long);
            } else {
                reply_send(out(s), 500, "5.5.2", "Line too long");
                count_error(s);
            }
            next_command_deadline(s);
            continue;
        }
        if (s->state == ODMR_AUTH_EXCHANGE)
            auth_response_line(s, line.text);
        else
            command_line(s, &line);
        next_command_deadline(s);
    }
    if (auth_delay_pending(s))
        deadline_stop(&s->deadline);   /* not ready while a failed AUTH's reply is held back */
    close_if_input_done(s);
}

/* Replies not sent yet that still can be: the one after an AUTH failure's delay, or output
 * waiting on a connection that can be written (a TLS handshake that never finished cannot). */
static bool replies_owed(struct odmr_session *s)
{
    return tls_can_write(s->bev) && (auth_delay_pending(s) || evbuffer_get_length(out(s)) > 0);
}

static void on_deadline(void *arg, enum deadline_kind kind)
{
    struct odmr_session *s = arg;
    if (s->state == ODMR_REVERSED)
        return;
    if (kind == DEADLINE_HANDSHAKE && tls_handshake_done(s->bev)) {
        next_command_deadline(s);   /* EHLO is due within command_timeout from now */
        return;
    }
    log_info("odmr.timeout", " session=%s peer=%s state=%s deadline=%s", s->id, s->peer,
             odmr_state_names[s->state], deadline_kind_name(kind));
    if (kind == DEADLINE_HANDSHAKE || kind == DEADLINE_CLOSE) {
        session_free(s);   /* nothing can be said without TLS up, or it cannot leave */
        return;
    }
    reply_send(out(s), 421, "4.4.2", "%s Timeout, closing", hostname(s));
    close_after_flush(s);
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
    struct odmr_session *s = arg;
    if ((events & BEV_EVENT_TIMEOUT) && s->state != ODMR_CLOSING) {
        log_info("odmr.timeout", " session=%s peer=%s state=%s", s->id, s->peer,
                 odmr_state_names[s->state]);
        reply_send(out(s), 421, "4.4.2", "%s Timeout, closing", hostname(s));
        close_after_flush(s);
        return;
    }
    /* The customer ended its sending side (FIN, TLS close_notify) or reading failed: the
     * replies it earned still go out, those owed after an AUTH failure's delay included, then
     * the session closes (docs/architecture.md, "the client half-closes"). */
    if ((events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && !(events & BEV_EVENT_WRITING) &&
        replies_owed(s)) {
        s->input_ended = true;
        bufferevent_disable(s->bev, EV_READ);
        close_if_input_done(s);
        return;
    }
    if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        session_free(s);
}

/* ---------------------------------------------------------------- service */

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
    if (service->sasl == NULL || service->peers == NULL || service->unauthenticated == NULL) {
        odmr_service_free(service);
        return NULL;
    }
    if (settings->auth_secret != NULL)
        sasl_server_set_secret(service->sasl, settings->auth_secret);
    service->settings.auth_secret = NULL;   /* copied; the caller's buffer may go */
    return service;
}

static struct odmr_session *session_new(struct odmr_service *service, struct bufferevent *bev,
                                        const char *peer)
{
    struct odmr_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->service = service;
    s->bev = bev;
    if (deadline_init(&s->deadline, service->base, on_deadline, s) != 0) {
        free(s);
        return NULL;
    }
    snprintf(s->id, sizeof s->id, "O%lx", ++service->next_id);
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    line_reader_init(&s->reader, COMMAND_LINE_MAX);
    s->next = service->sessions;
    if (s->next)
        s->next->prev = s;
    service->sessions = s;
    service->session_count++;
    metrics_session_opened("odmr");
    return s;
}

/* RFC 5321 3.8: a refused client gets 421 and the close (on the implicit-TLS port just the
 * close: nothing can be said before a handshake that a refused client is not worth). The
 * addresses stay counted in the session (peer_key, unauthenticated). */
static bool admit(struct odmr_service *service, evutil_socket_t fd, const char *peer_text,
                  const char *key, bool implicit_tls)
{
    const struct odmr_settings *c = &service->settings;
    const struct admission_rule rules[] = {
        {service->shutting_down || service->session_count >= c->max_sessions ||
             (implicit_tls && c->tls == NULL), NULL, 0, "max_sessions",
         "421 4.3.2 Too many sessions, try again later\r\n"},
        {false, service->peers, c->max_sessions_per_address, "max_sessions_per_address",
         "421 4.7.0 Too many connections from your address, try again later\r\n"},
        {false, service->unauthenticated, c->max_unauthenticated_per_address,
         "max_unauthenticated_per_address",
         "421 4.7.0 Too many unauthenticated connections from your address, try again later\r\n"},
    };
    const char *reason = admission_check(fd, key, rules, 3, !implicit_tls);
    if (reason != NULL)
        log_warn("odmr.refused", " peer=%s reason=%s", peer_text, reason);
    return reason == NULL;
}

void odmr_service_accept(struct odmr_service *service, evutil_socket_t fd,
                         const struct sockaddr *peer, int peer_len, bool implicit_tls)
{
    char peer_text[64], key[PEER_KEY_MAX];
    listen_peer_text(peer, peer_len, peer_text, sizeof peer_text);
    listen_peer_key(peer, peer_len, key, sizeof key);
    if (!admit(service, fd, peer_text, key, implicit_tls))
        return;
    evutil_make_socket_nonblocking(fd);
    listen_set_nodelay(fd);
    struct bufferevent *bev = implicit_tls
        ? tls_accept_socket(service->base, fd, service->settings.tls)
        : bufferevent_socket_new(service->base, fd, BEV_OPT_CLOSE_ON_FREE);
    struct odmr_session *s = bev ? session_new(service, bev, peer_text) : NULL;
    if (s == NULL) {
        peer_count_release(service->peers, key);
        peer_count_release(service->unauthenticated, key);
        if (bev)
            bufferevent_free(bev);
        else
            evutil_closesocket(fd);
        return;
    }
    snprintf(s->peer_key, sizeof s->peer_key, "%s", key);
    s->unauthenticated = true;
    s->tls_active = implicit_tls;
    log_info("odmr.start", " session=%s peer=%s tls=%s", s->id, s->peer,
             implicit_tls ? "implicit" : "none");
    bufferevent_setcb(bev, on_read, NULL, on_event, s);
    set_timeout(s, service->settings.command_timeout);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (implicit_tls)
        deadline_start(&s->deadline, DEADLINE_HANDSHAKE, service->settings.tls_handshake_timeout,
                       0);
    else
        deadline_start(&s->deadline, DEADLINE_COMMAND, service->settings.command_timeout, 0);
    reply_send(out(s), 220, NULL, "%s ESMTP odmrd ODMR service ready", hostname(s));
}

void odmr_service_shutdown(struct odmr_service *service, void (*on_idle)(void *), void *arg)
{
    service->shutting_down = true;
    service->on_idle = on_idle;
    service->on_idle_arg = arg;
    struct odmr_session *next;
    for (struct odmr_session *s = service->sessions; s; s = next) {
        next = s->next;
        if (s->state == ODMR_REVERSED || s->state == ODMR_CLOSING)
            continue;
        if (deadline_kind(&s->deadline) == DEADLINE_HANDSHAKE && !tls_handshake_done(s->bev)) {
            /* No 421 can reach it before its handshake: ended in a second, not after the
             * closing flush's 30 s (freed from the timer: on_idle must run once, below). */
            enter(s, ODMR_CLOSING);
            deadline_start(&s->deadline, DEADLINE_CLOSE, 1, 0);
            continue;
        }
        reply_send(out(s), 421, "4.3.2", "%s Service shutting down", hostname(s));
        close_after_flush(s);
    }
    push_shutdown_all();
    if (service->session_count == 0 && on_idle)
        on_idle(arg);
}

size_t odmr_service_session_count(const struct odmr_service *service)
{
    return service->session_count;
}

void odmr_service_free(struct odmr_service *service)
{
    while (service->sessions)
        session_free(service->sessions);
    sasl_server_free(service->sasl);
    peer_count_free(service->peers);
    peer_count_free(service->unauthenticated);
    free(service);
}
