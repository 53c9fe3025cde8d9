/* SPDX-License-Identifier: ISC */
/* odmr-client units: reply reading (RFC 5321 4.2), EHLO keywords, --deliver targets, and the
 * folding of LMTP per-recipient replies into one SMTP reply (RFC 2033 4.2, docs/client.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>

#include "client/relay.h"
#include "client/target.h"
#include "client/wire.h"
#include "lib/reply.h"

static int feed(const char *text, struct smtp_client_reply *out, bool one_byte_at_a_time)
{
    struct wire_reader r;
    struct evbuffer *in = evbuffer_new();
    int rc = 0;
    wire_reader_init(&r);
    for (size_t i = 0; text[i] != '\0' && rc == 0; i++) {
        evbuffer_add(in, text + i, one_byte_at_a_time ? 1 : strlen(text + i));
        rc = wire_read_reply(&r, in, out);
        if (!one_byte_at_a_time)
            break;
    }
    wire_reader_free(&r);
    evbuffer_free(in);
    return rc;
}

static void test_multiline_reply(void **state)
{
    struct smtp_client_reply r;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        assert_int_equal(feed("250-mx.example\r\n250-AUTH SCRAM-SHA-256 CRAM-MD5\r\n250 ATRN\r\n",
                              &r, bytewise), 1);
        assert_int_equal(r.code, 250);
        assert_int_equal(r.lines, 3);
        char args[64];
        assert_true(wire_ehlo_has(&r, "AUTH", args, sizeof args));
        assert_string_equal(args, "SCRAM-SHA-256 CRAM-MD5");
        assert_true(wire_ehlo_has(&r, "atrn", NULL, 0));
        assert_false(wire_ehlo_has(&r, "AUT", NULL, 0));
        assert_false(wire_ehlo_has(&r, "mx.example", NULL, 0));   /* not the first line */
    }
}

static void test_malformed_replies(void **state)
{
    struct smtp_client_reply r;
    assert_int_equal(feed("250-a\r\n251 b\r\n", &r, false), -1);   /* code changes */
    assert_int_equal(feed("25 x\r\n", &r, false), -1);
    assert_int_equal(feed("250x\r\n", &r, false), -1);
    assert_int_equal(feed("650 x\r\n", &r, false), -1);
    assert_int_equal(feed("250\r\n", &r, false), 1);
    assert_int_equal(feed("250 ok", &r, false), 0);                /* no CRLF yet */
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        assert_int_equal(feed("220 bare lf\n", &r, bytewise), -1);  /* RFC 5321 2.3.8 */
        assert_int_equal(feed("260 x\r\n", &r, bytewise), -1);      /* 4.2: x[0-5]x */
        assert_int_equal(feed("250-a\r\n250\r\n", &r, bytewise), 1);
    }
}

/* Over-long lines fail before their end arrives; replies of more than 100 lines fail. */
static void test_reply_bounds(void **state)
{
    struct smtp_client_reply r;
    char line[600];
    memset(line, 'x', sizeof line);
    memcpy(line, "220 ", 4);
    line[sizeof line - 1] = '\0';
    for (int bytewise = 0; bytewise < 2; bytewise++)
        assert_int_equal(feed(line, &r, bytewise), -1);   /* no LF ever came */
    static char many[100 * 8 + 16];
    size_t n = 0;
    for (int i = 0; i < 99; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "250-%02d\r\n", i);
    snprintf(many + n, sizeof many - n, "250 99\r\n");
    assert_int_equal(feed(many, &r, false), 1);            /* exactly 100 lines */
    assert_int_equal(r.lines, 100);
    snprintf(many + n, sizeof many - n, "250-99\r\n250 x\r\n");
    assert_int_equal(feed(many, &r, false), -1);           /* 101 */
}

static void test_to_smtp_reply_keeps_text(void **state)
{
    struct smtp_client_reply w;
    struct smtp_reply s;
    assert_int_equal(feed("550-5.1.1 no\r\n550 5.1.1 such user\r\n", &w, false), 1);
    peer_reply_to_smtp(&w, &s);
    assert_int_equal(s.code, 550);
    assert_string_equal(s.enhanced, "");
    assert_string_equal(s.text, "5.1.1 no\n5.1.1 such user");
}

static void test_target_parse(void **state)
{
    struct target_spec t;
    char err[200];
    assert_int_equal(target_parse("smtp:127.0.0.1:25", &t, err, sizeof err), 0);
    assert_int_equal(t.kind, TARGET_SMTP);
    assert_string_equal(t.host, "127.0.0.1");
    assert_string_equal(t.port, "25");
    assert_int_equal(target_parse("lmtp:[::1]:24", &t, err, sizeof err), 0);
    assert_int_equal(t.kind, TARGET_LMTP);
    assert_string_equal(t.host, "::1");
    assert_int_equal(target_parse("lmtp:unix:/run/dovecot/lmtp", &t, err, sizeof err), 0);
    assert_true(t.is_unix);
    assert_string_equal(t.unix_path, "/run/dovecot/lmtp");
    assert_int_equal(target_parse("smtp:host", &t, err, sizeof err), -1);
    assert_int_equal(target_parse("smtp:host:x25", &t, err, sizeof err), -1);
    assert_int_equal(target_parse("lmtp:unix:relative", &t, err, sizeof err), -1);
    assert_int_equal(target_parse("maildir:/tmp/x", &t, err, sizeof err), 0);
    assert_int_equal(t.kind, TARGET_MAILDIR);
    assert_int_equal(target_parse("maildir:relative/x", &t, err, sizeof err), -1);
    assert_int_equal(target_parse("maildir:/var/mail/%x", &t, err, sizeof err), -1);
    assert_int_equal(target_parse("mda:/usr/sbin/sendmail -i -f %s -- %r", &t, err, sizeof err), 0);
    assert_int_equal(t.kind, TARGET_MDA);
    assert_int_equal(target_parse("mda:sendmail %r", &t, err, sizeof err), -1);
    assert_int_equal(target_parse("mda:/bin/x %q", &t, err, sizeof err), -1);
    assert_int_equal(target_parse("pipe:/bin/x", &t, err, sizeof err), -1);
}

static struct smtp_client_reply wr(int code, const char *text)
{
    struct smtp_client_reply r;
    if (code == 0)
        memset(&r, 0, sizeof r);
    else
        peer_reply_set(&r, code, "%s", text);
    return r;
}

static void test_fold_lmtp(void **state)
{
    struct smtp_reply out;
    struct smtp_client_reply all_ok[] = {wr(250, "2.0.0 a"), wr(250, "2.0.0 b")};
    relay_fold_lmtp(all_ok, 2, &out);
    assert_int_equal(out.code, 250);
    assert_string_equal(out.text, "2.0.0 a");

    struct smtp_client_reply mixed[] = {wr(250, "2.0.0 a"), wr(550, "5.1.1 b")};
    relay_fold_lmtp(mixed, 2, &out);
    assert_int_equal(out.code, 451);   /* one reply cannot say both: retry all */

    struct smtp_client_reply all_5[] = {wr(550, "5.1.1 a"), wr(552, "5.2.2 b")};
    relay_fold_lmtp(all_5, 2, &out);
    assert_int_equal(out.code, 550);

    struct smtp_client_reply refused_mixed[] = {wr(550, "5.1.1 a"), wr(452, "4.2.2 full")};
    relay_fold_lmtp(refused_mixed, 2, &out);
    assert_int_equal(out.code, 452);   /* a temporary failure wins: nothing bounced early */

    /* The target was lost before every reply came: 421, the session ends (docs/client.md). */
    struct smtp_client_reply lost[] = {wr(250, "2.0.0 a"), wr(0, "")};
    relay_fold_lmtp(lost, 2, &out);
    assert_int_equal(out.code, 421);
    struct smtp_client_reply lost_after_5xx[] = {wr(550, "5.1.1 a"), wr(0, "")};
    relay_fold_lmtp(lost_after_5xx, 2, &out);
    assert_int_equal(out.code, 421);
}

/* The MAIL and RCPT lines the engine writes from the target's parameters. */
static int compose_mail(const struct smtp_client_ext *caps, const struct target_mail *m,
                        char *line, size_t len, struct smtp_client_reply *refusal)
{
    char params[400];
    int rc = target_mail_params(caps, m, params, sizeof params, refusal);
    snprintf(line, len, "MAIL FROM:<%s>%s", m->sender, params);
    return rc;
}

static void compose_rcpt(const struct smtp_client_ext *caps, const struct target_rcpt *r,
                         char *line, size_t len)
{
    char params[400];
    target_rcpt_params(caps, r, params, sizeof params);
    snprintf(line, len, "RCPT TO:<%s>%s", r->address, params);
}

/* A reply's text after its code (lib/reply.h keeps the wire form). */
static const char *text_of(const struct smtp_client_reply *r)
{
    static char buf[PEER_REPLY_TEXT];
    return peer_reply_text(r, buf, sizeof buf);
}

/* MAIL and RCPT carry only what the target advertised (RFC 5321 4.1.1.11, docs/client.md
 * "Envelope parameters"); a message needing SMTPUTF8 or 8BITMIME is refused without them. */
static void test_compose_mail(void **state)
{
    const struct target_mail m = {"s@x.example", 1234, true, true, "HDRS", "id+2B1"};
    const struct target_mail plain = {"", 77, false, false, NULL, NULL};
    struct smtp_client_ext all = {.esmtp = true, .eightbitmime = true, .smtputf8 = true, .dsn = true,
                              .size = true, .size_max = 5000};
    struct smtp_client_reply refusal = {0};
    char line[600];
    assert_int_equal(compose_mail(&all, &m, line, sizeof line, &refusal), 0);
    assert_string_equal(line, "MAIL FROM:<s@x.example> SIZE=1234 BODY=8BITMIME SMTPUTF8 "
                        "RET=HDRS ENVID=id+2B1");
    struct smtp_client_ext no_dsn_no_size = all;
    no_dsn_no_size.dsn = no_dsn_no_size.size = false;
    no_dsn_no_size.size_max = 0;
    assert_int_equal(compose_mail(&no_dsn_no_size, &m, line, sizeof line, &refusal), 0);
    assert_string_equal(line, "MAIL FROM:<s@x.example> BODY=8BITMIME SMTPUTF8");
    struct smtp_client_ext size_no_limit = no_dsn_no_size;
    size_no_limit.size = true;   /* "SIZE" alone (RFC 1870: no fixed limit) */
    assert_int_equal(compose_mail(&size_no_limit, &plain, line, sizeof line, &refusal), 0);
    assert_string_equal(line, "MAIL FROM:<> SIZE=77");
    assert_int_equal(refusal.code, 0);

    struct smtp_client_ext no_utf8 = all;
    no_utf8.smtputf8 = false;
    assert_int_equal(compose_mail(&no_utf8, &m, line, sizeof line, &refusal), -1);
    assert_int_equal(refusal.code, 553);
    assert_true(strncmp(text_of(&refusal), "5.6.7 ", 6) == 0);
    struct smtp_client_ext no_8bit = all;
    no_8bit.eightbitmime = false;
    assert_int_equal(compose_mail(&no_8bit, &m, line, sizeof line, &refusal), -1);
    assert_int_equal(refusal.code, 554);
    assert_true(strncmp(text_of(&refusal), "5.6.3 ", 6) == 0);
    /* After the HELO fallback nothing is advertised: a 7-bit message goes bare. */
    struct smtp_client_ext helo = {0};
    assert_int_equal(compose_mail(&helo, &plain, line, sizeof line, &refusal), 0);
    assert_string_equal(line, "MAIL FROM:<>");
}

static void test_compose_rcpt(void **state)
{
    const struct target_rcpt r = {"u@x.example", "SUCCESS,FAILURE", "rfc822;U@X.example"};
    const struct target_rcpt bare = {"u@x.example", NULL, NULL};
    struct smtp_client_ext dsn = {.esmtp = true, .dsn = true};
    struct smtp_client_ext no_dsn = {.esmtp = true};
    char line[600];
    compose_rcpt(&dsn, &r, line, sizeof line);
    assert_string_equal(line, "RCPT TO:<u@x.example> NOTIFY=SUCCESS,FAILURE "
                        "ORCPT=rfc822;U@X.example");
    compose_rcpt(&no_dsn, &r, line, sizeof line);
    assert_string_equal(line, "RCPT TO:<u@x.example>");
    compose_rcpt(&dsn, &bare, line, sizeof line);
    assert_string_equal(line, "RCPT TO:<u@x.example>");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multiline_reply),
        cmocka_unit_test(test_malformed_replies),
        cmocka_unit_test(test_reply_bounds),
        cmocka_unit_test(test_to_smtp_reply_keeps_text),
        cmocka_unit_test(test_target_parse),
        cmocka_unit_test(test_fold_lmtp),
        cmocka_unit_test(test_compose_mail),
        cmocka_unit_test(test_compose_rcpt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
