/* SPDX-License-Identifier: ISC */
/* The filesystem queue's push path (docs/queue.md "Opening for a push"): batches of messages
 * opened on the reader threads, and outcomes recorded from the open message, whose states are
 * reused unless an index entry changed after the opening. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "store/queue.h"
#include "store/queue_fs.h"

#define TMP_SPOOL_TEMPLATE "/tmp/odmr-queue-push-XXXXXX"
#include "tmp_spool.h"


static bool spool_has(const char *dir, const char *id)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s/%s", spool, dir, id);
    return stat(path, &st) == 0;
}

/* A message for x@a.example and y@a.example (one index entry); its id in id. */
static void store_message(struct queue *q, char *id)
{
    struct queue_rcpt rcpts[2] = {{.address = "x@a.example", .domain = "a.example"},
                                  {.address = "y@a.example", .domain = "a.example"}};
    struct queue_envelope env = {.sender = "alice@sender.example", .helo = "client.example",
                                 .client_addr = "192.0.2.7", .protocol = "ESMTP",
                                 .rcpts = rcpts, .rcpt_count = 2};
    struct queue_writer *w;
    assert_int_equal(queue_put(q, &env, &w), 0);
    assert_int_equal(queue_write(w, "Subject: t\r\n\r\nhello\r\n", 21), 0);
    assert_int_equal(queue_fs_commit_sync(w), 0);
    strcpy(id, env.id);
}

/* Entries younger than 50 ms are never trusted (docs/queue.md): let them settle. */
static void settle(void)
{
    struct timespec t = {0, 80 * 1000 * 1000};
    nanosleep(&t, NULL);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

/* Runs the loop until the expected reports came (or 5 s). */
static void run_loop(struct event_base *base)
{
    struct event *guard = evtimer_new(base, on_timeout, base);
    struct timeval five = {5, 0};
    evtimer_add(guard, &five);
    event_base_dispatch(base);
    event_free(guard);
}

struct opened {
    struct event_base *base;
    int statuses[4];
    struct queue_message *m[4];
    const char *args[4];
    int count, expected;
};

static void on_opened(int status, struct queue_message *m, void *arg)
{
    struct opened *o = *(struct opened **)arg;
    o->statuses[o->count] = status;
    o->m[o->count] = m;
    o->args[o->count] = ((const char **)arg)[1];
    if (++o->count == o->expected)
        event_base_loopbreak(o->base);
}

struct recorded {
    struct event_base *base;
    int status, removed, count;
};

static void on_recorded(int status, int removed, const char *id, void *arg)
{
    struct recorded *r = arg;
    r->status = status;
    r->removed = removed;
    r->count++;
    event_base_loopbreak(r->base);
}

/* Opens id in a batch of one and returns the message. */
static struct queue_message *open_async(struct queue *q, struct event_base *base, const char *id)
{
    struct opened o = {.base = base, .expected = 1};
    void *arg[2] = {&o, (void *)"only"};
    struct queue_open_request req = {id, arg};
    queue_messages_open_async(q, &req, 1, on_opened);
    run_loop(base);
    assert_int_equal(o.count, 1);
    assert_int_equal(o.statuses[0], 0);
    return o.m[0];
}

static struct recorded record_from(struct queue *q, struct event_base *base,
                                   const struct queue_message *m, const struct queue_outcome *o,
                                   size_t n)
{
    struct recorded r = {.base = base};
    queue_record_message_outcomes_async(q, m, o, n, true, on_recorded, &r);
    run_loop(base);
    assert_int_equal(r.count, 1);
    return r;
}

/* A daemon-style queue with one stored, settled message, opened for a push. */
struct fixture {
    struct event_base *base;
    struct queue *q;
    char id[QUEUE_ID_MAX];
    struct queue_message *m;
};

static void fixture_start(struct fixture *f)
{
    char err[256];
    f->base = event_base_new();
    f->q = queue_open_fs(spool, f->base, 2, err, sizeof err);
    assert_non_null(f->q);
    store_message(f->q, f->id);
    settle();
    f->m = open_async(f->q, f->base, f->id);
}

static void fixture_end(struct fixture *f)
{
    queue_close(f->q);
    event_base_free(f->base);
}

/* A batch: every request answered once, in order, with its own arg, off the calling stack; a
 * missing message as ENOENT, the others with their states. */
static void test_batch_reports_each_in_order(void **state)
{
    struct event_base *base = event_base_new();
    char err[256], a[QUEUE_ID_MAX], b[QUEUE_ID_MAX];
    struct queue *q = queue_open_fs(spool, base, 2, err, sizeof err);
    assert_non_null(q);
    store_message(q, a);
    store_message(q, b);
    struct opened o = {.base = base, .expected = 3};
    void *args[3][2] = {{&o, (void *)"first"}, {&o, (void *)"missing"}, {&o, (void *)"third"}};
    struct queue_open_request req[3] = {{b, args[0]}, {"8NoSuchId000aaaa", args[1]},
                                        {a, args[2]}};
    queue_messages_open_async(q, req, 3, on_opened);
    assert_int_equal(o.count, 0);   /* never from inside the call */
    run_loop(base);
    assert_int_equal(o.count, 3);
    assert_string_equal(o.args[0], "first");
    assert_string_equal(o.args[1], "missing");
    assert_string_equal(o.args[2], "third");
    assert_int_equal(o.statuses[0], 0);
    assert_string_equal(o.m[0]->env.id, b);
    assert_int_equal(o.statuses[1], ENOENT);
    assert_null(o.m[1]);
    assert_int_equal(o.statuses[2], 0);
    assert_string_equal(o.m[2]->env.id, a);
    assert_int_equal(o.m[2]->env.rcpt_count, 2);
    assert_int_equal(o.m[2]->env.rcpts[1].state, QUEUE_RCPT_PENDING);
    queue_message_close(o.m[0]);
    queue_message_close(o.m[2]);
    queue_close(q);
    event_base_free(base);
}

/* From the open message: both delivered, the message removed. */
static void test_record_from_open_message(void **state)
{
    struct fixture f;
    fixture_start(&f);
    const struct queue_outcome o[] = {{0, QUEUE_RCPT_DONE, "250 ok"},
                                      {1, QUEUE_RCPT_DONE, "250 ok"}};
    struct recorded r = record_from(f.q, f.base, f.m, o, 2);
    queue_message_close(f.m);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.removed, 1);
    assert_false(spool_has("msg", f.id));
    assert_false(spool_has("dom/a.example", f.id));
    fixture_end(&f);
}

/* An entry rewritten after the opening (here: x failed, by id, as the notice path records) is
 * read again: y's record from the open message neither reverts x to pending nor removes the
 * message, whose x still owes its notice. */
static void test_changed_entry_is_read_again(void **state)
{
    struct fixture f;
    fixture_start(&f);
    struct recorded by_id = {.base = f.base};
    const struct queue_outcome failed[] = {{0, QUEUE_RCPT_FAILED, "550 5.1.1 no"}};
    queue_record_outcomes_async(f.q, f.id, failed, 1, true, on_recorded, &by_id);
    run_loop(f.base);
    assert_int_equal(by_id.status, 0);
    const struct queue_outcome done[] = {{1, QUEUE_RCPT_DONE, "250 ok"}};
    struct recorded r = record_from(f.q, f.base, f.m, done, 1);
    queue_message_close(f.m);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.removed, 0);
    struct queue_message *m;
    assert_int_equal(queue_message_open(f.q, f.id, &m), 0);
    assert_int_equal(m->env.rcpts[0].state, QUEUE_RCPT_FAILED);
    assert_string_equal(m->env.rcpts[0].last_reply, "550 5.1.1 no");
    assert_int_equal(m->env.rcpts[0].attempts, 1);
    assert_int_equal(m->env.rcpts[1].state, QUEUE_RCPT_DONE);
    queue_message_close(m);
    fixture_end(&f);
}

/* A message deleted after the opening (odmrctl queue delete): ENOENT, and no index entry is
 * written back for it. */
static void test_deleted_message_is_not_recreated(void **state)
{
    struct fixture f;
    fixture_start(&f);
    assert_int_equal(queue_remove(f.q, f.id), 0);
    const struct queue_outcome o[] = {{0, QUEUE_RCPT_PENDING, "451 later"}};
    struct recorded r = record_from(f.q, f.base, f.m, o, 1);
    queue_message_close(f.m);
    assert_int_equal(r.status, ENOENT);
    assert_false(spool_has("msg", f.id));
    assert_false(spool_has("dom/a.example", f.id));
    fixture_end(&f);
}

int main(void)
{
    evthread_use_pthreads();   /* before any event_base: workers call event_active() */
    log_init("test_queue_push", (enum log_level)(LOG_LEVEL_ERROR + 1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batch_reports_each_in_order, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_record_from_open_message, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_changed_entry_is_read_again, setup_spool,
                                        teardown_spool),
        cmocka_unit_test_setup_teardown(test_deleted_message_is_not_recreated, setup_spool,
                                        teardown_spool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
