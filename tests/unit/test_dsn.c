/* SPDX-License-Identifier: ISC */
/* The notice generator (RFC 3464 in RFC 6522, RFC 3461 policy): whole notices compared octet
 * for octet, and the policy and helper functions table by table. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/dsn.h"

#define B "=_odmrd_8DyGvdsl1000feiC.0011223344556677"

static const char original[] = "Received: from x\r\nSubject: hello\r\n\r\nbody line\r\n";

/* RFC 5322 2.1.1: every line ends in CRLF and has at most 998 octets before it. */
static void assert_lines_valid(const struct dsn_notice *n)
{
    size_t line = 0;
    for (size_t i = 0; i < n->len; i++) {
        if (n->text[i] == '\r') {
            assert_true(i + 1 < n->len && n->text[i + 1] == '\n');
            i++;
            line = 0;
        } else {
            assert_true(n->text[i] != '\n' && n->text[i] != '\0');
            assert_true(++line <= DSN_LINE_MAX);
        }
    }
    assert_true(n->len >= 2 && memcmp(n->text + n->len - 2, "\r\n", 2) == 0);
}

static void build_and_compare(const struct dsn_report *r, enum dsn_return ret,
                              const char *returned, size_t len, const char *expected)
{
    struct dsn_notice n;
    assert_int_equal(dsn_build(r, ret, returned, len, &n), 0);
    assert_lines_valid(&n);
    if (n.len != strlen(expected) || memcmp(n.text, expected, n.len) != 0)
        fail_msg("notice differs; got:\n%.*s", (int)n.len, n.text);
    assert_false(n.eightbit);
    assert_false(n.smtputf8);
    dsn_notice_free(&n);
}

/* The top-level header and the start of the human-readable part, the same in both notices. */
#define NOTICE_HEAD \
    "From: Mail Delivery System <MAILER-DAEMON@mx.test.example>\r\n" \
    "To: <alice@sender.example>\r\n" \
    "Subject: Undelivered Mail Returned to Sender\r\n" \
    "Date: Thu, 03 Dec 2026 06:40:01 +0000\r\n" \
    "Message-ID: <8DyGvdsl1000feiC.0011223344556677@mx.test.example>\r\n" \
    "Auto-Submitted: auto-replied\r\n" \
    "MIME-Version: 1.0\r\n" \
    "Content-Type: multipart/report; report-type=delivery-status;\r\n" \
    "\tboundary=\"" B "\"\r\n" \
    "\r\n" \
    "This is a MIME-encapsulated delivery status notification (RFC 3464).\r\n" \
    "\r\n" \
    "--" B "\r\n" \
    "Content-Type: text/plain; charset=us-ascii\r\n" \
    "Content-Description: Notification\r\n" \
    "\r\n" \
    "This is the mail system at mx.test.example (odmrd).\r\n" \
    "\r\n" \
    "Your message could not be delivered to the recipients below.\r\n" \
    "It arrived here on Sun, 29 Nov 2026 04:09:18 +0000 and was held as 8DyGvdsl1000feiC.\r\n"

static const struct dsn_recipient two[] = {
    {"bob@example.org", "rfc822;Bob+2Bx@example.org", "5.1.1", "customer.example", NULL,
     "550-5.1.1 no such\n550 5.1.1 user here", "the recipient's mail server refused it",
     1796280000, 0},
    {"carol@example.org", NULL, "5.4.7", NULL, "X-odmrd",
     "held for 5 days, the customer's server did not collect it",
     "held for 5 days, the customer's server did not collect it", 0, 0},
};

static const char headers_notice[] =
    NOTICE_HEAD
    "\r\n"
    "<bob@example.org>: the recipient's mail server refused it\r\n"
    "    The server customer.example said: 550-5.1.1 no such\r\n"
    " 550 5.1.1 user here\r\n"
    "\r\n"
    "<carol@example.org>: held for 5 days, the customer's server did not collect it\r\n"
    "\r\n"
    "The headers of your message are attached.\r\n"
    "\r\n"
    "--" B "\r\n"
    "Content-Type: message/delivery-status\r\n"
    "Content-Description: Delivery report\r\n"
    "\r\n"
    "Original-Envelope-Id: E+1\r\n"
    "Reporting-MTA: dns; mx.test.example\r\n"
    "Received-From-MTA: dns; mx.sender.example (192.0.2.7)\r\n"
    "Arrival-Date: Sun, 29 Nov 2026 04:09:18 +0000\r\n"
    "\r\n"
    "Original-Recipient: rfc822; Bob+x@example.org\r\n"
    "Final-Recipient: rfc822; bob@example.org\r\n"
    "Action: failed\r\n"
    "Status: 5.1.1\r\n"
    "Remote-MTA: dns; customer.example\r\n"
    "Diagnostic-Code: smtp; 550-5.1.1 no such\r\n"
    " 550 5.1.1 user here\r\n"
    "Last-Attempt-Date: Thu, 03 Dec 2026 06:40:00 +0000\r\n"
    "\r\n"
    "Final-Recipient: rfc822; carol@example.org\r\n"
    "Action: failed\r\n"
    "Status: 5.4.7\r\n"
    "Diagnostic-Code: X-odmrd; held for 5 days, the customer's server did not collect it\r\n"
    "\r\n"
    "--" B "\r\n"
    "Content-Type: text/rfc822-headers\r\n"
    "Content-Description: Headers of the undelivered message\r\n"
    "\r\n"
    "Received: from x\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "--" B "--\r\n";

static struct dsn_report report(const struct dsn_recipient *rcpts, size_t n)
{
    return (struct dsn_report){DSN_ACTION_FAILED, "mx.test.example", "8DyGvdsl1000feiC",
                               "alice@sender.example", "E+2B1", "mx.sender.example",
                               "192.0.2.7", 1795925358, 1796280001,
                               "8DyGvdsl1000feiC.0011223344556677", false, rcpts, n, false};
}

/* RET=HDRS (or none): the headers only; ENVID decoded from xtext (RFC 3461 6.3 a), ORCPT
 * only where given (6.3 d), Remote-MTA and the reply verbatim for the refused one (h, i). */
static void test_failed_headers_whole_notice(void **state)
{
    struct dsn_report r = report(two, 2);
    size_t headers = dsn_header_length(original, strlen(original));
    assert_int_equal(headers, strlen("Received: from x\r\nSubject: hello\r\n\r\n"));
    build_and_compare(&r, DSN_RETURN_HEADERS, original, headers, headers_notice);
}

static const char full_notice[] =
    NOTICE_HEAD
    "\r\n"
    "<bob@example.org>: see the report below\r\n"
    "\r\n"
    "Your message is attached.\r\n"
    "\r\n"
    "--" B "\r\n"
    "Content-Type: message/delivery-status\r\n"
    "Content-Description: Delivery report\r\n"
    "\r\n"
    "Reporting-MTA: dns; mx.test.example\r\n"
    "Arrival-Date: Sun, 29 Nov 2026 04:09:18 +0000\r\n"
    "\r\n"
    "Final-Recipient: rfc822; bob@example.org\r\n"
    "Action: failed\r\n"
    "Status: 5.0.0\r\n"
    "\r\n"
    "--" B "\r\n"
    "Content-Type: message/rfc822\r\n"
    "Content-Description: Undelivered message\r\n"
    "\r\n"
    "Received: from x\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "body line\r\n"
    "\r\n"
    "--" B "--\r\n";

/* RET=FULL: message/rfc822 with the whole original; no ENVID, no ORCPT, no Received-From-MTA,
 * no diagnostic: those fields are absent, not empty (the minimal RFC 3464 6.3 set). */
static void test_full_without_envid_orcpt_diagnostic(void **state)
{
    static const struct dsn_recipient one = {"bob@example.org", NULL, "5.0.0", NULL, NULL,
                                             NULL, NULL, 0, 0};
    struct dsn_report r = report(&one, 1);
    r.envid = NULL;
    r.received_from = NULL;
    build_and_compare(&r, DSN_RETURN_FULL, original, strlen(original), full_notice);
}

/* RET=FULL that could not be honoured says so in plain English. */
static void test_full_refused_is_explained(void **state)
{
    struct dsn_report r = report(two, 1);
    struct dsn_notice n;
    r.full_refused = true;
    assert_int_equal(dsn_build(&r, DSN_RETURN_HEADERS, original, 36, &n), 0);
    assert_non_null(strstr(n.text, "\r\n\r\nYour message was too large to return whole (or had "
                                   "over-long lines): its headers are attached.\r\n\r\n--" B
                                   "\r\nContent-Type: message/delivery-status\r\n"));
    assert_null(strstr(n.text, "The headers of your message are attached."));
    dsn_notice_free(&n);
}

/* RFC 6522 3: the third part is optional; a header block that cannot be returned is left out. */
static void test_nothing_returnable(void **state)
{
    static const struct dsn_recipient one = {"bob@example.org", NULL, "5.0.0", NULL, NULL,
                                             NULL, NULL, 0, 0};
    struct dsn_report r = report(&one, 1);
    struct dsn_notice n;
    assert_int_equal(dsn_build(&r, DSN_RETURN_NONE, NULL, 0, &n), 0);
    assert_lines_valid(&n);
    const char *status = strstr(n.text, "Status: 5.0.0\r\n");
    assert_non_null(status);
    assert_string_equal(status, "Status: 5.0.0\r\n\r\n--" B "--\r\n");
    assert_null(strstr(n.text, "rfc822-headers"));
    assert_non_null(strstr(n.text, "\r\nYour message's headers could not be attached"));
    dsn_notice_free(&n);
}

/* An 8BITMIME original returned whole: the part says 8bit and the notice needs 8BITMIME. */
static void test_8bit_original(void **state)
{
    static const struct dsn_recipient one = {"bob@example.org", NULL, "5.0.0", NULL, NULL,
                                             NULL, NULL, 0, 0};
    static const char body8[] = "Subject: x\r\n\r\ncaf\xc3\xa9\r\n";
    struct dsn_report r = report(&one, 1);
    struct dsn_notice n;
    assert_int_equal(dsn_build(&r, DSN_RETURN_FULL, body8, strlen(body8), &n), 0);
    assert_lines_valid(&n);
    assert_true(n.eightbit);
    assert_false(n.smtputf8);
    assert_non_null(strstr(n.text, "Content-Type: message/rfc822\r\n"
                                   "Content-Description: Undelivered message\r\n"
                                   "Content-Transfer-Encoding: 8bit\r\n\r\n"
                                   "Subject: x\r\n\r\ncaf\xc3\xa9\r\n\r\n--" B "--\r\n"));
    /* the other parts stay 7bit */
    assert_non_null(strstr(n.text, "Content-Type: text/plain; charset=us-ascii\r\n"
                                   "Content-Description: Notification\r\n\r\n"));
    dsn_notice_free(&n);
}

/* An SMTPUTF8 original with a UTF-8 address: RFC 6533 media types and address type. */
static void test_smtputf8_original(void **state)
{
    static const struct dsn_recipient one = {"j\xc3\xb6rg@example.org", NULL, "5.1.1",
                                             "customer.example", NULL, "550 5.1.1 no", NULL,
                                             0, 0};
    static const char hdrs[] = "Subject: gr\xc3\xbc\xc3\x9f""e\r\n\r\n";
    struct dsn_report r = report(&one, 1);
    r.smtputf8 = true;
    r.sender = "\xc3\xa4@sender.example";
    struct dsn_notice n;
    assert_int_equal(dsn_build(&r, DSN_RETURN_HEADERS, hdrs, strlen(hdrs), &n), 0);
    assert_lines_valid(&n);
    assert_true(n.eightbit);
    assert_true(n.smtputf8);
    assert_non_null(strstr(n.text, "\r\nTo: <\xc3\xa4@sender.example>\r\n"));
    assert_non_null(strstr(n.text, "Content-Type: text/plain; charset=utf-8\r\n"
                                   "Content-Description: Notification\r\n"
                                   "Content-Transfer-Encoding: 8bit\r\n\r\n"));
    assert_non_null(strstr(n.text, "Content-Type: message/global-delivery-status\r\n"));
    assert_non_null(strstr(n.text, "\r\nFinal-Recipient: utf-8; j\xc3\xb6rg@example.org\r\n"));
    assert_non_null(strstr(n.text, "Content-Type: message/global-headers\r\n"
                                   "Content-Description: Headers of the undelivered message\r\n"
                                   "Content-Transfer-Encoding: 8bit\r\n\r\n"
                                   "Subject: gr\xc3\xbc\xc3\x9f""e\r\n\r\n--" B "--\r\n"));
    dsn_notice_free(&n);
}

/* RFC 5321 6.1: never a notice to the null reverse-path; and never an empty report. */
static void test_refused_inputs(void **state)
{
    struct dsn_report r = report(two, 2);
    struct dsn_notice n;
    r.sender = "";
    assert_int_equal(dsn_build(&r, DSN_RETURN_HEADERS, original, 10, &n), EINVAL);
    r.sender = NULL;
    assert_int_equal(dsn_build(&r, DSN_RETURN_HEADERS, original, 10, &n), EINVAL);
    r = report(two, 0);
    assert_int_equal(dsn_build(&r, DSN_RETURN_HEADERS, original, 10, &n), EINVAL);
}

static void test_wanted(void **state)
{
    static const struct {
        const char *sender, *notify;
        enum dsn_action action;
        bool wanted;
    } cases[] = {
        {"", NULL, DSN_ACTION_FAILED, false},            /* null path: never (RFC 5321 6.1) */
        {NULL, "FAILURE", DSN_ACTION_FAILED, false},
        {"", "FAILURE", DSN_ACTION_FAILED, false},
        {"a@b.example", NULL, DSN_ACTION_FAILED, true},  /* RFC 3461 4.1 default */
        {"a@b.example", NULL, DSN_ACTION_DELAYED, true},
        {"a@b.example", NULL, DSN_ACTION_RELAYED, false},
        {"a@b.example", "NEVER", DSN_ACTION_FAILED, false},
        {"a@b.example", "never", DSN_ACTION_DELAYED, false},
        {"a@b.example", "FAILURE", DSN_ACTION_FAILED, true},
        {"a@b.example", "failure", DSN_ACTION_FAILED, true},
        {"a@b.example", "SUCCESS,DELAY", DSN_ACTION_FAILED, false},
        {"a@b.example", "SUCCESS,DELAY", DSN_ACTION_DELAYED, true},
        {"a@b.example", "SUCCESS,DELAY", DSN_ACTION_RELAYED, true},
        {"a@b.example", "SUCCESS,FAILURE", DSN_ACTION_FAILED, true},
        {"a@b.example", "DELAY", DSN_ACTION_FAILED, false},
        {"a@b.example", "FAILURES", DSN_ACTION_FAILED, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (dsn_wanted(cases[i].sender, cases[i].notify, cases[i].action) != cases[i].wanted)
            fail_msg("case %zu: sender=%s notify=%s", i, cases[i].sender ? cases[i].sender : "-",
                     cases[i].notify ? cases[i].notify : "-");
    }
}

static void test_status_of_reply(void **state)
{
    static const struct { const char *reply, *status; } cases[] = {
        {"550 5.1.1 user unknown", "5.1.1"},
        {"550-5.7.1 first\n550 5.7.1 second", "5.7.1"},
        {"554 5.6.0", "5.6.0"},
        {"550 user unknown", "5.0.0"},
        {"550 4.1.1 wrong class", "5.0.0"},
        {"550 5.1000.1 too long", "5.0.0"},
        {"550 5.1.1x", "5.0.0"},
        {"451 4.3.0 later", "4.3.0"},
        {"451 later", "4.0.0"},
        {"250 2.0.0 Ok: queued as 4XYZ", "2.0.0"},   /* relayed notices */
        {"250 ok", "2.0.0"},
        {"250 5.0.0 wrong class", "2.0.0"},
        {"", "5.0.0"},
        {NULL, "5.0.0"},
        {"55", "5.0.0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[DSN_STATUS_MAX];
        dsn_status_of_reply(cases[i].reply, out);
        assert_string_equal(out, cases[i].status);
    }
}

static void test_choose_return(void **state)
{
    size_t hl = dsn_header_length(original, strlen(original));
    size_t all = strlen(original);
    assert_int_equal(dsn_choose_return("FULL", original, hl, original, all), DSN_RETURN_FULL);
    assert_int_equal(dsn_choose_return("full", original, hl, original, all), DSN_RETURN_FULL);
    /* default (no RET) and HDRS: headers only */
    assert_int_equal(dsn_choose_return(NULL, original, hl, original, all), DSN_RETURN_HEADERS);
    assert_int_equal(dsn_choose_return("HDRS", original, hl, original, all), DSN_RETURN_HEADERS);
    /* FULL, but the whole text is not at hand (too large to read): headers */
    assert_int_equal(dsn_choose_return("FULL", original, hl, NULL, 0), DSN_RETURN_HEADERS);
    /* a body line over 998 octets cannot go into a notice: headers */
    char *long_body = malloc(2000);
    strcpy(long_body, "Subject: x\r\n\r\n");
    size_t at = strlen(long_body);
    memset(long_body + at, 'a', 999);
    memcpy(long_body + at + 999, "\r\n", 3);
    size_t lhl = dsn_header_length(long_body, strlen(long_body));
    assert_int_equal(dsn_choose_return("FULL", long_body, lhl, long_body, strlen(long_body)),
                     DSN_RETURN_HEADERS);
    /* exactly 998 fits */
    memcpy(long_body + at + 998, "\r\n", 3);
    assert_int_equal(dsn_choose_return("FULL", long_body, lhl, long_body, strlen(long_body)),
                     DSN_RETURN_FULL);
    /* the same in the headers: nothing returnable */
    memcpy(long_body, "X: ", 3);
    memset(long_body + 3, 'h', 996);
    memcpy(long_body + 999, "\r\n\r\n", 5);
    assert_int_equal(dsn_choose_return(NULL, long_body, strlen(long_body), NULL, 0),
                     DSN_RETURN_NONE);
    /* a bare LF or a NUL never goes into a notice */
    assert_int_equal(dsn_choose_return(NULL, "A: b\nC: d\r\n\r\n", 13, NULL, 0),
                     DSN_RETURN_NONE);
    assert_int_equal(dsn_choose_return("FULL", "A: b\r\n\r\nx\0y\r\n", 6, "A: b\r\n\r\nx\0y\r\n",
                                       13), DSN_RETURN_HEADERS);
    free(long_body);
}

static void test_header_length(void **state)
{
    assert_int_equal(dsn_header_length("A: b\r\n\r\nbody\r\n", 14), 8);
    assert_int_equal(dsn_header_length("A: b\r\nC: d\r\n", 12), 12);   /* no body */
    assert_int_equal(dsn_header_length("\r\nbody\r\n", 8), 2);          /* no headers */
    assert_int_equal(dsn_header_length("", 0), 0);
}

static void test_date(void **state)
{
    char out[40];
    dsn_format_date(0, out);
    assert_string_equal(out, "Thu, 01 Jan 1970 00:00:00 +0000");
    dsn_format_date(1795925358, out);
    assert_string_equal(out, "Sun, 29 Nov 2026 04:09:18 +0000");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_headers_whole_notice),
        cmocka_unit_test(test_full_without_envid_orcpt_diagnostic),
        cmocka_unit_test(test_nothing_returnable),
        cmocka_unit_test(test_full_refused_is_explained),
        cmocka_unit_test(test_8bit_original),
        cmocka_unit_test(test_smtputf8_original),
        cmocka_unit_test(test_refused_inputs),
        cmocka_unit_test(test_wanted),
        cmocka_unit_test(test_status_of_reply),
        cmocka_unit_test(test_choose_return),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_date),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
