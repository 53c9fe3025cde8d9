/* odmr-client: fetch held mail over ODMR (RFC 2645) and hand it to the local MTA.
 * Options come from a table; the exchange runs on one libevent loop: odmr.c up to the
 * turnaround, then relay.c (the smtp_server engine) with target.c behind it. */
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "client/client.h"
#include "client/odmr.h"
#include "client/relay.h"
#include "client/target.h"
#include "lib/log.h"

enum {
    DEFAULT_MAX_SIZE = 50 << 20,
    BACKOFF_CAP = 3600,          /* --every: the longest wait after errors, unless --every is longer */
    EVERY_MAX = 7 * 86400,
};

static const char usage_text[] =
    "usage: odmr-client --server HOST[:PORT] --user NAME --password-file FILE\n"
    "                   --deliver TARGET [--tls starttls|implicit|none] [--ca FILE]\n"
    "                   [--tls-name NAME] [--domains a,b] [--mech MECH] [--helo NAME]\n"
    "                   [--timeout FACTOR] [--every DURATION] [-v]\n"
    "\n"
    "Connects to an ODMR provider (port 366 by default), authenticates, sends ATRN and\n"
    "relays the mail pushed back to TARGET, acknowledging only what TARGET accepted.\n"
    "\n"
    "  --server HOST[:PORT]   provider ([v6]:port for IPv6; default port 366)\n"
    "  --user NAME            SASL user name\n"
    "  --password-file FILE   file whose first line is the password\n"
    "  --deliver TARGET       smtp:HOST:PORT, lmtp:HOST:PORT, lmtp:unix:/path,\n"
    "                         maildir:/path (%u local part, %d domain), or\n"
    "                         mda:/abs/command args (no shell; %s sender, %r recipient)\n"
    "  --tls MODE             starttls (default), implicit, or none (no PLAIN/LOGIN then)\n"
    "  --ca FILE              CA certificates to verify the provider (default: system store)\n"
    "  --tls-name NAME        name the provider's certificate must carry (default: HOST)\n"
    "  --domains LIST         ATRN argument (default: every domain of the user)\n"
    "  --mech MECH            SASL mechanism (default: the best offered: SCRAM-SHA-256-PLUS,\n"
    "                         SCRAM-SHA-256, PLAIN over TLS, CRAM-MD5)\n"
    "  --helo NAME            our name in EHLO and in the 220 greeting (default: host name)\n"
    "  --timeout FACTOR       multiply every timeout (RFC 5321 values; tests use < 1)\n"
    "  --every DURATION       stay in the foreground and poll every DURATION (30s, 5m, 1h;\n"
    "                         +-10% jitter, back-off on errors up to 1h); SIGTERM stops it\n"
    "                         between sessions (exit 0)\n"
    "  -v, --verbose          log every step\n"
    "\n"
    "exit codes:\n"
    "  0  mail delivered (the session turned around and ended cleanly)\n"
    "  1  no mail (453)\n"
    "  2  authentication failed\n"
    "  3  TLS or certificate failure\n"
    "  4  refused (450: a domain is not yours)\n"
    "  5  busy (451: another session is delivering), try later\n"
    "  6  local target unavailable (ATRN was not sent)\n"
    "  7  protocol or network error\n"
    "  64 usage or configuration error\n";

struct timeval client_timeout(const struct client_options *o, double seconds)
{
    double s = seconds * o->timeout_scale;
    if (s < 0.01)
        s = 0.01;
    struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
    return tv;
}

time_t client_timeout_seconds(const struct client_options *o, double seconds)
{
    double s = seconds * o->timeout_scale;
    return s < 1 ? 1 : (time_t)s;
}

/* ---- options ---- */

typedef int (*option_fn)(struct client_options *o, const char *arg);

static int opt_server(struct client_options *o, const char *arg)
{
    const char *port = "366";
    size_t hlen;
    const char *host = arg;
    if (arg[0] == '[') {
        const char *close = strchr(arg, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return -1;
        host = arg + 1;
        hlen = (size_t)(close - host);
        if (close[1] == ':')
            port = close + 2;
    } else {
        const char *colon = strchr(arg, ':');
        hlen = colon ? (size_t)(colon - arg) : strlen(arg);
        if (colon != NULL)
            port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof o->host || port[0] == '\0' || strlen(port) >= sizeof o->port ||
        strspn(port, "0123456789") != strlen(port))
        return -1;
    memcpy(o->host, host, hlen);
    o->host[hlen] = '\0';
    snprintf(o->port, sizeof o->port, "%s", port);
    o->server = (char *)arg;
    return 0;
}

static int opt_tls(struct client_options *o, const char *arg)
{
    static const struct { const char *name; enum tls_mode mode; } modes[] = {
        {"starttls", TLS_MODE_STARTTLS}, {"implicit", TLS_MODE_IMPLICIT}, {"none", TLS_MODE_NONE},
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(arg, modes[i].name) == 0) {
            o->tls = modes[i].mode;
            o->tls_given = true;
            return 0;
        }
    return -1;
}

static int opt_timeout(struct client_options *o, const char *arg)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno != 0 || *end != '\0' || !(v > 0) || v > 100)
        return -1;
    o->timeout_scale = v;
    return 0;
}

/* "300", "30s", "5m", "1h", "1d" */
static int opt_every(struct client_options *o, const char *arg)
{
    static const struct { char suffix; unsigned seconds; } units[] = {
        {'\0', 1}, {'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400},
    };
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno != 0 || end == arg || (end[0] != '\0' && end[1] != '\0'))
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (units[i].suffix == end[0] && v > 0 && v <= EVERY_MAX / units[i].seconds) {
            o->every = (unsigned)(v * units[i].seconds);
            return 0;
        }
    return -1;
}

#define STRING_OPTION(field)                                          \
    static int opt_##field(struct client_options *o, const char *arg) \
    {                                                                 \
        o->field = (char *)arg;                                       \
        return 0;                                                     \
    }
STRING_OPTION(user)
STRING_OPTION(password_file)
STRING_OPTION(ca)
STRING_OPTION(tls_name)
STRING_OPTION(domains)
STRING_OPTION(deliver)
STRING_OPTION(mech)
STRING_OPTION(helo)

static int opt_verbose(struct client_options *o, const char *arg)
{
    o->verbose = true;
    return 0;
}

static const struct option_rule {
    const char *name;
    int has_arg;
    option_fn apply;
} option_rules[] = {
    {"server", required_argument, opt_server},
    {"user", required_argument, opt_user},
    {"password-file", required_argument, opt_password_file},
    {"tls", required_argument, opt_tls},
    {"ca", required_argument, opt_ca},
    {"tls-name", required_argument, opt_tls_name},
    {"domains", required_argument, opt_domains},
    {"deliver", required_argument, opt_deliver},
    {"mech", required_argument, opt_mech},
    {"helo", required_argument, opt_helo},
    {"timeout", required_argument, opt_timeout},
    {"every", required_argument, opt_every},
    {"verbose", no_argument, opt_verbose},
};
enum { OPTION_COUNT = sizeof option_rules / sizeof option_rules[0] };

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "odmr-client: %s%s\n(odmr-client --help for usage)\n", what, arg);
    return EXIT_USAGE;
}

static int parse_options(int argc, char **argv, struct client_options *o)
{
    struct option longs[OPTION_COUNT + 2];
    for (size_t i = 0; i < OPTION_COUNT; i++)
        longs[i] = (struct option){option_rules[i].name, option_rules[i].has_arg, NULL, (int)i + 256};
    longs[OPTION_COUNT] = (struct option){"help", no_argument, NULL, 'h'};
    longs[OPTION_COUNT + 1] = (struct option){0};
    int ch;
    while ((ch = getopt_long(argc, argv, "vh", longs, NULL)) != -1) {
        if (ch == 'h') {
            fputs(usage_text, stdout);
            exit(0);
        }
        const struct option_rule *rule = ch == 'v' ? &option_rules[OPTION_COUNT - 1]
                                         : ch >= 256 ? &option_rules[ch - 256] : NULL;
        if (rule == NULL)
            return usage_error("unknown option", "");
        if (rule->apply(o, optarg) != 0)
            return usage_error("bad value for --", rule->name);
    }
    if (optind != argc)
        return usage_error("unexpected argument: ", argv[optind]);
    return 0;
}

static int read_password(struct client_options *o)
{
    FILE *f = fopen(o->password_file, "r");
    char line[1024];
    if (f == NULL)
        return usage_error("cannot read the password file: ", strerror(errno));
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok)
        return usage_error("the password file is empty", "");
    line[strcspn(line, "\r\n")] = '\0';
    o->password = strdup(line);
    return o->password ? 0 : EXIT_USAGE;
}

static int check_options(struct client_options *o)
{
    static const struct { const char *name; size_t offset; } required[] = {
        {"--server", offsetof(struct client_options, server)},
        {"--user", offsetof(struct client_options, user)},
        {"--password-file", offsetof(struct client_options, password_file)},
        {"--deliver", offsetof(struct client_options, deliver)},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (*(char **)((char *)o + required[i].offset) == NULL)
            return usage_error("missing required option ", required[i].name);
    if (o->mech != NULL && o->tls == TLS_MODE_NONE &&
        (strcasecmp(o->mech, "PLAIN") == 0 || strcasecmp(o->mech, "LOGIN") == 0))
        return usage_error("this --mech needs TLS (it sends the password in clear): ", o->mech);
    return read_password(o);
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
    log_info("client.end", " exit=%d messages=%u delivered=%u deferred=%u failed=%u clean=%d",
             r->exit_code, st->messages, st->delivered, st->deferred, st->failed, st->clean);
    event_base_loopexit(r->base, NULL);
}

static void on_turnaround(void *arg, struct bufferevent *bev, bool tls_active)
{
    struct run *r = arg;
    const struct target_caps *caps = odmr_target_caps(r->odmr);
    r->target = target_new(r->base, &r->spec, r->opts, r->helo);
    r->relay = r->target ? relay_new(r->base, r->opts, r->target, r->helo,
                                     caps->size ? caps->size : DEFAULT_MAX_SIZE, on_relay_end, r)
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
        return usage_error(err, "");
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
    struct client_options o = {.tls = TLS_MODE_STARTTLS, .timeout_scale = 1.0};
    int rc = parse_options(argc, argv, &o);
    if (rc == 0)
        rc = check_options(&o);
    if (rc != 0)
        return rc;
    log_init("odmr-client", o.verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO);
    /* Message buffers (64-256 KiB evbuffer chains) come and go for every message. glibc hands
     * chains of 128 KiB and more to mmap() and gives the top of the heap back past 128 KiB,
     * and takes the memory again at once: the page faults cost more than the copying
     * (measured: 10 faults per 100 KiB message). Setting these also stops glibc's dynamic
     * thresholds. The peak RSS is set by the peak use either way. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    signal(SIGPIPE, SIG_IGN);   /* an MDA that exits early must not kill us */
    rc = o.every ? daemon_loop(&o) : run(&o);
    free(o.password);
    return rc;
}
