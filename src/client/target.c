/* SPDX-License-Identifier: ISC */
/* The local target: SMTP (RFC 5321) or LMTP (RFC 2033) over TCP or a unix socket. */
#include "client/target.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"

enum {
    BODY_CHUNK = 64 << 10,
    BODY_HIGH = 256 << 10,   /* stop reading the spool file while this much waits */
    BODY_LOW = 64 << 10,     /* refill below this */
    MAX_REPLIES = 1000,      /* LMTP: one per recipient */
};

/* ---- the spec ---- */

static int split_host_port(const char *text, struct target_spec *out, char *err, size_t errlen)
{
    const char *colon;
    const char *host = text;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        host = text + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            goto bad;
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0 || hlen >= sizeof out->host || strlen(colon + 1) == 0 ||
        strlen(colon + 1) >= sizeof out->port || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        goto bad;
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    snprintf(out->port, sizeof out->port, "%s", colon + 1);
    return 0;
bad:
    snprintf(err, errlen, "bad target address '%s': use HOST:PORT", text);
    return -1;
}

static int parse_network(const char *text, const char *rest, struct target_spec *out, char *err,
                         size_t errlen)
{
    if (strncmp(rest, "unix:", 5) != 0)
        return split_host_port(rest, out, err, errlen);
    if (rest[5] != '/' || strlen(rest + 5) >= sizeof out->unix_path) {
        snprintf(err, errlen, "bad unix socket path in '%s'", text);
        return -1;
    }
    out->is_unix = true;
    snprintf(out->unix_path, sizeof out->unix_path, "%s", rest + 5);
    return 0;
}

static int parse_maildir(const char *text, const char *rest, struct target_spec *out, char *err,
                         size_t errlen)
{
    snprintf(out->local, sizeof out->local, "%s", rest);
    return maildir_template_check(rest, err, errlen);
}

static int parse_mda(const char *text, const char *rest, struct target_spec *out, char *err,
                     size_t errlen)
{
    struct mda_command c;
    snprintf(out->local, sizeof out->local, "%s", rest);
    return mda_parse(rest, &c, err, errlen);
}

int target_parse(const char *text, struct target_spec *out, char *err, size_t errlen)
{
    static const struct {
        const char *prefix;
        enum target_kind kind;
        int (*parse)(const char *, const char *, struct target_spec *, char *, size_t);
    } kinds[] = {
        {"smtp:", TARGET_SMTP, parse_network},
        {"lmtp:", TARGET_LMTP, parse_network},
        {"maildir:", TARGET_MAILDIR, parse_maildir},
        {"mda:", TARGET_MDA, parse_mda},
    };
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t plen = strlen(kinds[i].prefix);
        if (strncmp(text, kinds[i].prefix, plen) != 0)
            continue;
        out->kind = kinds[i].kind;
        return kinds[i].parse(text, text + plen, out, err, errlen);
    }
    snprintf(err, errlen, "unsupported --deliver '%s': use smtp:HOST:PORT, lmtp:HOST:PORT, "
             "lmtp:unix:/path, maildir:/path or mda:/path/to/command args", text);
    return -1;
}

static bool is_local(const struct target_spec *spec)
{
    return spec->kind == TARGET_MAILDIR || spec->kind == TARGET_MDA;
}

static const char *hello_verb(const struct target_spec *spec)
{
    return spec->kind == TARGET_LMTP ? "LHLO" : "EHLO";
}

/* RFC 1870, RFC 6152, RFC 6531, RFC 3461 keywords the relay needs to know about. */
static void parse_caps(const struct wire_reply *r, struct target_caps *caps)
{
    char args[64];
    memset(caps, 0, sizeof *caps);
    caps->esmtp = true;
    caps->eightbitmime = wire_ehlo_has(r, "8BITMIME", NULL, 0);
    caps->smtputf8 = wire_ehlo_has(r, "SMTPUTF8", NULL, 0);
    caps->dsn = wire_ehlo_has(r, "DSN", NULL, 0);
    caps->pipelining = wire_ehlo_has(r, "PIPELINING", NULL, 0);
    caps->chunking = wire_ehlo_has(r, "CHUNKING", NULL, 0);
    caps->size_ext = wire_ehlo_has(r, "SIZE", args, sizeof args);
    if (caps->size_ext)
        caps->size = strtoull(args, NULL, 10);
}

/* ---- MAIL and RCPT, composed for the target's capabilities ---- */

static void add_param(char *out, size_t len, const char *keyword, const char *value)
{
    size_t n = strlen(out);
    if (n < len)
        snprintf(out + n, len - n, " %s%s%s", keyword, value != NULL ? "=" : "",
                 value != NULL ? value : "");
}

/* A message needs what it declares. RFC 6531 3.5: a SMTPUTF8 message cannot go to a server
 * without SMTPUTF8 (no downgrade here): 553 5.6.7. RFC 6152 3: an 8-bit message to a server
 * without 8BITMIME is converted or returned; we do not convert: 554 5.6.3, the answer odmrd's
 * own push gives a customer without 8BITMIME (docs/client.md). */
static int check_needs(const struct target_caps *caps, const struct target_mail *m,
                       struct wire_reply *refusal)
{
    if (m->smtputf8 && !caps->smtputf8) {
        local_reply(refusal, 553, "5.6.7 The message needs SMTPUTF8, which the local delivery "
                    "target does not offer");
        return -1;
    }
    if (m->eightbit && !caps->eightbitmime) {
        local_reply(refusal, 554, "5.6.3 The message needs 8BITMIME, which the local delivery "
                    "target does not offer");
        return -1;
    }
    return 0;
}

/* Only what the target advertised (RFC 5321 4.1.1.11): SIZE with SIZE (RFC 1870 6), BODY with
 * 8BITMIME (RFC 6152), SMTPUTF8 with SMTPUTF8, RET and ENVID with DSN (RFC 3461 5.2.1/5.2.2). */
static int compose_mail(const struct target_caps *caps, const struct target_mail *m, char *out,
                        size_t len, struct wire_reply *refusal)
{
    char size[24];
    if (check_needs(caps, m, refusal) != 0)
        return -1;
    snprintf(out, len, "MAIL FROM:<%s>", m->sender);
    snprintf(size, sizeof size, "%llu", (unsigned long long)m->size);
    if (caps->size_ext && m->size != 0)
        add_param(out, len, "SIZE", size);
    if (m->eightbit)
        add_param(out, len, "BODY", "8BITMIME");
    if (m->smtputf8)
        add_param(out, len, "SMTPUTF8", NULL);
    if (caps->dsn && m->ret != NULL)
        add_param(out, len, "RET", m->ret);
    if (caps->dsn && m->envid != NULL)
        add_param(out, len, "ENVID", m->envid);
    return 0;
}

/* RFC 3461 5.2.1 (c)(d): NOTIFY and ORCPT as received, to a target that offers DSN; 5.2.2 (a):
 * none to one that does not. */
static void compose_rcpt(const struct target_caps *caps, const struct target_rcpt *r, char *out,
                         size_t len)
{
    snprintf(out, len, "RCPT TO:<%s>", r->address);
    if (caps->dsn && r->notify != NULL)
        add_param(out, len, "NOTIFY", r->notify);
    if (caps->dsn && r->orcpt != NULL)
        add_param(out, len, "ORCPT", r->orcpt);
}

/* ---- the blocking probe ---- */

static int probe_reply(int fd, struct evbuffer *in, struct wire_reader *rd, struct timeval tv,
                       struct wire_reply *out)
{
    int ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
    for (;;) {
        int rc = wire_read_reply(rd, in, out);
        if (rc != 0)
            return rc > 0 ? 0 : -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0)
            return -1;
        if (evbuffer_read(in, fd, 4096) <= 0)
            return -1;
    }
}

static int probe_send(int fd, const char *line)
{
    char buf[600];
    int n = snprintf(buf, sizeof buf, "%s\r\n", line);
    return send(fd, buf, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

static int probe_exchange(int fd, const struct target_spec *spec, const struct client_options *o,
                          const char *helo, struct target_caps *caps, char *err, size_t errlen)
{
    struct evbuffer *in = evbuffer_new();
    struct wire_reader rd;
    struct wire_reply r;
    char line[300];
    int rc = -1;
    wire_reader_init(&rd);
    if (probe_reply(fd, in, &rd, client_timeout(o, TIMEOUT_GREETING), &r) != 0 || r.code != 220) {
        snprintf(err, errlen, "no 220 greeting (%d)", r.code);
        goto out;
    }
    snprintf(line, sizeof line, "%s %s", hello_verb(spec), helo);
    if (probe_send(fd, line) != 0 ||
        probe_reply(fd, in, &rd, client_timeout(o, TIMEOUT_COMMAND), &r) != 0 || r.code / 100 != 2) {
        snprintf(err, errlen, "%s refused (%d)", hello_verb(spec), r.code);
        goto out;
    }
    parse_caps(&r, caps);
    if (probe_send(fd, "QUIT") == 0)
        (void)probe_reply(fd, in, &rd, client_timeout(o, TIMEOUT_COMMAND), &r);
    rc = 0;
out:
    wire_reader_free(&rd);
    evbuffer_free(in);
    return rc;
}

static int local_probe(const struct target_spec *spec, struct target_caps *caps, char *err,
                       size_t errlen);

int target_probe(const struct target_spec *spec, const struct client_options *o,
                 const char *helo, struct target_caps *caps, char *err, size_t errlen)
{
    memset(caps, 0, sizeof *caps);
    if (is_local(spec))
        return local_probe(spec, caps, err, errlen);
    int fd = wire_connect(spec->host, spec->port, spec->is_unix ? spec->unix_path : NULL,
                          client_timeout(o, TIMEOUT_CONNECT), err, errlen);
    if (fd < 0)
        return -1;
    int rc = probe_exchange(fd, spec, o, helo, caps, err, errlen);
    close(fd);
    return rc;
}

/* ---- the asynchronous connection ---- */

enum target_state {
    T_DOWN,        /* no connection */
    T_GREETING,    /* waiting for 220 */
    T_HELLO,       /* EHLO/LHLO (or HELO) sent */
    T_IDLE,        /* ready, nothing asked */
    T_WAIT,        /* the operation's reply (replies) */
    T_WAIT_354,    /* DATA sent, for the body of target_data() */
    T_DATA_OPEN,   /* DATA of a group answered 354: the target waits for the message */
    T_BODY,        /* sending the message */
};

/* The commands of one operation: [RSET] [MAIL] RCPT [DATA] (+ a lone dot, see on_reply). */
enum target_op { OP_COMMAND, OP_MAIL, OP_RCPT, OP_DATA, OP_DOT, OP_BODY };
enum { GROUP_MAX = 5 };

struct target {
    struct event_base *base;
    struct target_spec spec;
    const struct client_options *opts;
    char helo[256];
    struct bufferevent *bev;
    struct wire_reader reader;
    enum target_state state;
    unsigned generation;
    struct target_caps caps;
    bool helo_fallback;
    /* the operation: count commands (or the body), want replies */
    bool op_active;
    enum target_op ops[GROUP_MAX];
    char *lines[GROUP_MAX];
    char *addrs[GROUP_MAX];  /* the sender of MAIL, the address of RCPT */
    /* the group's MAIL and RCPT, composed when sent (compose_group): their lines stay NULL
     * until then; a MAIL refused here is never sent and gets refusal as its reply */
    struct target_mail mail;
    struct target_rcpt rcpt;
    char *params[4];         /* the copies of ret, envid, notify, orcpt */
    struct wire_reply refusal;
    size_t count, sent;
    bool pipelined;          /* the group went out in one write (RFC 2920) */
    bool others_accepted;    /* an earlier RCPT of this transaction was accepted */
    bool group_accepted;     /* a RCPT of this group was accepted */
    int body_fd;
    bool at_line_start;
    bool bdat;               /* the body goes as BDAT <size> LAST: as it is, no final dot */
    size_t want, got;
    struct wire_reply *replies;
    target_cb cb;
    void *cb_arg;
    struct event *deliver;   /* hands the replies over from the loop */
    /* local targets: the open transaction */
    struct mda_command mda;
    char *sender;
    struct local_rcpt { char *addr; char *dest; } *rcpts;
    size_t rcpt_count;
};

static void local_run(struct target *t, enum target_op op, const char *line, const char *addr,
                      struct wire_reply *out);

/* Reading waits for the reply the state expects; writing is bounded per data block (RFC 5321
 * 4.5.3.2.5), commands being small. */
static void set_timeout(struct target *t, enum client_timeout_kind reply)
{
    struct timeval rd = client_timeout(t->opts, reply);
    struct timeval wr = client_timeout(t->opts, TIMEOUT_DATA_BLOCK);
    bufferevent_set_timeouts(t->bev, &rd, &wr);
}

static void send_line(struct target *t, const char *line, enum client_timeout_kind timeout)
{
    evbuffer_add_printf(bufferevent_get_output(t->bev), "%s\r\n", line);
    set_timeout(t, timeout);
    if (t->opts->verbose) {
        char quoted[200];
        log_debug("target.send", " line=%s", log_quote(quoted, sizeof quoted, line, strlen(line)));
    }
}

static void clear_op(struct target *t)
{
    for (size_t i = 0; i < GROUP_MAX; i++) {
        free(t->lines[i]);
        free(t->addrs[i]);
        t->lines[i] = t->addrs[i] = NULL;
    }
    for (size_t i = 0; i < sizeof t->params / sizeof t->params[0]; i++) {
        free(t->params[i]);
        t->params[i] = NULL;
    }
    memset(&t->mail, 0, sizeof t->mail);
    memset(&t->rcpt, 0, sizeof t->rcpt);
    t->refusal.code = 0;
    t->count = t->sent = 0;
    t->op_active = false;
    t->body_fd = -1;
}

/* The operation is over: its replies go to the caller from the loop. */
static void finish_op(struct target *t)
{
    t->op_active = false;
    if (t->cb != NULL)
        event_active(t->deliver, EV_WRITE, 0);
}

/* The caller may start the next operation from inside cb: it must read the replies first. */
static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    struct target *t = arg;
    target_cb cb = t->cb;
    t->cb = NULL;
    clear_op(t);
    if (cb != NULL)
        cb(t->cb_arg, t->replies, t->want);
}

/* The connection is gone: whatever was asked gets "no reply". A message the target was
 * waiting for (DATA answered 354) ends without its final dot: RFC 5321 3.3/4.1.1.4, nothing
 * is delivered. */
static void drop(struct target *t, const char *why)
{
    if (t->bev != NULL) {
        log_warn("target.lost", " reason=\"%s\" state=%d", why, (int)t->state);
        bufferevent_free(t->bev);
        t->bev = NULL;
    }
    wire_reader_free(&t->reader);
    wire_reader_init(&t->reader);
    t->state = T_DOWN;
    if (t->op_active) {
        if (t->count > t->want)
            t->want = t->count;   /* a group: one slot per command, unsent ones code 0 */
        for (size_t i = t->got; i < t->want; i++)
            memset(&t->replies[i], 0, sizeof t->replies[i]);
        finish_op(t);
    }
}

/* RFC 5321 4.5.2: a line starting with "." gets another "."; memchr finds the line starts. */
static void add_stuffed(struct evbuffer *out, const char *buf, size_t n, bool *at_line_start)
{
    const char *from = buf, *end = buf + n, *p = buf;
    if (n == 0)
        return;
    if (*at_line_start && buf[0] == '.')
        evbuffer_add(out, ".", 1);
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL && ++p < end) {
        if (*p == '.') {
            evbuffer_add(out, from, (size_t)(p - from));
            evbuffer_add(out, ".", 1);
            from = p;
        }
    }
    evbuffer_add(out, from, (size_t)(end - from));
    *at_line_start = end[-1] == '\n';
}

/* The spooled message, stuffed, then CRLF . CRLF (RFC 5321 4.1.1.4; a CRLF is added first
 * when the message does not end with one, as a BDAT message may not). */
static void pump_body(struct target *t)
{
    struct evbuffer *out = bufferevent_get_output(t->bev);
    char buf[BODY_CHUNK];
    while (t->state == T_BODY && evbuffer_get_length(out) < BODY_HIGH) {
        ssize_t n = read(t->body_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            drop(t, "spool read error");
            return;
        }
        if (n == 0) {
            if (!t->bdat)
                evbuffer_add(out, t->at_line_start ? ".\r\n" : "\r\n.\r\n",
                             t->at_line_start ? 3 : 5);
            t->state = T_WAIT;
            set_timeout(t, TIMEOUT_DATA_END);
            return;
        }
        if (t->bdat)
            evbuffer_add(out, buf, (size_t)n);
        else
            add_stuffed(out, buf, (size_t)n, &t->at_line_start);
    }
}

static void start_body(struct target *t)
{
    t->state = T_BODY;
    t->at_line_start = true;
    if (lseek(t->body_fd, 0, SEEK_SET) != 0) {
        drop(t, "spool seek error");
        return;
    }
    pump_body(t);
}

/* RFC 3030 2: the whole message as one chunk, BDAT <size> LAST, its octets as they are. The
 * spool file ends where the message ends, so its size is the chunk's. */
static void start_bdat(struct target *t)
{
    struct stat st;
    char line[48];
    if (fstat(t->body_fd, &st) != 0) {
        drop(t, "spool stat error");
        return;
    }
    t->bdat = true;
    snprintf(line, sizeof line, "BDAT %lld LAST", (long long)st.st_size);
    send_line(t, line, TIMEOUT_DATA_BLOCK);
    start_body(t);
}

/* The group's MAIL and RCPT lines, from the capabilities of the connection they go on (its
 * EHLO/LHLO reply is parsed by now). A MAIL the target cannot take keeps no line: it and what
 * follows it are not sent (a RSET before it is). Out of memory: no line, no reply (code 0). */
static void compose_group(struct target *t)
{
    char line[1200];
    for (size_t i = 0; i < t->count; i++) {
        if (t->ops[i] == OP_MAIL) {
            if (compose_mail(&t->caps, &t->mail, line, sizeof line, &t->refusal) != 0)
                return;
        } else if (t->ops[i] == OP_RCPT) {
            compose_rcpt(&t->caps, &t->rcpt, line, sizeof line);
        } else {
            continue;
        }
        t->lines[i] = strdup(line);
    }
}

/* Can command i go now? Not without its line (above), nor DATA without PIPELINING (it goes
 * with the message then). */
static bool sendable(const struct target *t, size_t i)
{
    return i < t->count && t->lines[i] != NULL && (t->ops[i] != OP_DATA || t->pipelined);
}

/* The group is over: one slot per command asked, code 0 for those not sent or not answered,
 * the refusal for a MAIL refused here. */
static void end_group(struct target *t)
{
    for (size_t k = t->got; k < t->count; k++) {
        memset(&t->replies[k], 0, sizeof t->replies[k]);
        if (t->ops[k] == OP_MAIL && t->refusal.code != 0)
            t->replies[k] = t->refusal;
    }
    t->want = t->count;
    t->state = T_IDLE;
    finish_op(t);
}

/* Writes the next command of the group, or all of them when the target pipelines (RFC 2920:
 * DATA only then, and only last). Without PIPELINING a DATA is not sent at all. */
static void send_commands(struct target *t)
{
    t->state = T_WAIT;
    while (sendable(t, t->sent)) {
        send_line(t, t->lines[t->sent], TIMEOUT_COMMAND);
        t->sent++;
        if (!t->pipelined)
            break;
    }
    t->want = t->sent;   /* replies to expect (a DATA not sent has none) */
    if (t->sent == 0)
        end_group(t);    /* nothing to send */
}

static void start_op(struct target *t)
{
    t->bdat = false;
    if (t->ops[0] == OP_BODY) {
        if (t->state == T_DATA_OPEN) {
            start_body(t);
            return;
        }
        if (t->caps.chunking) {
            start_bdat(t);
            return;
        }
        t->state = T_WAIT_354;
        send_line(t, "DATA", TIMEOUT_DATA_INIT);
        return;
    }
    t->pipelined = t->caps.pipelining && !t->helo_fallback;
    compose_group(t);
    send_commands(t);
}

static void on_greeting(struct target *t, const struct wire_reply *r)
{
    char line[300];
    if (r->code != 220) {
        drop(t, "greeting refused");
        return;
    }
    t->state = T_HELLO;
    snprintf(line, sizeof line, "%s %s", hello_verb(&t->spec), t->helo);
    send_line(t, line, TIMEOUT_COMMAND);
}

static void on_hello(struct target *t, const struct wire_reply *r)
{
    char line[300];
    if (r->code / 100 == 2) {
        if (!t->helo_fallback)
            parse_caps(r, &t->caps);
        t->state = T_IDLE;
        if (t->op_active)
            start_op(t);
    } else if (r->code / 100 == 5 && t->spec.kind == TARGET_SMTP && !t->helo_fallback) {
        /* RFC 5321 3.2: a server that does not know EHLO gets HELO. */
        t->helo_fallback = true;
        memset(&t->caps, 0, sizeof t->caps);
        snprintf(line, sizeof line, "HELO %s", t->helo);
        send_line(t, line, TIMEOUT_COMMAND);
    } else {
        drop(t, "hello refused");
    }
}

/* RFC 5321 4.3.2: DATA is answered 354, or refused with 4xx/5xx. A 2xx (or another 3xx)
 * would be taken for the verdict on a message the target never saw: the target is out of
 * step, and what is in flight gets no reply (421 to the provider). */
static bool valid_reply_to_data(const struct wire_reply *r)
{
    return r->code == 354 || r->code / 100 >= 4;
}

/* A reply to a command of the group (or, after the body, one of the final replies). */
static void on_reply(struct target *t, const struct wire_reply *r)
{
    if (t->got >= t->want) {
        drop(t, "unexpected reply");
        return;
    }
    size_t i = t->got++;
    t->replies[i] = *r;
    if (t->ops[0] == OP_BODY || t->count == 0) {
        if (t->got == t->want) {
            t->state = T_IDLE;
            finish_op(t);
        }
        return;
    }
    enum target_op op = t->ops[i];
    if (op == OP_DATA && !valid_reply_to_data(r)) {
        t->got = i;   /* that reply is no reply: drop() leaves its slot code 0 */
        drop(t, "neither 354 nor a refusal to DATA");
        return;
    }
    if (op == OP_RCPT && r->code / 100 == 2)
        t->group_accepted = true;
    if (op == OP_DATA && r->code == 354) {
        if (!t->group_accepted && !t->others_accepted) {
            /* RFC 2920 3.1: DATA accepted although every recipient was refused: a lone dot
             * ends it (nothing to deliver to); its reply is not passed on. */
            t->ops[t->count] = OP_DOT;
            t->want++;
            send_line(t, ".", TIMEOUT_DATA_END);
            return;
        }
        t->state = T_DATA_OPEN;
        set_timeout(t, TIMEOUT_DATA_END);   /* the provider's body may take long */
        finish_op(t);
        return;
    }
    /* One at a time: the next command only after a 2xx (MAIL refused: no RCPT). */
    if (!t->pipelined && r->code / 100 == 2 && sendable(t, t->sent)) {
        send_line(t, t->lines[t->sent], TIMEOUT_COMMAND);
        t->sent++;
        t->want = t->sent;
        return;
    }
    if (t->got == t->want)
        end_group(t);
}

/* The reply to a DATA sent alone, before the body of target_data(). */
static void on_354(struct target *t, const struct wire_reply *r)
{
    if (!valid_reply_to_data(r)) {
        drop(t, "neither 354 nor a refusal to DATA");
        return;
    }
    if (r->code != 354) {
        t->want = 1;
        on_reply(t, r);
        return;
    }
    start_body(t);
}

static void dispatch(struct target *t, const struct wire_reply *r)
{
    if (t->opts->verbose) {
        char quoted[300];
        log_debug("target.reply", " code=%d text=%s", r->code,
                  log_quote(quoted, sizeof quoted, r->text, strlen(r->text)));
    }
    switch (t->state) {
    case T_GREETING: on_greeting(t, r); break;
    case T_HELLO: on_hello(t, r); break;
    case T_WAIT: on_reply(t, r); break;
    case T_WAIT_354: on_354(t, r); break;
    default: drop(t, "unexpected reply"); break;
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct target *t = arg;
    struct wire_reply r;
    int rc;
    while (t->bev != NULL && (rc = wire_read_reply(&t->reader, bufferevent_get_input(bev), &r)) != 0) {
        if (rc < 0) {
            drop(t, wire_reader_error(&t->reader));
            return;
        }
        dispatch(t, &r);
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct target *t = arg;
    if (t->state == T_BODY)
        pump_body(t);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct target *t = arg;
    drop(t, what & BEV_EVENT_TIMEOUT ? "timeout" : what & BEV_EVENT_EOF ? "eof" : "error");
}

/* ---- local targets: maildir: and mda: (local.h) ---- */

static void local_caps(struct target_caps *caps)
{
    /* The message is stored or piped as it is: any 8-bit or UTF-8 content goes. */
    *caps = (struct target_caps){.esmtp = true, .eightbitmime = true, .smtputf8 = true};
}

static int local_probe(const struct target_spec *spec, struct target_caps *caps, char *err,
                       size_t errlen)
{
    struct mda_command c;
    local_caps(caps);
    if (spec->kind == TARGET_MAILDIR)
        return maildir_probe(spec->local, err, errlen);
    if (mda_parse(spec->local, &c, err, errlen) != 0)
        return -1;
    return mda_probe(&c, err, errlen);
}

static void local_reset(struct target *t)
{
    for (size_t i = 0; i < t->rcpt_count; i++) {
        free(t->rcpts[i].addr);
        free(t->rcpts[i].dest);
    }
    t->rcpt_count = 0;
    free(t->sender);
    t->sender = NULL;
}

static void local_command(struct target *t, const char *line, const char *addr,
                          struct wire_reply *out)
{
    if (strcasecmp(line, "RSET") == 0)
        local_reset(t);
    local_reply(out, 250, "2.0.0 OK");
}

static void local_mail(struct target *t, const char *line, const char *sender,
                       struct wire_reply *out)
{
    local_reset(t);
    if (t->spec.kind == TARGET_MDA && mda_address_ok(sender) != 0) {
        local_reply(out, 553, "5.1.7 Sender address starting with '-' refused "
                    "by the MDA target");
        return;
    }
    t->sender = strdup(sender);
    if (t->sender == NULL)
        local_reply(out, 451, "4.3.0 Out of memory");
    else
        local_reply(out, 250, "2.1.0 OK");
}

/* The recipient's destination: the expanded maildir, or nothing for an MDA. */
static int local_destination(struct target *t, const char *rcpt, char **dest,
                             struct wire_reply *out)
{
    char path[LOCAL_PATH_MAX], err[200];
    *dest = NULL;
    if (t->spec.kind == TARGET_MDA) {
        if (mda_address_ok(rcpt) == 0)
            return 0;
        local_reply(out, 553, "5.1.3 Recipient address starting with '-' refused "
                    "by the MDA target");
        return -1;
    }
    if (maildir_expand(t->spec.local, rcpt, path, sizeof path, err, sizeof err) != 0) {
        local_reply(out, 553, "5.1.3 %s", err);
        return -1;
    }
    *dest = strdup(path);
    return 0;
}

static void local_rcpt(struct target *t, const char *line, const char *rcpt,
                       struct wire_reply *out)
{
    char *dest;
    if (t->sender == NULL || t->rcpt_count == MAX_REPLIES) {
        local_reply(out, 452, "4.5.3 Too many recipients");
        return;
    }
    if (local_destination(t, rcpt, &dest, out) != 0)
        return;
    struct local_rcpt *r = &t->rcpts[t->rcpt_count];
    r->addr = strdup(rcpt);
    r->dest = dest;
    if (r->addr == NULL || (dest == NULL && t->spec.kind == TARGET_MAILDIR)) {
        free(r->addr);
        free(dest);
        local_reply(out, 451, "4.3.0 Out of memory");
        return;
    }
    t->rcpt_count++;
    local_reply(out, 250, "2.1.5 OK");
}

/* One delivery per recipient, each with its own verdict (folded by the relay). */
static void local_body(struct target *t, const char *line, const char *addr,
                       struct wire_reply *out)
{
    for (size_t i = 0; i < t->want && i < t->rcpt_count; i++) {
        const struct local_rcpt *r = &t->rcpts[i];
        if (t->spec.kind == TARGET_MAILDIR)
            maildir_deliver(r->dest, t->body_fd, t->sender, r->addr, &out[i]);
        else
            mda_deliver(&t->mda, t->body_fd, t->sender, r->addr,
                        (double)client_timeout_seconds(t->opts, TIMEOUT_DATA_END), &out[i]);
        if (t->opts->verbose) {
            char qaddr[300], qtext[300];
            log_debug("target.local", " rcpt=%s code=%d reply=%s",
                      log_quote(qaddr, sizeof qaddr, r->addr, strlen(r->addr)), out[i].code,
                      log_quote(qtext, sizeof qtext, out[i].text, strlen(out[i].text)));
        }
    }
    local_reset(t);
}

/* A group runs one command at a time and stops at the first refusal; DATA has nothing to do
 * here (the delivery is target_data()), so it stays unanswered (code 0). */
static void local_run(struct target *t, enum target_op op, const char *line, const char *addr,
                      struct wire_reply *out)
{
    static void (*const handlers[])(struct target *, const char *, const char *,
                                    struct wire_reply *) = {
        [OP_COMMAND] = local_command,
        [OP_MAIL] = local_mail,
        [OP_RCPT] = local_rcpt,
        [OP_BODY] = local_body,
    };
    if (handlers[op] != NULL)
        handlers[op](t, line, addr, out);
}

static int open_connection(struct target *t)
{
    char err[256];
    int fd = wire_connect(t->spec.host, t->spec.port, t->spec.is_unix ? t->spec.unix_path : NULL,
                          client_timeout(t->opts, TIMEOUT_CONNECT), err, sizeof err);
    if (fd < 0) {
        log_warn("target.connect_failed", " error=%s", err);
        return -1;
    }
    t->bev = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (t->bev == NULL) {
        close(fd);
        return -1;
    }
    t->generation++;
    t->helo_fallback = false;
    t->state = T_GREETING;
    bufferevent_setcb(t->bev, on_read, on_write, on_event, t);
    bufferevent_setwatermark(t->bev, EV_WRITE, BODY_LOW, 0);
    /* libevent writes at most 16 KiB per callback by default: the body goes in bigger writes */
    bufferevent_set_max_single_write(t->bev, BODY_HIGH);
    set_timeout(t, TIMEOUT_GREETING);
    bufferevent_enable(t->bev, EV_READ | EV_WRITE);
    return 0;
}

/* A transaction never spans two connections: MAIL (or RSET) may open a new one, but RCPT and
 * DATA belong to the MAIL sent on the connection that is gone. On a new connection the target
 * would answer them 503, a permanent failure for mail that is only delayed. */
static bool may_reconnect(enum target_op op)
{
    return op == OP_COMMAND || op == OP_MAIL;
}

/* Starts an operation: t->count commands of a group (t->ops[], t->lines[]), or the body
 * (t->ops[0] == OP_BODY, t->count 0); replies: slots the caller reads. */
static void begin(struct target *t, size_t replies, target_cb cb, void *arg)
{
    if (t->state == T_DATA_OPEN && t->ops[0] != OP_BODY)
        drop(t, "message abandoned after DATA");   /* never a command inside the data */
    t->op_active = true;
    t->sent = 0;
    t->want = replies;
    t->got = 0;
    t->group_accepted = false;
    t->cb = cb;
    t->cb_arg = arg;
    free(t->replies);
    /* one more than asked: room for the reply to a lone dot (on_reply) */
    t->replies = calloc(replies + 1, sizeof *t->replies);
    if (t->replies == NULL) {
        t->want = 0;
        finish_op(t);
        return;
    }
    if (is_local(&t->spec)) {
        if (t->ops[0] == OP_BODY) {
            local_run(t, OP_BODY, NULL, NULL, t->replies);
        } else {
            for (size_t i = 0; i < t->count; i++) {
                local_run(t, t->ops[i], t->lines[i], t->addrs[i], &t->replies[i]);
                if (t->replies[i].code / 100 != 2)
                    break;
            }
        }
        finish_op(t);
        return;
    }
    if (t->state == T_DOWN && (!may_reconnect(t->ops[0]) || open_connection(t) != 0)) {
        finish_op(t);   /* every reply code 0: unavailable */
        return;
    }
    if (t->state == T_IDLE || t->state == T_DATA_OPEN)
        start_op(t);
}

/* A command of the group; line NULL for MAIL and RCPT (composed when sent). */
static int add_command(struct target *t, enum target_op op, const char *line, const char *addr)
{
    size_t i = t->count++;
    t->ops[i] = op;
    t->lines[i] = line != NULL ? strdup(line) : NULL;
    t->addrs[i] = addr != NULL ? strdup(addr) : NULL;
    return (line != NULL && t->lines[i] == NULL) || (addr != NULL && t->addrs[i] == NULL) ? -1
                                                                                          : 0;
}

/* *to = a copy of from (NULL stays NULL), kept in t->params[slot] until the group is over. */
static int keep_param(struct target *t, size_t slot, const char *from, const char **to)
{
    *to = NULL;
    if (from == NULL)
        return 0;
    t->params[slot] = strdup(from);
    *to = t->params[slot];
    return *to != NULL ? 0 : -1;
}

/* The group's envelope, copied: MAIL and RCPT are composed from it when sent. */
static int keep_envelope(struct target *t, const struct target_group *g)
{
    int rc = 0;
    if (g->mail != NULL) {
        t->mail = *g->mail;
        rc |= add_command(t, OP_MAIL, NULL, g->mail->sender);
        t->mail.sender = t->addrs[t->count - 1];
        rc |= keep_param(t, 0, g->mail->ret, &t->mail.ret);
        rc |= keep_param(t, 1, g->mail->envid, &t->mail.envid);
    }
    rc |= add_command(t, OP_RCPT, NULL, g->rcpt.address);
    t->rcpt.address = t->addrs[t->count - 1];
    rc |= keep_param(t, 2, g->rcpt.notify, &t->rcpt.notify);
    rc |= keep_param(t, 3, g->rcpt.orcpt, &t->rcpt.orcpt);
    return rc;
}

/* An operation that sends nothing: count replies, every one code 0 (unavailable), delivered
 * from the loop like any other. */
static void answer_unavailable(struct target *t, size_t count, target_cb cb, void *arg)
{
    t->op_active = true;
    t->cb = cb;
    t->cb_arg = arg;
    free(t->replies);
    t->replies = calloc(count, sizeof *t->replies);
    t->want = t->replies != NULL ? count : 0;
    finish_op(t);
}

void target_group(struct target *t, const struct target_group *g, target_cb cb, void *arg)
{
    int rc = 0;
    clear_op(t);
    if (g->rset)
        rc |= add_command(t, OP_COMMAND, "RSET", NULL);
    rc |= keep_envelope(t, g);
    /* With CHUNKING the body goes as BDAT in target_data(): nothing to open here. */
    if (g->data && !t->caps.chunking)
        rc |= add_command(t, OP_DATA, "DATA", NULL);
    t->others_accepted = g->others_accepted;
    if (rc != 0) {
        /* Out of memory: nothing is sent, every reply has code 0 (unavailable). */
        size_t count = t->count;
        clear_op(t);
        answer_unavailable(t, count, cb, arg);
        return;
    }
    begin(t, t->count, cb, arg);
}

void target_data(struct target *t, int fd, size_t count, target_cb cb, void *arg)
{
    if (count > MAX_REPLIES)
        count = MAX_REPLIES;
    clear_op(t);
    t->ops[0] = OP_BODY;
    t->body_fd = fd;
    if (fd < 0) {
        /* No body to send: a DATA left open ends without its dot; the replies have code 0. */
        if (t->state == T_DATA_OPEN)
            drop(t, "no message to send");
        answer_unavailable(t, count, cb, arg);
        return;
    }
    begin(t, count, cb, arg);
}

struct target *target_new(struct event_base *base, const struct target_spec *spec,
                          const struct client_options *o, const char *helo)
{
    struct target *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->base = base;
    t->spec = *spec;
    t->opts = o;
    t->body_fd = -1;
    snprintf(t->helo, sizeof t->helo, "%s", helo);
    wire_reader_init(&t->reader);
    t->deliver = event_new(base, -1, 0, on_deliver, t);
    t->rcpts = calloc(MAX_REPLIES, sizeof *t->rcpts);
    if (is_local(spec)) {
        char err[256];
        t->generation = 1;   /* nothing to lose: a transaction never spans a reconnection */
        local_caps(&t->caps);
        if (spec->kind == TARGET_MDA && mda_parse(spec->local, &t->mda, err, sizeof err) != 0)
            log_warn("target.mda", " error=\"%s\"", err);
    }
    if (t->deliver == NULL || t->rcpts == NULL) {
        target_free(t);
        return NULL;
    }
    return t;
}

void target_quit(struct target *t)
{
    if (t->bev != NULL && t->state == T_IDLE) {
        struct evbuffer *out = bufferevent_get_output(t->bev);
        evbuffer_add(out, "QUIT\r\n", 6);
        (void)evbuffer_write(out, bufferevent_getfd(t->bev));
    }
}

void target_free(struct target *t)
{
    if (t == NULL)
        return;
    if (t->bev != NULL)
        bufferevent_free(t->bev);
    if (t->deliver != NULL)
        event_free(t->deliver);
    wire_reader_free(&t->reader);
    if (t->rcpts != NULL)
        local_reset(t);
    free(t->rcpts);
    free(t->replies);
    clear_op(t);
    free(t);
}

unsigned target_generation(const struct target *t)
{
    return t->generation;
}

const struct target_caps *target_capabilities(const struct target *t)
{
    return &t->caps;
}

bool target_is_lmtp(const struct target *t)
{
    return t->spec.kind == TARGET_LMTP;
}

bool target_per_recipient(const struct target *t)
{
    return t->spec.kind != TARGET_SMTP;
}
