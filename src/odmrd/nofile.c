/* SPDX-License-Identifier: ISC */
/* RLIMIT_NOFILE against the configured sessions: with the usual soft limit of 1024 and the
 * default max_sessions of 1000 per listener kind, accept() used to fail with EMFILE under
 * load. The limit is raised (up to the hard limit) or odmrd refuses to start, saying why. */
#include "odmrd/nofile.h"
#include "services/metrics_http.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

struct nofile_parts {
    unsigned long intake, odmr, push, workers, listeners, metrics;
    unsigned kinds_intake;
};

static void count_parts(const struct config *cfg, struct nofile_parts *p)
{
    p->kinds_intake = (cfg->smtp_listen_count > 0) + (cfg->lmtp_listen_count > 0);
    p->intake = (unsigned long)p->kinds_intake * cfg->max_sessions * NOFILE_PER_INTAKE;
    p->odmr = cfg->odmr_listen_count + cfg->odmr_tls_listen_count > 0
                  ? (unsigned long)cfg->max_sessions * NOFILE_PER_ODMR : 0;
    p->push = p->odmr > 0 ? cfg->push_open_files : 0;
    p->workers = cfg->commit_workers + NOFILE_SPARE_FILES;
    p->listeners = cfg->smtp_listen_count + cfg->lmtp_listen_count + cfg->odmr_listen_count +
                   cfg->odmr_tls_listen_count;
    p->metrics = cfg->metrics_listen != NULL && cfg->metrics_listen[0] != '\0' ? NOFILE_METRICS : 0;
}

unsigned long nofile_needed(const struct config *cfg)
{
    struct nofile_parts p;
    count_parts(cfg, &p);
    return p.intake + p.odmr + p.push + p.workers + p.listeners + p.metrics + NOFILE_MARGIN;
}

static void explain(const struct config *cfg, unsigned long need, unsigned long hard, char *err,
                    size_t errlen)
{
    struct nofile_parts p;
    count_parts(cfg, &p);
    snprintf(err, errlen,
             "the configuration needs %lu open files but the hard RLIMIT_NOFILE is %lu: "
             "[intake] max_sessions = %u for %u intake listener kind(s) x %d (%lu) and for ODMR "
             "x %d (%lu), [odmr] push_open_files = %lu, [intake] commit_workers = %u (+ %d spare "
             "message files), %lu listeners, %lu for [metrics], %d spare; lower [intake] "
             "max_sessions or raise the hard limit (systemd: LimitNOFILE=%lu)",
             need, hard, cfg->max_sessions, p.kinds_intake, NOFILE_PER_INTAKE, p.intake,
             NOFILE_PER_ODMR, p.odmr, p.push, cfg->commit_workers, NOFILE_SPARE_FILES,
             p.listeners, p.metrics, NOFILE_MARGIN, need);
}

/* The same in odmrd -t and at start (-t raises its own soft limit too, harmlessly, so both
 * agree). The hard limit is the administrator's: never raised, even as root. */
int nofile_ensure(const struct config *cfg, char *err, size_t errlen)
{
    struct rlimit lim;
    unsigned long need = nofile_needed(cfg);
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        snprintf(err, errlen, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    if (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur >= need)
        return 0;
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < need) {
        explain(cfg, need, (unsigned long)lim.rlim_max, err, errlen);
        return -1;
    }
    lim.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
        snprintf(err, errlen, "cannot raise RLIMIT_NOFILE to %lu: %s", need, strerror(errno));
        return -1;
    }
    return 0;
}
