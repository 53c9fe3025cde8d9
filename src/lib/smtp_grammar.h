/* SPDX-License-Identifier: ISC */
/* RFC 5321 section 4.1.2 grammar for the arguments of MAIL and RCPT, with the RFC 6531
 * (SMTPUTF8) extension of local parts and domains, and the ESMTP parameter syntax.
 * Pure functions: no I/O, no allocation; every output is bounded. */
#ifndef ODMR_LIB_SMTP_GRAMMAR_H
#define ODMR_LIB_SMTP_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1: local part 64 octets, domain 255, path 256 (incl. angle brackets). */
enum {
    SMTP_LOCAL_PART_MAX = 64,
    SMTP_DOMAIN_MAX = 255,
    SMTP_PATH_MAX = 256,
    SMTP_PARAMS_MAX = 16,        /* ESMTP parameters accepted on one MAIL/RCPT */
    SMTP_PARAM_KEYWORD_MAX = 32,
    SMTP_PARAM_VALUE_MAX = 500,
};

enum smtp_parse_status {
    SMTP_PARSE_OK = 0,
    SMTP_PARSE_SYNTAX,       /* 501 5.5.2 / 5.1.3: malformed */
    SMTP_PARSE_TOO_LONG,     /* 501 5.5.2 path/local part/domain over the RFC limit */
    SMTP_PARSE_TOO_MANY,     /* 501 5.5.4 too many parameters */
};

struct smtp_mailbox {
    char local[SMTP_LOCAL_PART_MAX + 1];   /* verbatim, quoted-string form kept as sent */
    char domain[SMTP_DOMAIN_MAX + 1];      /* domain, or address literal with its brackets;
                                              empty only for RCPT TO:<postmaster> */
    bool domain_is_literal;
    bool needs_smtputf8;                    /* local part or domain has octets >= 0x80 */
};

struct smtp_param {
    char keyword[SMTP_PARAM_KEYWORD_MAX + 1];   /* as sent; compare case-insensitively */
    char value[SMTP_PARAM_VALUE_MAX + 1];       /* empty string when no "=value" */
    bool has_value;
};

struct smtp_path_command {
    bool null_path;                 /* MAIL FROM:<> */
    struct smtp_mailbox mailbox;    /* unset when null_path */
    size_t param_count;
    struct smtp_param params[SMTP_PARAMS_MAX];
};

/* Parses the text after the verb, e.g. "FROM:<a@b.example> SIZE=10 BODY=8BITMIME".
 * "FROM:" is matched case-insensitively; one optional space after the colon is tolerated.
 * A source route (<@x,@y:user@d>) is accepted and dropped (RFC 5321 4.1.2 / C.).
 * allow_utf8: accept UTF-8 in local part and domain (only when SMTPUTF8 was advertised;
 * the caller decides whether the SMTPUTF8 parameter was given).
 * On error *why points to a static human-readable reason. */
enum smtp_parse_status smtp_parse_mail_from(const char *args, bool allow_utf8,
                                            struct smtp_path_command *out, const char **why);
/* Same for "TO:<...> params". The null path is refused; "<postmaster>" (any case) is
 * accepted with an empty domain (RFC 5321 4.1.1.3). */
enum smtp_parse_status smtp_parse_rcpt_to(const char *args, bool allow_utf8,
                                          struct smtp_path_command *out, const char **why);

/* RFC 5321 Domain (sub-domain *("." sub-domain)), LDH labels of at most 63 octets, total at
 * most 255; with allow_utf8 also U-labels (RFC 6531 "sub-domain =/ U-label"). No trailing dot. */
bool smtp_domain_valid(const char *domain, bool allow_utf8);
/* RFC 5321 4.1.3 address literal "[1.2.3.4]" or "[IPv6:...]" (checked with inet_pton). */
bool smtp_address_literal_valid(const char *literal);
/* RFC 3461 4: xtext = *( xchar / hexchar ), xchar printable ASCII 33..126 except "+" and "=",
 * hexchar "+" followed by two UPPER-case hex digits. */
bool smtp_xtext_valid(const char *text);
/* EHLO/HELO argument: a domain or an address literal. */
bool smtp_helo_valid(const char *arg);

/* Lower-case an ASCII domain in place (UTF-8 octets untouched). */
void smtp_domain_lower(char *domain);

#endif
