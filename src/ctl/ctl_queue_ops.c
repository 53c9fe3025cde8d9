/* SPDX-License-Identifier: ISC */
/* odmrctl queue hold, release, requeue, bounce, delete: postsuper's jobs (docs/odmrctl.md,
 * "Queue control"). Every argument is checked before anything changes: an unknown option is a
 * usage error (64), never a domain name or an id. Each message is then changed under the domain
 * leases of all its recipients (lock/<domain>, the flock odmrd's push and expiry take), so no
 * push or expiry of it can be under way; a domain being pushed is reported (75) and left. */
#include "ctl/ctl_queue_ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "lib/config.h"
#include "services/notice.h"
#include "store/queue_backend.h"
#include "store/queue_fs.h"

/* What a command may select by. */
enum {
    SELECT_IDS = 1,
    SELECT_DOMAIN = 2,
    SELECT_OLDER = 4,
    SELECT_STDIN = 8,
};

struct selection {
    char (*ids)[QUEUE_ID_MAX];
    size_t count, cap;
    const char *domain;
    time_t older_than;   /* -1: not given */
    bool from_stdin;
};

struct op {
    const char *name;
    unsigned selectors;
    bool leases;       /* change the message under its domain leases */
    bool corrupt_ok;   /* also a message that fails validation (delete) */
    bool removes;      /* may remove the message: waits until odmrd's journal let go of it */
    int (*apply)(struct queue *q, const char *id);
};

static int op_usage(const struct op *op)
{
    fprintf(stderr, "usage: odmrctl queue %s ID...%s%s%s\n", op->name,
            op->selectors & SELECT_DOMAIN ? " | --domain DOMAIN" : "",
            op->selectors & SELECT_OLDER ? " | --older-than DURATION" : "",
            op->selectors & SELECT_STDIN ? " | -  (ids on standard input)" : "");
    return EX_USAGE;
}

int ctl_queue_open_error(const char *id, int rc)
{
    if (rc == EBADMSG)
        fprintf(stderr, "odmrctl: %s: failed validation (left in place; odmrd moves it to "
                        "corrupt/ when it next starts or opens it)\n", id);
    else if (rc == ENOENT)
        fprintf(stderr, "odmrctl: %s: no such message\n", id);
    else
        fprintf(stderr, "odmrctl: %s: %s\n", id, strerror(rc));
    return rc == EBADMSG || rc == ENOENT ? EX_DATAERR : EX_IOERR;
}

static int add_id(const char *id, void *arg)
{
    struct selection *sel = arg;
    for (size_t i = 0; i < sel->count; i++)
        if (strcmp(sel->ids[i], id) == 0)
            return 0;
    if (sel->count == sel->cap) {
        size_t cap = sel->cap ? sel->cap * 2 : 64;
        char (*grown)[QUEUE_ID_MAX] = realloc(sel->ids, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        sel->ids = grown;
        sel->cap = cap;
    }
    snprintf(sel->ids[sel->count++], QUEUE_ID_MAX, "%s", id);
    return 0;
}

/* Checks the arguments (argv[2..]) without touching the queue. 0 or an exit code. */
static int parse_selection(const struct op *op, int argc, char **argv, struct selection *sel)
{
    char domain[QUEUE_DOMAIN_MAX];
    sel->older_than = -1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc && argv[i + 1][0] != '-';
        if (strcmp(a, "--domain") == 0 && (op->selectors & SELECT_DOMAIN) && has_value &&
            sel->domain == NULL) {
            sel->domain = argv[++i];
            if (queue_domain_normalize(sel->domain, domain) != 0) {
                fprintf(stderr, "odmrctl: %s: not a valid domain name\n", sel->domain);
                return EX_USAGE;
            }
        } else if (strcmp(a, "--older-than") == 0 && (op->selectors & SELECT_OLDER) &&
                   has_value && sel->older_than < 0) {
            if (config_parse_duration(argv[++i], &sel->older_than) != 0) {
                fprintf(stderr, "odmrctl: %s: not a duration (30s, 5m, 2h, 7d, 1w)\n", argv[i]);
                return EX_USAGE;
            }
        } else if (strcmp(a, "-") == 0 && (op->selectors & SELECT_STDIN) && !sel->from_stdin) {
            sel->from_stdin = true;
        } else if (a[0] == '-') {
            fprintf(stderr, "odmrctl: queue %s: unknown option, or one repeated or without its "
                            "value: \"%s\"\n", op->name, a);
            return op_usage(op);
        } else if (!queue_id_valid(a)) {
            fprintf(stderr, "odmrctl: %s: not a queue id\n", a);
            return EX_DATAERR;
        } else if (add_id(a, sel) != 0) {
            return EX_OSERR;
        }
    }
    bool any = sel->count > 0 || sel->domain || sel->older_than >= 0 || sel->from_stdin;
    return any ? 0 : op_usage(op);
}

/* One id per line; blank lines are skipped, anything else must be an id. */
static int read_stdin_ids(struct selection *sel)
{
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, " \t\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        if (!queue_id_valid(line)) {
            fprintf(stderr, "odmrctl: %s: not a queue id (standard input)\n", line);
            return EX_DATAERR;
        }
        if (add_id(line, sel) != 0)
            return EX_OSERR;
    }
    return 0;
}

struct older_filter {
    struct selection *sel;
    time_t now;
};

static int add_if_older(const char *id, void *arg)
{
    struct older_filter *f = arg;
    int64_t usec = queue_id_time_usec(id);
    if (usec >= 0 && f->now - (time_t)(usec / 1000000) >= f->sel->older_than)
        return add_id(id, f->sel);
    return 0;
}

/* Turns --domain, --older-than and - into ids. 0 or an exit code. */
static int resolve_selection(struct queue *q, struct selection *sel)
{
    int rc = sel->from_stdin ? read_stdin_ids(sel) : 0;
    if (rc != 0)
        return rc;
    if (sel->domain != NULL && (rc = queue_list_domain_with_held(q, sel->domain, add_id, sel)) != 0) {
        fprintf(stderr, "odmrctl: cannot list %s: %s\n", sel->domain, strerror(rc));
        return EX_IOERR;
    }
    struct older_filter f = {sel, time(NULL)};
    if (sel->older_than >= 0 && (rc = queue_list_all(q, add_if_older, &f)) != 0) {
        fprintf(stderr, "odmrctl: cannot list the queue: %s\n", strerror(rc));
        return EX_IOERR;
    }
    return 0;
}

/* ---- leases ---- */

struct leases {
    char (*domains)[QUEUE_DOMAIN_MAX];
    size_t count;
};

static void release_all(struct queue *q, struct leases *l)
{
    for (size_t i = 0; i < l->count; i++)
        queue_release_domain(q, l->domains[i]);
    free(l->domains);
    l->domains = NULL;
    l->count = 0;
}

/* Leases every recipient domain of id. 0, or an errno (EBUSY: *busy names the domain). A
 * message that cannot be opened gives its open error. */
static int lease_message(struct queue *q, const char *id, struct leases *l, char *busy)
{
    struct queue_message *m;
    int rc = queue_message_open(q, id, &m);
    if (rc != 0)
        return rc;
    l->domains = calloc(m->env.rcpt_count, sizeof *l->domains);
    rc = l->domains == NULL ? ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < m->env.rcpt_count; i++) {
        const char *d = m->env.rcpts[i].domain;
        bool have = false;
        for (size_t j = 0; j < l->count && !have; j++)
            have = strcmp(l->domains[j], d) == 0;
        if (have)
            continue;
        rc = queue_lease_domain(q, d);
        if (rc == 0)
            snprintf(l->domains[l->count++], QUEUE_DOMAIN_MAX, "%s", d);
        else
            snprintf(busy, QUEUE_DOMAIN_MAX, "%s", d);
    }
    queue_message_close(m);
    if (rc != 0)
        release_all(q, l);
    return rc;
}

/* Applies op to one id under its leases (when op wants them). An exit code. A message
 * committed moments ago may still have its record in odmrd's commit journal: removed now, a
 * crash of odmrd before its checkpoint would bring it back (docs/queue.md "Group commit"), so a
 * removing op waits for the checkpoint first, before any change. */
static int apply_one(struct queue *q, const struct op *op, const char *id)
{
    struct leases l = {0};
    char busy[QUEUE_DOMAIN_MAX] = "";
    int rc = op->removes ? queue_fs_wait_out_of_journal(q, id) : 0;
    if (rc == EAGAIN) {
        fprintf(stderr, "odmrctl: %s: not changed: its record is still in odmrd's commit "
                        "journal (wal/) and no checkpoint took it within 5 s; is odmrd "
                        "running? (its start replays the journal); try again\n", id);
        return EX_TEMPFAIL;
    }
    if (rc == 0 && op->leases)
        rc = lease_message(q, id, &l, busy);
    if (rc == EBUSY) {
        fprintf(stderr, "odmrctl: %s: not changed: domain %s is being delivered or expired "
                        "right now (lock/%s is held); try again\n", id, busy, busy);
        return EX_TEMPFAIL;
    }
    /* A message failing validation can still be deleted (it is never delivered anyway). */
    if (rc == EBADMSG && op->corrupt_ok)
        rc = 0;
    if (rc != 0)
        return ctl_queue_open_error(id, rc);
    int status = op->apply(q, id);
    release_all(q, &l);
    return status;
}

/* The worst exit code wins: I/O errors, then busy domains, then unknown ids. */
static int worse(int a, int b)
{
    static const int order[] = {0, EX_DATAERR, EX_TEMPFAIL, EX_USAGE, EX_OSERR, EX_IOERR};
    int ra = 0, rb = 0;
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++) {
        ra = order[i] == a ? i : ra;
        rb = order[i] == b ? i : rb;
    }
    return rb > ra ? b : a;
}

static int run_op(const struct op *op, struct queue *q, int argc, char **argv)
{
    struct selection sel = {0};
    int status = parse_selection(op, argc, argv, &sel);
    if (status == 0)
        status = resolve_selection(q, &sel);
    if (status != 0) {   /* nothing has changed yet */
        free(sel.ids);
        return status;
    }
    if (sel.count == 0)
        fprintf(stderr, "odmrctl: no message selected\n");
    for (size_t i = 0; i < sel.count; i++)
        status = worse(status, apply_one(q, op, sel.ids[i]));
    free(sel.ids);
    return status;
}

/* ---- the commands ---- */

static int hold_or_release(struct queue *q, const char *id, bool hold)
{
    int rc = queue_hold(q, id, hold);
    if (rc == 0 || rc == EALREADY)
        printf("%s %s%s\n", hold ? "held" : "released", id, rc == EALREADY ? " (already)" : "");
    else
        fprintf(stderr, "odmrctl: %s: %s\n", id, rc == ENOENT ? "no such message" : strerror(rc));
    return rc == 0 || rc == EALREADY ? 0 : (rc == ENOENT ? EX_DATAERR : EX_IOERR);
}

static int apply_hold(struct queue *q, const char *id)
{
    return hold_or_release(q, id, true);
}

static int apply_release(struct queue *q, const char *id)
{
    return hold_or_release(q, id, false);
}

static int apply_requeue(struct queue *q, const char *id)
{
    size_t n = 0;
    int rc = queue_requeue(q, id, &n);
    if (rc != 0)
        return ctl_queue_open_error(id, rc);
    if (n == 0)
        printf("%s: no failed recipient, nothing requeued\n", id);
    else
        printf("requeued %s (%zu recipient%s)\n", id, n, n == 1 ? "" : "s");
    return 0;
}

static void on_bounced(int status, void *arg)
{
    *(int *)arg = status;
}

/* Every recipient not yet final (pending, or failed with its notice owed) gets a failed notice
 * (RFC 3464, Status 5.0.0 "returned by the administrator") and becomes bounced. */
static int apply_bounce(struct queue *q, const char *id)
{
    struct queue_message *m;
    int rc = queue_message_open(q, id, &m);
    if (rc != 0)
        return ctl_queue_open_error(id, rc);
    struct notice_failure *f = calloc(m->env.rcpt_count, sizeof *f);
    size_t n = 0;
    for (size_t i = 0; f != NULL && i < m->env.rcpt_count; i++) {
        enum queue_rcpt_state st = m->env.rcpts[i].state;
        if (st == QUEUE_RCPT_PENDING || st == QUEUE_RCPT_FAILED)
            f[n++] = (struct notice_failure){i, NULL};
    }
    int done = EINPROGRESS;
    struct notice_event ev = {NOTICE_ADMIN, NULL, 0, "odmrctl"};
    rc = f == NULL ? ENOMEM : (n == 0 ? 0 : notice_failed(q, m, f, n, &ev, on_bounced, &done));
    rc = rc == 0 && n > 0 ? done : rc;   /* no event base: done ran inline */
    free(f);
    queue_message_close(m);
    if (rc != 0) {
        fprintf(stderr, "odmrctl: %s: not bounced: %s\n", id, strerror(rc));
        return EX_IOERR;
    }
    if (n == 0) {
        printf("%s: every recipient is final, nothing bounced\n", id);
        return 0;
    }
    if (queue_message_open(q, id, &m) == ENOENT)
        queue_hold(q, id, false);   /* the original is gone: its hold mark too */
    else
        queue_message_close(m);
    printf("bounced %s (%zu recipient%s)\n", id, n, n == 1 ? "" : "s");
    return 0;
}

static int apply_delete(struct queue *q, const char *id)
{
    int rc = queue_remove(q, id);
    if (rc == ENOENT) {
        fprintf(stderr, "odmrctl: %s: no such message\n", id);
        return EX_DATAERR;
    }
    if (rc != 0) {
        fprintf(stderr, "odmrctl: %s: cannot delete: %s\n", id, strerror(rc));
        return EX_IOERR;
    }
    printf("deleted %s\n", id);
    return 0;
}

static const struct op ops[] = {
    {"hold", SELECT_IDS | SELECT_DOMAIN | SELECT_STDIN, true, false, false, apply_hold},
    /* a release needs no lease: a push under way already listed its messages */
    {"release", SELECT_IDS | SELECT_DOMAIN | SELECT_STDIN, false, false, false, apply_release},
    {"requeue", SELECT_IDS | SELECT_STDIN, true, false, false, apply_requeue},
    {"bounce", SELECT_IDS | SELECT_STDIN, true, false, true, apply_bounce},
    {"delete", SELECT_IDS | SELECT_DOMAIN | SELECT_OLDER | SELECT_STDIN, true, true, true,
     apply_delete},
};

static const struct op *find_op(const char *name)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(ops[i].name, name) == 0)
            return &ops[i];
    return NULL;
}

int ctl_queue_hold(struct queue *q, int argc, char **argv)
{
    return run_op(find_op("hold"), q, argc, argv);
}

int ctl_queue_release(struct queue *q, int argc, char **argv)
{
    return run_op(find_op("release"), q, argc, argv);
}

int ctl_queue_requeue(struct queue *q, int argc, char **argv)
{
    return run_op(find_op("requeue"), q, argc, argv);
}

int ctl_queue_bounce(struct queue *q, int argc, char **argv)
{
    return run_op(find_op("bounce"), q, argc, argv);
}

int ctl_queue_delete(struct queue *q, int argc, char **argv)
{
    return run_op(find_op("delete"), q, argc, argv);
}
