/* SPDX-License-Identifier: ISC */
/* ODMR (RFC 2645) before the turnaround, on the SMTP server engine: the service registers
 * AUTH (RFC 4954, through SASL: odmr_auth.c) and ATRN (RFC 2645 5.2.1: odmr_atrn.c) and hands
 * the connection to the push after its 250 to ATRN. This file holds the service, the lifetime
 * of its sessions and the turnaround; everything else of the session (greeting, EHLO,
 * STARTTLS, deadlines, error limit, half-close, shutdown) is the engine's (docs/odmr.md). */
#include "services/odmr_session.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/smtp_server.h"
#include "lib/log.h"
#include "lib/peer_count.h"
#include "platform/sasl.h"
#include "services/auth_failures.h"
#include "services/odmr_atrn.h"
#include "services/odmr_auth.h"
#include "services/odmr_session_internal.h"

/* ---------------------------------------------------------------- sessions */

struct odmr_session *odmr_session_of(struct odmr_service *service, struct smtp_session *smtp)
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

static void session_free(struct odmr_session *s)
{
    odmr_atrn_release_leases(s);
    odmr_auth_end_exchange(s);
    if (s->delay)
        event_free(s->delay);
    free(s->user);
    free(s);
}

/* The engine ends the session (QUIT, EOF, timeout, error, shutdown). */
static void hook_session_closed(void *ctx, struct smtp_session *smtp)
{
    struct odmr_session *s = smtp_session_user(smtp);
    if (s == NULL)
        return;
    odmr_auth_session_ended(s);
    s->smtp = NULL;
    session_free(s);
}

/* RFC 2645 5.1.1: the EHLO reply MUST include AUTH and ATRN. */
static size_t hook_ehlo_keywords(void *ctx, struct smtp_session *smtp, char lines[][200],
                                 size_t max)
{
    if (max < 2)
        return 0;
    odmr_auth_ehlo_keyword(smtp, lines[0], 200);
    snprintf(lines[1], 200, "ATRN");
    return 2;
}

/* ---------------------------------------------------------------- turnaround */

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
void odmr_turn_around(struct odmr_session *s)
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

/* ---------------------------------------------------------------- service */

static const struct smtp_server_hooks odmr_hooks = {
    .session_closed = hook_session_closed,
    .ehlo_keywords = hook_ehlo_keywords,
};

/* RFC 2645 5.1/5.2: AUTH and ATRN; RFC 4954 4: AUTH only after EHLO, once, never inside a
 * transaction (there is none here). */
static const struct smtp_server_command odmr_commands[] = {
    {"AUTH", SMTP_CMD_SMTP | SMTP_CMD_PRE_TLS | SMTP_CMD_PRE_AUTH | SMTP_CMD_NOT_AFTER_AUTH |
             SMTP_CMD_NEEDS_ESMTP | SMTP_CMD_NO_TXN, odmr_cmd_auth},
    {"ATRN", SMTP_CMD_SMTP, odmr_cmd_atrn},
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
    *service = (struct odmr_service){
        .base = base, .queue = queue, .users = users, .settings = *settings,
        .sasl = sasl_server_new(odmr_auth_lookup_credentials, service),
        /* every counted address holds at least one live session */
        .peers = peer_count_new(settings->max_sessions),
        .unauthenticated = peer_count_new(settings->max_sessions),
        .exchanges = peer_count_new(settings->max_sessions),
        .failures = auth_failures_new(settings->failure_window),
        .pushes = push_service_new(settings->push_open_files),
    };
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
