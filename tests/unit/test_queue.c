/* SPDX-License-Identifier: ISC */
/* The filesystem queue: round trips, async commit, the domain index, outcomes, removal,
 * recovery after a crash, corruption handling and leases (docs/queue.md). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "lib/log.h"
#include "store/queue.h"
#include "store/queue_backend.h"
#include "store/queue_fs.h"

#define TMP_SPOOL_TEMPLATE "/tmp/odmr-queue-XXXXXX"
#include "tmp_spool.h"

/* ---- fixtures and helpers ---- */


static struct queue *open_tool_queue(void)
{
    char err[256];
    struct queue *q = queue_open_fs(spool, NULL, 0, err, sizeof err);
    if (q == NULL)
        fail_msg("queue_open_fs: %s", err);
    return q;
}

/* A daemon-style open: with an event base, so recovery runs and workers start. */
static struct queue *open_daemon_queue(struct event_base *base, unsigned workers)
{
    char err[256];
    struct queue *q = queue_open_fs(spool, base, workers, err, sizeof err);
    if (q == NULL)
        fail_msg("queue_open_fs: %s", err);
    return q;
}

static char *spool_path(const char *rel)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", spool, rel);
    return path;
}

__attribute__((format(printf, 1, 2))) static bool exists(const char *fmt, ...)
{
    char rel[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    return access(spool_path(rel), F_OK) == 0;
}

static size_t count_files(const char *rel)
{
    size_t n = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null | wc -l", spool_path(rel));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%zu", &n), 1);
    pclose(p);
    return n;
}

struct test_rcpt {
    const char *address, *domain, *notify, *orcpt;
};

static void make_envelope(struct queue_envelope *env, struct queue_rcpt *rcpts,
                          const struct test_rcpt *list, size_t n)
{
    memset(env, 0, sizeof *env);
    memset(rcpts, 0, n * sizeof *rcpts);
    env->sender = "alice@sender.example";
    env->helo = "client.sender.example";
    env->client_addr = "192.0.2.7";
    env->protocol = "ESMTP";
    env->rcpts = rcpts;
    env->rcpt_count = n;
    for (size_t i = 0; i < n; i++) {
        rcpts[i].address = (char *)list[i].address;
        rcpts[i].domain = (char *)list[i].domain;
        rcpts[i].notify = (char *)list[i].notify;
        rcpts[i].orcpt = (char *)list[i].orcpt;
    }
}

/* Stores a small message for the given recipients and returns its id in id. */
static void store_message(struct queue *q, const struct test_rcpt *list, size_t n, char *id)
{
    struct queue_envelope env;
    struct queue_rcpt rcpts[8];
    make_envelope(&env, rcpts, list, n);
    struct queue_writer *w;
    assert_int_equal(queue_put(q, &env, &w), 0);
    const char body[] = "Subject: test\r\n\r\nhello\r\n";
    assert_int_equal(queue_write(w, body, sizeof body - 1), 0);
    assert_int_equal(queue_fs_commit_sync(w), 0);
    strcpy(id, env.id);
}

struct id_list {
    char ids[32][QUEUE_ID_MAX];
    size_t count;
};

static int collect_id(const char *id, void *arg)
{
    struct id_list *l = arg;
    if (l->count < 32)
        strcpy(l->ids[l->count++], id);
    return 0;
}

static struct id_list list_domain(struct queue *q, const char *domain)
{
    struct id_list l = {0};
    assert_int_equal(queue_list_domain(q, domain, collect_id, &l), 0);
    return l;
}

static bool remove_if_finished(struct queue *q, const char *id)
{
    bool removed = false;
    assert_int_equal(queue_remove_if_finished(q, id, &removed), 0);
    return removed;
}

static void flip_byte(const char *id, off_t from_end)
{
    char rel[128];
    snprintf(rel, sizeof rel, "msg/%s", id);
    int fd = open(spool_path(rel), O_RDWR);
    assert_true(fd >= 0);
    off_t size = lseek(fd, 0, SEEK_END);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, size - from_end), 1);
    c ^= 0x20;
    assert_int_equal(pwrite(fd, &c, 1, size - from_end), 1);
    close(fd);
}

static const struct test_rcpt one_rcpt[] = {{"bob@a.example", "a.example", NULL, NULL}};

/* ---- tests ---- */

static void test_round_trip_is_byte_exact(void **state)
{
    struct queue *q = open_tool_queue();
    static const struct test_rcpt rcpts_in[] = {
        {"bob@Example.ORG", "Example.ORG", "SUCCESS,FAILURE", "rfc822;bob@example.org"},
        {"carol@example.org", "example.org", NULL, NULL},
    };
    struct queue_envelope env;
    struct queue_rcpt rcpts[2];
    make_envelope(&env, rcpts, rcpts_in, 2);
    env.sender = "";   /* null reverse-path */
    env.body = QUEUE_BODY_BINARYMIME;
    env.smtputf8 = true;
    env.ret = "HDRS";
    env.envid = "odd value %41 with\r\nCRLF and spaces";
    env.declared_size = 123456;
    env.helo = "[192.0.2.7]";

    struct queue_writer *w;
    assert_int_equal(queue_put(q, &env, &w), 0);
    assert_true(queue_id_valid(env.id));
    assert_true(env.arrival > 0);
    assert_int_equal(count_files("tmp"), 1);

    /* 200 KiB of every octet value, written in odd-sized pieces: crosses the write buffer. */
    size_t body_len = 200 * 1024 + 17;
    unsigned char *body = malloc(body_len);
    for (size_t i = 0; i < body_len; i++)
        body[i] = (unsigned char)(i * 7 + i / 251);
    for (size_t off = 0; off < body_len; off += 3001) {
        size_t n = body_len - off < 3001 ? body_len - off : 3001;
        assert_int_equal(queue_write(w, body + off, n), 0);
    }
    assert_int_equal(queue_fs_commit_sync(w), 0);
    assert_int_equal(count_files("tmp"), 0);
    assert_true(exists("msg/%s%s", env.id, ""));
    assert_true(exists("dom/example.org/%s%s", env.id, ""));

    struct queue_message *m = NULL;
    assert_int_equal(queue_message_open(q, env.id, &m), 0);
    assert_string_equal(m->env.id, env.id);
    assert_int_equal(m->env.arrival, env.arrival);
    assert_string_equal(m->env.sender, "");
    assert_int_equal(m->env.body, QUEUE_BODY_BINARYMIME);
    assert_true(m->env.smtputf8);
    assert_string_equal(m->env.ret, "HDRS");
    assert_string_equal(m->env.envid, env.envid);
    assert_int_equal(m->env.declared_size, 123456);
    assert_string_equal(m->env.helo, "[192.0.2.7]");
    assert_string_equal(m->env.client_addr, "192.0.2.7");
    assert_string_equal(m->env.protocol, "ESMTP");
    assert_int_equal(m->env.rcpt_count, 2);
    assert_string_equal(m->env.rcpts[0].address, "bob@Example.ORG");
    assert_string_equal(m->env.rcpts[0].domain, "example.org");
    assert_string_equal(m->env.rcpts[0].notify, "SUCCESS,FAILURE");
    assert_string_equal(m->env.rcpts[0].orcpt, "rfc822;bob@example.org");
    assert_null(m->env.rcpts[1].notify);
    assert_null(m->env.rcpts[1].orcpt);
    assert_int_equal(m->env.rcpts[1].state, QUEUE_RCPT_PENDING);
    assert_int_equal(m->env.body_size, body_len);

    unsigned char *read_back = malloc(body_len + 1);
    size_t got = 0;
    ssize_t n;
    while (got < body_len && (n = read(m->fd, read_back + got, body_len - got)) > 0)
        got += (size_t)n;
    assert_int_equal(got, body_len);
    assert_memory_equal(read_back, body, body_len);
    free(read_back);
    free(body);
    queue_message_close(m);
    queue_close(q);
}

struct async_state {
    struct event_base *base;
    int done, failed, expected;
    char ids[32][QUEUE_ID_MAX];
};

static void on_committed(int status, const char *id, void *arg)
{
    struct async_state *s = arg;
    if (status != 0)
        s->failed++;
    else
        strcpy(s->ids[s->done], id);
    if (++s->done == s->expected)
        event_base_loopbreak(s->base);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

static void test_async_commit_reports_on_the_loop(void **state)
{
    struct event_base *base = event_base_new();
    struct queue *q = open_daemon_queue(base, 4);
    struct async_state s = {.base = base, .expected = 20};
    for (int i = 0; i < s.expected; i++) {
        struct queue_envelope env;
        struct queue_rcpt rcpts[1];
        make_envelope(&env, rcpts, one_rcpt, 1);
        struct queue_writer *w;
        assert_int_equal(queue_put(q, &env, &w), 0);
        assert_int_equal(queue_write(w, "x\r\n", 3), 0);
        queue_commit(w, on_committed, &s);
    }
    assert_int_equal(s.done, 0);   /* never called from inside queue_commit */
    struct event *guard = evtimer_new(base, on_timeout, base);
    struct timeval five = {5, 0};
    evtimer_add(guard, &five);
    event_base_dispatch(base);
    event_free(guard);
    assert_int_equal(s.done, s.expected);
    assert_int_equal(s.failed, 0);
    assert_int_equal(count_files("msg"), (size_t)s.expected);
    assert_int_equal(list_domain(q, "a.example").count, (size_t)s.expected);
    queue_close(q);
    event_base_free(base);
}

/* on_committed without the ids (its array holds 32) */
static void count_committed(int status, const char *id, void *arg)
{
    struct async_state *s = arg;
    s->failed += status != 0;
    if (++s->done == s->expected)
        event_base_loopbreak(s->base);
}

static size_t open_descriptors(void)
{
    size_t n = 0;
    char cmd[64];
    snprintf(cmd, sizeof cmd, "ls /proc/%ld/fd | wc -l", (long)getpid());
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%zu", &n), 1);
    pclose(p);
    return n;
}

/* docs/queue.md "Spare files": a daemon queue's new message files are unnamed files made
 * ahead on a worker (nothing appears in tmp/), linked into msg/ at the commit; more messages
 * than spares fall back to tmp/<id>; an abort leaves nothing; every message reads back
 * byte-exact; closing the queue closes every spare (no descriptor left open). */
static void test_spare_files(void **state)
{
    size_t fds_before = open_descriptors();
    struct event_base *base = event_base_new();
    struct queue *q = open_daemon_queue(base, 2);
    struct timeval turn = {0, 200000};
    event_base_loopexit(base, &turn);   /* the first refill reports on the loop */
    event_base_dispatch(base);
    enum { COUNT = 40 };   /* more than the 32 spares: some files are made by name */
    struct queue_writer *w[COUNT];
    char ids[COUNT][QUEUE_ID_MAX], body[COUNT][32];
    size_t named = 0;
    for (int i = 0; i < COUNT; i++) {
        struct queue_envelope env;
        struct queue_rcpt rcpts[1];
        make_envelope(&env, rcpts, one_rcpt, 1);
        assert_int_equal(queue_put(q, &env, &w[i]), 0);
        strcpy(ids[i], env.id);
        snprintf(body[i], sizeof body[i], "message %d\r\n", i);
        assert_int_equal(queue_write(w[i], body[i], strlen(body[i])), 0);
        named += exists("tmp/%s%s", env.id, "");
        if (i == 0)
            assert_int_equal(count_files("tmp"), 0);   /* the first came from the spares */
    }
    assert_true(named > 0 && named <= COUNT - 16);
    assert_int_equal(count_files("tmp"), named);
    queue_abort(w[0]);
    struct async_state s = {.base = base, .expected = COUNT - 1};
    for (int i = 1; i < COUNT; i++)
        queue_commit(w[i], count_committed, &s);
    struct timeval five = {5, 0};
    event_base_loopexit(base, &five);
    event_base_dispatch(base);
    assert_int_equal(s.done, s.expected);
    assert_int_equal(s.failed, 0);
    assert_int_equal(count_files("tmp"), 0);
    assert_int_equal(count_files("msg"), COUNT - 1);
    assert_false(exists("msg/%s%s", ids[0], ""));
    for (int i = 1; i < COUNT; i++) {
        struct queue_message *m = NULL;
        char got[32] = {0};
        assert_int_equal(queue_message_open(q, ids[i], &m), 0);
        assert_int_equal(m->env.body_size, strlen(body[i]));
        /* the body, then the trailer (docs/queue.md "Message file") */
        assert_int_equal(read(m->fd, got, m->env.body_size), (ssize_t)strlen(body[i]));
        assert_string_equal(got, body[i]);
        queue_message_close(m);
    }
    queue_close(q);
    event_base_free(base);
    assert_int_equal(open_descriptors(), fds_before);
}

static void test_multi_domain_message_is_indexed_under_each(void **state)
{
    struct queue *q = open_tool_queue();
    static const struct test_rcpt rcpts[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@b.example", "b.example", NULL, NULL},
        {"z@a.example", "a.example", NULL, NULL},
    };
    char id[QUEUE_ID_MAX];
    store_message(q, rcpts, 3, id);
    assert_true(exists("dom/a.example/%s%s", id, ""));
    assert_true(exists("dom/b.example/%s%s", id, ""));
    assert_int_equal(list_domain(q, "a.example").count, 1);
    assert_int_equal(list_domain(q, "B.Example").count, 1);
    assert_int_equal(list_domain(q, "c.example").count, 0);
    struct id_list domains = {0};
    assert_int_equal(queue_list_domains(q, collect_id, &domains), 0);
    assert_int_equal(domains.count, 2);
    assert_string_equal(domains.ids[0], "a.example");
    assert_string_equal(domains.ids[1], "b.example");
    queue_close(q);
}

static void test_list_domain_is_isolated_and_oldest_first(void **state)
{
    struct queue *q = open_tool_queue();
    static const struct test_rcpt b_rcpt[] = {{"y@b.example", "b.example", NULL, NULL}};
    char first[QUEUE_ID_MAX], other[QUEUE_ID_MAX], second[QUEUE_ID_MAX];
    store_message(q, one_rcpt, 1, first);
    store_message(q, b_rcpt, 1, other);
    store_message(q, one_rcpt, 1, second);
    assert_true(strcmp(first, second) < 0);
    struct id_list a = list_domain(q, "a.example");
    assert_int_equal(a.count, 2);
    assert_string_equal(a.ids[0], first);
    assert_string_equal(a.ids[1], second);
    struct id_list b = list_domain(q, "b.example");
    assert_int_equal(b.count, 1);
    assert_string_equal(b.ids[0], other);
    struct id_list all = {0};
    assert_int_equal(queue_list_all(q, collect_id, &all), 0);
    assert_int_equal(all.count, 3);
    assert_int_equal(queue_list_domain(q, "../msg", collect_id, &all), EINVAL);
    assert_int_equal(all.count, 3);
    queue_close(q);
}

static void test_outcomes_then_removal(void **state)
{
    struct queue *q = open_tool_queue();
    static const struct test_rcpt rcpts[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@a.example", "a.example", NULL, NULL},
    };
    char id[QUEUE_ID_MAX];
    store_message(q, rcpts, 2, id);

    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_DONE, "250 ok"), 0);
    assert_false(remove_if_finished(q, id));
    assert_int_equal(list_domain(q, "a.example").count, 1);   /* y still pending */
    assert_int_equal(queue_fs_record_outcome(q, id, 1, QUEUE_RCPT_PENDING,
                                          "451 4.3.0 try later\r\n"),
                     0);

    struct queue_message *m;
    assert_int_equal(queue_message_open(q, id, &m), 0);
    assert_int_equal(m->env.rcpts[0].state, QUEUE_RCPT_DONE);
    assert_int_equal(m->env.rcpts[0].attempts, 1);
    assert_string_equal(m->env.rcpts[0].last_reply, "250 ok");
    assert_int_equal(m->env.rcpts[1].state, QUEUE_RCPT_PENDING);
    assert_int_equal(m->env.rcpts[1].attempts, 1);
    assert_true(m->env.rcpts[1].last_attempt > 0);
    assert_string_equal(m->env.rcpts[1].last_reply, "451 4.3.0 try later\r\n");
    queue_message_close(m);

    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_DONE, NULL), EALREADY);
    assert_int_equal(queue_fs_record_outcome(q, id, 7, QUEUE_RCPT_DONE, NULL), EINVAL);
    assert_int_equal(queue_fs_record_outcome(q, id, 1, QUEUE_RCPT_DONE, "250 2.0.0 ok"), 0);
    assert_int_equal(list_domain(q, "a.example").count, 0);
    assert_true(remove_if_finished(q, id));
    assert_false(exists("msg/%s%s", id, ""));
    assert_false(exists("dom/a.example/%s%s", id, ""));
    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_DONE, NULL), ENOENT);
    queue_close(q);
}

static void test_failed_recipient_keeps_the_message(void **state)
{
    struct queue *q = open_tool_queue();
    static const struct test_rcpt rcpts[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@b.example", "b.example", NULL, NULL},
    };
    char id[QUEUE_ID_MAX];
    store_message(q, rcpts, 2, id);
    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_FAILED, "550 5.1.1 no user"), 0);
    assert_int_equal(list_domain(q, "a.example").count, 0);   /* nothing pending there */
    assert_int_equal(list_domain(q, "b.example").count, 1);   /* other domain unaffected */
    assert_int_equal(queue_fs_record_outcome(q, id, 1, QUEUE_RCPT_DONE, "250 ok"), 0);
    assert_false(remove_if_finished(q, id));
    assert_true(exists("msg/%s%s", id, ""));
    assert_int_equal(queue_remove(q, id), 0);
    assert_false(exists("msg/%s%s", id, ""));
    assert_false(exists("dom/a.example/%s%s", id, ""));
    assert_false(exists("dom/b.example/%s%s", id, ""));
    assert_int_equal(queue_remove(q, id), ENOENT);
    queue_close(q);
}

/* docs/queue.md "Recipient states": failed -> bounced once the notice exists; bounced is final
 * and counts as finished, like done. */
static void test_bounced_recipient_is_final_and_finished(void **state)
{
    struct queue *q = open_tool_queue();
    static const struct test_rcpt rcpts[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@a.example", "a.example", NULL, NULL},
        {"z@b.example", "b.example", NULL, NULL},
    };
    char id[QUEUE_ID_MAX];
    struct queue_message *m;
    store_message(q, rcpts, 3, id);
    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_FAILED, "550 5.1.1 no"), 0);
    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_BOUNCED, "550 5.1.1 no"), 0);
    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_BOUNCED, NULL), EALREADY);
    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_PENDING, NULL), EALREADY);
    assert_int_equal(queue_fs_record_outcome(q, id, 1, QUEUE_RCPT_BOUNCED, "554 5.4.7"), 0);
    assert_int_equal(queue_fs_record_outcome(q, id, 2, QUEUE_RCPT_DONE, "250 ok"), 0);
    assert_int_equal(queue_fs_record_outcome(q, id, 2, QUEUE_RCPT_BOUNCED, NULL), EALREADY);
    assert_int_equal(queue_message_open(q, id, &m), 0);
    assert_int_equal(m->env.rcpts[0].state, QUEUE_RCPT_BOUNCED);
    assert_int_equal(m->env.rcpts[0].attempts, 2);
    assert_int_equal(m->env.rcpts[1].state, QUEUE_RCPT_BOUNCED);
    assert_string_equal(m->env.rcpts[1].last_reply, "554 5.4.7");
    queue_message_close(m);
    assert_int_equal(list_domain(q, "a.example").count, 0);
    assert_string_equal(queue_rcpt_state_name(QUEUE_RCPT_BOUNCED), "bounced");
    assert_true(remove_if_finished(q, id));   /* done + bounced: finished */
    assert_false(exists("msg/%s%s", id, ""));
    queue_close(q);
}

struct outcome_reports {
    struct event_base *base;
    int statuses[4], removed[4];
    int count, expected;
};

static void on_outcomes(int status, int removed, const char *id, void *arg)
{
    struct outcome_reports *r = arg;
    r->statuses[r->count] = status;
    r->removed[r->count] = removed;
    if (++r->count == r->expected)
        event_base_loopbreak(r->base);
}

/* The batch runs on the workers, reports on the loop, keeps submission order per message and
 * rewrites each domain entry once; the last batch removes the finished message. */
static void test_async_outcomes_run_on_the_workers(void **state)
{
    struct event_base *base = event_base_new();
    struct queue *q = open_daemon_queue(base, 4);
    static const struct test_rcpt rcpts[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@a.example", "a.example", NULL, NULL},
        {"z@b.example", "b.example", NULL, NULL},
    };
    char id[QUEUE_ID_MAX];
    store_message(q, rcpts, 3, id);
    struct outcome_reports r = {.base = base, .expected = 3};
    const struct queue_outcome first[] = {
        {0, QUEUE_RCPT_DONE, "250 ok"},
        {1, QUEUE_RCPT_PENDING, "450 busy"},
    };
    const struct queue_outcome second[] = {
        {1, QUEUE_RCPT_DONE, "250 ok"},
        {0, QUEUE_RCPT_DONE, "250 again"},   /* already final: skipped, EALREADY */
    };
    const struct queue_outcome third[] = {{2, QUEUE_RCPT_DONE, "250 ok"}};
    queue_record_outcomes_async(q, id, first, 2, true, on_outcomes, &r);
    queue_record_outcomes_async(q, id, second, 2, true, on_outcomes, &r);
    assert_int_equal(r.count, 0);   /* never from inside the call */
    queue_record_outcomes_async(q, id, third, 1, true, on_outcomes, &r);
    struct event *guard = evtimer_new(base, on_timeout, base);
    struct timeval five = {5, 0};
    evtimer_add(guard, &five);
    event_base_dispatch(base);
    event_free(guard);
    assert_int_equal(r.count, 3);
    assert_int_equal(r.statuses[0], 0);
    assert_int_equal(r.removed[0], 0);
    assert_int_equal(r.statuses[1], EALREADY);
    assert_int_equal(r.removed[1], 0);
    assert_int_equal(r.statuses[2], 0);
    assert_int_equal(r.removed[2], 1);
    assert_false(exists("msg/%s%s", id, ""));
    queue_close(q);
    event_base_free(base);
}

static void test_async_outcomes_keep_state(void **state)
{
    struct event_base *base = event_base_new();
    struct queue *q = open_daemon_queue(base, 2);
    static const struct test_rcpt rcpts[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@a.example", "a.example", NULL, NULL},
    };
    char id[QUEUE_ID_MAX];
    store_message(q, rcpts, 2, id);
    struct outcome_reports r = {.base = base, .expected = 1};
    const struct queue_outcome o[] = {
        {0, QUEUE_RCPT_FAILED, "550 5.1.1 no"},
        {1, QUEUE_RCPT_PENDING, "451 4.3.0 later"},
    };
    queue_record_outcomes_async(q, id, o, 2, true, on_outcomes, &r);
    struct event *guard = evtimer_new(base, on_timeout, base);
    struct timeval five = {5, 0};
    evtimer_add(guard, &five);
    event_base_dispatch(base);   /* the guard keeps the loop running until the report */
    event_free(guard);
    assert_int_equal(r.count, 1);
    assert_int_equal(r.statuses[0], 0);
    assert_int_equal(r.removed[0], 0);
    struct queue_message *m;
    assert_int_equal(queue_message_open(q, id, &m), 0);
    assert_int_equal(m->env.rcpts[0].state, QUEUE_RCPT_FAILED);
    assert_string_equal(m->env.rcpts[0].last_reply, "550 5.1.1 no");
    assert_int_equal(m->env.rcpts[1].state, QUEUE_RCPT_PENDING);
    assert_int_equal(m->env.rcpts[1].attempts, 1);
    queue_message_close(m);
    queue_close(q);
    event_base_free(base);
}

/* A batch that leaves every recipient done, with removal asked, is recorded by the removal
 * alone: no entry is rewritten first. A directory where the entry's temp file would go makes
 * any rewrite fail, so the first batch (removal not asked) fails and the second succeeds. */
static void test_finishing_batch_removes_without_rewriting(void **state)
{
    struct event_base *base = event_base_new();
    struct queue *q = open_daemon_queue(base, 2);
    static const struct test_rcpt rcpts[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@a.example", "a.example", NULL, NULL},
    };
    char id[QUEUE_ID_MAX], obstacle[256];
    store_message(q, rcpts, 2, id);
    snprintf(obstacle, sizeof obstacle, "%s/dom/a.example/.%s.tmp", spool, id);
    assert_int_equal(mkdir(obstacle, 0700), 0);
    struct outcome_reports r = {.base = base, .expected = 2};
    const struct queue_outcome o[] = {
        {0, QUEUE_RCPT_DONE, "250 ok"},
        {1, QUEUE_RCPT_DONE, "250 ok"},
    };
    queue_record_outcomes_async(q, id, o, 2, false, on_outcomes, &r);
    queue_record_outcomes_async(q, id, o, 2, true, on_outcomes, &r);
    struct event *guard = evtimer_new(base, on_timeout, base);
    struct timeval five = {5, 0};
    evtimer_add(guard, &five);
    event_base_dispatch(base);
    event_free(guard);
    assert_int_equal(r.count, 2);
    assert_int_equal(r.statuses[0], EISDIR);
    assert_int_equal(r.removed[0], 0);
    assert_int_equal(r.statuses[1], 0);
    assert_int_equal(r.removed[1], 1);
    assert_false(exists("msg/%s%s", id, ""));
    assert_false(exists("dom/a.example/%s%s", id, ""));
    queue_close(q);
    event_base_free(base);
}

static void test_abort_leaves_nothing(void **state)
{
    struct queue *q = open_tool_queue();
    struct queue_envelope env;
    struct queue_rcpt rcpts[1];
    make_envelope(&env, rcpts, one_rcpt, 1);
    struct queue_writer *w;
    assert_int_equal(queue_put(q, &env, &w), 0);
    assert_int_equal(queue_write(w, "partial", 7), 0);
    queue_abort(w);
    assert_int_equal(count_files("tmp"), 0);
    assert_int_equal(count_files("msg"), 0);
    assert_int_equal(list_domain(q, "a.example").count, 0);
    queue_close(q);
}

static void test_bad_envelopes_are_refused(void **state)
{
    struct queue *q = open_tool_queue();
    const char *bad_domains[] = {"../etc", "..", ".hidden", "a..b", "a/b", "", "ex ample"};
    for (size_t i = 0; i < sizeof bad_domains / sizeof bad_domains[0]; i++) {
        struct test_rcpt r = {"x@y", bad_domains[i], NULL, NULL};
        struct queue_envelope env;
        struct queue_rcpt rcpts[1];
        make_envelope(&env, rcpts, &r, 1);
        struct queue_writer *w = (struct queue_writer *)&env;   /* must be reset to NULL */
        assert_int_equal(queue_put(q, &env, &w), EINVAL);
        assert_null(w);
    }
    struct queue_envelope env;
    struct queue_rcpt rcpts[1];
    make_envelope(&env, rcpts, one_rcpt, 0);
    struct queue_writer *w;
    assert_int_not_equal(queue_put(q, &env, &w), 0);
    assert_null(w);
    assert_int_equal(count_files("tmp"), 0);
    queue_close(q);
}

static void test_corrupt_message_is_quarantined_on_open(void **state)
{
    struct queue *q = open_tool_queue();
    char id[QUEUE_ID_MAX];
    store_message(q, one_rcpt, 1, id);
    flip_byte(id, QUEUE_FS_TRAILER_LEN + 3);   /* inside the body */
    struct queue_message *m = NULL;
    assert_int_equal(queue_message_open(q, id, &m), EBADMSG);
    assert_null(m);
    assert_false(exists("msg/%s%s", id, ""));
    assert_true(exists("corrupt/%s%s", id, ""));
    assert_true(exists("corrupt/%s.a.example.state%s", id, ""));
    assert_int_equal(list_domain(q, "a.example").count, 0);
    assert_int_equal(queue_message_open(q, id, &m), ENOENT);
    assert_int_equal(queue_message_open(q, "../corrupt/x", &m), ENOENT);
    queue_close(q);
}

static void write_text(const char *rel, const char *text)
{
    FILE *f = fopen(spool_path(rel), "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_recovery_after_a_crash(void **state)
{
    struct queue *q = open_tool_queue();
    static const struct test_rcpt two_domains[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@b.example", "b.example", NULL, NULL},
    };
    char plain[QUEUE_ID_MAX], multi[QUEUE_ID_MAX], flipped[QUEUE_ID_MAX], cut[QUEUE_ID_MAX];
    store_message(q, one_rcpt, 1, plain);
    store_message(q, two_domains, 2, multi);
    store_message(q, one_rcpt, 1, flipped);
    store_message(q, one_rcpt, 1, cut);
    assert_int_equal(queue_fs_record_outcome(q, multi, 0, QUEUE_RCPT_PENDING, "421 busy"), 0);
    queue_close(q);

    char rel[128];
    write_text("tmp/0000000000000000", "uncommitted");           /* receiving at the crash */
    snprintf(rel, sizeof rel, "dom/b.example/%s", multi);
    assert_int_equal(unlink(spool_path(rel)), 0);                 /* entry lost in the crash */
    write_text("dom/a.example/0000000000ZZZZ00", "");            /* orphan: message removed */
    assert_int_equal(mkdir(spool_path("dom/c.example"), 0700), 0);
    write_text("dom/c.example/0000000000ZZZZ01", "");            /* orphan in its own dir */
    snprintf(rel, sizeof rel, "dom/a.example/.%s.tmp", plain);
    write_text(rel, "half an entry");                             /* interrupted rewrite */
    flip_byte(flipped, 40);
    snprintf(rel, sizeof rel, "msg/%s", cut);
    assert_int_equal(truncate(spool_path(rel), 60), 0);

    struct event_base *base = event_base_new();
    q = open_daemon_queue(base, 2);
    assert_int_equal(count_files("tmp"), 0);
    assert_true(exists("dom/b.example/%s%s", multi, ""));
    assert_false(exists("dom/a.example/0000000000ZZZZ00%s%s", "", ""));
    assert_false(exists("dom/c.example%s%s", "", ""));
    assert_false(exists("dom/a.example/.%s.tmp%s", plain, ""));
    assert_true(exists("corrupt/%s%s", flipped, ""));
    assert_true(exists("corrupt/%s%s", cut, ""));
    assert_false(exists("msg/%s%s", flipped, ""));
    assert_false(exists("msg/%s%s", cut, ""));

    struct id_list a = list_domain(q, "a.example");
    assert_int_equal(a.count, 2);
    assert_string_equal(a.ids[0], plain);
    assert_string_equal(a.ids[1], multi);
    assert_int_equal(list_domain(q, "b.example").count, 1);

    struct queue_message *m;   /* the kept entry still carries its outcome */
    assert_int_equal(queue_message_open(q, multi, &m), 0);
    assert_int_equal(m->env.rcpts[0].attempts, 1);
    assert_string_equal(m->env.rcpts[0].last_reply, "421 busy");
    queue_message_close(m);
    queue_close(q);
    event_base_free(base);
}

static int count_id(const char *id, void *arg)
{
    (*(size_t *)arg)++;
    return 0;
}

static size_t count_domain(struct queue *q, const char *domain)
{
    size_t n = 0;
    assert_int_equal(queue_list_domain(q, domain, count_id, &n), 0);
    return n;
}

/* A message whose file is larger than recovery reads in one go (queue_fs_recover.c). */
static void store_big_message(struct queue *q, char *id)
{
    struct queue_envelope env;
    struct queue_rcpt rcpts[1];
    make_envelope(&env, rcpts, one_rcpt, 1);
    struct queue_writer *w;
    assert_int_equal(queue_put(q, &env, &w), 0);
    static char line[1000];
    memset(line, 'x', sizeof line - 2);
    memcpy(line + sizeof line - 2, "\r\n", 2);
    for (int i = 0; i < 400; i++)
        assert_int_equal(queue_write(w, line, sizeof line), 0);
    assert_int_equal(queue_fs_commit_sync(w), 0);
    strcpy(id, env.id);
}

/* Enough messages for the recovery to check them on several threads: every damaged one, small
 * or large, is quarantined with its entries, every lost entry comes back, nothing else moves. */
static void test_recovery_of_a_large_queue(void **state)
{
    enum { COUNT = 700 };
    static const struct test_rcpt two_domains[] = {
        {"x@a.example", "a.example", NULL, NULL},
        {"y@b.example", "b.example", NULL, NULL},
    };
    static char ids[COUNT][QUEUE_ID_MAX];
    char big[QUEUE_ID_MAX], big_damaged[QUEUE_ID_MAX], rel[128];
    struct queue *q = open_tool_queue();
    for (size_t i = 0; i < COUNT; i++)
        store_message(q, i % 2 == 0 ? one_rcpt : two_domains, i % 2 == 0 ? 1 : 2, ids[i]);
    store_big_message(q, big);
    store_big_message(q, big_damaged);
    queue_close(q);
    size_t flipped = 0, lost = 0;
    for (size_t i = 0; i < COUNT; i++) {
        if (i % 100 == 50) {
            flip_byte(ids[i], QUEUE_FS_TRAILER_LEN + 3);
            flipped++;
        } else if (i % 100 == 1) {
            snprintf(rel, sizeof rel, "dom/b.example/%.*s", QUEUE_ID_MAX, ids[i]);
            assert_int_equal(unlink(spool_path(rel)), 0);
            lost++;
        }
    }
    flip_byte(big_damaged, 200000);

    struct event_base *base = event_base_new();
    q = open_daemon_queue(base, 2);
    for (size_t i = 0; i < COUNT; i++) {
        bool damaged = i % 100 == 50;
        assert_int_equal(exists("msg/%s%s", ids[i], ""), !damaged);
        assert_int_equal(exists("corrupt/%s%s", ids[i], ""), damaged);
        assert_int_equal(exists("corrupt/%s.a.example.state%s", ids[i], ""), damaged);
        assert_int_equal(exists("dom/b.example/%s%s", ids[i], ""), i % 2 == 1);
    }
    assert_true(exists("msg/%s%s", big, ""));
    assert_true(exists("corrupt/%s%s", big_damaged, ""));
    assert_int_equal(count_files("corrupt"), 2 * (flipped + 1));
    assert_int_equal(count_domain(q, "a.example"), COUNT - flipped + 1);
    assert_int_equal(count_domain(q, "b.example"), COUNT / 2);
    assert_int_equal(lost, COUNT / 100);
    queue_close(q);
    event_base_free(base);
}

static void test_damaged_entry_is_replaced_by_pending(void **state)
{
    struct queue *q = open_tool_queue();
    char id[QUEUE_ID_MAX], rel[128];
    store_message(q, one_rcpt, 1, id);
    snprintf(rel, sizeof rel, "dom/a.example/%s", id);
    write_text(rel, "ODMRD 1\nrcpt 0 done 1 2 -\n");   /* no end line: torn */
    assert_int_equal(list_domain(q, "a.example").count, 1);
    struct queue_message *m;
    assert_int_equal(queue_message_open(q, id, &m), 0);
    assert_int_equal(m->env.rcpts[0].state, QUEUE_RCPT_PENDING);
    queue_message_close(m);
    assert_true(exists("corrupt/%s.a.example.state%s", id, ""));
    queue_close(q);
}

/* odmrctl's queue: an existing spool only, never created (issue 9, defect 9). */
static void test_tool_open_creates_nothing(void **state)
{
    char err[256], missing[128];
    snprintf(missing, sizeof missing, "%s/typo", spool);
    errno = 0;
    assert_null(queue_open_fs_existing(missing, true, err, sizeof err));
    assert_int_equal(errno, ENOENT);
    assert_false(exists("typo%s%s", "", ""));
    assert_null(queue_open_fs_existing(spool, false, err, sizeof err));   /* no subdirectories */
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(err, "not an odmrd spool"));
    assert_int_equal(count_files("."), 0);
}

static void test_read_only_queue_writes_nothing(void **state)
{
    struct queue *q = open_tool_queue();
    char damaged[QUEUE_ID_MAX], corrupt[QUEUE_ID_MAX], rel[128], err[256];
    store_message(q, one_rcpt, 1, damaged);
    store_message(q, one_rcpt, 1, corrupt);
    queue_close(q);
    snprintf(rel, sizeof rel, "dom/a.example/%s", damaged);
    write_text(rel, "ODMRD 1\nrcpt 0 done 1 2 -\n");   /* torn: no end line */
    flip_byte(corrupt, QUEUE_FS_TRAILER_LEN + 3);
    q = queue_open_fs_existing(spool, true, err, sizeof err);
    assert_non_null(q);
    struct queue_message *m;
    assert_int_equal(queue_message_open(q, damaged, &m), 0);
    assert_int_equal(m->env.rcpts[0].state, QUEUE_RCPT_PENDING);   /* shown as pending ... */
    queue_message_close(m);
    assert_int_equal(queue_message_open(q, corrupt, &m), EBADMSG);
    assert_int_equal(count_files("corrupt"), 0);                    /* ... and nothing moved */
    assert_true(exists("msg/%s%s", corrupt, ""));
    assert_int_equal(list_domain(q, "a.example").count, 2);
    assert_int_equal(queue_fs_record_outcome(q, damaged, 0, QUEUE_RCPT_DONE, NULL), EROFS);
    assert_int_equal(queue_remove(q, damaged), EROFS);
    assert_int_equal(queue_lease_domain(q, "a.example"), EROFS);
    struct queue_envelope env;
    struct queue_rcpt rcpts[1];
    make_envelope(&env, rcpts, one_rcpt, 1);
    struct queue_writer *w;
    assert_int_equal(queue_put(q, &env, &w), EROFS);
    assert_null(w);
    assert_int_equal(count_files("tmp"), 0);
    assert_int_equal(count_files("lock"), 0);
    queue_close(q);
    FILE *f = fopen(spool_path(rel), "r");   /* the damaged entry is as it was */
    char text[64] = "";
    assert_non_null(f);
    assert_non_null(fgets(text, sizeof text, f));
    fclose(f);
    assert_string_equal(text, "ODMRD 1\n");
}

/* A FIFO or a symlink named like a queue id must neither hang nor be followed (issue 9,
 * defect 11a): recovery quarantines it, a read-only open reports it. */
static void test_fifo_and_symlink_in_msg_are_corrupt(void **state)
{
    static const char *const fifo_id = "0000000000FIFO01", *const link_id = "0000000000LINK01";
    char rel[128], err[256], target[256];
    struct queue *q = open_tool_queue();
    queue_close(q);
    snprintf(rel, sizeof rel, "msg/%s", fifo_id);
    assert_int_equal(mkfifo(spool_path(rel), 0600), 0);
    snprintf(target, sizeof target, "%s/elsewhere", spool);
    write_text("elsewhere", "not a message");
    snprintf(rel, sizeof rel, "msg/%s", link_id);
    assert_int_equal(symlink(target, spool_path(rel)), 0);
    alarm(20);   /* the old code blocked in open() forever */
    q = queue_open_fs_existing(spool, true, err, sizeof err);
    assert_non_null(q);
    struct queue_message *m;
    assert_int_equal(queue_message_open(q, fifo_id, &m), EBADMSG);
    assert_int_equal(queue_message_open(q, link_id, &m), EBADMSG);
    queue_close(q);
    struct event_base *base = event_base_new();
    q = open_daemon_queue(base, 1);
    alarm(0);
    assert_true(exists("corrupt/%s%s", fifo_id, ""));
    assert_true(exists("corrupt/%s%s", link_id, ""));
    assert_int_equal(count_files("msg"), 0);
    queue_close(q);
    event_base_free(base);
}

static void test_leases(void **state)
{
    struct queue *q = open_tool_queue();
    struct queue *other = open_tool_queue();
    assert_int_equal(queue_lease_domain(q, "a.example"), 0);
    assert_int_equal(queue_lease_domain(q, "A.EXAMPLE"), EBUSY);     /* same process */
    assert_int_equal(queue_lease_domain(other, "a.example"), EBUSY); /* another holder */
    /* flock on a separate open file description conflicts too. */
    int fd = open(spool_path("lock/a.example"), O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1);
    assert_int_equal(errno, EWOULDBLOCK);
    close(fd);
    assert_int_equal(queue_lease_domain(q, "b.example"), 0);
    queue_release_domain(q, "a.example");
    assert_int_equal(queue_lease_domain(other, "a.example"), 0);
    assert_int_equal(queue_lease_domain(q, "a.example"), EBUSY);
    assert_int_equal(queue_lease_domain(q, "../x"), EINVAL);
    queue_close(other);   /* closing frees its leases */
    assert_int_equal(queue_lease_domain(q, "a.example"), 0);
    queue_close(q);
}

static void test_one_daemon_per_spool(void **state)
{
    struct event_base *base = event_base_new();
    struct queue *q = open_daemon_queue(base, 1);
    char err[256];
    assert_null(queue_open_fs(spool, base, 1, err, sizeof err));
    assert_non_null(strstr(err, "in use"));
    queue_close(q);
    q = open_daemon_queue(base, 1);
    queue_close(q);
    event_base_free(base);
}

static void test_expire_scan_uses_arrival(void **state)
{
    struct queue *q = open_tool_queue();
    char id[QUEUE_ID_MAX];
    store_message(q, one_rcpt, 1, id);
    struct id_list l = {0};
    assert_int_equal(queue_expire_scan(q, 0, collect_id, &l), 0);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.ids[0], id);
    assert_int_equal(queue_expire_scan(q, 3600, collect_id, &l), 0);
    assert_int_equal(l.count, 1);
    queue_close(q);
}

static void test_ids_sort_by_time(void **state)
{
    char earlier[QUEUE_ID_MAX], later[QUEUE_ID_MAX], same[QUEUE_ID_MAX];
    struct timeval t1 = {1700000000, 999999}, t2 = {1700000001, 0};
    assert_int_equal(queue_id_generate(earlier, &t1), 0);
    assert_int_equal(queue_id_generate(later, &t2), 0);
    assert_int_equal(queue_id_generate(same, &t2), 0);
    assert_true(strcmp(earlier, later) < 0);
    assert_true(strcmp(later, same) < 0);   /* the counter orders ids of one microsecond */
    assert_int_equal(queue_id_time_usec(later), 1700000001000000LL);
    assert_int_equal(strlen(earlier), QUEUE_ID_LENGTH);
    assert_false(queue_id_valid("abc/def"));
    assert_false(queue_id_valid(""));
}

static void test_token_codec(void **state)
{
    struct queue_text t = {0};
    const char *values[] = {"", "-", "plain", "a b\r\n%\x01\xff=", NULL};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        t.len = 0;
        assert_int_equal(queue_text_token(&t, values[i]), 0);
        assert_null(strpbrk(t.data, " \r\n"));
        char *back;
        assert_int_equal(queue_token_decode(t.data, t.len, &back), 0);
        if (values[i] == NULL)
            assert_null(back);
        else
            assert_string_equal(back, values[i]);
        free(back);
    }
    char *out;
    assert_int_equal(queue_token_decode("=%00", 4, &out), EBADMSG);
    assert_int_equal(queue_token_decode("=%4", 3, &out), EBADMSG);
    assert_int_equal(queue_token_decode("x", 1, &out), EBADMSG);
    queue_text_free(&t);
}

int main(void)
{
    evthread_use_pthreads();   /* before any event_base: workers call event_active() */
    log_init("test_queue", (enum log_level)(LOG_LEVEL_ERROR + 1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_is_byte_exact, setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_async_commit_reports_on_the_loop, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_multi_domain_message_is_indexed_under_each,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_list_domain_is_isolated_and_oldest_first,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_outcomes_then_removal, setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_bounced_recipient_is_final_and_finished,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_failed_recipient_keeps_the_message, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_async_outcomes_run_on_the_workers, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_finishing_batch_removes_without_rewriting,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_async_outcomes_keep_state, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_bad_envelopes_are_refused, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_corrupt_message_is_quarantined_on_open, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_recovery_after_a_crash, setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_recovery_of_a_large_queue, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_damaged_entry_is_replaced_by_pending, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_tool_open_creates_nothing, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_read_only_queue_writes_nothing, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_fifo_and_symlink_in_msg_are_corrupt, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_leases, setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_one_daemon_per_spool, setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_expire_scan_uses_arrival, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_spare_files, setup_spool, teardown_spool),
        cmocka_unit_test(test_ids_sort_by_time),
        cmocka_unit_test(test_token_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
