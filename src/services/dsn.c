/* SPDX-License-Identifier: ISC */
/* Delivery status notifications: RFC 3464 fields in an RFC 6522 multipart/report, the RFC 3461
 * rules of who gets one. Pure functions (docs/notices.md). */
#include "services/dsn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store/queue_backend.h"   /* struct queue_text: a growable buffer */

static const char *const action_names[] = {
    [DSN_ACTION_FAILED] = "failed",
    [DSN_ACTION_DELAYED] = "delayed",
    [DSN_ACTION_RELAYED] = "relayed",
};

/* ---- policy ---- */

/* True when the comma-separated list (RFC 3461 4.1 NOTIFY) holds word, any case. */
static bool list_has(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncasecmp(p, word, n) == 0)
            return true;
        p += len + (comma != NULL ? 1 : 0);
    }
    return false;
}

bool dsn_wanted(const char *sender, const char *notify, enum dsn_action action)
{
    /* RFC 5321 6.1, RFC 3461 6.2: a notice is never sent to the null reverse-path. */
    if (sender == NULL || sender[0] == '\0')
        return false;
    /* RFC 3461 4.1: without NOTIFY the MTA acts as for NOTIFY=FAILURE or FAILURE,DELAY. */
    if (notify == NULL)
        return action == DSN_ACTION_FAILED || action == DSN_ACTION_DELAYED;
    if (list_has(notify, "NEVER"))
        return false;
    static const char *const wanted_by[] = {
        [DSN_ACTION_FAILED] = "FAILURE",
        [DSN_ACTION_DELAYED] = "DELAY",
        [DSN_ACTION_RELAYED] = "SUCCESS",   /* RFC 3461 5.2.2 */
    };
    return list_has(notify, wanted_by[action]);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of "c.d{1,3}.d{1,3}" at s (RFC 3463 2), 0 when it is not one. */
static size_t status_length(const char *s)
{
    size_t i = 0;
    if (!is_digit(s[i++]) || s[i++] != '.')
        return 0;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (is_digit(s[i]) && i - start < 4)
            i++;
        if (i == start || i - start > 3 || (part == 0 && s[i++] != '.'))
            return 0;
    }
    return s[i] == '\0' || s[i] == ' ' || s[i] == '\n' ? i : 0;
}

void dsn_status_of_reply(const char *reply, char out[DSN_STATUS_MAX])
{
    /* RFC 3463 3.1: classes 2 (success: relayed notices), 4 and 5. */
    char cls = reply != NULL && (reply[0] == '2' || reply[0] == '4' || reply[0] == '5')
                   ? reply[0] : '5';
    snprintf(out, DSN_STATUS_MAX, "%c.0.0", cls);
    if (reply == NULL || !is_digit(reply[0]) || !is_digit(reply[1]) || !is_digit(reply[2]) ||
        (reply[3] != ' ' && reply[3] != '-'))
        return;
    size_t n = status_length(reply + 4);
    /* RFC 3463 2: the class of the enhanced code agrees with the reply's first digit. */
    if (n > 0 && n < DSN_STATUS_MAX && reply[4] == cls) {
        memcpy(out, reply + 4, n);
        out[n] = '\0';
    }
}

/* ---- the original ---- */

size_t dsn_header_length(const char *msg, size_t len)
{
    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
        return 2;
    for (size_t i = 0; i + 3 < len; i++) {
        if (memcmp(msg + i, "\r\n\r\n", 4) == 0)
            return i + 4;
    }
    return len;
}

/* Every line ends in CRLF (the last may lack it), has at most DSN_LINE_MAX octets before it,
 * no NUL, no bare CR or LF (RFC 5322 2.1.1, 2.3). */
static bool lines_fit(const char *text, size_t len)
{
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\r' && i + 1 < len && text[i + 1] == '\n') {
            line = 0;
            i++;
        } else if (c == '\0' || c == '\r' || c == '\n' || ++line > DSN_LINE_MAX) {
            return false;
        }
    }
    return true;
}

enum dsn_return dsn_choose_return(const char *ret, const char *headers, size_t headers_len,
                                  const char *whole, size_t whole_len)
{
    /* RFC 3461 6.2: FULL returns the whole message, unless it is larger than an
     * implementation limit; then only the headers. No RET: headers only (docs/notices.md). */
    if (ret != NULL && strcasecmp(ret, "FULL") == 0 && whole != NULL &&
        whole_len <= DSN_FULL_MAX && lines_fit(whole, whole_len))
        return DSN_RETURN_FULL;
    return lines_fit(headers, headers_len) ? DSN_RETURN_HEADERS : DSN_RETURN_NONE;
}

/* ---- formatting helpers ---- */

void dsn_format_date(time_t t, char out[40])
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    /* Fixed English names: RFC 5322 3.3 day-name and month are not locale words. */
    snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7],
             tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
}

static int put(struct queue_text *t, const char *s)
{
    return queue_text_append(t, s, strlen(s));
}

static int line(struct queue_text *t, const char *first, ...) __attribute__((sentinel));

/* Appends the pieces (a NULL-terminated list) and CRLF: one line of the notice. */
static int line(struct queue_text *t, const char *first, ...)
{
    va_list ap;
    int rc = 0;
    va_start(ap, first);
    for (const char *s = first; rc == 0 && s != NULL; s = va_arg(ap, const char *))
        rc = put(t, s);
    va_end(ap);
    return rc != 0 ? rc : put(t, "\r\n");
}

static bool ascii(const char *s)
{
    for (; s != NULL && *s != '\0'; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* RFC 3461 4: xtext "+XX" decoded, when the result is printable ASCII; else the text as
 * received (RFC 3461 6.3 (a) asks for the decoded ENVID in Original-Envelope-Id). */
static void xtext_decode(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const char *p = in; *p != '\0' && n + 1 < outlen; p++) {
        const char *hi = p[0] == '+' && p[1] != '\0' ? strchr(hex, p[1]) : NULL;
        const char *lo = hi != NULL && p[2] != '\0' ? strchr(hex, p[2]) : NULL;
        int c = lo != NULL ? (int)((hi - hex) * 16 + (lo - hex)) : (unsigned char)*p;
        if (c < 0x20 || c > 0x7e) {
            snprintf(out, outlen, "%s", in);
            return;
        }
        out[n++] = (char)c;
        p += lo != NULL ? 2 : 0;
    }
    out[n] = '\0';
}

/* A peer's text (the customer's reply) made safe for a header-like field: octets outside
 * printable ASCII become '?'; each '\n' of a multi-line reply starts a folded line. */
static int put_folded(struct queue_text *t, const char *text)
{
    int rc = 0;
    for (const unsigned char *p = (const unsigned char *)text; rc == 0 && *p != '\0'; p++) {
        if (*p == '\n')
            rc = put(t, "\r\n ");
        else
            rc = queue_text_append(t, *p >= 0x20 && *p < 0x7f ? (const char *)p : "?", 1);
    }
    return rc;
}

/* ---- the three parts ---- */

static int put_part_header(struct queue_text *t, const char *boundary, const char *type,
                           const char *description, bool eightbit)
{
    int rc = line(t, "", NULL);
    if (rc == 0)
        rc = line(t, "--", boundary, NULL);
    if (rc == 0)
        rc = line(t, "Content-Type: ", type, NULL);
    if (rc == 0)
        rc = line(t, "Content-Description: ", description, NULL);
    if (rc == 0 && eightbit)
        rc = line(t, "Content-Transfer-Encoding: 8bit", NULL);
    return rc != 0 ? rc : line(t, "", NULL);
}

static const char *const intro[] = {
    [DSN_ACTION_FAILED] = "Your message could not be delivered to the recipients below.",
    [DSN_ACTION_DELAYED] = "Your message has not yet been delivered to the recipients below.\r\n"
                           "It is still held and will be tried again: do not send it again.",
    [DSN_ACTION_RELAYED] = "Your message was passed on to the recipients' own mail server,\r\n"
                           "which does not report delivery: expect no further notice.",
};

static int put_human_recipient(struct queue_text *t, const struct dsn_recipient *rc_)
{
    int rc = line(t, "", NULL);
    if (rc == 0)
        rc = line(t, "<", rc_->address, ">: ",
                  rc_->explanation != NULL ? rc_->explanation : "see the report below", NULL);
    if (rc == 0 && rc_->diagnostic != NULL && rc_->remote_mta != NULL) {
        rc = put(t, "    The server ");
        if (rc == 0)
            rc = put_folded(t, rc_->remote_mta);
        if (rc == 0)
            rc = put(t, " said: ");
        if (rc == 0)
            rc = put_folded(t, rc_->diagnostic);
        if (rc == 0)
            rc = put(t, "\r\n");
    }
    return rc;
}

static int put_human(struct queue_text *t, const struct dsn_report *r, enum dsn_return ret,
                     const char *boundary, bool eightbit)
{
    char arrived[40];
    dsn_format_date(r->arrival, arrived);
    const char *type = eightbit ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii";
    int rc = put_part_header(t, boundary, type, "Notification", eightbit);
    if (rc == 0)
        rc = line(t, "This is the mail system at ", r->reporting_mta, " (odmrd).", NULL);
    if (rc == 0)
        rc = line(t, "", NULL);
    if (rc == 0)
        rc = line(t, intro[r->action], NULL);
    if (rc == 0)
        rc = line(t, "It arrived here on ", arrived, " and was held as ", r->queue_id, ".", NULL);
    for (size_t i = 0; rc == 0 && i < r->rcpt_count; i++)
        rc = put_human_recipient(t, &r->rcpts[i]);
    if (rc == 0)
        rc = line(t, "", NULL);
    const char *attached = ret == DSN_RETURN_FULL ? "Your message is attached."
                           : ret == DSN_RETURN_NONE
                               ? "Your message's headers could not be attached (a line too long)."
                           : r->full_refused ? "Your message was too large to return whole (or "
                                               "had over-long lines): its headers are attached."
                                             : "The headers of your message are attached.";
    return rc != 0 ? rc : line(t, attached, NULL);
}

/* RFC 3464 2.1: address-type ";" address. RFC 6533 3: "utf-8" for a non-ASCII address. */
static int put_address_field(struct queue_text *t, const char *name, const char *type_and_addr,
                             bool split)
{
    if (!split)
        return line(t, name, ascii(type_and_addr) ? "rfc822; " : "utf-8; ", type_and_addr,
                    NULL);
    const char *semi = strchr(type_and_addr, ';');
    char decoded[1024], type[64];
    if (semi == NULL || (size_t)(semi - type_and_addr) >= sizeof type)
        return line(t, name, "unknown; ", type_and_addr, NULL);
    memcpy(type, type_and_addr, (size_t)(semi - type_and_addr));
    type[semi - type_and_addr] = '\0';
    xtext_decode(semi + 1, decoded, sizeof decoded);
    return line(t, name, type, "; ", decoded, NULL);
}

static int put_date_field(struct queue_text *t, const char *name, time_t when)
{
    char date[40];
    dsn_format_date(when, date);
    return when != 0 ? line(t, name, date, NULL) : 0;
}

static int put_status_recipient(struct queue_text *t, const struct dsn_recipient *x,
                                enum dsn_action action)
{
    int rc = line(t, "", NULL);
    if (rc == 0 && x->orcpt != NULL)   /* RFC 3461 6.3 (d): only from ORCPT */
        rc = put_address_field(t, "Original-Recipient: ", x->orcpt, true);
    if (rc == 0)
        rc = put_address_field(t, "Final-Recipient: ", x->address, false);
    if (rc == 0)
        rc = line(t, "Action: ", action_names[action], NULL);
    if (rc == 0)
        rc = line(t, "Status: ", x->status, NULL);
    /* RFC 3461 6.3 (h), (i): the customer who answered, and its reply verbatim. */
    if (rc == 0 && x->remote_mta != NULL)
        rc = line(t, "Remote-MTA: dns; ", x->remote_mta, NULL);
    if (rc == 0 && x->diagnostic != NULL) {
        rc = put(t, "Diagnostic-Code: ");
        if (rc == 0)
            rc = put(t, x->diagnostic_type != NULL ? x->diagnostic_type : "smtp");
        if (rc == 0)
            rc = put(t, "; ");
        if (rc == 0)
            rc = put_folded(t, x->diagnostic);
        if (rc == 0)
            rc = line(t, "", NULL);
    }
    if (rc == 0)
        rc = put_date_field(t, "Last-Attempt-Date: ", x->last_attempt);
    if (rc == 0)
        rc = put_date_field(t, "Will-Retry-Until: ", x->will_retry_until);
    return rc;
}

static int put_status(struct queue_text *t, const struct dsn_report *r, const char *boundary,
                      bool eightbit)
{
    char envid[512];
    const char *type = r->smtputf8 ? "message/global-delivery-status" : "message/delivery-status";
    int rc = put_part_header(t, boundary, type, "Delivery report", eightbit);
    if (rc == 0 && r->envid != NULL) {   /* RFC 3461 6.3 (a) */
        xtext_decode(r->envid, envid, sizeof envid);
        rc = line(t, "Original-Envelope-Id: ", envid, NULL);
    }
    if (rc == 0)
        rc = line(t, "Reporting-MTA: dns; ", r->reporting_mta, NULL);
    if (rc == 0 && r->received_from != NULL) {   /* RFC 3464 2.2.4 */
        rc = line(t, "Received-From-MTA: dns; ", r->received_from,
                  r->client_addr != NULL ? " (" : "",
                  r->client_addr != NULL ? r->client_addr : "",
                  r->client_addr != NULL ? ")" : "", NULL);
    }
    if (rc == 0)
        rc = put_date_field(t, "Arrival-Date: ", r->arrival);
    for (size_t i = 0; rc == 0 && i < r->rcpt_count; i++)
        rc = put_status_recipient(t, &r->rcpts[i], r->action);
    return rc;
}

static bool has_8bit(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

static int put_returned(struct queue_text *t, const struct dsn_report *r, enum dsn_return ret,
                        const char *boundary, const char *returned, size_t len)
{
    static const char *const types[2][3] = {
        {NULL, "text/rfc822-headers", "message/rfc822"},
        {NULL, "message/global-headers", "message/global"},   /* RFC 6533 */
    };
    int rc = 0;
    if (ret != DSN_RETURN_NONE) {
        if (ret == DSN_RETURN_HEADERS && len >= 4 && memcmp(returned + len - 4, "\r\n\r\n", 4) == 0)
            len -= 2;   /* the headers without the empty line that ended them */
        rc = put_part_header(t, boundary, types[r->smtputf8][ret],
                             ret == DSN_RETURN_FULL ? "Undelivered message"
                                                    : "Headers of the undelivered message",
                             has_8bit(returned, len));
        if (rc == 0)
            rc = queue_text_append(t, returned, len);
        if (rc == 0 && (len < 2 || memcmp(returned + len - 2, "\r\n", 2) != 0))
            rc = put(t, "\r\n");
    }
    /* RFC 2046 5.1.1: the CRLF before the close delimiter belongs to the delimiter. */
    return rc != 0 ? rc : line(t, "\r\n--", boundary, "--", NULL);
}

static const char *const subjects[] = {
    [DSN_ACTION_FAILED] = "Undelivered Mail Returned to Sender",
    [DSN_ACTION_DELAYED] = "Delayed Mail (still being retried)",
    [DSN_ACTION_RELAYED] = "Relayed Mail (no further notices)",
};

static int put_headers(struct queue_text *t, const struct dsn_report *r, const char *boundary)
{
    char date[40];
    dsn_format_date(r->now, date);
    /* RFC 3461 6.2 / RFC 5321 6.1: the notice itself goes out with MAIL FROM:<>. */
    int rc = line(t, "From: Mail Delivery System <MAILER-DAEMON@", r->reporting_mta, ">", NULL);
    if (rc == 0)
        rc = line(t, "To: <", r->sender, ">", NULL);
    if (rc == 0)
        rc = line(t, "Subject: ", subjects[r->action], NULL);
    if (rc == 0)
        rc = line(t, "Date: ", date, NULL);
    if (rc == 0)
        rc = line(t, "Message-ID: <", r->unique, "@", r->reporting_mta, ">", NULL);
    if (rc == 0)   /* RFC 3834 5: automatic responses say so */
        rc = line(t, "Auto-Submitted: auto-replied", NULL);
    if (rc == 0)
        rc = line(t, "MIME-Version: 1.0", NULL);
    if (rc == 0)   /* RFC 6522 3, RFC 3464 2 */
        rc = line(t, "Content-Type: multipart/report; report-type=delivery-status;", NULL);
    if (rc == 0)
        rc = line(t, "\tboundary=\"", boundary, "\"", NULL);
    if (rc == 0)
        rc = line(t, "", NULL);
    if (rc == 0)
        rc = put(t, "This is a MIME-encapsulated delivery status notification (RFC 3464).\r\n");
    return rc;
}

static bool any_8bit_address(const struct dsn_report *r)
{
    bool any = !ascii(r->sender);
    for (size_t i = 0; i < r->rcpt_count; i++)
        any = any || !ascii(r->rcpts[i].address) || !ascii(r->rcpts[i].orcpt);
    return any;
}

int dsn_build(const struct dsn_report *r, enum dsn_return ret, const char *returned,
              size_t returned_len, struct dsn_notice *out)
{
    memset(out, 0, sizeof *out);
    if (r->rcpt_count == 0 || r->sender == NULL || r->sender[0] == '\0')
        return EINVAL;
    struct queue_text t = {0};
    char boundary[128];
    /* "=_" never occurs in quoted-printable or base64 text; the token makes it unique. */
    snprintf(boundary, sizeof boundary, "=_odmrd_%s", r->unique);
    bool utf8 = r->smtputf8 && any_8bit_address(r);
    int rc = put_headers(&t, r, boundary);
    if (rc == 0)
        rc = put_human(&t, r, ret, boundary, utf8);
    if (rc == 0)
        rc = put_status(&t, r, boundary, utf8);
    if (rc == 0)
        rc = put_returned(&t, r, ret, boundary, returned, ret != DSN_RETURN_NONE ? returned_len
                                                                                 : 0);
    if (rc != 0) {
        queue_text_free(&t);
        return rc;
    }
    out->text = t.data;
    out->len = t.len;
    out->eightbit = has_8bit(t.data, t.len);
    out->smtputf8 = utf8;
    return 0;
}

void dsn_notice_free(struct dsn_notice *n)
{
    free(n->text);
    memset(n, 0, sizeof *n);
}
