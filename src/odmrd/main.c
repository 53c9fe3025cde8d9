/* SPDX-License-Identifier: ISC */
/* odmrd: the provider daemon. Wires config, users, queue, TLS and the listeners together,
 * drops privileges, and runs the event loop in the foreground. */
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engines/smtp_server.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/paths.h"
#include "lib/peer_count.h"
#include "lib/version.h"
#include "odmrd/nofile.h"
#include "odmrd/user_access.h"
#include "platform/accept_guard.h"
#include "platform/listen.h"
#include "platform/sd_notify.h"
#include "platform/tls.h"
#include "services/expire.h"
#include "platform/tls_pin.h"
#include "platform/tls_reload.h"
#include "services/intake.h"
#include "services/metrics_http.h"
#include "services/notice.h"
#include "services/notice_relay.h"
#include "services/odmr_session.h"
#include "store/queue.h"
#include "store/server_secret.h"
#include "store/last_atrn.h"
#include "store/userdb.h"

enum { MAX_LISTENERS = 3 * CONFIG_LISTEN_MAX, EXIT_CONFIG = 78 };

struct daemon {
    struct config cfg;
    struct event_base *base;
    struct userdb *users;
    struct queue *queue;
    SSL_CTX *tls;
    struct intake intake;
    struct smtp_server *smtp;
    struct smtp_server *lmtp;
    struct odmr_service *odmr;
    struct expire *expire;
    struct accept_guard *guard;      /* owns the listeners */
    struct notice_relay *relay;
    struct metrics_http *metrics;    /* [metrics] listen; NULL: off */
    struct evconnlistener *listeners[MAX_LISTENERS];
    size_t listener_count;
    struct peer_count *intake_peers; /* SMTP and LMTP sessions per address */
    struct event *signals[4];
    size_t servers_busy;
    unsigned char secret[SERVER_SECRET_LEN];
    bool tls_unseen_told;     /* SIGHUP: "cannot see the TLS files" logged once */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: odmrd [-c FILE] [-t | -n]\n"
            "  -c, --config FILE  configuration file (default: %s)\n"
            "  -t, --check        check the configuration and the users file, then exit\n"
            "  -n, --changed      print the settings that differ from the defaults, then exit\n"
            "  -h, --help         this help\n"
            "  -V, --version      the version\n"
            "odmrd runs in the foreground and logs to stderr (or syslog: [server] log).\n"
            "SIGTERM stops it gracefully; SIGHUP re-reads the configuration, the users file\n"
            "and a renewed TLS certificate. See odmrd(8).\n",
            paths_default_config() ? paths_default_config()
                                   : "none: embedded defaults, paths under ./run");
}

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "%sodmrd: %s%s%s\n", log_current_sink() == LOG_SINK_JOURNAL ? "<3>" : "",
            what, detail ? ": " : "", detail ? detail : "");
    exit(EXIT_CONFIG);
}

static enum log_level parse_level(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return (enum log_level)i;
    return LOG_LEVEL_INFO;
}

static void check_listen_addresses(const struct config *cfg)
{
    char err[300];
    char *const *lists[] = {cfg->smtp_listen, cfg->lmtp_listen, cfg->odmr_listen,
                            cfg->odmr_tls_listen};
    const size_t counts[] = {cfg->smtp_listen_count, cfg->lmtp_listen_count,
                             cfg->odmr_listen_count, cfg->odmr_tls_listen_count};
    for (size_t l = 0; l < 4; l++)
        for (size_t i = 0; i < counts[l]; i++)
            if (listen_check(lists[l][i], err, sizeof err) != 0)
                fail("bad listen address", err);
    if (metrics_http_check(cfg->metrics_listen, cfg->metrics_allow_remote, err, sizeof err) != 0)
        fail("configuration error", err);
}

static bool metrics_on(const struct config *cfg)
{
    return cfg->metrics_listen != NULL && cfg->metrics_listen[0] != '\0';
}

/* Bound with the other ports, before the switch to [server] user. */
static void open_metrics(struct daemon *d)
{
    char err[300];
    if (!metrics_on(&d->cfg))
        return;
    d->metrics = metrics_http_listen(d->base, d->cfg.metrics_listen, err, sizeof err);
    if (d->metrics == NULL)
        fail("listen", err);
    log_info("listen", " address=%s service=metrics", d->cfg.metrics_listen);
}

/* After the switch: the scan reads the spool as its owner. */
static void watch_queue(struct daemon *d)
{
    char err[512];
    if (d->metrics != NULL &&
        metrics_http_watch_queue(d->metrics, d->cfg.spool, d->cfg.metrics_top_domains, err,
                                 sizeof err) != 0)
        fail("metrics", err);
}

static struct userdb *load_users(const char *path)
{
    char err[512];
    struct userdb *db = userdb_load(path, err, sizeof err);
    if (db == NULL)
        fail("cannot load the users file", err);
    return db;
}

static void load_tls(struct daemon *d)
{
    char err[512];
    int made = tls_ensure_self_signed(d->cfg.tls_cert, d->cfg.tls_key, d->cfg.hostname, err,
                                      sizeof err);
    if (made < 0)
        fail("TLS", err);
    if (made == 1)
        log_info("tls.self_signed", " cert=%s key=%s host=%s", d->cfg.tls_cert, d->cfg.tls_key,
                 d->cfg.hostname);
    d->tls = tls_server_context(d->cfg.tls_cert, d->cfg.tls_key, d->cfg.tls_ca, err, sizeof err);
    if (d->tls == NULL)
        fail("TLS", err);
    tls_reload_install(d->tls, d->cfg.tls_cert, d->cfg.tls_key);
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                      int len, void *arg)
{
    smtp_server_accept(arg, fd, addr, len);
}

static void on_accept_odmr(struct evconnlistener *listener, evutil_socket_t fd,
                           struct sockaddr *addr, int len, void *arg)
{
    odmr_service_accept(arg, fd, addr, len, false);
}

static void on_accept_odmrs(struct evconnlistener *listener, evutil_socket_t fd,
                            struct sockaddr *addr, int len, void *arg)
{
    odmr_service_accept(arg, fd, addr, len, true);
}

static void open_listeners(struct daemon *d, char *const *specs, size_t count,
                           evconnlistener_cb on_conn, void *service)
{
    char err[300];
    for (size_t i = 0; i < count; i++) {
        struct evconnlistener *l = accept_guard_listen(d->guard, specs[i], on_conn, service, err,
                                                       sizeof err);
        if (l == NULL)
            fail("listen", err);
        d->listeners[d->listener_count++] = l;
        log_info("listen", " address=%s", specs[i]);
    }
}

/* The listeners' guard against running out of descriptors (platform/accept_guard.h), with a
 * pause of one second, and the per-address counter of the intake servers (SMTP and LMTP
 * together, every address holding a live session). */
static void start_guard(struct daemon *d)
{
    char err[300];
    struct timeval pause = {1, 0};
    struct rlimit lim = {0, 0};
    d->guard = accept_guard_new(d->base, &pause, err, sizeof err);
    if (d->guard == NULL)
        fail("listen", err);
    d->intake_peers = peer_count_new(2 * (size_t)d->cfg.max_sessions);
    if (d->intake_peers == NULL)
        fail("out of memory", NULL);
    getrlimit(RLIMIT_NOFILE, &lim);
    log_info("limits", " open_files=%llu needed=%lu", (unsigned long long)lim.rlim_cur,
             nofile_needed(&d->cfg));
}

/* A TLS handshake gets [tls] handshake_timeout, never longer than the service's command
 * timeout: it is no more work for the client than a command. */
static time_t shorter(time_t a, time_t b)
{
    return a < b ? a : b;
}

static struct smtp_server *make_server(struct daemon *d, enum smtp_server_mode mode)
{
    const struct config *c = &d->cfg;
    struct smtp_server_settings settings = {
        .mode = mode,
        .hostname = c->hostname,
        .role = mode == SMTP_SERVER_LMTP ? "lmtp" : "smtp",
        .tls = mode == SMTP_SERVER_SMTP ? d->tls : NULL,
        .limits = {c->max_message_size, c->max_recipients, c->max_line_length, c->max_errors,
                   c->max_junk_commands, c->command_timeout, c->data_timeout, c->min_data_rate,
                   shorter(c->tls_handshake_timeout, c->command_timeout)},
        .hooks = &intake_hooks,
        .hooks_ctx = &d->intake,
        .max_sessions = c->max_sessions,
        .peers = d->intake_peers,   /* unix-socket peers have no address: not counted */
        .max_sessions_per_address = c->max_sessions_per_address,
    };
    struct smtp_server *server = smtp_server_new(d->base, &settings);
    if (server == NULL)
        fail("out of memory", NULL);
    return server;
}

static struct odmr_service *make_odmr_service(struct daemon *d)
{
    struct odmr_settings settings = {
        .hostname = d->cfg.hostname,
        .tls = d->tls,
        .command_timeout = d->cfg.odmr_command_timeout,
        .max_errors = d->cfg.odmr_max_errors,
        .max_junk_commands = d->cfg.max_junk_commands,
        .push_timeouts = {
            .greeting = d->cfg.push_greeting_timeout,
            .command = d->cfg.push_command_timeout,
            .data_init = d->cfg.push_data_init_timeout,
            .data_block = d->cfg.push_data_block_timeout,
            .data_end = d->cfg.push_data_end_timeout,
        },
        .max_auth_failures = d->cfg.max_auth_failures,
        .max_address_failures = d->cfg.max_address_failures,
        .failure_window = d->cfg.failure_window,
        .auth_secret = d->secret,
        .max_sessions = d->cfg.max_sessions,
        .max_sessions_per_address = d->cfg.odmr_max_sessions_per_address,
        .push_open_files = d->cfg.push_open_files,
        .max_unauthenticated_per_address = d->cfg.odmr_max_unauthenticated_per_address,
        .tls_handshake_timeout = shorter(d->cfg.tls_handshake_timeout,
                                         d->cfg.odmr_command_timeout),
    };
    struct odmr_service *service = odmr_service_new(d->base, d->queue, &d->users, &settings);
    if (service == NULL)
        fail("cannot start the ODMR service", NULL);
    return service;
}

/* docs/notices.md: without [bounce] relay, notices for domains no customer hosts stay in the
 * queue for the admin; with one, its address must resolve now. */
static void check_relay(const struct config *cfg)
{
    char err[300];
    struct sockaddr_storage addr;
    socklen_t len;
    if (cfg->bounce_relay == NULL)
        fprintf(stderr, "odmrd: warning: no [bounce] relay is configured: delivery status "
                        "notices are held in the queue (odmrctl queue list)\n");
    else if (notice_relay_resolve(cfg->bounce_relay, &addr, &len, err, sizeof err) != 0)
        fail("configuration error", err);
}

static void start_relay(struct daemon *d)
{
    char err[300] = "out of memory";
    if (d->cfg.bounce_relay == NULL) {
        log_warn("notices.held", " reason=\"no [bounce] relay\"");
        return;
    }
    struct notice_relay_settings set = {d->cfg.bounce_relay, d->cfg.bounce_postmaster,
                                        d->cfg.hostname, d->cfg.bounce_retry_min,
                                        d->cfg.bounce_retry_max, &d->users};
    d->relay = notice_relay_start(d->base, d->queue, &set, err, sizeof err);
    if (d->relay == NULL)
        fail("cannot start the notice relay", err);
}

/* Least privilege: a session is never served as root. */
static void drop_privileges(const struct config *cfg)
{
    if (geteuid() != 0)
        return;
    struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL || pw->pw_uid == 0)
        fail("[server] user: no such unprivileged account", cfg->user);
    if (mkdir(cfg->spool, 0700) == 0 || errno == EEXIST) {
        if (chown(cfg->spool, pw->pw_uid, pw->pw_gid) != 0)
            fail("cannot hand the spool to [server] user", strerror(errno));
    }
    if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        fail("cannot switch to [server] user", strerror(errno));
    log_info("privileges.dropped", " user=%s uid=%d", cfg->user, (int)pw->pw_uid);
}

static void open_queue(struct daemon *d)
{
    char err[512];
    d->queue = queue_open_fs(d->cfg.spool, d->base, d->cfg.commit_workers, err, sizeof err);
    if (d->queue == NULL)
        fail("cannot open the queue", err);
    if (server_secret_load(d->cfg.spool, d->secret, err, sizeof err) != 0)
        fail("server secret", err);
}

/* Under systemd (odmrd.service, Type=notify): READY, RELOADING, STOPPING. */
static void notify_systemd(int sent, const char *state)
{
    if (sent != 0)
        log_warn("notify.failed", " state=%s error=\"%s\"", state, strerror(errno));
}

static void on_server_idle(void *arg)
{
    struct daemon *d = arg;
    if (--d->servers_busy == 0)
        event_base_loopexit(d->base, NULL);
}

static void begin_shutdown(struct daemon *d)
{
    notify_systemd(service_notify("STOPPING=1"), "STOPPING");
    log_info("shutdown", " sessions=%zu",
             smtp_server_session_count(d->smtp) + smtp_server_session_count(d->lmtp) +
                 odmr_service_session_count(d->odmr));
    accept_guard_stop(d->guard);
    d->servers_busy = 5;
    smtp_server_shutdown(d->smtp, on_server_idle, d);
    smtp_server_shutdown(d->lmtp, on_server_idle, d);
    odmr_service_shutdown(d->odmr, on_server_idle, d);
    expire_shutdown(d->expire, on_server_idle, d);
    notice_relay_shutdown(d->relay, on_server_idle, d);
}

static void reload_users(struct daemon *d)
{
    char err[512];
    struct userdb *fresh = userdb_load(d->cfg.users, err, sizeof err);
    if (fresh == NULL) {
        log_error("users.reload_failed", " error=\"%s\" keeping=old", err);
        return;
    }
    userdb_free(d->users);
    d->users = fresh;
    log_info("users.reloaded", " users=%zu", userdb_user_count(fresh));
}

static bool differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0);
}

/* SIGHUP: the configuration file again. Applied at once: log_level, [server] users and
 * [tls] cert/key (read by the reloads that follow); any other change needs a restart and is
 * logged as such. A file that does not load is refused; the running configuration stays. */
static void reload_config(struct daemon *d)
{
    char err[512], keys[512];
    struct config fresh;
    if (d->cfg.path == NULL)
        return;
    if (config_load(&fresh, d->cfg.path, err, sizeof err) != 0) {
        log_error("config.reload_failed", " error=\"%s\" keeping=old", err);
        return;
    }
    char **running[] = {&d->cfg.log_level, &d->cfg.users, &d->cfg.tls_cert, &d->cfg.tls_key};
    char **loaded[] = {&fresh.log_level, &fresh.users, &fresh.tls_cert, &fresh.tls_key};
    char *incoming[4];
    bool applied = false;
    for (size_t i = 0; i < 4; i++) {      /* compare the rest with these aliased to the old */
        incoming[i] = *loaded[i];
        *loaded[i] = *running[i];
    }
    size_t restart = config_changed_keys(&d->cfg, &fresh, keys, sizeof keys);
    for (size_t i = 0; i < 4; i++) {      /* take the new values, leave the old to be freed */
        applied |= differs(*running[i], incoming[i]);
        *loaded[i] = *running[i];
        *running[i] = incoming[i];
    }
    config_free(&fresh);
    log_set_level(parse_level(d->cfg.log_level));
    log_info("config.reloaded", " applied=%s restart_needed=%zu", applied ? "yes" : "no",
             restart);
    if (restart > 0)
        log_warn("config.restart_needed", " keys=%s", keys);
}

/* New sessions get the new pair; running ones keep theirs. After the switch to [server] user
 * the files must be visible and readable to that account; otherwise the old pair stays. */
static void reload_tls(struct daemon *d)
{
    char err[512], pin[TLS_PIN_TEXT_MAX];
    switch (tls_reload(d->cfg.tls_cert, d->cfg.tls_key, pin, sizeof pin, err, sizeof err)) {
    case TLS_RELOAD_DONE:
        log_info("tls.reloaded", " cert=%s pin=%s", d->cfg.tls_cert, pin);
        break;
    case TLS_RELOAD_UNCHANGED:
        break;
    case TLS_RELOAD_UNSEEN:     /* said once: the layout will not change by itself */
        log_event(d->tls_unseen_told ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN, "tls.not_reloaded",
                  " error=\"%s\" keeping=old", err);
        d->tls_unseen_told = true;
        break;
    case TLS_RELOAD_FAILED:
        log_error("tls.reload_failed", " error=\"%s\" keeping=old", err);
        break;
    }
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
    struct daemon *d = arg;
    if (sig == SIGHUP) {
        notify_systemd(service_notify_reloading(), "RELOADING");
        reload_config(d);
        reload_users(d);
        reload_tls(d);
        notify_systemd(service_notify("READY=1"), "READY");
    } else {
        begin_shutdown(d);
    }
}

static void install_signals(struct daemon *d)
{
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < 3; i++) {
        d->signals[i] = evsignal_new(d->base, sigs[i], on_signal, d);
        event_add(d->signals[i], NULL);
    }
}

static void teardown(struct daemon *d)
{
    accept_guard_free(d->guard);
    last_atrn_close();
    for (size_t i = 0; i < 3; i++)
        event_free(d->signals[i]);
    smtp_server_free(d->smtp);
    smtp_server_free(d->lmtp);
    peer_count_free(d->intake_peers);
    odmr_service_free(d->odmr);
    expire_free(d->expire);
    notice_relay_free(d->relay);
    metrics_http_free(d->metrics);
    queue_close(d->queue);
    userdb_free(d->users);
    SSL_CTX_free(d->tls);
    OPENSSL_cleanse(d->secret, sizeof d->secret);
    tls_reload_free();
    event_base_free(d->base);
    config_free(&d->cfg);
}

struct options {
    const char *config_path;
    bool check_only;
    bool show_changed;
};

/* -1 to go on, else the exit code. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 't'},
        {"changed", no_argument, NULL, 'n'},      {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tnhV", longs, NULL)) != -1) {
        switch (opt) {
        case 'c': o->config_path = optarg; break;
        case 't': o->check_only = true; break;
        case 'n': o->show_changed = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': version_print("odmrd"); return 0;
        default: usage(stderr); return 64;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 64;
    }
    /* Installed: /etc/odmrd/odmrd.conf when it exists, else the embedded (FHS) defaults. */
    if (o->config_path == NULL && paths_default_config() != NULL &&
        access(paths_default_config(), F_OK) == 0)
        o->config_path = paths_default_config();
    return -1;
}

/* What both a run and -t need: logging as configured, the checks that need no port, the
 * descriptors, the users file. */
static void prepare(struct daemon *d, bool check_only)
{
    char err[512];
    log_init("odmrd", parse_level(d->cfg.log_level));
    if (strcmp(d->cfg.log, "syslog") == 0 && !check_only)
        log_use_syslog();
    if (geteuid() == 0 && d->cfg.user == NULL && !check_only)
        fail("started as root without an account to run as",
             "set [server] user = ACCOUNT (an unprivileged user) in the configuration");
    check_listen_addresses(&d->cfg);
    if (nofile_ensure(&d->cfg, err, sizeof err) != 0)
        fail("open files", err);
    d->users = load_users(d->cfg.users);
}

/* -t: the checks a run would fail on later, then the summary; the exit code. */
static int check_configuration(struct daemon *d, const char *config_path)
{
    char err[512];
    if (user_access_check(&d->cfg, err, sizeof err) != 0)
        fail("configuration error", err);
    check_relay(&d->cfg);
    printf("odmrd: configuration ok (%s, %zu users)\n",
           config_path ? config_path : "embedded defaults", userdb_user_count(d->users));
    userdb_free(d->users);
    config_free(&d->cfg);
    return 0;
}

/* The loop, the ports, the privileges dropped, the queue and the services on it. */
static void start(struct daemon *d)
{
    evthread_use_pthreads();
    d->base = event_base_new();
    if (d->base == NULL)
        fail("cannot create the event loop", NULL);
    /* Before any port opens: a SIGTERM from then on (systemctl stop while starting) is a
     * graceful stop once the loop runs, never the default action. */
    install_signals(d);
    load_tls(d);
    start_guard(d);
    d->intake = (struct intake){NULL, &d->users, d->cfg.hostname, d->cfg.postmaster,
                                d->cfg.spool, d->cfg.domain_max_messages,
                                d->cfg.domain_max_bytes, d->cfg.min_free};
    d->smtp = make_server(d, SMTP_SERVER_SMTP);
    d->lmtp = make_server(d, SMTP_SERVER_LMTP);
    open_listeners(d, d->cfg.smtp_listen, d->cfg.smtp_listen_count, on_accept, d->smtp);
    open_listeners(d, d->cfg.lmtp_listen, d->cfg.lmtp_listen_count, on_accept, d->lmtp);
    int odmr_first = (int)d->listener_count;
    open_listeners(d, d->cfg.odmr_listen, d->cfg.odmr_listen_count, on_accept_odmr, NULL);
    open_listeners(d, d->cfg.odmr_tls_listen, d->cfg.odmr_tls_listen_count, on_accept_odmrs,
                   NULL);
    open_metrics(d);
    drop_privileges(&d->cfg);
    open_queue(d);
    watch_queue(d);
    int atrn_rc = last_atrn_open(d->cfg.spool);   /* after the switch: owned by [server] user */
    if (atrn_rc != 0)
        log_warn("atrn.record_unavailable", " dir=%s/%s error=\"%s\"", d->cfg.spool,
                 LAST_ATRN_DIR, strerror(atrn_rc));
    d->intake.queue = d->queue;
    d->odmr = make_odmr_service(d);
    notice_configure(d->cfg.hostname, &d->users);
    d->expire = expire_start(d->base, d->queue, d->cfg.max_hold, d->cfg.delay_warning);
    if (d->expire == NULL)
        fail("cannot start the expiry scan", NULL);
    for (size_t i = (size_t)odmr_first; i < d->listener_count; i++)
        accept_guard_set_target(d->guard, d->listeners[i],
                                i < (size_t)odmr_first + d->cfg.odmr_listen_count ? on_accept_odmr
                                                                                  : on_accept_odmrs,
                                d->odmr);
    start_relay(d);
}

int main(int argc, char **argv)
{
    struct daemon d = {0};
    struct options o = {0};
    char err[512];
    log_init("odmrd", LOG_LEVEL_INFO);     /* fail()'s form until the configuration is read */
    int rc = parse_options(argc, argv, &o);
    if (rc >= 0)
        return rc;
    if (config_load(&d.cfg, o.config_path, err, sizeof err) != 0)
        fail("configuration error", err);
    if (o.show_changed) {
        config_print_changed(&d.cfg, stdout);
        config_free(&d.cfg);
        return 0;
    }
    prepare(&d, o.check_only);
    if (o.check_only)
        return check_configuration(&d, o.config_path);
    start(&d);
    log_info("started", " hostname=%s spool=%s users=%zu", d.cfg.hostname, d.cfg.spool,
             userdb_user_count(d.users));
    notify_systemd(service_notify("READY=1"), "READY");
    event_base_dispatch(d.base);
    log_info("stopped", "%s", "");
    teardown(&d);
    return 0;
}
