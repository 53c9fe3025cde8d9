/* SPDX-License-Identifier: ISC */
/* The metrics of docs/metrics.md: hooks into the text format, the queue snapshot of a real
 * filesystem spool (top domains and "_other", held, sizes, the oldest), the loopback check. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "services/metrics.h"
#include "services/metrics_http.h"
#include "services/metrics_queue.h"
#include "store/queue_fs.h"

/* The sample lines of one family (name, then '{' or ' '), in order, without the comments. */
static char *samples_of(const char *text, const char *name)
{
    size_t len = strlen(name), o = 0;
    char *out = calloc(1, strlen(text) + 1);
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t n = end != NULL ? (size_t)(end - line + 1) : strlen(line);
        if (strncmp(line, name, len) == 0 && (line[len] == '{' || line[len] == ' ')) {
            memcpy(out + o, line, n);
            o += n;
        }
        line += n;
    }
    return out;
}

static char *formatted(const struct metrics_queue_snapshot *snap)
{
    struct evbuffer *buf = evbuffer_new();
    metrics_format(buf, snap);
    size_t n = evbuffer_get_length(buf);
    char *text = calloc(1, n + 1);
    evbuffer_remove(buf, text, n);
    evbuffer_free(buf);
    return text;
}

static void assert_family(const char *text, const char *name, const char *expected)
{
    char *got = samples_of(text, name);
    assert_string_equal(got, expected);
    free(got);
}

static void test_counters(void **state)
{
    metrics_reset();
    metrics_session_opened("smtp");
    metrics_session_opened("smtp");
    metrics_session_closed("smtp");
    metrics_session_opened("odmr");
    metrics_session_opened("reversed");     /* odmr-client's adopted session: not counted */
    metrics_count_auth_failure();
    metrics_count_atrn(250);
    metrics_count_atrn(453);
    metrics_count_atrn(453);
    metrics_count_atrn(42);                 /* not a reply code */
    metrics_count_push_outcome("250 2.1.5 ok");
    metrics_count_push_outcome("451 4.3.0 later");
    metrics_count_push_outcome("550 5.1.1 no");
    metrics_count_push_outcome("not attempted");
    metrics_count_push_outcome(NULL);
    metrics_count_intake_reply("lmtp", 250, 3);
    metrics_count_intake_reply("smtp", 552, 1);
    char *text = formatted(NULL);
    assert_family(text, "odmrd_sessions_open",
                  "odmrd_sessions_open{service=\"smtp\"} 1\nodmrd_sessions_open{service=\"lmtp\"} 0\n"
                  "odmrd_sessions_open{service=\"odmr\"} 1\n");
    assert_family(text, "odmrd_sessions_total",
                  "odmrd_sessions_total{service=\"smtp\"} 2\nodmrd_sessions_total{service=\"lmtp\"} 0\n"
                  "odmrd_sessions_total{service=\"odmr\"} 1\n");
    assert_family(text, "odmrd_auth_failures_total", "odmrd_auth_failures_total 1\n");
    assert_family(text, "odmrd_atrn_total",
                  "odmrd_atrn_total{code=\"250\"} 1\nodmrd_atrn_total{code=\"453\"} 2\n");
    assert_family(text, "odmrd_push_recipients_total",
                  "odmrd_push_recipients_total{class=\"2xx\"} 1\n"
                  "odmrd_push_recipients_total{class=\"4xx\"} 1\n"
                  "odmrd_push_recipients_total{class=\"5xx\"} 1\n"
                  "odmrd_push_recipients_total{class=\"none\"} 2\n");
    assert_family(text, "odmrd_intake_replies_total",
                  "odmrd_intake_replies_total{service=\"smtp\",class=\"2xx\"} 0\n"
                  "odmrd_intake_replies_total{service=\"smtp\",class=\"4xx\"} 0\n"
                  "odmrd_intake_replies_total{service=\"smtp\",class=\"5xx\"} 1\n"
                  "odmrd_intake_replies_total{service=\"lmtp\",class=\"2xx\"} 3\n"
                  "odmrd_intake_replies_total{service=\"lmtp\",class=\"4xx\"} 0\n"
                  "odmrd_intake_replies_total{service=\"lmtp\",class=\"5xx\"} 0\n");
    assert_null(strstr(text, "odmrd_queue_"));   /* no snapshot: no queue families */
    free(text);
}

/* ---- the queue snapshot ---- */

static char spool[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void put(struct queue *q, const char *const *domains, size_t n, char *id)
{
    struct queue_rcpt rcpts[3] = {{0}};
    char addresses[3][64];
    for (size_t i = 0; i < n; i++) {
        snprintf(addresses[i], sizeof addresses[i], "u@%s", domains[i]);
        rcpts[i] = (struct queue_rcpt){.address = addresses[i], .domain = (char *)domains[i]};
    }
    struct queue_envelope env = {.sender = "", .helo = "h", .client_addr = "c",
                                 .protocol = "SMTP", .rcpts = rcpts, .rcpt_count = n};
    struct queue_writer *w = NULL;
    assert_int_equal(queue_put(q, &env, &w), 0);
    for (size_t i = 0; i < n; i++)          /* sizes differ by message */
        assert_int_equal(queue_write(w, "x\r\n", 3), 0);
    assert_int_equal(queue_fs_commit_sync(w), 0);
    strcpy(id, env.id);
}

static uint64_t size_of(const char *id)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof path, "%s/msg/%s", spool, id);
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* A snapshot of the spool, read as odmrd's metrics thread reads it (top_domains 1). */
static void scan_spool(struct metrics_queue_snapshot *snap)
{
    char err[256], path[128];
    struct queue *ro = queue_open_fs_existing(spool, true, err, sizeof err);
    assert_non_null(ro);
    snprintf(path, sizeof path, "%s/msg", spool);
    int msg_fd = open(path, O_RDONLY | O_DIRECTORY);
    assert_int_equal(metrics_queue_scan(ro, msg_fd, 1, snap), 0);
    close(msg_fd);
    queue_close(ro);
}

static void test_queue_snapshot(void **state)
{
    char err[256], ids[4][QUEUE_ID_MAX];
    strcpy(spool, "/tmp/odmr-metrics-XXXXXX");
    assert_non_null(mkdtemp(spool));
    struct queue *q = queue_open_fs(spool, NULL, 0, err, sizeof err);
    assert_non_null(q);
    const char *a[] = {"a.example"}, *ab[] = {"a.example", "b.example"}, *c[] = {"c.example"};
    put(q, ab, 2, ids[0]);
    put(q, a, 1, ids[1]);
    put(q, c, 1, ids[2]);
    put(q, a, 1, ids[3]);
    assert_int_equal(queue_hold(q, ids[1], true), 0);
    struct metrics_queue_snapshot snap;
    scan_spool(&snap);
    uint64_t s[4] = {size_of(ids[0]), size_of(ids[1]), size_of(ids[2]), size_of(ids[3])};
    assert_int_equal(snap.messages[METRICS_QUEUE_ACTIVE], 3);
    assert_int_equal(snap.messages[METRICS_QUEUE_HELD], 1);
    assert_int_equal(snap.bytes[METRICS_QUEUE_ACTIVE], s[0] + s[2] + s[3]);
    assert_int_equal(snap.bytes[METRICS_QUEUE_HELD], s[1]);
    assert_int_equal(snap.oldest_usec, queue_id_time_usec(ids[0]));
    assert_int_equal(snap.domain_count, 1);              /* top 1: a.example, 3 messages */
    assert_string_equal(snap.domains[0].name, "a.example");
    assert_int_equal(snap.domains[0].messages, 3);
    assert_int_equal(snap.domains[0].bytes, s[0] + s[1] + s[3]);
    assert_int_equal(snap.other_count, 2);               /* b.example and c.example */
    assert_int_equal(snap.other.messages, 2);
    assert_int_equal(snap.other.bytes, s[0] + s[2]);
    assert_int_equal(snap.journal_segments, 0);          /* a tool's commits: no journal */
    char *text = formatted(&snap);
    assert_family(text, "odmrd_journal_segments", "odmrd_journal_segments 0\n");
    assert_family(text, "odmrd_journal_oldest_segment_age_seconds",
                  "odmrd_journal_oldest_segment_age_seconds 0.000\n");
    assert_family(text, "odmrd_queue_domain_messages",
                  "odmrd_queue_domain_messages{domain=\"a.example\"} 3\n"
                  "odmrd_queue_domain_messages{domain=\"_other\"} 2\n");
    assert_family(text, "odmrd_queue_messages",
                  "odmrd_queue_messages{state=\"active\"} 3\nodmrd_queue_messages{state=\"held\"} 1\n");
    free(text);
    metrics_queue_snapshot_clear(&snap);
    queue_close(q);
    nftw(spool, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes wal/<name> with content (len octets), last changed `age` seconds ago. */
static void write_segment(const char *name, const char *content, size_t len, time_t age)
{
    char path[160];
    snprintf(path, sizeof path, "%s/wal/%s", spool, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    struct timespec times[2] = {{.tv_sec = time(NULL) - age}, {.tv_sec = time(NULL) - age}};
    assert_int_equal(futimens(fd, times), 0);
    close(fd);
}

/* Segments with records count (the oldest's age is shown), a standby of zeros does not. */
static void test_journal_gauges(void **state)
{
    char err[256], path[128], zeros[4096] = {0};
    strcpy(spool, "/tmp/odmr-metrics-XXXXXX");
    assert_non_null(mkdtemp(spool));
    struct queue *q = queue_open_fs(spool, NULL, 0, err, sizeof err);
    assert_non_null(q);
    snprintf(path, sizeof path, "%s/wal", spool);
    assert_int_equal(mkdir(path, 0700), 0);
    static const char record[] = "ODMRJ 1 8E6Y9qu9F000IJn5 3\nabc";
    write_segment("00000000000000000007", record, sizeof record - 1, 100);
    write_segment("00000000000000000008", record, sizeof record - 1, 0);
    write_segment("00000000000000000009", zeros, sizeof zeros, 500);   /* a standby */
    write_segment("00000000000000000006.tmp", record, sizeof record - 1, 900);   /* not one */
    struct metrics_queue_snapshot snap;
    scan_spool(&snap);
    assert_int_equal(snap.journal_segments, 2);
    char *text = formatted(&snap);
    assert_family(text, "odmrd_journal_segments", "odmrd_journal_segments 2\n");
    char *age_line = samples_of(text, "odmrd_journal_oldest_segment_age_seconds");
    double age = 0;
    assert_int_equal(sscanf(age_line, "odmrd_journal_oldest_segment_age_seconds %lf", &age), 1);
    assert_true(age >= 100 && age < 160);
    free(age_line);
    free(text);
    metrics_queue_snapshot_clear(&snap);
    queue_close(q);
    nftw(spool, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_loopback_check(void **state)
{
    static const struct { const char *spec; bool remote; int rc; } cases[] = {
        {NULL, false, 0},           {"", false, 0},
        {"127.0.0.1:9366", false, 0}, {"127.1.2.3:1", false, 0},
        {"[::1]:9366", false, 0},   {"[::ffff:127.0.0.1]:9366", false, 0},
        {"0.0.0.0:9366", false, -1}, {"[::]:9366", false, -1},
        {"192.0.2.1:9366", false, -1}, {"192.0.2.1:9366", true, 0},
        {"::1:9366", false, -1},    {"127.0.0.1", false, -1},
        {"127.0.0.1:65536", false, -1}, {"127.0.0.1:x", false, -1},
        {"unix:/run/m.sock", true, -1}, {"[::1]9366", false, -1},
    };
    char err[300];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (metrics_http_check(cases[i].spec, cases[i].remote, err, sizeof err) != cases[i].rc)
            fail_msg("case %zu (%s)", i, cases[i].spec ? cases[i].spec : "NULL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_queue_snapshot),
        cmocka_unit_test(test_journal_gauges),
        cmocka_unit_test(test_loopback_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
