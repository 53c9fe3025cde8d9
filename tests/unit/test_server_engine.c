/* SPDX-License-Identifier: ISC */
/* The SMTP server engine itself (engines/smtp_server.h): the command flags checked in one
 * place (before TLS, before AUTH, before EHLO, LMTP-only and SMTP-only verbs, a server without
 * mail transactions), a verb a service registers (with SASL-style continuation lines, a held
 * reply, pipelined behind other commands), and detach (the new owner gets the connection's
 * descriptor and every octet the client sent after the detaching command, none taken by the
 * engine; the session's slot stays taken until it is given back). Whole replies compared. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engines/smtp_server.h"
#include "lib/log.h"
#include "lib/peer_count.h"

struct fixture {
    struct smtp_session *held;        /* XWAIT paused it */
    struct smtp_detached detached;    /* XTURN handed it on */
    bool did_detach;
    unsigned closed;                  /* session_closed calls */
    char lines[512];                  /* what XAUTH's line taker got, '|'-separated */
    char replies[8192];               /* what the client read */
    char data[4096];                  /* the last message's octets, as data_write got them */
    size_t data_len;
};

/* ---- a small service: XAUTH (continuation lines), XTRN (needs AUTH), XWAIT (holds its
 * reply), XTURN (detaches) ---- */

static void auth_line(void *ctx, struct smtp_session *s, const char *text)
{
    struct fixture *f = ctx;
    strcat(f->lines, text ? text : "(too long)");
    strcat(f->lines, "|");
    if (text != NULL && strcmp(text, "secret") == 0) {
        smtp_session_release_lines(s);
        smtp_session_set_authenticated(s);
        reply_send(smtp_session_output(s), 235, "2.7.0", "Authenticated");
    } else if (text != NULL && strcmp(text, "*") == 0) {
        smtp_session_release_lines(s);
        reply_send(smtp_session_output(s), 501, "5.0.0", "Cancelled");
    } else {
        reply_send(smtp_session_output(s), 334, NULL, "more");
    }
}

static void cmd_xauth(void *ctx, struct smtp_session *s, const char *arg)
{
    smtp_session_take_lines(s, auth_line, ctx, 64);
    reply_send(smtp_session_output(s), 334, NULL, "go on");
}

static void cmd_xtrn(void *ctx, struct smtp_session *s, const char *arg)
{
    reply_send(smtp_session_output(s), 250, "2.0.0", "XTRN %s", arg);
}

static void cmd_xwait(void *ctx, struct smtp_session *s, const char *arg)
{
    struct fixture *f = ctx;
    f->held = s;
    smtp_session_pause(s);
}

static void cmd_xturn(void *ctx, struct smtp_session *s, const char *arg)
{
    struct fixture *f = ctx;
    reply_send(smtp_session_output(s), 250, "2.0.0", "Turning");
    f->did_detach = smtp_session_detach(s, &f->detached) == 0;
}

static const struct smtp_server_command service_verbs[] = {
    {"XAUTH", SMTP_CMD_SMTP | SMTP_CMD_PRE_AUTH | SMTP_CMD_NOT_AFTER_AUTH | SMTP_CMD_NEEDS_ESMTP,
     cmd_xauth},
    {"XTRN", SMTP_CMD_SMTP, cmd_xtrn},
    {"XWAIT", SMTP_CMD_SMTP | SMTP_CMD_PRE_AUTH | SMTP_CMD_PRE_GREETING, cmd_xwait},
    {"XTURN", SMTP_CMD_SMTP | SMTP_CMD_PRE_AUTH | SMTP_CMD_PRE_GREETING, cmd_xturn},
};

static void hook_rcpt(void *ctx, struct smtp_session *s, const struct smtp_path_command *rcpt,
                      const char *domain, struct smtp_reply *reply)
{
}

static int hook_data_begin(void *ctx, struct smtp_session *s, struct smtp_reply *reply)
{
    struct fixture *f = ctx;
    f->data_len = 0;
    return 0;
}

static int hook_data_write(void *ctx, struct smtp_session *s, const char *data, size_t len)
{
    struct fixture *f = ctx;
    assert_true(len <= sizeof f->data - f->data_len);
    memcpy(f->data + f->data_len, data, len);
    f->data_len += len;
    return 0;
}

static void hook_data_end(void *ctx, struct smtp_session *s)
{
    struct smtp_reply reply;
    smtp_session_data_done(s, reply_set(&reply, 250, "2.0.0", "Queued"));
}

static void hook_closed(void *ctx, struct smtp_session *s)
{
    struct fixture *f = ctx;
    f->closed++;
}

static size_t hook_keywords(void *ctx, struct smtp_session *s, char lines[][200], size_t max)
{
    snprintf(lines[0], 200, "XAUTH PLAIN");
    return 1;
}

static const struct smtp_server_hooks hooks = {
    .check_rcpt = hook_rcpt, .data_begin = hook_data_begin, .data_write = hook_data_write,
    .data_end = hook_data_end, .session_closed = hook_closed, .ehlo_keywords = hook_keywords,
};

static struct smtp_server_settings settings(struct fixture *f, enum smtp_server_mode mode)
{
    struct smtp_server_settings set = {
        .mode = mode, .hostname = "mx.example", .role = "test",
        .limits = {1 << 20, 100, 1000, 20, 100, 300, 300}, .hooks = &hooks, .hooks_ctx = f,
        .max_sessions = 4};
    return set;
}

static struct smtp_server *new_server(struct event_base *base,
                                      const struct smtp_server_settings *set)
{
    struct smtp_server *server = smtp_server_new(base, set);
    assert_non_null(server);
    for (size_t i = 0; i < sizeof service_verbs / sizeof service_verbs[0]; i++)
        assert_int_equal(smtp_server_register(server, &service_verbs[i]), 0);
    return server;
}

static void run_loop(struct event_base *base)
{
    for (int i = 0; i < 100; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

static void take_replies(struct fixture *f, struct bufferevent *client)
{
    struct evbuffer *in = bufferevent_get_input(client);
    size_t have = strlen(f->replies);
    size_t n = evbuffer_remove(in, f->replies + have, sizeof f->replies - 1 - have);
    f->replies[have + n] = '\0';
}

/* A server and one session over a bufferevent pair; the client is pair[1]. */
struct conn {
    struct event_base *base;
    struct smtp_server *server;
    struct bufferevent *pair[2];
};

/* Sends input in one write (every command pipelined) and runs the loop until nothing is left
 * to do; the replies are appended to f->replies. */
static void conn_open(struct conn *c, const struct smtp_server_settings *set)
{
    c->base = event_base_new();
    assert_int_equal(bufferevent_pair_new(c->base, BEV_OPT_CLOSE_ON_FREE, c->pair), 0);
    c->server = new_server(c->base, set);
    assert_non_null(smtp_server_adopt(c->server, c->pair[0], "192.0.2.1", false));
    bufferevent_enable(c->pair[1], EV_READ | EV_WRITE);
}

static void conn_send(struct conn *c, struct fixture *f, const char *input)
{
    bufferevent_write(c->pair[1], input, strlen(input));
    run_loop(c->base);
    take_replies(f, c->pair[1]);
}

static void conn_close(struct conn *c)
{
    smtp_server_free(c->server);
    bufferevent_free(c->pair[1]);
    event_base_free(c->base);
}

static void converse(struct fixture *f, const struct smtp_server_settings *set,
                     const char *input)
{
    struct conn c;
    conn_open(&c, set);
    conn_send(&c, f, input);
    conn_close(&c);
}

#define GREETING "220 mx.example ESMTP odmr-client\r\n"

/* ---- flag rules ---- */

static void test_before_ehlo(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    converse(&f, &set, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
                       "FOO bar\r\nNOOP\r\nQUIT\r\n");
    assert_string_equal(f.replies, GREETING
                        "503 5.5.1 Send EHLO first\r\n"
                        "503 5.5.1 Send EHLO first\r\n"
                        "503 5.5.1 Send EHLO first\r\n"
                        "500 5.5.2 Command unrecognized\r\n"
                        "250 2.0.0 OK\r\n"
                        "221 2.0.0 mx.example Bye\r\n");
}

static void test_transaction_sequence(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    converse(&f, &set, "HELO c.example\r\nRCPT TO:<c@d.example>\r\nMAIL FROM:<a@b.example>\r\n"
                       "DATA\r\nMAIL FROM:<a@b.example>\r\nXAUTH PLAIN\r\nQUIT\r\n");
    assert_string_equal(f.replies, GREETING
                        "250 mx.example\r\n"
                        "503 5.5.1 Need MAIL first\r\n"
                        "250 2.1.0 Sender OK\r\n"
                        "503 5.5.1 Need MAIL and RCPT first\r\n"
                        "503 5.5.1 Not allowed inside a mail transaction\r\n"
                        "503 5.5.1 This command needs EHLO, not HELO\r\n"
                        "221 2.0.0 mx.example Bye\r\n");
}

static void test_lmtp_and_smtp_only_verbs(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_LMTP);
    converse(&f, &set, "EHLO c.example\r\nHELO c.example\r\nSTARTTLS\r\nXTRN\r\nQUIT\r\n");
    assert_string_equal(f.replies, GREETING
                        "500 5.5.1 Command not used in this protocol\r\n"
                        "500 5.5.1 Command not used in this protocol\r\n"
                        "500 5.5.1 Command not used in this protocol\r\n"
                        "500 5.5.1 Command not used in this protocol\r\n"
                        "221 2.0.0 mx.example Bye\r\n");
    memset(&f, 0, sizeof f);
    set = settings(&f, SMTP_SERVER_SMTP);
    converse(&f, &set, "LHLO c.example\r\nSTARTTLS\r\nBDAT 0 LAST\r\nQUIT\r\n");
    assert_string_equal(f.replies, GREETING
                        "500 5.5.1 Command not used in this protocol\r\n"
                        "502 5.5.1 Command not implemented\r\n"   /* no TLS configured */
                        "502 5.5.1 Command not implemented\r\n"   /* no CHUNKING offered */
                        "221 2.0.0 mx.example Bye\r\n");
}

static void test_before_tls(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    set.require_tls = true;
    converse(&f, &set, "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nXTRN x\r\nNOOP\r\nQUIT\r\n");
    assert_string_equal(f.replies, GREETING
                        "250-mx.example Hello c.example\r\n"
                        "250-PIPELINING\r\n250-SIZE 1048576\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                        "250-DSN\r\n250-XAUTH PLAIN\r\n250 ENHANCEDSTATUSCODES\r\n"
                        "530 5.7.0 Must issue a STARTTLS command first\r\n"
                        "530 5.7.0 Must issue a STARTTLS command first\r\n"
                        "250 2.0.0 OK\r\n"
                        "221 2.0.0 mx.example Bye\r\n");
}

/* A registered verb with continuation lines, all pipelined in one write: the lines go to the
 * service in order, the commands after the exchange are commands again, and AUTH lifts the
 * require_auth rule; no mail service: MAIL is 502 and only the service's keywords show. */
static void test_before_auth_and_registered_verb(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    set.require_auth = true;
    set.no_mail = true;
    converse(&f, &set, "EHLO c.example\r\nXTRN a\r\nMAIL FROM:<a@b.example>\r\nXAUTH PLAIN\r\n"
                       "wrong\r\n*\r\nXAUTH PLAIN\r\nsecret\r\nXTRN b\r\nXAUTH PLAIN\r\n"
                       "EHLO c.example\r\nQUIT\r\n");
    assert_string_equal(f.replies, GREETING
                        "250-mx.example Hello c.example\r\n250-XAUTH PLAIN\r\n"
                        "250 ENHANCEDSTATUSCODES\r\n"
                        "530 5.7.0 Authentication required\r\n"
                        "502 5.5.1 Command not implemented\r\n"
                        "334 go on\r\n334 more\r\n501 5.0.0 Cancelled\r\n"
                        "334 go on\r\n235 2.7.0 Authenticated\r\n"
                        "250 2.0.0 XTRN b\r\n"
                        "503 5.5.1 Already authenticated\r\n"
                        "503 5.5.1 Already authenticated\r\n"
                        "221 2.0.0 mx.example Bye\r\n");
    assert_string_equal(f.lines, "wrong|*|secret|");
}

static void test_error_limit(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    set.limits.max_errors = 2;
    converse(&f, &set, "FOO\r\nBAR\r\nNOOP\r\n");
    assert_string_equal(f.replies, GREETING
                        "500 5.5.2 Command unrecognized\r\n"
                        "500 5.5.2 Command unrecognized\r\n"
                        "421 4.7.0 mx.example Too many errors, closing the connection\r\n");
}

/* A paused verb holds the pipelined commands behind it until the service resumes. */
static void test_pause_holds_pipelined_commands(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    struct conn c;
    conn_open(&c, &set);
    conn_send(&c, &f, "XWAIT\r\nNOOP\r\nQUIT\r\n");
    assert_string_equal(f.replies, GREETING);
    assert_non_null(f.held);
    reply_send(smtp_session_output(f.held), 250, "2.0.0", "Waited");
    smtp_session_resume(f.held);
    conn_send(&c, &f, "");
    assert_string_equal(f.replies, GREETING "250 2.0.0 Waited\r\n250 2.0.0 OK\r\n"
                                            "221 2.0.0 mx.example Bye\r\n");
    assert_int_equal(f.closed, 1);
    conn_close(&c);
}

static void on_idle(void *arg)
{
    *(bool *)arg = true;
}

/* Shutdown while a reply is held: 421 is the last reply, the session is no longer paused (the
 * service must drop its held reply), and it ends. */
static void test_shutdown_while_paused(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    struct conn c;
    bool idle = false;
    conn_open(&c, &set);
    conn_send(&c, &f, "XWAIT\r\nNOOP\r\n");
    assert_true(smtp_session_paused(f.held));
    smtp_server_shutdown(c.server, on_idle, &idle);
    assert_false(smtp_session_paused(f.held));
    conn_send(&c, &f, "");
    assert_string_equal(f.replies, GREETING "421 4.3.2 mx.example Service shutting down\r\n");
    assert_int_equal(f.closed, 1);
    assert_true(idle);
    conn_close(&c);
}

/* ---- detach ---- */

static void read_all(int fd, char *buf, size_t size)
{
    size_t have = strlen(buf);
    ssize_t n;
    while (have + 1 < size && (n = read(fd, buf + have, size - 1 - have)) > 0)
        have += (size_t)n;
    buf[have] = '\0';
}

static int connect_pair(struct smtp_server *server, int *client)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(4000)};
    peer.sin_addr.s_addr = htonl(0xC0000201);   /* 192.0.2.1 */
    smtp_server_accept(server, sv[0], (struct sockaddr *)&peer, sizeof peer);
    evutil_make_socket_nonblocking(sv[1]);
    *client = sv[1];
    return sv[0];
}

static void test_detach(void **state)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    struct peer_count *peers = peer_count_new(4);
    set.peers = peers;
    set.max_sessions_per_address = 1;
    struct event_base *base = event_base_new();
    struct smtp_server *server = new_server(base, &set);
    int client, server_fd = connect_pair(server, &client);
    /* The octets after XTURN (the next phase's, or a pipelining client's) stay unread. */
    const char *input = "EHLO c.example\r\nXTURN\r\nNOT A COMMAND\r\npartial";
    assert_int_equal(write(client, input, strlen(input)), (ssize_t)strlen(input));
    run_loop(base);
    assert_true(f.did_detach);
    assert_int_equal(f.closed, 0);   /* detached, not closed */
    assert_int_equal(bufferevent_getfd(f.detached.bev), server_fd);
    assert_int_equal(smtp_server_session_count(server), 1);
    /* The rest of the input is the new owner's, whole: nothing taken, nothing answered. */
    bufferevent_enable(f.detached.bev, EV_READ);
    run_loop(base);
    struct evbuffer *in = bufferevent_get_input(f.detached.bev);
    char rest[64] = "";
    evbuffer_remove(in, rest, sizeof rest - 1);
    assert_string_equal(rest, "NOT A COMMAND\r\npartial");
    read_all(client, f.replies, sizeof f.replies);
    assert_string_equal(strstr(f.replies, "250 ENHANCEDSTATUSCODES\r\n"),
                        "250 ENHANCEDSTATUSCODES\r\n250 2.0.0 Turning\r\n");
    /* The slot stays taken: a second connection from the address is refused ... */
    int client2;
    connect_pair(server, &client2);
    char refused[256] = "";
    read_all(client2, refused, sizeof refused);
    assert_string_equal(refused,
                        "421 4.7.0 Too many connections from your address, try again later\r\n");
    close(client2);
    /* ... until the new owner is done with it. */
    smtp_server_detached_end(server, &f.detached);
    assert_int_equal(smtp_server_session_count(server), 0);
    assert_int_equal(peer_count_get(peers, "192.0.2.1"), 0);
    bufferevent_free(f.detached.bev);
    close(client);
    smtp_server_free(server);
    peer_count_free(peers);
    event_base_free(base);
}

/* ---- message lines (RFC 5321 4.1.1.4, 4.5.2, 2.3.8): plain runs are staged straight from the
 * input buffer, every other line through the line reader; cut anywhere, the same octets ---- */

#define TRANSACTION "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
#define DATA_REPLIES GREETING "250-mx.example\r\n"

/* Sends the transaction and body cut at offset cut (two writes: the first part, then the
 * rest with QUIT), and checks the message's last reply and, for a 250, its octets. */
static void data_cut_at(const char *body, size_t cut, const char *reply, const char *octets)
{
    struct fixture f = {0};
    struct smtp_server_settings set = settings(&f, SMTP_SERVER_SMTP);
    char first[4096], rest[4096];
    assert_true(cut <= strlen(body) && strlen(body) < 4000);
    snprintf(first, sizeof first, "%s%.*s", TRANSACTION, (int)cut, body);
    snprintf(rest, sizeof rest, "%sQUIT\r\n", body + cut);
    struct conn c;
    conn_open(&c, &set);
    conn_send(&c, &f, first);
    conn_send(&c, &f, rest);
    conn_close(&c);
    char expect[256];
    snprintf(expect, sizeof expect, "354 End data with <CR><LF>.<CR><LF>\r\n%s\r\n221 ", reply);
    if (strstr(f.replies, expect) == NULL)
        fail_msg("cut %zu: replies %s", cut, f.replies);
    if (octets != NULL) {
        assert_int_equal(f.data_len, strlen(octets));
        assert_memory_equal(f.data, octets, f.data_len);
    }
}

static void data_every_cut(const char *body, const char *reply, const char *octets)
{
    for (size_t cut = 0; cut <= strlen(body); cut++)
        data_cut_at(body, cut, reply, octets);
}

static void test_data_lines(void **state)
{
    /* Stuffed dots removed, empty lines kept, a dot inside a line kept. */
    data_every_cut("a\r\n..b\r\n\r\n.c\r\nplain. line\r\nx\r\n.\r\n", "250 2.0.0 Queued",
                   "a\r\n.b\r\n\r\nc\r\nplain. line\r\nx\r\n");
    /* A bare CR inside a line, and a bare LF: refused; "." after a bare LF ends nothing. */
    data_every_cut("ok\r\nx\ry\r\n.\r\n",
                   "550 5.6.0 Bare CR or LF in message data is not allowed (RFC 5321 2.3.8)", NULL);
    data_every_cut("ok\r\nx\n.\r\ny\r\n.\r\n",
                   "550 5.6.0 Bare CR or LF in message data is not allowed (RFC 5321 2.3.8)", NULL);
    /* The line limit (1000 octets with CRLF): 1000 passes, 1001 does not. */
    char body[2200], octets[2200];
    memset(body, 'a', 998);
    snprintf(body + 998, sizeof body - 998, "\r\nb\r\n");
    snprintf(octets, sizeof octets, "%s", body);
    strcat(body, ".\r\n");
    for (size_t cut = 0; cut < strlen(body); cut += 97)
        data_cut_at(body, cut, "250 2.0.0 Queued", octets);
    memset(body, 'a', 999);
    snprintf(body + 999, sizeof body - 999, "\r\nb\r\n.\r\n");
    for (size_t cut = 0; cut < strlen(body); cut += 97)
        data_cut_at(body, cut, "550 5.5.2 Message line longer than 1000 octets (RFC 5321 4.5.3.1.6)",
                    NULL);
}

int main(void)
{
    log_init("test", LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_before_ehlo),
        cmocka_unit_test(test_transaction_sequence),
        cmocka_unit_test(test_lmtp_and_smtp_only_verbs),
        cmocka_unit_test(test_before_tls),
        cmocka_unit_test(test_before_auth_and_registered_verb),
        cmocka_unit_test(test_error_limit),
        cmocka_unit_test(test_pause_holds_pipelined_commands),
        cmocka_unit_test(test_shutdown_while_paused),
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_data_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
