/* SPDX-License-Identifier: ISC */
/* RFC 5321 section 4.1.2 paths and ESMTP parameters, with the RFC 6531 UTF-8 extensions.
 * A hand-written recursive-descent scanner over a NUL-terminated string. No allocation:
 * every copy into the output is bounded by the limits in smtp_grammar.h, and every scan is
 * linear in the input. */
#include "lib/smtp_grammar.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

/* Scanner state: the next octet, whether RFC 6531 UTF-8 is allowed, the first error. */
struct scan {
    const char *p;
    bool utf8;
    const char *why;
};

static enum smtp_parse_status fail(struct scan *s, enum smtp_parse_status st, const char *why)
{
    s->why = why;
    return st;
}

static unsigned char cur(const struct scan *s)
{
    return (unsigned char)*s->p;
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 5321 4.1.2 Let-dig / Ldh-str characters. */
static bool is_ldh(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '-';
}

static bool has_non_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/* RFC 3629 section 4: length of the well-formed UTF-8 sequence at p, reading at most avail
 * octets; 0 when ill-formed (overlong forms, surrogates, above U+10FFFF, truncated).
 * Continuation octets are checked in order, so a NUL terminator stops the scan. */
static size_t utf8_len(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF; /* allowed range of the second octet */
    size_t n;
    if (avail == 0)
        return 0;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* RFC 6531 3.3: UTF8-non-ascii is only allowed when SMTPUTF8 is in effect. Consumes one
 * well-formed multi-octet sequence. */
static enum smtp_parse_status take_utf8(struct scan *s)
{
    if (!s->utf8)
        return fail(s, SMTP_PARSE_SYNTAX, "non-ASCII octet without SMTPUTF8");
    size_t n = utf8_len((const unsigned char *)s->p, 4);
    if (n < 2)
        return fail(s, SMTP_PARSE_SYNTAX, "malformed UTF-8");
    s->p += n;
    return SMTP_PARSE_OK;
}

/* RFC 5322 3.2.3 atext, which RFC 5321 4.1.2 uses for Atom. */
static bool is_atext(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Consumes the longest run of octets that are either ASCII for which ascii_ok holds or, RFC
 * 6531 3.3, UTF8-non-ascii (take_utf8's rules); it may be empty. */
static enum smtp_parse_status take_run(struct scan *s, bool (*ascii_ok)(unsigned char))
{
    for (;;) {
        unsigned char c = cur(s);
        if (c >= 0x80) {
            enum smtp_parse_status st = take_utf8(s);
            if (st != SMTP_PARSE_OK)
                return st;
        } else if (ascii_ok(c)) {
            s->p++;
        } else {
            return SMTP_PARSE_OK;
        }
    }
}

/* RFC 5321 4.1.2: Dot-string = Atom *("." Atom); RFC 6531 3.3 adds UTF8-non-ascii to atext. */
static enum smtp_parse_status scan_dot_string(struct scan *s)
{
    const char *start = s->p;
    for (;;) {
        const char *atom = s->p;
        enum smtp_parse_status st = take_run(s, is_atext);
        if (st != SMTP_PARSE_OK)
            return st;
        bool atom_empty = s->p == atom;
        if (cur(s) != '.') {
            if (s->p == start)
                return fail(s, SMTP_PARSE_SYNTAX, "empty or invalid local part");
            if (atom_empty)
                return fail(s, SMTP_PARSE_SYNTAX, "local part ends with a dot");
            return SMTP_PARSE_OK;
        }
        if (atom_empty)
            return fail(s, SMTP_PARSE_SYNTAX, "empty atom in local part");
        s->p++;
    }
}

/* RFC 5321 4.1.2: Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP = %d32-33 /
 * %d35-91 / %d93-126 (RFC 6531 3.3 adds UTF8-non-ascii); quoted-pairSMTP = "\" %d32-126. */
static enum smtp_parse_status scan_quoted_string(struct scan *s)
{
    s->p++; /* opening DQUOTE */
    for (;;) {
        unsigned char c = cur(s);
        if (c == '"') {
            s->p++;
            return SMTP_PARSE_OK;
        }
        if (c == '\\') {
            unsigned char e = (unsigned char)s->p[1];
            if (e < 32 || e > 126)
                return fail(s, SMTP_PARSE_SYNTAX, "invalid quoted pair in local part");
            s->p += 2;
        } else if (c >= 0x80) {
            enum smtp_parse_status st = take_utf8(s);
            if (st != SMTP_PARSE_OK)
                return st;
        } else if (c >= 32 && c <= 126) {
            s->p++;
        } else if (c == 0) {
            return fail(s, SMTP_PARSE_SYNTAX, "unterminated quoted string in local part");
        } else {
            return fail(s, SMTP_PARSE_SYNTAX, "control character in quoted local part");
        }
    }
}

/* RFC 5321 4.1.2 Local-part = Dot-string / Quoted-string, kept verbatim;
 * RFC 5321 4.5.3.1.1: at most 64 octets. */
static enum smtp_parse_status parse_local_part(struct scan *s, struct smtp_mailbox *mb)
{
    const char *start = s->p;
    enum smtp_parse_status st = *s->p == '"' ? scan_quoted_string(s) : scan_dot_string(s);
    if (st != SMTP_PARSE_OK)
        return st;
    size_t n = (size_t)(s->p - start);
    if (n > SMTP_LOCAL_PART_MAX)
        return fail(s, SMTP_PARSE_TOO_LONG, "local part longer than 64 octets");
    memcpy(mb->local, start, n);
    mb->local[n] = '\0';
    if (has_non_ascii(start, n))
        mb->needs_smtputf8 = true;
    return SMTP_PARSE_OK;
}

/* RFC 5321 4.1.2 sub-domain = Let-dig [Ldh-str]: no leading or trailing hyphen;
 * RFC 1035 2.3.4: at most 63 octets; RFC 6531 3.3: sub-domain =/ U-label. */
static enum smtp_parse_status check_label(const char *l, size_t n, bool utf8, const char **why)
{
    if (n == 0) {
        *why = "empty domain label";
        return SMTP_PARSE_SYNTAX;
    }
    if (n > 63) {
        *why = "domain label longer than 63 octets";
        return SMTP_PARSE_SYNTAX;
    }
    if (l[0] == '-' || l[n - 1] == '-') {
        *why = "domain label starts or ends with a hyphen";
        return SMTP_PARSE_SYNTAX;
    }
    for (size_t i = 0; i < n;) {
        const unsigned char *c = (const unsigned char *)l + i;
        if (*c < 0x80) {
            if (!is_ldh(*c)) {
                *why = "invalid character in domain";
                return SMTP_PARSE_SYNTAX;
            }
            i++;
            continue;
        }
        if (!utf8) {
            *why = "non-ASCII octet without SMTPUTF8";
            return SMTP_PARSE_SYNTAX;
        }
        size_t len = utf8_len(c, n - i);
        if (len < 2) {
            *why = "malformed UTF-8";
            return SMTP_PARSE_SYNTAX;
        }
        i += len;
    }
    return SMTP_PARSE_OK;
}

/* RFC 5321 4.1.2 Domain = sub-domain *("." sub-domain) (a single label is allowed, no
 * trailing dot); RFC 5321 4.5.3.1.2: at most 255 octets. */
static enum smtp_parse_status check_domain(const char *d, size_t n, bool utf8, const char **why)
{
    if (n == 0) {
        *why = "empty domain";
        return SMTP_PARSE_SYNTAX;
    }
    if (n > SMTP_DOMAIN_MAX) {
        *why = "domain longer than 255 octets";
        return SMTP_PARSE_TOO_LONG;
    }
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && d[i] != '.')
            continue;
        enum smtp_parse_status st = check_label(d + start, i - start, utf8, why);
        if (st != SMTP_PARSE_OK)
            return st;
        start = i + 1;
    }
    return SMTP_PARSE_OK;
}

/* RFC 5321 4.1.3: address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
 * General-address-literal ) "]". No general tag is registered, so that form is refused;
 * the address itself is checked by inet_pton. "IPv6:" is case-insensitive (RFC 5234 2.3). */
static bool literal_span_valid(const char *lit, size_t n)
{
    char text[64];
    unsigned char addr[sizeof(struct in6_addr)];
    if (n < 2 || lit[0] != '[' || lit[n - 1] != ']')
        return false;
    const char *in = lit + 1;
    size_t len = n - 2;
    int af = AF_INET;
    if (len >= 5 && strncasecmp(in, "IPv6:", 5) == 0) {
        af = AF_INET6;
        in += 5;
        len -= 5;
    }
    if (len == 0 || len >= sizeof text || memchr(in, '\0', len) != NULL)
        return false;
    memcpy(text, in, len);
    text[len] = '\0';
    return inet_pton(af, text, addr) == 1;
}

static bool is_domain_octet(unsigned char c)
{
    return is_ldh(c) || c == '.' || c >= 0x80;
}

/* Scans a Domain in a path and checks it; copies it to out (SMTP_DOMAIN_MAX + 1) if set. */
static enum smtp_parse_status parse_domain(struct scan *s, char *out)
{
    const char *start = s->p;
    while (is_domain_octet(cur(s)))
        s->p++;
    size_t n = (size_t)(s->p - start);
    enum smtp_parse_status st = check_domain(start, n, s->utf8, &s->why);
    if (st != SMTP_PARSE_OK)
        return st;
    if (out != NULL) {
        memcpy(out, start, n);
        out[n] = '\0';
    }
    return SMTP_PARSE_OK;
}

/* RFC 5321 4.1.2 Mailbox = Local-part "@" ( Domain / address-literal ); the literal is
 * kept with its brackets. */
static enum smtp_parse_status parse_literal(struct scan *s, struct smtp_mailbox *mb)
{
    const char *start = s->p, *end = s->p + 1;
    while (*end != '\0' && *end != ']' && *end != '>')
        end++;
    if (*end != ']')
        return fail(s, SMTP_PARSE_SYNTAX, "unterminated address literal");
    size_t n = (size_t)(end + 1 - start);
    if (n > SMTP_DOMAIN_MAX || !literal_span_valid(start, n))
        return fail(s, SMTP_PARSE_SYNTAX, "invalid address literal");
    memcpy(mb->domain, start, n);
    mb->domain[n] = '\0';
    mb->domain_is_literal = true;
    s->p = end + 1;
    return SMTP_PARSE_OK;
}

static enum smtp_parse_status parse_mailbox(struct scan *s, struct smtp_mailbox *mb)
{
    enum smtp_parse_status st = parse_local_part(s, mb);
    if (st != SMTP_PARSE_OK)
        return st;
    if (cur(s) != '@')
        return fail(s, SMTP_PARSE_SYNTAX, "missing @ after local part");
    s->p++;
    if (cur(s) == '[')
        return parse_literal(s, mb);
    const char *domain = s->p;
    st = parse_domain(s, mb->domain);
    if (st == SMTP_PARSE_OK && has_non_ascii(domain, (size_t)(s->p - domain)))
        mb->needs_smtputf8 = true;
    return st;
}

/* RFC 5321 4.1.2: A-d-l = At-domain *( "," At-domain ) ":", At-domain = "@" Domain.
 * Parsed for syntax, then dropped (RFC 5321 4.1.1.3 and appendix C: SHOULD ignore). */
static enum smtp_parse_status skip_source_route(struct scan *s)
{
    for (;;) {
        s->p++; /* the "@" */
        enum smtp_parse_status st = parse_domain(s, NULL);
        if (st != SMTP_PARSE_OK)
            return st;
        if (cur(s) == ':') {
            s->p++;
            return SMTP_PARSE_OK;
        }
        if (cur(s) != ',' || s->p[1] != '@')
            return fail(s, SMTP_PARSE_SYNTAX, "invalid source route");
        s->p++;
    }
}

/* RFC 5321 4.1.1.3: "RCPT TO:<Postmaster>" without a domain, case-insensitive. */
static bool is_bare_postmaster(const char *p)
{
    return strncasecmp(p, "postmaster>", 11) == 0;
}

/* RFC 5321 4.1.2: Reverse-path = Path / "<>", Forward-path = Path,
 * Path = "<" [ A-d-l ":" ] Mailbox ">"; RFC 5321 4.5.3.1.3: at most 256 octets. */
static enum smtp_parse_status parse_path(struct scan *s, bool rcpt, struct smtp_path_command *out)
{
    const char *start = s->p;
    if (cur(s) != '<')
        return fail(s, SMTP_PARSE_SYNTAX, "path not enclosed in angle brackets");
    s->p++;
    if (cur(s) == '>') {
        if (rcpt)
            return fail(s, SMTP_PARSE_SYNTAX, "null path not allowed in RCPT");
        out->null_path = true;
        s->p++;
        return SMTP_PARSE_OK;
    }
    if (rcpt && is_bare_postmaster(s->p)) {
        memcpy(out->mailbox.local, s->p, 10);
        out->mailbox.local[10] = '\0';
        s->p += 11;
        return SMTP_PARSE_OK;
    }
    enum smtp_parse_status st = SMTP_PARSE_OK;
    if (cur(s) == '@')
        st = skip_source_route(s);
    if (st == SMTP_PARSE_OK)
        st = parse_mailbox(s, &out->mailbox);
    if (st != SMTP_PARSE_OK)
        return st;
    if (cur(s) != '>')
        return fail(s, SMTP_PARSE_SYNTAX,
                    cur(s) == '\0' ? "missing > at end of path" : "invalid character in path");
    s->p++;
    if ((size_t)(s->p - start) > SMTP_PATH_MAX)
        return fail(s, SMTP_PARSE_TOO_LONG, "path longer than 256 octets");
    return SMTP_PARSE_OK;
}

/* RFC 5321 4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"). */
static enum smtp_parse_status parse_keyword(struct scan *s, struct smtp_param *pm)
{
    const char *start = s->p;
    if (!is_alpha(cur(s)) && !is_digit(cur(s)))
        return fail(s, SMTP_PARSE_SYNTAX, "invalid parameter keyword");
    while (is_ldh(cur(s)))
        s->p++;
    size_t n = (size_t)(s->p - start);
    if (n > SMTP_PARAM_KEYWORD_MAX)
        return fail(s, SMTP_PARSE_SYNTAX, "parameter keyword too long");
    memcpy(pm->keyword, start, n);
    pm->keyword[n] = '\0';
    return SMTP_PARSE_OK;
}

/* RFC 5321 4.1.2: esmtp-value = 1*(%d33-60 / %d62-126). */
static bool is_esmtp_value_char(unsigned char c)
{
    return c >= 33 && c <= 126 && c != '=';
}

/* RFC 6531 3.3 adds UTF8-non-ascii to esmtp-value. */
static enum smtp_parse_status parse_value(struct scan *s, struct smtp_param *pm)
{
    const char *start = s->p;
    enum smtp_parse_status st = take_run(s, is_esmtp_value_char);
    if (st != SMTP_PARSE_OK)
        return st;
    size_t n = (size_t)(s->p - start);
    if (n == 0)
        return fail(s, SMTP_PARSE_SYNTAX, "empty parameter value");
    if (n > SMTP_PARAM_VALUE_MAX)
        return fail(s, SMTP_PARSE_SYNTAX, "parameter value too long");
    memcpy(pm->value, start, n);
    pm->value[n] = '\0';
    pm->has_value = true;
    return SMTP_PARSE_OK;
}

/* RFC 5321 4.1.2: esmtp-param = esmtp-keyword ["=" esmtp-value]. */
static enum smtp_parse_status parse_param(struct scan *s, struct smtp_param *pm)
{
    enum smtp_parse_status st = parse_keyword(s, pm);
    if (st != SMTP_PARSE_OK || cur(s) != '=')
        return st;
    s->p++;
    return parse_value(s, pm);
}

/* RFC 5321 4.1.2: Mail-parameters = esmtp-param *(SP esmtp-param). Runs of SP and trailing
 * SP are tolerated; anything else after the path is an error. */
static enum smtp_parse_status parse_params(struct scan *s, struct smtp_path_command *out)
{
    for (;;) {
        if (cur(s) == '\0')
            return SMTP_PARSE_OK;
        if (cur(s) != ' ')
            return fail(s, SMTP_PARSE_SYNTAX, "unexpected text after path or parameter");
        while (cur(s) == ' ')
            s->p++;
        if (cur(s) == '\0')
            return SMTP_PARSE_OK;
        if (out->param_count == SMTP_PARAMS_MAX)
            return fail(s, SMTP_PARSE_TOO_MANY, "too many parameters");
        enum smtp_parse_status st = parse_param(s, &out->params[out->param_count]);
        if (st != SMTP_PARSE_OK)
            return st;
        out->param_count++;
    }
}

/* Shared body of MAIL and RCPT: "FROM:" / "TO:", one optional SP, the path, parameters. */
static enum smtp_parse_status parse_command(const char *args, const char *word, bool rcpt,
                                            bool allow_utf8, struct smtp_path_command *out,
                                            const char **why)
{
    struct scan s = {args, allow_utf8, NULL};
    enum smtp_parse_status st;
    size_t wlen = strlen(word);
    memset(out, 0, sizeof *out);
    if (args == NULL || strncasecmp(args, word, wlen) != 0) {
        st = fail(&s, SMTP_PARSE_SYNTAX, rcpt ? "expected TO:" : "expected FROM:");
    } else {
        s.p += wlen;
        if (cur(&s) == ' ') /* not in RFC 5321, but widely sent */
            s.p++;
        st = parse_path(&s, rcpt, out);
        if (st == SMTP_PARSE_OK)
            st = parse_params(&s, out);
    }
    if (why != NULL)
        *why = s.why;
    return st;
}

enum smtp_parse_status smtp_parse_mail_from(const char *args, bool allow_utf8,
                                            struct smtp_path_command *out, const char **why)
{
    return parse_command(args, "FROM:", false, allow_utf8, out, why);
}

enum smtp_parse_status smtp_parse_rcpt_to(const char *args, bool allow_utf8,
                                          struct smtp_path_command *out, const char **why)
{
    return parse_command(args, "TO:", true, allow_utf8, out, why);
}

bool smtp_domain_valid(const char *domain, bool allow_utf8)
{
    const char *why;
    return domain != NULL &&
           check_domain(domain, strlen(domain), allow_utf8, &why) == SMTP_PARSE_OK;
}

bool smtp_address_literal_valid(const char *literal)
{
    return literal != NULL && literal_span_valid(literal, strlen(literal));
}

static bool is_upper_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'A' && c <= 'F');
}

/* RFC 3461 4: xchar = %d33-42 / %d44-60 / %d62-126, hexchar = "+" 2(DIGIT / "A".."F"). */
bool smtp_xtext_valid(const char *text)
{
    if (text == NULL)
        return false;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        if (*p == '+') {
            if (!is_upper_hex(p[1]) || !is_upper_hex(p[2]))
                return false;
            p += 2;
        } else if (*p < 33 || *p > 126 || *p == '=') {
            return false;
        }
    }
    return true;
}

/* RFC 5321 4.1.1.1: ehlo = "EHLO" SP ( Domain / address-literal ). The argument precedes
 * any SMTPUTF8 negotiation, so it must be ASCII (RFC 6531 3.7.1: A-labels). */
bool smtp_helo_valid(const char *arg)
{
    if (arg == NULL)
        return false;
    if (arg[0] == '[')
        return smtp_address_literal_valid(arg);
    return smtp_domain_valid(arg, false);
}

void smtp_domain_lower(char *domain)
{
    if (domain == NULL)
        return;
    for (char *p = domain; *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
}
