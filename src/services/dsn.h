/* SPDX-License-Identifier: ISC */
/* Delivery status notifications (RFC 3464 inside an RFC 6522 multipart/report; policy from
 * RFC 3461). Pure functions: no I/O, no clock, no randomness -- the caller passes "now" and a
 * unique token, so a notice is a function of its inputs (docs/notices.md). */
#ifndef ODMR_SERVICES_DSN_H
#define ODMR_SERVICES_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* RFC 3464 2.3.3 Action values odmrd reports. */
enum dsn_action { DSN_ACTION_FAILED = 0, DSN_ACTION_DELAYED, DSN_ACTION_RELAYED };

/* What the third part returns (RFC 3461 4.3 RET, RFC 6522 3). */
enum dsn_return {
    DSN_RETURN_NONE = 0,    /* nothing returnable (headers with an over-long line) */
    DSN_RETURN_HEADERS,     /* text/rfc822-headers (message/global-headers) */
    DSN_RETURN_FULL,        /* message/rfc822 (message/global) */
};

enum { DSN_STATUS_MAX = 16, DSN_FULL_MAX = 1 << 20, DSN_LINE_MAX = 998 };

struct dsn_recipient {
    const char *address;          /* Final-Recipient: the forward-path as received */
    const char *orcpt;            /* RFC 3461 ORCPT as received ("rfc822;a+2Bb@x"), or NULL */
    const char *status;           /* RFC 3463 code, e.g. "5.1.1" */
    const char *remote_mta;       /* Remote-MTA (the customer's name), or NULL */
    const char *diagnostic_type;  /* "smtp" for the customer's reply; NULL = "smtp" */
    const char *diagnostic;       /* Diagnostic-Code text (reply lines joined by '\n'), or NULL */
    const char *explanation;      /* plain English for the first part, or NULL */
    time_t last_attempt;          /* Last-Attempt-Date; 0 = none */
    time_t will_retry_until;      /* Will-Retry-Until (delayed only); 0 = none */
};

struct dsn_report {
    enum dsn_action action;
    const char *reporting_mta;    /* [server] hostname */
    const char *queue_id;         /* the original's id, named in the first part */
    const char *sender;           /* the original's reverse-path: the notice goes To it */
    const char *envid;            /* RFC 3461 ENVID as received (xtext), or NULL */
    const char *received_from;    /* the original's HELO name, or NULL */
    const char *client_addr;      /* the original's client address, or NULL */
    time_t arrival;               /* Arrival-Date */
    time_t now;                   /* Date: and the notice's own timestamps */
    const char *unique;           /* [0-9A-Za-z] token: Message-ID and MIME boundary */
    bool smtputf8;                /* the original was SMTPUTF8: RFC 6533 media types */
    const struct dsn_recipient *rcpts;
    size_t rcpt_count;
    bool full_refused;            /* RET=FULL was asked for, but only headers could be returned */
};

struct dsn_notice {
    char *text;                   /* the whole notice, CRLF lines of at most 998 octets */
    size_t len;
    bool eightbit;                /* it holds octets >= 0x80: send with BODY=8BITMIME */
    bool smtputf8;                /* ... and an address needs SMTPUTF8 (RFC 6531) */
};

/* RFC 3461 4.1 and 6.2, RFC 5321 6.1: whether a recipient with this NOTIFY value (NULL: none
 * given) of a message from sender gets a notice of this kind. Never for the null path. */
bool dsn_wanted(const char *sender, const char *notify, enum dsn_action action);

/* The RFC 3463 code of a reply ("550 5.1.1 ..." -> "5.1.1", "250 2.0.0 ..." -> "2.0.0");
 * without one (or one of another class than the reply code) "C.0.0" with C the reply's class
 * (2, 4 or 5), "5.0.0" for anything else. */
void dsn_status_of_reply(const char *reply, char out[DSN_STATUS_MAX]);

/* Octets of the header block of msg (up to and including the empty line; all of msg when it
 * has no body). */
size_t dsn_header_length(const char *msg, size_t len);

/* What can be returned for RET (NULL, "HDRS" or "FULL", any case) given the original's
 * total size and its header block (and whole text when available, else NULL): FULL needs
 * RET=FULL, at most DSN_FULL_MAX octets and lines that fit a notice; otherwise HEADERS when
 * the header lines fit, else NONE. */
enum dsn_return dsn_choose_return(const char *ret, const char *headers, size_t headers_len,
                                  const char *whole, size_t whole_len);

/* Builds the notice. returned: the octets for the third part (the header block for HEADERS,
 * the whole message for FULL; ignored for NONE). 0, EINVAL (no recipients, null sender) or
 * ENOMEM. Free with dsn_notice_free(). */
int dsn_build(const struct dsn_report *r, enum dsn_return ret, const char *returned,
              size_t returned_len, struct dsn_notice *out);
void dsn_notice_free(struct dsn_notice *n);

/* RFC 5322 3.3 date-time in UTC: "Thu, 03 Dec 2026 07:31:38 +0000". */
void dsn_format_date(time_t t, char out[40]);

#endif
