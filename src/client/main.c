/* SPDX-License-Identifier: ISC */
/* odmr-client: fetch held mail over ODMR (RFC 2645) and hand it to the local MTA.
 * Settings come from settings.c (flags over the config file); the exchange runs on one
 * libevent loop: odmr.c up to the turnaround, then relay.c (the smtp_server engine) with
 * target.c behind it. */
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client.h"
#include "client/odmr.h"
#include "client/relay.h"
#include "client/settings.h"
#include "client/target.h"
#include "lib/log.h"
#include "lib/version.h"

enum {
    DEFAULT_MAX_SIZE = 50 << 20,
    BACKOFF_CAP = 3600,          /* --every: the longest wait after errors, unless --every is longer */
};

static const char usage_text[] =
    "usage: odmr-client [-c FILE] --server HOST[:PORT] --user NAME --password-file FILE\n"
    "       odmr-client -h|--help | -V|--version\n"
    "                   --deliver TARGET [--tls starttls|implicit|none] [--ca FILE]\n"
    "                   [--pin sha256:BASE64] [--tls-name NAME] [--domains a,b] [--mech MECH]\n"
    "                   [--helo NAME] [--every DURATION] [--timeout FACTOR]\n"
    "                   [--NAME-timeout DURATION] [-v]\n"
    "\n"
    "Connects to an ODMR provider (port 366 by default), authenticates, sends ATRN and\n"
    "relays the mail pushed back to TARGET, acknowledging only what TARGET accepted.\n"
    "\n"
    "  -c, --config FILE      read the settings from FILE (INI; docs/client.md lists every\n"
    "                         key); flags given on the command line override it\n"
    "  --server HOST[:PORT]   provider ([v6]:port for IPv6; default port 366)\n"
    "  --user NAME            SASL user name\n"
    "  --password-file FILE   file whose first line is the password (mode 0600 or 0400;\n"
    "                         a password is never taken from the config file)\n"
    "  --deliver TARGET       smtp:HOST:PORT, lmtp:HOST:PORT, lmtp:unix:/path,\n"
    "                         maildir:/path (%u local part, %d domain), or\n"
    "                         mda:/abs/command args (no shell; %s sender, %r recipient)\n"
    "  --tls MODE             starttls (default), implicit, or none (no PLAIN/LOGIN then)\n"
    "  --ca FILE              CA certificates to verify the provider (default: system store)\n"
    "  --pin sha256:BASE64    accept the provider only with this public key (the SHA-256 of\n"
    "                         its SubjectPublicKeyInfo, as \"odmrctl tls pin\" prints it);\n"
    "                         repeatable. Without --ca the pin alone authenticates the\n"
    "                         provider (a self-signed certificate is fine); with --ca both\n"
    "                         must hold\n"
    "  --tls-name NAME        name the provider's certificate must carry (default: HOST)\n"
    "  --domains LIST         ATRN argument (default: every domain of the user)\n"
    "  --mech MECH            SASL mechanism (default: the best offered: SCRAM-SHA-256-PLUS,\n"
    "                         SCRAM-SHA-256, PLAIN over TLS, CRAM-MD5)\n"
    "  --helo NAME            our name in EHLO and in the 220 greeting (default: host name)\n"
    "  --every DURATION       stay in the foreground and poll every DURATION (30s, 5m, 1h;\n"
    "                         +-10% jitter, back-off on errors up to 1h); SIGTERM stops it\n"
    "                         between sessions (exit 0)\n"
    "  --timeout FACTOR       multiply every timeout below (tests use < 1)\n"
    "  --connect-timeout D    TCP connect to the provider and the target (default 1m)\n"
    "  --greeting-timeout D   220 greetings (5m)        --command-timeout D  replies (5m)\n"
    "  --atrn-timeout D       the reply to ATRN (10m)   --data-init-timeout D  354 (2m)\n"
    "  --data-block-timeout D each data write (3m)      --data-end-timeout D  final dot (10m)\n"
    "  --server-command-timeout D  after the turnaround: the provider's next command (5m)\n"
    "  --server-data-timeout D     after the turnaround: each block of its data (3m)\n"
    "  -v, --verbose          log every step\n"
    "  -V, --version          the version (alone on the command line)\n"
    "\n"
    "exit codes:\n"
    "  0  mail delivered (the session turned around and ended cleanly)\n"
    "  1  no mail (453)\n"
    "  2  authentication failed\n"
    "  3  TLS or certificate failure (including a pin that does not match)\n"
    "  4  refused (450: a domain is not yours)\n"
    "  5  busy (451: another session is delivering), try later\n"
    "  6  local target unavailable (ATRN was not sent)\n"
    "  7  protocol or network error (including a timeout)\n"
    "  64 usage or configuration error\n";

static int usage_error(const char *message)
{
    fprintf(stderr, "odmr-client: %s\n(odmr-client --help for usage)\n", message);
    return EXIT_USAGE;
}

/* ---- the run ---- */

struct run {
    struct event_base *base;
    struct client_options *opts;
    struct target_spec spec;
    char helo[256];
    struct odmr *odmr;
    struct target *target;
    struct relay *relay;
    int exit_code;
};

static void on_finished(void *arg, enum client_exit code)
{
    struct run *r = arg;
    r->exit_code = (int)code;
    event_base_loopexit(r->base, NULL);
}

static void on_relay_end(void *arg)
{
    struct run *r = arg;
    const struct relay_stats *st = relay_stats(r->relay);
    r->exit_code = st->clean ? EXIT_DELIVERED : EXIT_PROTOCOL;
    log_info("client.end", " exit=%d messages=%u delivered=%u deferred=%u failed=%u clean=%d "
             "reason=\"%s\"", r->exit_code, st->messages, st->delivered, st->deferred, st->failed,
             st->clean, st->end);
    event_base_loopexit(r->base, NULL);
}

static void on_turnaround(void *arg, struct bufferevent *bev, bool tls_active)
{
    struct run *r = arg;
    const struct smtp_client_ext *caps = odmr_target_caps(r->odmr);
    r->target = target_new(r->base, &r->spec, r->opts, r->helo);
    r->relay = r->target ? relay_new(r->base, r->opts, r->target, r->helo,
                                     caps->size_max ? caps->size_max : DEFAULT_MAX_SIZE, caps->dsn,
                                     on_relay_end, r)
                         : NULL;
    if (r->relay == NULL || relay_start(r->relay, bev, r->opts->host, tls_active) != 0) {
        bufferevent_free(bev);
        on_finished(r, EXIT_PROTOCOL);
    }
}

static void default_helo(struct run *r)
{
    if (r->opts->helo != NULL) {
        snprintf(r->helo, sizeof r->helo, "%s", r->opts->helo);
        return;
    }
    if (gethostname(r->helo, sizeof r->helo) != 0 || r->helo[0] == '\0' ||
        strchr(r->helo, '.') == NULL)
        snprintf(r->helo, sizeof r->helo, "%s", "localhost.localdomain");
}

/* Exit code -> the word in the session log line, and whether --every backs off after it. */
static const struct outcome {
    int code;
    const char *name;
    bool error;
} outcomes[] = {
    {EXIT_DELIVERED, "delivered", false}, {EXIT_NO_MAIL, "no-mail", false},
    {EXIT_AUTH, "auth-failed", true},     {EXIT_TLS, "tls-failed", true},
    {EXIT_REFUSED, "refused", true},      {EXIT_BUSY, "busy", false},
    {EXIT_TARGET, "target-unavailable", true}, {EXIT_PROTOCOL, "protocol-error", true},
};

static const struct outcome *outcome_of(int code)
{
    static const struct outcome other = {-1, "error", true};
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++)
        if (outcomes[i].code == code)
            return &outcomes[i];
    return &other;
}

/* One line per session: what the operator (or the journal) needs to see. */
static void log_session(const struct run *r)
{
    static const struct relay_stats none = {0};
    const struct relay_stats *st = r->relay ? relay_stats(r->relay) : &none;
    log_info("client.session", " outcome=%s exit=%d messages=%u delivered=%u deferred=%u "
             "failed=%u bytes=%llu", outcome_of(r->exit_code)->name, r->exit_code, st->messages,
             st->delivered, st->deferred, st->failed, st->bytes);
}

static int run(struct client_options *o)
{
    char err[300];
    struct run r = {.opts = o, .exit_code = EXIT_PROTOCOL};
    if (target_parse(o->deliver, &r.spec, err, sizeof err) != 0)
        return usage_error(err);
    default_helo(&r);
    r.base = event_base_new();
    if (r.base == NULL)
        return EXIT_PROTOCOL;
    static const struct odmr_callbacks cb = {on_turnaround, on_finished};
    r.odmr = odmr_new(r.base, o, &r.spec, r.helo, &cb, &r);
    if (r.odmr == NULL)
        return EXIT_PROTOCOL;
    odmr_start(r.odmr);
    event_base_dispatch(r.base);
    log_session(&r);
    if (r.target != NULL)
        target_quit(r.target);
    relay_free(r.relay);
    target_free(r.target);
    odmr_free(r.odmr);
    event_base_free(r.base);
    return r.exit_code;
}

/* ---- --every: the daemon loop ---- */

/* every * 2^failures capped at max(1h, every), then +-10% so many customers do not poll in step. */
static double next_delay(unsigned every, unsigned failures)
{
    double cap = every > BACKOFF_CAP ? every : BACKOFF_CAP;
    double d = (double)every * (double)(1u << (failures > 20 ? 20 : failures));
    if (failures > 0 && d > cap)
        d = cap;
    return d * (0.9 + 0.2 * drand48());
}

/* SIGTERM and SIGINT stay blocked: a signal during a session is only seen after it ended. */
static int daemon_loop(struct client_options *o)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    srand48((long)time(NULL) ^ (long)getpid());
    unsigned failures = 0;
    for (;;) {
        int rc = run(o);
        failures = outcome_of(rc)->error ? failures + 1 : 0;
        double wait = next_delay(o->every, failures);
        log_info("client.wait", " seconds=%.1f failures=%u", wait, failures);
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        int sig;
        while ((sig = sigtimedwait(&stop, NULL, &ts)) < 0 && errno == EINTR)
            ;
        if (sig > 0) {
            log_info("client.stop", " signal=%d", sig);
            return 0;
        }
    }
}

int main(int argc, char **argv)
{
    struct client_options o;
    char err[512];
    if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        version_print("odmr-client");
        return 0;
    }
    settings_init(&o);
    enum settings_result parsed = settings_from_command_line(&o, argc, argv, err, sizeof err);
    if (parsed == SETTINGS_HELP)
        fputs(usage_text, stdout);
    if (parsed == SETTINGS_OK && settings_check(&o, err, sizeof err) != 0)
        parsed = SETTINGS_ERROR;
    if (parsed != SETTINGS_OK) {
        settings_free(&o);
        return parsed == SETTINGS_HELP ? 0 : usage_error(err);
    }
    log_init("odmr-client", o.verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO);
    /* Message buffers (64-256 KiB evbuffer chains) come and go for every message. glibc hands
     * chains of 128 KiB and more to mmap() and gives the top of the heap back past 128 KiB,
     * and takes the memory again at once: the page faults cost more than the copying
     * (measured: 10 faults per 100 KiB message). Setting these also stops glibc's dynamic
     * thresholds. The peak RSS is set by the peak use either way. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    signal(SIGPIPE, SIG_IGN);   /* an MDA that exits early must not kill us */
    int rc = o.every ? daemon_loop(&o) : run(&o);
    settings_free(&o);
    return rc;
}
