/* SPDX-License-Identifier: ISC */
/* Re-addressing a refused notice to [bounce] postmaster (notice_readdress.h). */
#include "services/notice_readdress.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/log.h"
#include "store/queue_backend.h"

enum { READDRESS_HEADER_MAX = 1200, READDRESS_CHUNK = 64 << 10 };

struct readdress_job {
    struct queue *queue;
    char id[QUEUE_ID_MAX];
    struct queue_outcome outcome;    /* the refused recipient: BOUNCED */
    char *reply;
    notice_done_fn done;
    void *arg;
};

static void on_recorded(int status, int removed, const char *id, void *arg)
{
    struct readdress_job *j = arg;
    if (status != 0 && status != EALREADY)
        log_error("notice_relay.record_failed", " id=%s error=\"%s\"", id, strerror(status));
    j->done(status == EALREADY ? 0 : status, j->arg);
    free(j->reply);
    free(j);
}

static void record_bounced(struct readdress_job *j)
{
    queue_record_outcomes_async(j->queue, j->id, &j->outcome, 1, true, on_recorded, j);
}

static void on_committed(int status, const char *id, void *arg)
{
    struct readdress_job *j = arg;
    if (status != 0) {
        log_error("notice_relay.readdress_failed", " id=%s error=\"%s\"", j->id,
                  strerror(status));
        j->outcome.state = QUEUE_RCPT_PENDING;   /* the relay is tried again later */
    } else {
        log_info("notice_relay.readdressed", " id=%s copy=%s", j->id, id);
    }
    record_bounced(j);
}

/* The two fields put above the notice's own header (one line each: the reply's lines joined
 * with spaces; RFC 5322 2.1.1 line length). */
static void header_fields(const struct readdress_request *req, char *out, size_t len)
{
    char reply[600];
    snprintf(reply, sizeof reply, "%s", req->reply);
    for (char *p = reply; *p != '\0'; p++)
        if (*p == '\r' || *p == '\n' || *p == '\t')
            *p = ' ';
    snprintf(out, len, "X-Odmrd-Notice-For: <%s>\r\nX-Odmrd-Relay-Reply: %.600s\r\n",
             req->m->env.rcpts[req->rcpt_index].address, reply);
}

static int copy_body(struct queue_writer *w, const struct queue_message *m)
{
    char *buf = malloc(READDRESS_CHUNK);
    uint64_t done = 0;
    int rc = buf != NULL ? 0 : ENOMEM;
    while (rc == 0 && done < m->env.body_size) {
        size_t want = m->env.body_size - done < READDRESS_CHUNK ? m->env.body_size - done
                                                                  : READDRESS_CHUNK;
        ssize_t got = pread(m->fd, buf, want, m->body_offset + (off_t)done);
        if (got <= 0)
            rc = got < 0 ? errno : EIO;
        else
            rc = queue_write(w, buf, (size_t)got);
        done += got > 0 ? (uint64_t)got : 0;
    }
    free(buf);
    return rc;
}

/* The copy: from <>, to the postmaster, filed under the postmaster's domain. */
static int commit_copy(const struct readdress_request *req, struct readdress_job *j)
{
    char domain[QUEUE_DOMAIN_MAX], header[READDRESS_HEADER_MAX];
    const char *at = strrchr(req->postmaster, '@');
    if (at == NULL || queue_domain_normalize(at + 1, domain) != 0)
        return EINVAL;
    struct queue_rcpt rcpt = {.address = (char *)req->postmaster, .domain = domain};
    struct queue_envelope env = {
        .sender = "", .body = req->m->env.body, .smtputf8 = req->m->env.smtputf8,
        .helo = (char *)req->hostname, .protocol = "local", .rcpt_count = 1, .rcpts = &rcpt,
    };
    header_fields(req, header, sizeof header);
    struct queue_writer *w;
    int rc = queue_put(req->queue, &env, &w);
    if (rc != 0)
        return rc;
    rc = queue_write(w, header, strlen(header));
    if (rc == 0)
        rc = copy_body(w, req->m);
    if (rc != 0) {
        queue_abort(w);
        return rc;
    }
    queue_commit(w, on_committed, j);
    return 0;
}

int notice_readdress(const struct readdress_request *req, notice_done_fn done, void *arg)
{
    const struct queue_rcpt *rc = &req->m->env.rcpts[req->rcpt_index];
    struct readdress_job *j = calloc(1, sizeof *j);
    char *reply = strdup(req->reply);
    if (j == NULL || reply == NULL) {
        free(j);
        free(reply);
        return ENOMEM;
    }
    *j = (struct readdress_job){req->queue, "", {req->rcpt_index, QUEUE_RCPT_BOUNCED, reply},
                                reply, done, arg};
    snprintf(j->id, sizeof j->id, "%s", req->m->env.id);
    char q[300];
    log_quote(q, sizeof q, rc->address, strlen(rc->address));
    /* RFC 3461 6.2: no notice about a notice; one that fails on its way to the postmaster
     * would loop, so it ends here. */
    if (req->postmaster == NULL || strcasecmp(rc->address, req->postmaster) == 0) {
        log_warn("notice_relay.dropped", " id=%s rcpt=%s reason=\"%s\"", j->id, q,
                 req->postmaster == NULL ? "refused by the relay, no [bounce] postmaster"
                                         : "refused by the relay, already for the postmaster");
        record_bounced(j);
        return 0;
    }
    int status = commit_copy(req, j);
    if (status != 0) {
        free(reply);
        free(j);
    }
    return status;
}
