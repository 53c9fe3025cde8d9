/* SPDX-License-Identifier: ISC */
/* odmrctl queue summary: per domain the messages held, their size and the oldest's age; per
 * user the last successful ATRN (docs/odmrctl.md). Read-only: it counts directory entries and
 * looks at file sizes and times, and opens no message. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "ctl/ctl_queue_ops.h"
#include "store/last_atrn.h"
#include "store/queue_backend.h"
#include "store/userdb.h"

struct domain_set {
    char **names;
    size_t count;
};

static int add_domain(const char *name, void *arg)
{
    struct domain_set *set = arg;
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->names[i], name) == 0)
            return 0;
    char **grown = realloc(set->names, (set->count + 1) * sizeof *grown);
    if (grown == NULL || (grown[set->count] = strdup(name)) == NULL) {
        set->names = grown != NULL ? grown : set->names;
        return -1;
    }
    set->names = grown;
    set->count++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void age_text(time_t since, time_t now, char *out, size_t len)
{
    if (since == 0)
        snprintf(out, len, "-");
    else
        ctl_format_age(now - since, out, len);
}

/* One line per domain: those with mail in the queue and every hosted one. */
static int print_domains(struct queue *q, const struct userdb *users, time_t now)
{
    struct domain_set set = {0};
    int rc = queue_list_domains(q, add_domain, &set) != 0 ? EX_IOERR : 0;
    for (size_t i = 0; rc == 0 && users != NULL && i < userdb_user_count(users); i++) {
        const struct odmr_user *u = userdb_user_at(users, i);
        for (size_t j = 0; rc == 0 && j < u->domain_count; j++)
            rc = add_domain(u->domains[j], &set) != 0 ? EX_OSERR : 0;
    }
    qsort(set.names, set.count, sizeof *set.names, by_name);
    printf("%-32s  %8s  %12s  %6s\n", "DOMAIN", "MESSAGES", "BYTES", "OLDEST");
    for (size_t i = 0; rc == 0 && i < set.count; i++) {
        struct queue_usage u;
        char age[32];
        int err = queue_domain_usage(q, set.names[i], true, &u);
        if (err != 0) {
            fprintf(stderr, "odmrctl: %s: %s\n", set.names[i], strerror(err));
            rc = EX_IOERR;
            break;
        }
        age_text(u.oldest, now, age, sizeof age);
        printf("%-32s  %8" PRIu64 "  %12" PRIu64 "  %6s\n", set.names[i], u.messages, u.bytes,
               age);
    }
    for (size_t i = 0; i < set.count; i++)
        free(set.names[i]);
    free(set.names);
    return rc;
}

static void print_users(const struct userdb *users, const char *spool, time_t now)
{
    printf("\n%-24s  %-20s  %s\n", "USER", "LAST ATRN", "AGO");
    for (size_t i = 0; i < userdb_user_count(users); i++) {
        const struct odmr_user *u = userdb_user_at(users, i);
        time_t when = last_atrn_read(spool, u->name);
        char text[40] = "never", age[32] = "-";
        struct tm utc;
        if (when != 0 && gmtime_r(&when, &utc) != NULL) {
            strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
            age_text(when, now, age, sizeof age);
        }
        printf("%-24s  %-20s  %s\n", u->name, text, age);
    }
}

int ctl_queue_summary_run(struct queue *q, const struct userdb *users, const char *spool)
{
    time_t now = time(NULL);
    int rc = print_domains(q, users, now);
    if (rc == 0 && users != NULL)
        print_users(users, spool, now);
    return rc;
}
