/* SPDX-License-Identifier: ISC */
/* SMTP grammar: MAIL/RCPT paths and parameters, domains, literals, xtext, HELO.
 * Table-driven; each table reports every failing case by name before failing. Limit cases
 * are built at run time at the exact RFC 5321 4.5.3.1 boundaries. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lib/smtp_grammar.h"

enum verb { MAIL, RCPT };

struct path_case {
    const char *name;
    enum verb verb;
    bool utf8;
    const char *args;
    enum smtp_parse_status status;
    /* checked only when status is OK */
    bool null_path;
    const char *local;
    const char *domain;
    bool literal;
    bool needs_utf8;
    const char *params; /* "KW=v KW2" rebuilt from the output */
};

#define OK SMTP_PARSE_OK
#define SYN SMTP_PARSE_SYNTAX
#define LONG SMTP_PARSE_TOO_LONG
#define MANY SMTP_PARSE_TOO_MANY

/* shorthands: a valid mailbox, a valid mailbox with params, an error */
#define GOOD(n, v, u, a, l, d, p) {n, v, u, a, OK, false, l, d, false, false, p}
#define LIT(n, a, l, d) {n, MAIL, false, a, OK, false, l, d, true, false, ""}
#define BAD(n, v, u, a, st) {n, v, u, a, st, false, NULL, NULL, false, false, NULL}

#define P16 " A=1 B=2 C=3 D=4 E=5 F=6 G=7 H=8 I=9 J=10 K=11 L=12 M=13 N=14 O=15 P=16"

static const struct path_case path_cases[] = {
    /* verb prefix and spacing */
    GOOD("plain", MAIL, false, "FROM:<a@b.example>", "a", "b.example", ""),
    GOOD("lower-case verb word", MAIL, false, "from:<a@b.example>", "a", "b.example", ""),
    GOOD("one space after colon", MAIL, false, "FROM: <a@b.example>", "a", "b.example", ""),
    BAD("two spaces after colon", MAIL, false, "FROM:  <a@b.example>", SYN),
    BAD("no angle brackets", MAIL, false, "FROM:a@b.example", SYN),
    BAD("missing colon", MAIL, false, "FROM<a@b.example>", SYN),
    BAD("TO: given to MAIL", MAIL, false, "TO:<a@b.example>", SYN),
    BAD("FROM: given to RCPT", RCPT, false, "FROM:<a@b.example>", SYN),
    BAD("empty args", MAIL, false, "", SYN),
    BAD("verb word only", RCPT, false, "TO:", SYN),
    /* null path */
    {"null path", MAIL, false, "FROM:<>", OK, true, "", "", false, false, ""},
    {"null path with params", MAIL, false, "FROM:<> SIZE=10 BODY=7BIT", OK, true, "", "", false,
     false, "SIZE=10 BODY=7BIT"},
    BAD("null path in RCPT", RCPT, false, "TO:<>", SYN),
    /* dot-string local parts and domains */
    GOOD("single-label domain", MAIL, false, "FROM:<a@localhost>", "a", "localhost", ""),
    GOOD("dotted local part", MAIL, false, "FROM:<a.b.c@d.e>", "a.b.c", "d.e", ""),
    GOOD("atext specials", MAIL, false, "FROM:<!#$%&'*+-/=?^_`{|}~@d.e>",
         "!#$%&'*+-/=?^_`{|}~", "d.e", ""),
    GOOD("domain case kept", MAIL, false, "FROM:<A@B.Example>", "A", "B.Example", ""),
    GOOD("double hyphen inside label", MAIL, false, "FROM:<u@a--b.example>", "u", "a--b.example",
         ""),
    GOOD("digit labels", MAIL, false, "FROM:<u@1.2.3.4>", "u", "1.2.3.4", ""),
    BAD("leading dot", MAIL, false, "FROM:<.a@d>", SYN),
    BAD("trailing dot", MAIL, false, "FROM:<a.@d>", SYN),
    BAD("double dot", MAIL, false, "FROM:<a..b@d>", SYN),
    BAD("empty local part", MAIL, false, "FROM:<@d>", SYN),
    BAD("empty domain", MAIL, false, "FROM:<a@>", SYN),
    BAD("no at sign", MAIL, false, "FROM:<a>", SYN),
    BAD("two at signs", MAIL, false, "FROM:<a@b@c>", SYN),
    BAD("missing >", MAIL, false, "FROM:<a@b", SYN),
    BAD("space inside path", MAIL, false, "FROM:<a @b>", SYN),
    BAD("garbage after >", MAIL, false, "FROM:<a@b>x", SYN),
    BAD("second path", MAIL, false, "FROM:<a@b><c@d>", SYN),
    GOOD("trailing space tolerated", MAIL, false, "FROM:<a@b> ", "a", "b", ""),
    BAD("label starts with hyphen", MAIL, false, "FROM:<u@-a.example>", SYN),
    BAD("label ends with hyphen", MAIL, false, "FROM:<u@a-.example>", SYN),
    BAD("domain trailing dot", MAIL, false, "FROM:<u@a.example.>", SYN),
    BAD("domain leading dot", MAIL, false, "FROM:<u@.example>", SYN),
    BAD("underscore in domain", MAIL, false, "FROM:<u@a_b.example>", SYN),
    BAD("parenthesis in local part", MAIL, false, "FROM:<a(b)@d>", SYN),
    /* quoted local parts */
    GOOD("quoted with space", MAIL, false, "FROM:<\"a b\"@d>", "\"a b\"", "d", ""),
    GOOD("quoted escaped quote", MAIL, false, "FROM:<\"a\\\"b\"@d>", "\"a\\\"b\"", "d", ""),
    GOOD("quoted escaped backslash", MAIL, false, "FROM:<\"a\\\\b\"@d>", "\"a\\\\b\"", "d", ""),
    GOOD("quoted > and @", MAIL, false, "FROM:<\"a>@b\"@d>", "\"a>@b\"", "d", ""),
    GOOD("empty quoted string", MAIL, false, "FROM:<\"\"@d>", "\"\"", "d", ""),
    BAD("unterminated quote", MAIL, false, "FROM:<\"ab@d>", SYN),
    BAD("control char in quotes", MAIL, false, "FROM:<\"a\x01\"@d>", SYN),
    BAD("escaped control char", MAIL, false, "FROM:<\"a\\\x01\"@d>", SYN),
    BAD("bare backslash outside quotes", MAIL, false, "FROM:<a\\b@d>", SYN),
    BAD("text after quoted string", MAIL, false, "FROM:<\"a\"b@d>", SYN),
    /* source routes, dropped */
    GOOD("source route two hops", MAIL, false, "FROM:<@r1.example,@r2.example:u@d.example>",
         "u", "d.example", ""),
    GOOD("source route one hop", RCPT, false, "TO:<@r1.example:u@d>", "u", "d", ""),
    BAD("source route missing @", MAIL, false, "FROM:<@r1,r2:u@d>", SYN),
    BAD("source route missing colon", MAIL, false, "FROM:<@r1.example u@d>", SYN),
    BAD("source route bad domain", MAIL, false, "FROM:<@-r:u@d>", SYN),
    BAD("source route literal", MAIL, false, "FROM:<@[192.0.2.1]:u@d>", SYN),
    /* address literals */
    LIT("IPv4 literal", "FROM:<u@[192.0.2.1]>", "u", "[192.0.2.1]"),
    LIT("IPv6 literal", "FROM:<u@[IPv6:2001:db8::1]>", "u", "[IPv6:2001:db8::1]"),
    LIT("IPv6 tag lower-case", "FROM:<u@[ipv6:::1]>", "u", "[ipv6:::1]"),
    LIT("IPv6v4 literal", "FROM:<u@[IPv6:::ffff:192.0.2.1]>", "u", "[IPv6:::ffff:192.0.2.1]"),
    BAD("IPv4 octet 256", MAIL, false, "FROM:<u@[256.0.0.1]>", SYN),
    BAD("IPv4 three parts", MAIL, false, "FROM:<u@[192.0.2]>", SYN),
    BAD("IPv6 without tag", MAIL, false, "FROM:<u@[2001:db8::1]>", SYN),
    BAD("IPv6 bad hex", MAIL, false, "FROM:<u@[IPv6:2001:db8::g]>", SYN),
    BAD("IPv6 two ::", MAIL, false, "FROM:<u@[IPv6:1::2::3]>", SYN),
    BAD("general literal", MAIL, false, "FROM:<u@[x-tag:abc]>", SYN),
    BAD("empty literal", MAIL, false, "FROM:<u@[]>", SYN),
    BAD("unterminated literal", MAIL, false, "FROM:<u@[192.0.2.1>", SYN),
    BAD("text after literal", MAIL, false, "FROM:<u@[192.0.2.1]x>", SYN),
    /* RFC 6531 UTF-8 */
    {"utf8 local and domain", MAIL, true,
     "FROM:<\xce\xb4\xce\xbf\xce\xba@\xcf\x80\xce\xb1\xcf\x81.example>", OK, false,
     "\xce\xb4\xce\xbf\xce\xba", "\xcf\x80\xce\xb1\xcf\x81.example", false, true, ""},
    {"utf8 local only", RCPT, true, "TO:<j\xc3\xb6rg@d.example>", OK, false, "j\xc3\xb6rg",
     "d.example", false, true, ""},
    {"utf8 four-octet", RCPT, true, "TO:<\xf0\x9f\x93\xa7@d>", OK, false, "\xf0\x9f\x93\xa7",
     "d", false, true, ""},
    {"utf8 in quotes", MAIL, true, "FROM:<\"\xc3\xa9 x\"@d>", OK, false, "\"\xc3\xa9 x\"", "d",
     false, true, ""},
    {"ascii with SMTPUTF8", MAIL, true, "FROM:<a@d> SMTPUTF8", OK, false, "a", "d", false, false,
     "SMTPUTF8"},
    BAD("utf8 local without SMTPUTF8", RCPT, false, "TO:<j\xc3\xb6rg@d.example>", SYN),
    BAD("utf8 domain without SMTPUTF8", RCPT, false, "TO:<a@\xc3\xb6.example>", SYN),
    BAD("utf8 in quotes without SMTPUTF8", MAIL, false, "FROM:<\"\xc3\xa9\"@d>", SYN),
    BAD("overlong slash in domain", MAIL, true, "FROM:<u@b\xc0\xaf.example>", SYN),
    BAD("overlong 3-octet", MAIL, true, "FROM:<\xe0\x80\xaf@d>", SYN),
    BAD("truncated 3-octet", MAIL, true, "FROM:<\xe2\x82@d>", SYN),
    BAD("truncated at end of input", MAIL, true, "FROM:<a\xe2", SYN),
    BAD("surrogate", MAIL, true, "FROM:<\xed\xa0\x80@d>", SYN),
    BAD("above U+10FFFF", MAIL, true, "FROM:<\xf4\x90\x80\x80@d>", SYN),
    BAD("lone continuation", MAIL, true, "FROM:<\x80@d>", SYN),
    BAD("0xFF octet", MAIL, true, "FROM:<a@d\xff>", SYN),
    /* parameters */
    GOOD("MAIL params", MAIL, true,
         "FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2B", "a", "b",
         "SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2B"),
    GOOD("RCPT DSN params", RCPT, false, "TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b",
         "a", "b", "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b"),
    GOOD("runs of spaces", MAIL, false, "FROM:<a@b>  SIZE=10   BODY=7BIT  ", "a", "b",
         "SIZE=10 BODY=7BIT"),
    GOOD("hyphen keyword, > in value", MAIL, false, "FROM:<a@b> X-Y=a>b 9Z", "a", "b",
         "X-Y=a>b 9Z"),
    GOOD("utf8 value", MAIL, true, "FROM:<a@b> X=\xc3\xa9", "a", "b", "X=\xc3\xa9"),
    GOOD("16 params", MAIL, false, "FROM:<a@b>" P16, "a", "b",
         "A=1 B=2 C=3 D=4 E=5 F=6 G=7 H=8 I=9 J=10 K=11 L=12 M=13 N=14 O=15 P=16"),
    BAD("17 params", MAIL, false, "FROM:<a@b>" P16 " Q=17", MANY),
    BAD("empty value", MAIL, false, "FROM:<a@b> X=", SYN),
    BAD("empty keyword", MAIL, false, "FROM:<a@b> =X", SYN),
    BAD("keyword starts with hyphen", MAIL, false, "FROM:<a@b> -X=1", SYN),
    BAD("= in value", MAIL, false, "FROM:<a@b> X=a=b", SYN),
    BAD("tab separator", MAIL, false, "FROM:<a@b> SIZE=10\tBODY=7BIT", SYN),
    BAD("tab after path", MAIL, false, "FROM:<a@b>\tSIZE=10", SYN),
    BAD("underscore keyword", MAIL, false, "FROM:<a@b> X_Y=1", SYN),
    BAD("utf8 value without SMTPUTF8", MAIL, false, "FROM:<a@b> X=\xc3\xa9", SYN),
    BAD("bad utf8 value", MAIL, true, "FROM:<a@b> X=\xc3", SYN),
    BAD("control char in value", MAIL, false, "FROM:<a@b> X=a\x7f", SYN),
    /* postmaster */
    GOOD("bare postmaster", RCPT, false, "TO:<postmaster>", "postmaster", "", ""),
    GOOD("bare PostMaster", RCPT, false, "TO:<PostMaster>", "PostMaster", "", ""),
    GOOD("postmaster with params", RCPT, false, "TO:<postmaster> NOTIFY=NEVER", "postmaster", "",
         "NOTIFY=NEVER"),
    GOOD("postmaster with domain", RCPT, false, "TO:<Postmaster@d.example>", "Postmaster",
         "d.example", ""),
    BAD("bare postmaster in MAIL", MAIL, false, "FROM:<postmaster>", SYN),
    BAD("postmasterx", RCPT, false, "TO:<postmasterx>", SYN),
    BAD("postmaster without >", RCPT, false, "TO:<postmaster", SYN),
};

static void render_params(const struct smtp_path_command *cmd, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cmd->param_count; i++) {
        const struct smtp_param *p = &cmd->params[i];
        int n = snprintf(buf + used, size - used, "%s%s%s%s", i ? " " : "", p->keyword,
                         p->has_value ? "=" : "", p->value);
        if (n < 0 || (size_t)n >= size - used)
            return;
        used += (size_t)n;
    }
}

static enum smtp_parse_status run(enum verb verb, const char *args, bool utf8,
                                  struct smtp_path_command *out, const char **why)
{
    return verb == MAIL ? smtp_parse_mail_from(args, utf8, out, why)
                        : smtp_parse_rcpt_to(args, utf8, out, why);
}

static bool str_eq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* Returns true when the case passes; prints why otherwise. */
static bool check_path_case(const struct path_case *c)
{
    static struct smtp_path_command out;
    char params[4096];
    const char *why = "unset";
    enum smtp_parse_status st = run(c->verb, c->args, c->utf8, &out, &why);
    if (st != c->status) {
        print_error("case '%s': status %d, expected %d (%s)\n", c->name, st, c->status,
                    why ? why : "no reason");
        return false;
    }
    if (st != OK) {
        if (why == NULL || why[0] == '\0') {
            print_error("case '%s': error without a reason\n", c->name);
            return false;
        }
        return true;
    }
    render_params(&out, params, sizeof params);
    bool good = out.null_path == c->null_path && str_eq(params, c->params);
    if (!c->null_path)
        good = good && str_eq(out.mailbox.local, c->local) && str_eq(out.mailbox.domain, c->domain) &&
               out.mailbox.domain_is_literal == c->literal &&
               out.mailbox.needs_smtputf8 == c->needs_utf8;
    if (!good)
        print_error("case '%s': got null=%d local='%s' domain='%s' literal=%d utf8=%d "
                    "params='%s'\n",
                    c->name, out.null_path, out.mailbox.local, out.mailbox.domain,
                    out.mailbox.domain_is_literal, out.mailbox.needs_smtputf8, params);
    return good;
}

static void test_path_table(void **state)
{
    size_t failures = 0;
    for (size_t i = 0; i < sizeof path_cases / sizeof path_cases[0]; i++)
        failures += !check_path_case(&path_cases[i]);
    assert_int_equal(failures, 0);
}

/* Every prefix that stops before the first ">" is incomplete, so never OK. */
static void test_truncated_prefixes(void **state)
{
    size_t failures = 0;
    char buf[1024];
    static struct smtp_path_command out;
    for (size_t i = 0; i < sizeof path_cases / sizeof path_cases[0]; i++) {
        const struct path_case *c = &path_cases[i];
        const char *gt = strchr(c->args, '>');
        if (c->status != OK || gt == NULL)
            continue;
        for (size_t len = 0; len < (size_t)(gt - c->args); len++) {
            const char *why = NULL;
            memcpy(buf, c->args, len);
            buf[len] = '\0';
            if (run(c->verb, buf, c->utf8, &out, &why) == OK) {
                print_error("case '%s': prefix '%s' accepted\n", c->name, buf);
                failures++;
            }
        }
    }
    assert_int_equal(failures, 0);
}

/* Limit cases built at run time: local part of local_len octets ('q' quoted if set), then a
 * domain made of labels of the given lengths, optionally behind a source route. */
struct limit_case {
    const char *name;
    size_t local_len;
    bool quoted;
    size_t labels[6];
    size_t route_len; /* 0: none; else an At-domain of this many octets */
    enum smtp_parse_status status;
    const char *why_has; /* substring expected in the reason */
};

static const struct limit_case limit_cases[] = {
    {"local part 64", 64, false, {10}, 0, OK, NULL},
    {"local part 65", 65, false, {10}, 0, LONG, "local part"},
    {"quoted local part 64", 64, true, {10}, 0, OK, NULL},
    {"quoted local part 65", 65, true, {10}, 0, LONG, "local part"},
    {"label 63", 5, false, {63, 3}, 0, OK, NULL},
    {"label 64", 5, false, {64, 3}, 0, SYN, "63"},
    {"path 256", 64, false, {63, 63, 61}, 0, OK, NULL},
    {"path 257", 64, false, {63, 63, 62}, 0, LONG, "path"},
    {"domain 255 makes path 259", 1, false, {63, 63, 63, 63}, 0, LONG, "path"},
    {"domain 256", 1, false, {63, 63, 63, 62, 1}, 0, LONG, "domain"},
    {"path 256 with source route", 1, false, {10}, 240, OK, NULL},
    {"path 257 with source route", 1, false, {10}, 241, LONG, "path"},
};

static size_t put_run(char *p, char ch, size_t n)
{
    memset(p, ch, n);
    return n;
}

static size_t put_domain(char *p, const size_t *labels, size_t count)
{
    size_t used = 0;
    for (size_t i = 0; i < count && labels[i] != 0; i++) {
        if (i)
            p[used++] = '.';
        used += put_run(p + used, (char)('a' + i), labels[i]);
    }
    return used;
}

/* A domain of exactly n octets in labels of at most 60 octets. */
static size_t put_route_domain(char *p, size_t n)
{
    size_t used = 0;
    while (n > 0) {
        size_t chunk = n < 60 ? n : 60;
        if (n - chunk == 1)
            chunk--;
        used += put_run(p + used, 'r', chunk);
        n -= chunk;
        if (n > 0) {
            p[used++] = '.';
            n--;
        }
    }
    return used;
}

static void build_limit(const struct limit_case *c, char *buf)
{
    size_t used = (size_t)sprintf(buf, "TO:<");
    if (c->route_len) {
        buf[used++] = '@';
        used += put_route_domain(buf + used, c->route_len);
        buf[used++] = ':';
    }
    if (c->quoted) {
        buf[used++] = '"';
        used += put_run(buf + used, ' ', c->local_len - 2);
        buf[used++] = '"';
    } else {
        used += put_run(buf + used, 'l', c->local_len);
    }
    buf[used++] = '@';
    used += put_domain(buf + used, c->labels, 6);
    strcpy(buf + used, ">");
}

static void test_limits(void **state)
{
    size_t failures = 0;
    char buf[2048];
    static struct smtp_path_command out;
    for (size_t i = 0; i < sizeof limit_cases / sizeof limit_cases[0]; i++) {
        const struct limit_case *c = &limit_cases[i];
        const char *why = NULL;
        build_limit(c, buf);
        enum smtp_parse_status st = smtp_parse_rcpt_to(buf, false, &out, &why);
        bool good = st == c->status;
        if (good && c->why_has != NULL)
            good = why != NULL && strstr(why, c->why_has) != NULL;
        if (good && st == OK)
            good = strlen(out.mailbox.local) == c->local_len;
        if (!good) {
            print_error("limit '%s': status %d (%s), expected %d\n", c->name, st,
                        why ? why : "-", c->status);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* Parameter keyword (32) and value (500) limits. */
static void test_param_limits(void **state)
{
    static const struct {
        size_t kw, val;
        enum smtp_parse_status status;
    } cases[] = {{32, 1, OK}, {33, 1, SYN}, {1, 500, OK}, {1, 501, SYN}, {32, 0, OK}};
    char buf[1024];
    static struct smtp_path_command out;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *why = NULL;
        size_t used = (size_t)sprintf(buf, "FROM:<a@b> ");
        used += put_run(buf + used, 'K', cases[i].kw);
        if (cases[i].val) {
            buf[used++] = '=';
            used += put_run(buf + used, 'v', cases[i].val);
        }
        buf[used] = '\0';
        assert_int_equal(smtp_parse_mail_from(buf, false, &out, &why), cases[i].status);
        if (cases[i].status == OK) {
            assert_int_equal(strlen(out.params[0].keyword), cases[i].kw);
            assert_int_equal(strlen(out.params[0].value), cases[i].val);
            assert_int_equal(out.params[0].has_value, cases[i].val != 0);
        }
    }
}

struct bool_case {
    const char *input;
    bool utf8;
    bool expect;
};

static size_t check_bools(const char *what, bool (*fn)(const char *, bool),
                          const struct bool_case *cases, size_t count)
{
    size_t failures = 0;
    for (size_t i = 0; i < count; i++) {
        if (fn(cases[i].input, cases[i].utf8) != cases[i].expect) {
            print_error("%s('%s', utf8=%d) should be %d\n", what, cases[i].input, cases[i].utf8,
                        cases[i].expect);
            failures++;
        }
    }
    return failures;
}

static void test_domain_valid(void **state)
{
    static const struct bool_case cases[] = {
        {"example.com", false, true},
        {"localhost", false, true},
        {"a", false, true},
        {"1.2.3.4", false, true},
        {"xn--bcher-kva.example", false, true},
        {"B\xc3\xbc" "cher.example", true, true},
        {"B\xc3\xbc" "cher.example", false, false},
        {"b\xc0\xaf.example", true, false},
        {"b\xc3", true, false},
        {"", false, false},
        {".", false, false},
        {"a..b", false, false},
        {"a.b.", false, false},
        {".a", false, false},
        {"-a", false, false},
        {"a-", false, false},
        {"a b", false, false},
        {"a_b", false, false},
        {"[192.0.2.1]", false, false},
    };
    assert_int_equal(check_bools("smtp_domain_valid", smtp_domain_valid, cases,
                                 sizeof cases / sizeof cases[0]), 0);
}

/* Domain total length 255 / 256 and label length 63 / 64, outside a path. */
static void test_domain_lengths(void **state)
{
    static const size_t ok255[] = {63, 63, 63, 63, 0};
    static const size_t long256[] = {63, 63, 63, 62, 1, 0};
    static const size_t label63[] = {63, 0};
    static const size_t label64[] = {64, 0};
    char buf[512];
    buf[put_domain(buf, ok255, 5)] = '\0';
    assert_int_equal(strlen(buf), 255);
    assert_true(smtp_domain_valid(buf, false));
    buf[put_domain(buf, long256, 6)] = '\0';
    assert_int_equal(strlen(buf), 256);
    assert_false(smtp_domain_valid(buf, false));
    buf[put_domain(buf, label63, 2)] = '\0';
    assert_true(smtp_domain_valid(buf, false));
    buf[put_domain(buf, label64, 2)] = '\0';
    assert_false(smtp_domain_valid(buf, false));
}

static bool literal_fn(const char *s, bool utf8)
{
    (void)utf8;
    return smtp_address_literal_valid(s);
}

static bool xtext_fn(const char *s, bool utf8)
{
    (void)utf8;
    return smtp_xtext_valid(s);
}

static bool helo_fn(const char *s, bool utf8)
{
    (void)utf8;
    return smtp_helo_valid(s);
}

static void test_literal_valid(void **state)
{
    static const struct bool_case cases[] = {
        {"[192.0.2.1]", false, true},
        {"[0.0.0.0]", false, true},
        {"[IPv6:::1]", false, true},
        {"[IPv6:2001:db8:0:0:0:0:0:1]", false, true},
        {"[IPv6:::ffff:192.0.2.1]", false, true},
        {"[IPv6:1::2::3]", false, false},
        {"[IPv6:fe80::1%eth0]", false, false},
        {"[IPv6:]", false, false},
        {"[1.2.3]", false, false},
        {"[1.2.3.4.5]", false, false},
        {"[192.0.2.1", false, false},
        {"192.0.2.1]", false, false},
        {"192.0.2.1", false, false},
        {"[]", false, false},
        {"[", false, false},
        {"", false, false},
        {"[tag:x]", false, false},
        {"[ 192.0.2.1]", false, false},
    };
    assert_int_equal(check_bools("smtp_address_literal_valid", literal_fn, cases,
                                 sizeof cases / sizeof cases[0]), 0);
}

static void test_xtext_valid(void **state)
{
    static const struct bool_case cases[] = {
        {"", false, true},
        {"abc", false, true},
        {"abc+2B", false, true},
        {"rfc822;a+40b", false, true},
        {"+2B+3D", false, true},
        {"!\"#$%&'()*,-./~", false, true},
        {"a+2b", false, false},
        {"a+2", false, false},
        {"a+", false, false},
        {"a+G0", false, false},
        {"a=b", false, false},
        {"a b", false, false},
        {"a\x7f", false, false},
        {"a\x1f", false, false},
        {"\xc3\xa9", false, false},
    };
    assert_int_equal(check_bools("smtp_xtext_valid", xtext_fn, cases,
                                 sizeof cases / sizeof cases[0]), 0);
}

static void test_helo_valid(void **state)
{
    static const struct bool_case cases[] = {
        {"mail.example.com", false, true},
        {"localhost", false, true},
        {"[192.0.2.1]", false, true},
        {"[IPv6:::1]", false, true},
        {"", false, false},
        {"mail example", false, false},
        {"mail.example.com.", false, false},
        {"B\xc3\xbc" "cher.example", false, false},
        {"a..b", false, false},
        {"-x", false, false},
        {"[192.0.2.256]", false, false},
    };
    assert_int_equal(check_bools("smtp_helo_valid", helo_fn, cases,
                                 sizeof cases / sizeof cases[0]), 0);
}

static void test_domain_lower(void **state)
{
    char ascii[] = "ExAmPle.COM";
    char mixed[] = "B\xc3\x89.Ex";
    smtp_domain_lower(ascii);
    smtp_domain_lower(mixed);
    assert_string_equal(ascii, "example.com");
    assert_string_equal(mixed, "b\xc3\x89.ex");
}

static void test_null_why_accepted(void **state)
{
    static struct smtp_path_command out;
    assert_int_equal(smtp_parse_mail_from("FROM:<a", false, &out, NULL), SYN);
    assert_int_equal(smtp_parse_rcpt_to("TO:<a@b>", false, &out, NULL), OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_table),
        cmocka_unit_test(test_truncated_prefixes),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_param_limits),
        cmocka_unit_test(test_domain_valid),
        cmocka_unit_test(test_domain_lengths),
        cmocka_unit_test(test_literal_valid),
        cmocka_unit_test(test_xtext_valid),
        cmocka_unit_test(test_helo_valid),
        cmocka_unit_test(test_domain_lower),
        cmocka_unit_test(test_null_why_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
