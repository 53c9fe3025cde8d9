/* SPDX-License-Identifier: ISC */
/* Operator control in the filesystem queue (docs/queue.md "Hold", "Quotas"): hold marks and
 * what they hide from the push and expiry listings, requeue (failed -> pending), and the
 * per-domain usage counts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
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
#include "store/queue_backend.h"

static char spool[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup_spool(void **state)
{
    char err[256];
    strcpy(spool, "/tmp/odmr-qadmin-XXXXXX");
    assert_non_null(mkdtemp(spool));
    struct queue *q = queue_open_fs(spool, NULL, 0, err, sizeof err);
    assert_non_null(q);
    *state = q;
    return 0;
}

static int teardown_spool(void **state)
{
    queue_close(*state);
    nftw(spool, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* Stores a message for the given recipients (domain = the part after @). */
static void store(struct queue *q, const char *const *addresses, size_t n, char *id)
{
    struct queue_rcpt rcpts[4] = {{0}};
    struct queue_envelope env = {.sender = "s@sender.example", .helo = "h", .client_addr = "c",
                                 .protocol = "ESMTP", .rcpts = rcpts, .rcpt_count = n};
    for (size_t i = 0; i < n; i++) {
        rcpts[i].address = (char *)addresses[i];
        rcpts[i].domain = strchr(addresses[i], '@') + 1;
    }
    struct queue_writer *w;
    assert_int_equal(queue_put(q, &env, &w), 0);
    assert_int_equal(queue_write(w, "Subject: x\r\n\r\nx\r\n", 17), 0);
    assert_int_equal(queue_fs_commit_sync(w), 0);
    strcpy(id, env.id);
}

static int count_one(const char *id, void *arg)
{
    (*(int *)arg)++;
    return 0;
}

static int listed(struct queue *q, const char *domain, bool with_held)
{
    int seen = 0;
    int rc = with_held ? queue_list_domain_with_held(q, domain, count_one, &seen)
                       : queue_list_domain(q, domain, count_one, &seen);
    assert_int_equal(rc, 0);
    return seen;
}

static void test_hold_hides_a_message_from_push_and_expiry(void **state)
{
    struct queue *q = *state;
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX];
    const char *ra[] = {"u@a.example"}, *rb[] = {"v@a.example"};
    store(q, ra, 1, a);
    store(q, rb, 1, b);
    assert_false(queue_is_held(q, a));
    assert_int_equal(queue_hold(q, a, true), 0);
    assert_int_equal(queue_hold(q, a, true), EALREADY);
    assert_true(queue_is_held(q, a));
    assert_int_equal(listed(q, "a.example", false), 1);
    assert_int_equal(listed(q, "a.example", true), 2);
    int old = 0;
    /* every message but the held one (-10: time() may lag the ids' clock by a tick) */
    assert_int_equal(queue_expire_scan(q, -10, count_one, &old), 0);
    assert_int_equal(old, 1);
    assert_int_equal(queue_hold(q, a, false), 0);
    assert_int_equal(queue_hold(q, a, false), EALREADY);
    assert_int_equal(listed(q, "a.example", false), 2);
    /* gone messages: no hold; a stale mark goes with queue_remove */
    assert_int_equal(queue_hold(q, "nosuchid", true), ENOENT);
    assert_int_equal(queue_hold(q, "../x", true), ENOENT);
    assert_int_equal(queue_hold(q, b, true), 0);
    assert_int_equal(queue_remove(q, b), 0);
    assert_false(queue_is_held(q, b));
}

static void test_requeue_moves_failed_back_to_pending_only(void **state)
{
    struct queue *q = *state;
    char id[QUEUE_ID_MAX];
    const char *r[] = {"u@a.example", "v@a.example", "w@b.example"};
    store(q, r, 3, id);
    assert_int_equal(queue_fs_record_outcome(q, id, 0, QUEUE_RCPT_FAILED, "550 no"), 0);
    assert_int_equal(queue_fs_record_outcome(q, id, 1, QUEUE_RCPT_DONE, "250 ok"), 0);
    assert_int_equal(queue_fs_record_outcome(q, id, 2, QUEUE_RCPT_BOUNCED, "550 no"), 0);
    assert_int_equal(listed(q, "a.example", false), 0);
    size_t n = 9;
    assert_int_equal(queue_requeue(q, id, &n), 0);
    assert_int_equal(n, 1);
    const enum queue_rcpt_state want[] = {QUEUE_RCPT_PENDING, QUEUE_RCPT_DONE,
                                          QUEUE_RCPT_BOUNCED};
    struct queue_message *m;
    assert_int_equal(queue_message_open(q, id, &m), 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(m->env.rcpts[i].state, want[i]);
        assert_int_equal(m->env.rcpts[i].attempts, 1);   /* attempts and reply are kept */
        assert_string_equal(m->env.rcpts[i].last_reply, i == 1 ? "250 ok" : "550 no");
    }
    queue_message_close(m);
    assert_int_equal(listed(q, "a.example", false), 1);
    assert_int_equal(queue_requeue(q, id, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(queue_requeue(q, "nosuchid", &n), ENOENT);
}

static void test_domain_usage_counts_entries_sizes_and_the_oldest(void **state)
{
    struct queue *q = *state;
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX], path[256];
    const char *ra[] = {"u@a.example", "x@b.example"}, *rb[] = {"v@a.example"};
    struct queue_usage u = {9, 9, 9};
    assert_int_equal(queue_domain_usage(q, "a.example", true, &u), 0);
    assert_true(u.messages == 0 && u.bytes == 0 && u.oldest == 0);
    time_t before = time(NULL);
    store(q, ra, 2, a);
    usleep(10000);
    store(q, rb, 1, b);
    struct stat sa, sb;
    snprintf(path, sizeof path, "%s/msg/%s", spool, a);
    assert_int_equal(stat(path, &sa), 0);
    snprintf(path, sizeof path, "%s/msg/%s", spool, b);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(queue_domain_usage(q, "A.example", true, &u), 0);
    assert_int_equal(u.messages, 2);
    assert_int_equal(u.bytes, (uint64_t)(sa.st_size + sb.st_size));
    assert_int_equal(u.oldest, queue_id_time_usec(a) / 1000000);
    assert_true(u.oldest >= before && u.oldest <= time(NULL) + 1);
    assert_int_equal(queue_domain_usage(q, "b.example", false, &u), 0);
    assert_true(u.messages == 1 && u.bytes == 0);
    assert_int_equal(queue_remove(q, a), 0);
    assert_int_equal(queue_domain_usage(q, "a.example", true, &u), 0);
    assert_int_equal(u.messages, 1);
    assert_int_equal(u.bytes, (uint64_t)sb.st_size);
    assert_int_equal(u.oldest, queue_id_time_usec(b) / 1000000);
    assert_int_equal(queue_domain_usage(q, "bad/domain", true, &u), EINVAL);
}

int main(void)
{
    log_init("test_queue_admin", (enum log_level)(LOG_LEVEL_ERROR + 1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hold_hides_a_message_from_push_and_expiry,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_requeue_moves_failed_back_to_pending_only,
                                        setup_spool, teardown_spool),
        cmocka_unit_test_setup_teardown(test_domain_usage_counts_entries_sizes_and_the_oldest,
                                        setup_spool, teardown_spool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
