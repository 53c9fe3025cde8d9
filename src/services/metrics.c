/* SPDX-License-Identifier: ISC */
/* The metric families of docs/metrics.md and their Prometheus text exposition. The label
 * values of the counters are fixed sets (services, reply classes, the reply codes 100-599), so
 * the series stay few however odmrd is used; the per-domain queue series are capped by
 * [metrics] top_domains (metrics_queue.c). */
#include "services/metrics.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/version.h"
#include "services/metrics_queue.h"

enum { SERVICE_SMTP, SERVICE_LMTP, SERVICE_ODMR, SERVICES };
enum { CLASS_2XX, CLASS_4XX, CLASS_5XX, CLASS_NONE, CLASSES };
enum { CODE_MIN = 100, CODE_MAX = 599 };

static const char *const service_names[SERVICES] = {"smtp", "lmtp", "odmr"};
static const char *const class_names[CLASSES] = {"2xx", "4xx", "5xx", "none"};

/* Commit latency: an fsync of a file and two directories, from well under a millisecond
 * (SSD, idle) to seconds (a busy or failing disk). */
static const double commit_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,    10};
enum { COMMIT_BUCKETS = sizeof commit_buckets / sizeof commit_buckets[0] };

static struct {
    uint64_t sessions_total[SERVICES];
    int64_t sessions[SERVICES];
    uint64_t auth_failures;
    uint64_t atrn[CODE_MAX - CODE_MIN + 1];
    uint64_t push[CLASSES];
    uint64_t intake[SERVICES][CLASSES];
    uint64_t commit_buckets[COMMIT_BUCKETS];   /* not cumulative; summed when written */
    uint64_t commit_count, commit_failed;
    double commit_sum;
    uint64_t queue_generation;
} m;

/* ---- hooks ---- */

static int service_index(const char *service)
{
    for (int i = 0; i < SERVICES; i++)
        if (service != NULL && strcmp(service, service_names[i]) == 0)
            return i;
    return -1;
}

/* RFC 5321 4.2.1: the first digit is the class; 2yz and 3yz are both "not a failure" here,
 * but only 2yz ends a message or a recipient, so 3yz (never seen at these points) is "none". */
static int class_of(int code)
{
    switch (code / 100) {
    case 2: return CLASS_2XX;
    case 4: return CLASS_4XX;
    case 5: return CLASS_5XX;
    default: return CLASS_NONE;
    }
}

void metrics_session_opened(const char *service)
{
    int i = service_index(service);
    if (i >= 0) {
        m.sessions_total[i]++;
        m.sessions[i]++;
    }
}

void metrics_session_closed(const char *service)
{
    int i = service_index(service);
    if (i >= 0)
        m.sessions[i]--;
}

void metrics_count_auth_failure(void)
{
    m.auth_failures++;
}

void metrics_count_atrn(int code)
{
    if (code >= CODE_MIN && code <= CODE_MAX)
        m.atrn[code - CODE_MIN]++;
}

/* A reply as received starts with its three digits (RFC 5321 4.2); anything else is "none". */
static int reply_code_of(const char *reply)
{
    int code = 0;
    for (int i = 0; i < 3; i++) {
        if (reply == NULL || reply[i] < '0' || reply[i] > '9')
            return 0;
        code = code * 10 + (reply[i] - '0');
    }
    return code;
}

void metrics_count_push_outcome(const char *reply)
{
    m.push[class_of(reply_code_of(reply))]++;
    m.queue_generation++;
}

void metrics_count_intake_reply(const char *service, int code, size_t count)
{
    int i = service_index(service);
    if (i >= 0)
        m.intake[i][class_of(code)] += count;
}

struct timed_commit {
    struct timespec start;
    queue_commit_cb cb;
    void *arg;
};

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void observe_commit(double seconds, int status)
{
    size_t b = 0;
    while (b < COMMIT_BUCKETS && seconds > commit_buckets[b])
        b++;
    if (b < COMMIT_BUCKETS)
        m.commit_buckets[b]++;
    m.commit_count++;
    m.commit_sum += seconds;
    m.commit_failed += status != 0;
    m.queue_generation++;
}

static void on_timed_commit(int status, const char *id, void *arg)
{
    struct timed_commit t = *(struct timed_commit *)arg;
    free(arg);
    observe_commit(seconds_since(&t.start), status);
    t.cb(status, id, t.arg);
}

void metrics_queue_commit(struct queue_writer *w, queue_commit_cb cb, void *arg)
{
    struct timed_commit *t = malloc(sizeof *t);
    if (t == NULL) {             /* not measured, still committed */
        queue_commit(w, cb, arg);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &t->start);
    t->cb = cb;
    t->arg = arg;
    queue_commit(w, on_timed_commit, t);
}

void metrics_queue_changed(void)
{
    m.queue_generation++;
}

uint64_t metrics_queue_generation(void)
{
    return m.queue_generation;
}

void metrics_reset(void)
{
    memset(&m, 0, sizeof m);
}

/* ---- the text format ---- */

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and line feed escaped (exposition format 0.0.4). */
static void add_label_value(struct evbuffer *out, const char *value)
{
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"')
            evbuffer_add_printf(out, "\\%c", *p);
        else if (*p == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, p, 1);
    }
}

static void sample_labelled(struct evbuffer *out, const char *name, const char *label,
                            const char *value, uint64_t n)
{
    evbuffer_add_printf(out, "%s{%s=\"", name, label);
    add_label_value(out, value);
    evbuffer_add_printf(out, "\"} %" PRIu64 "\n", n);
}

static void format_sessions(struct evbuffer *out)
{
    family(out, "odmrd_sessions_open", "gauge", "Sessions open now, by service.");
    for (int i = 0; i < SERVICES; i++)
        sample_labelled(out, "odmrd_sessions_open", "service", service_names[i],
                        (uint64_t)(m.sessions[i] > 0 ? m.sessions[i] : 0));
    family(out, "odmrd_sessions_total", "counter", "Sessions accepted since the start, by service.");
    for (int i = 0; i < SERVICES; i++)
        sample_labelled(out, "odmrd_sessions_total", "service", service_names[i],
                        m.sessions_total[i]);
}

static void format_replies(struct evbuffer *out)
{
    family(out, "odmrd_auth_failures_total", "counter",
           "Failed AUTH exchanges on the ODMR port.");
    evbuffer_add_printf(out, "odmrd_auth_failures_total %" PRIu64 "\n", m.auth_failures);
    family(out, "odmrd_atrn_total", "counter", "Replies to ATRN, by reply code.");
    for (int c = CODE_MIN; c <= CODE_MAX; c++)
        if (m.atrn[c - CODE_MIN] != 0)
            evbuffer_add_printf(out, "odmrd_atrn_total{code=\"%d\"} %" PRIu64 "\n", c,
                                m.atrn[c - CODE_MIN]);
    family(out, "odmrd_push_recipients_total", "counter",
           "Recipient outcomes of pushes, by the class of the customer's reply.");
    for (int k = 0; k < CLASSES; k++)
        sample_labelled(out, "odmrd_push_recipients_total", "class", class_names[k], m.push[k]);
    family(out, "odmrd_intake_replies_total", "counter",
           "Replies to the end of message data, by service and class.");
    for (int i = SERVICE_SMTP; i <= SERVICE_LMTP; i++)   /* the intake services */
        for (int k = 0; k < CLASS_NONE; k++)
            evbuffer_add_printf(out,
                                "odmrd_intake_replies_total{service=\"%s\",class=\"%s\"} %" PRIu64
                                "\n", service_names[i], class_names[k], m.intake[i][k]);
}

static void format_commits(struct evbuffer *out)
{
    const char *name = "odmrd_commit_duration_seconds";
    uint64_t cumulative = 0;
    family(out, name, "histogram", "Time from the end of a message to its durable commit.");
    for (size_t b = 0; b < COMMIT_BUCKETS; b++) {
        cumulative += m.commit_buckets[b];
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, commit_buckets[b],
                            cumulative);
    }
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.9f\n%s_count %" PRIu64
                        "\n", name, m.commit_count, name, m.commit_sum, name, m.commit_count);
    family(out, "odmrd_commit_failures_total", "counter",
           "Commits that failed (the message was refused with 452).");
    evbuffer_add_printf(out, "odmrd_commit_failures_total %" PRIu64 "\n", m.commit_failed);
}

static void format_queue_domains(struct evbuffer *out, const struct metrics_queue_snapshot *s)
{
    static const char *const names[] = {"odmrd_queue_domain_messages", "odmrd_queue_domain_bytes"};
    static const char *const helps[] = {
        "Messages with recipients in the domain (the top domains by messages, the rest as "
        "domain=\"" METRICS_OTHER_DOMAINS "\").",
        "Octets of the queue files of those messages."};
    for (int f = 0; f < 2; f++) {
        family(out, names[f], "gauge", helps[f]);
        for (size_t i = 0; i < s->domain_count; i++)
            sample_labelled(out, names[f], "domain", s->domains[i].name,
                            f == 0 ? s->domains[i].messages : s->domains[i].bytes);
        if (s->other_count > 0)
            sample_labelled(out, names[f], "domain", METRICS_OTHER_DOMAINS,
                            f == 0 ? s->other.messages : s->other.bytes);
    }
}

static void format_queue(struct evbuffer *out, const struct metrics_queue_snapshot *s)
{
    static const char *const states[METRICS_QUEUE_STATES] = {"active", "held"};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double now_s = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    family(out, "odmrd_queue_messages", "gauge", "Messages in the queue, by state.");
    for (int i = 0; i < METRICS_QUEUE_STATES; i++)
        sample_labelled(out, "odmrd_queue_messages", "state", states[i], s->messages[i]);
    family(out, "odmrd_queue_bytes", "gauge", "Octets of the queue files, by state.");
    for (int i = 0; i < METRICS_QUEUE_STATES; i++)
        sample_labelled(out, "odmrd_queue_bytes", "state", states[i], s->bytes[i]);
    format_queue_domains(out, s);
    family(out, "odmrd_queue_oldest_message_age_seconds", "gauge",
           "Age of the oldest message in the queue (0 when it is empty).");
    double age = s->oldest_usec > 0 ? now_s - (double)s->oldest_usec / 1e6 : 0;
    evbuffer_add_printf(out, "odmrd_queue_oldest_message_age_seconds %.3f\n", age > 0 ? age : 0);
    family(out, "odmrd_journal_segments", "gauge",
           "Commit journal segments holding records (one or two while mail arrives).");
    evbuffer_add_printf(out, "odmrd_journal_segments %zu\n", s->journal_segments);
    family(out, "odmrd_journal_oldest_segment_age_seconds", "gauge",
           "Since the oldest of them last changed (0: none); growing: checkpoints fail.");
    double journal_age = s->journal_segments > 0 ? now_s - s->journal_oldest_change : 0;
    evbuffer_add_printf(out, "odmrd_journal_oldest_segment_age_seconds %.3f\n",
                        journal_age > 0 ? journal_age : 0);
    family(out, "odmrd_queue_scan_timestamp_seconds", "gauge",
           "When the queue gauges were read from the spool.");
    evbuffer_add_printf(out, "odmrd_queue_scan_timestamp_seconds %.3f\n", s->taken);
    family(out, "odmrd_queue_scan_duration_seconds", "gauge", "How long that read took.");
    evbuffer_add_printf(out, "odmrd_queue_scan_duration_seconds %.6f\n", s->scan_seconds);
    family(out, "odmrd_queue_scan_failed", "gauge",
           "1 when the last read of the spool failed (the gauges are from the one before).");
    evbuffer_add_printf(out, "odmrd_queue_scan_failed %d\n", s->failed ? 1 : 0);
}

void metrics_format(struct evbuffer *out, const struct metrics_queue_snapshot *snap)
{
    family(out, "odmrd_build_info", "gauge", "Always 1; the version as a label.");
    evbuffer_add_printf(out, "odmrd_build_info{version=\"%s\"} 1\n", odmr_version());
    format_sessions(out);
    format_replies(out);
    format_commits(out);
    if (snap != NULL)
        format_queue(out, snap);
}
