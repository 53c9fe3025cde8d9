/* SPDX-License-Identifier: ISC */
/* odmrctl queue: list, show and delete held messages (docs/queue.md). Opens the existing queue
 * without an event loop, so it never runs recovery and can work beside a running odmrd; list,
 * show and cat open it read-only and write nothing (no quarantine, no repair: odmrd's job). */
#include "ctl/ctl_queue.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ctl/ctl_queue_ops.h"
#include "ctl/ctl_spool.h"
#include "lib/config.h"
#include "services/notice.h"
#include "store/queue_backend.h"
#include "store/userdb.h"

static int usage(void)
{
    fprintf(stderr, "usage: odmrctl queue list [--ids|--json] [DOMAIN]\n"
                    "       odmrctl queue show ID\n"
                    "       odmrctl queue cat ID      (the stored message octets)\n"
                    "       odmrctl queue summary     (per domain and per user)\n"
                    "       odmrctl queue hold|release ID...|--domain DOMAIN|-\n"
                    "       odmrctl queue requeue|bounce ID...|-\n"
                    "       odmrctl queue delete ID...|--domain DOMAIN|--older-than DURATION|-\n"
                    "(- reads ids from standard input, one per line)\n");
    return EX_USAGE;
}

/* Copies a value that came from the network for printing: control octets and backslash become
 * \xHH so nothing printed here can move the cursor or fake a line. UTF-8 passes through.
 * NULL becomes "-". Truncates to outlen. */
static const char *safe_text(char *out, size_t outlen, const char *s)
{
    size_t n = 0;
    if (s == NULL)
        s = "-";
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0' && n + 5 < outlen; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            n += (size_t)snprintf(out + n, outlen - n, "\\x%02x", *p);
        else
            out[n++] = (char)*p;
    }
    out[n] = '\0';
    return out;
}

static void print_safe(const char *s)
{
    char buf[4096];
    fputs(safe_text(buf, sizeof buf, s), stdout);
}

void ctl_format_age(time_t seconds, char *out, size_t outlen)
{
    if (seconds < 0)
        seconds = 0;
    if (seconds < 120)
        snprintf(out, outlen, "%llds", (long long)seconds);
    else if (seconds < 2 * 3600)
        snprintf(out, outlen, "%lldm", (long long)(seconds / 60));
    else if (seconds < 2 * 86400)
        snprintf(out, outlen, "%lldh", (long long)(seconds / 3600));
    else
        snprintf(out, outlen, "%lldd", (long long)(seconds / 86400));
}

static void format_time(time_t t, char *out, size_t outlen)
{
    struct tm utc;
    if (t == 0 || gmtime_r(&t, &utc) == NULL)
        snprintf(out, outlen, "-");
    else
        strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &utc);
}

static int print_domain(const char *domain, void *arg)
{
    int *width = arg;
    *width += printf("%s%s", *width > 0 ? "," : "", domain);
    return 0;
}

/* Writes the distinct recipient domains of env, comma-separated. */
static void print_domains(const struct queue_envelope *env)
{
    int width = 0;
    queue_envelope_for_each_domain(env, print_domain, &width);
    printf("%*s", width < 24 ? 24 - width : 0, "");
}

struct list_run {
    struct queue *q;
    time_t now;
    size_t shown;
    int status;
    bool ids_only;
};

static int list_one(const char *id, void *arg)
{
    struct list_run *run = arg;
    struct queue_message *m;
    if (run->ids_only) {
        printf("%s\n", id);
        run->shown++;
        return 0;
    }
    int rc = queue_message_open(run->q, id, &m);
    if (rc == ENOENT)
        return 0;   /* delivered or removed while we listed */
    if (rc != 0) {
        if (ctl_queue_open_error(id, rc) == EX_IOERR)
            run->status = EX_IOERR;
        return 0;
    }
    char age[32], sender[512];
    ctl_format_age(run->now - m->env.arrival, age, sizeof age);
    snprintf(sender, sizeof sender, "<%s>", m->env.sender);
    char sender_text[2048];
    printf("%-16s  ", id);
    print_domains(&m->env);
    printf("  %-32s  %5zu  %10" PRIu64 "  %5s\n", safe_text(sender_text, sizeof sender_text, sender),
           m->env.rcpt_count, m->env.body_size, age);
    run->shown++;
    queue_message_close(m);
    return 0;
}

static int list_messages(struct queue *q, int argc, char **argv)
{
    struct list_run run = {.q = q, .now = time(NULL)};
    bool json = false;
    const char *domain = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--ids") == 0 && !run.ids_only && !json)
            run.ids_only = true;
        else if (strcmp(argv[i], "--json") == 0 && !run.ids_only && !json)
            json = true;
        else if (argv[i][0] == '-' || domain != NULL)   /* never an option as a domain */
            return usage();
        else
            domain = argv[i];
    }
    char normalized[QUEUE_DOMAIN_MAX];
    if (domain != NULL && queue_domain_normalize(domain, normalized) != 0) {
        fprintf(stderr, "odmrctl: %s: not a valid domain name\n", domain);
        return EX_USAGE;
    }
    if (json)
        return ctl_queue_list_json(q, domain);
    if (!run.ids_only)
        printf("%-16s  %-24s  %-32s  %5s  %10s  %5s\n", "ID", "DOMAINS", "SENDER", "RCPTS",
               "SIZE", "AGE");
    int rc = domain != NULL ? queue_list_domain_with_held(q, domain, list_one, &run)
                            : queue_list_all(q, list_one, &run);
    if (rc != 0) {
        fprintf(stderr, "odmrctl: cannot list the queue: %s\n", strerror(rc));
        return EX_IOERR;
    }
    if (!run.ids_only)
        fprintf(stderr, "%zu message(s)\n", run.shown);
    return run.status;
}

static const char *body_name(enum queue_body_type body)
{
    switch (body) {
    case QUEUE_BODY_8BITMIME:
        return "8BITMIME";
    case QUEUE_BODY_BINARYMIME:
        return "BINARYMIME";
    default:
        return "7BIT";
    }
}

static void show_field(const char *label, const char *value)
{
    printf("%-12s", label);
    print_safe(value);
    putchar('\n');
}

static void show_recipient(size_t index, const struct queue_rcpt *r)
{
    char last[40];
    format_time(r->last_attempt, last, sizeof last);
    printf("  [%zu] <", index);
    print_safe(r->address);
    printf(">\n      domain=%s state=%s attempts=%u last_attempt=%s\n", r->domain,
           queue_rcpt_state_name(r->state), r->attempts, last);
    printf("      notify=");
    print_safe(r->notify);
    printf(" orcpt=");
    print_safe(r->orcpt);
    printf("\n      last_reply=");
    print_safe(r->last_reply);
    putchar('\n');
}

static int show_message(struct queue *q, int argc, char **argv)
{
    if (argc != 3)
        return usage();
    const char *id = argv[2];
    struct queue_message *m;
    int rc = queue_message_open(q, id, &m);
    if (rc != 0)
        return ctl_queue_open_error(id, rc);
    const struct queue_envelope *env = &m->env;
    char arrival[40], age[32], sender[512];
    format_time(env->arrival, arrival, sizeof arrival);
    ctl_format_age(time(NULL) - env->arrival, age, sizeof age);
    snprintf(sender, sizeof sender, "<%s>", env->sender);
    printf("%-12s%s\n%-12s%s (%s ago)\n", "id:", env->id, "arrival:", arrival, age);
    show_field("sender:", sender);
    printf("%-12s%" PRIu64 " octets stored, SIZE=%" PRIu64 " declared\n", "size:",
           env->body_size, env->declared_size);
    printf("%-12s%s%s\n", "body:", body_name(env->body), env->smtputf8 ? " SMTPUTF8" : "");
    show_field("helo:", env->helo);
    show_field("client:", env->client_addr);
    show_field("protocol:", env->protocol);
    show_field("dsn ret:", env->ret);
    show_field("dsn envid:", env->envid);
    if (queue_is_held(q, id))
        printf("%-12s%s\n", "held:", "yes (odmrctl queue release ID)");
    printf("recipients: %zu\n", env->rcpt_count);
    for (size_t i = 0; i < env->rcpt_count; i++)
        show_recipient(i, &env->rcpts[i]);
    queue_message_close(m);
    return 0;
}

/* Copies the stored message octets (trace header included) to stdout, like postcat -b. */
static int cat_message(struct queue *q, int argc, char **argv)
{
    if (argc != 3)
        return usage();
    struct queue_message *m;
    int rc = queue_message_open(q, argv[2], &m);
    if (rc != 0)
        return ctl_queue_open_error(argv[2], rc);
    char buf[65536];
    uint64_t left = m->env.body_size;
    int status = 0;
    while (left > 0) {
        ssize_t n = read(m->fd, buf, left < sizeof buf ? (size_t)left : sizeof buf);
        if (n <= 0 || fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) {
            fprintf(stderr, "odmrctl: %s: read error\n", argv[2]);
            status = EX_IOERR;
            break;
        }
        left -= (uint64_t)n;
    }
    queue_message_close(m);
    return status;
}

/* What queue summary needs besides the queue: the users (read before odmrctl becomes the
 * spool's owner, like the configuration) and the spool path (last ATRN times). */
static struct {
    struct userdb *users;
    const char *spool;
} summary_input;

static int summary(struct queue *q, int argc, char **argv)
{
    if (argc != 2)
        return usage();
    return ctl_queue_summary_run(q, summary_input.users, summary_input.spool);
}

struct queue_command {
    const char *name;
    int (*run)(struct queue *q, int argc, char **argv);
    bool read_only;
};

static const struct queue_command queue_commands[] = {
    {"list", list_messages, true},
    {"show", show_message, true},
    {"cat", cat_message, true},
    {"summary", summary, true},
    {"hold", ctl_queue_hold, false},
    {"release", ctl_queue_release, false},
    {"requeue", ctl_queue_requeue, false},
    {"bounce", ctl_queue_bounce, false},
    {"delete", ctl_queue_delete, false},
};

/* A users file that does not load: the queue part is still shown, the exit code says 78. */
static int load_summary_users(const struct config *cfg)
{
    char err[512];
    summary_input.spool = cfg->spool;
    summary_input.users = userdb_load(cfg->users, err, sizeof err);
    if (summary_input.users != NULL)
        return EX_OK;
    fprintf(stderr, "odmrctl: %s (users not shown)\n", err);
    return EX_CONFIG;
}

int ctl_queue_main(const struct config *cfg, int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const struct queue_command *command = NULL;
    for (size_t i = 0; i < sizeof queue_commands / sizeof queue_commands[0]; i++)
        if (strcmp(argv[1], queue_commands[i].name) == 0)
            command = &queue_commands[i];
    if (command == NULL)
        return usage();
    notice_configure(cfg->hostname, NULL);   /* queue bounce: the notices' Reporting-MTA */
    int users_status = command->run == summary ? load_summary_users(cfg) : EX_OK;
    int status = ctl_spool_become_owner(cfg->spool);
    if (status != EX_OK)
        return status;
    struct queue *q = ctl_spool_open(cfg->spool, command->read_only, &status);
    if (q == NULL)
        return status;
    status = command->run(q, argc, argv);
    queue_close(q);
    userdb_free(summary_input.users);
    return status != EX_OK ? status : users_status;
}
