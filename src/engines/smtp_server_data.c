/* SPDX-License-Identifier: ISC */
/* SMTP server engine: message octets. DATA (RFC 5321 4.1.1.4: dot-stuffed lines up to the
 * CRLF.CRLF end, no smuggling through bare LF or CR) and BDAT (RFC 3030 chunks), staged and
 * handed to the service's data hooks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engines/smtp_server_internal.h"
#include "lib/log.h"
#include "services/metrics.h"

/* ---- DATA ---- */

void cmd_data(struct smtp_session *s, const char *arg)
{
    struct smtp_reply refusal = {0};
    if (arg[0] != '\0') {
        reply_error(s, 501, "5.5.4", "DATA takes no argument");
        return;
    }
    s->data = calloc(1, sizeof *s->data);
    if (s->data == NULL) {
        reply_send(output(s), 452, "4.3.1", "Out of memory");
        return;
    }
    s->data->previous_line_crlf = true;
    if (hooks(s)->data_begin(hooks_ctx(s), s, &refusal) != 0) {
        free(s->data);
        s->data = NULL;
        write_hook_reply(s, &refusal);
        return;
    }
    enter_state(s, STATE_DATA);
    line_reader_set_limit(&s->reader, limits(s)->max_line_length);
    set_io_timeouts(s, true);
    reply_send(output(s), 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

void flush_stage(struct smtp_session *s)
{
    struct data_state *d = s->data;
    if (d->staged == 0)
        return;
    if (d->storage_errno == 0 && !d->too_big &&
        hooks(s)->data_write(hooks_ctx(s), s, d->stage, d->staged) != 0)
        d->storage_errno = errno ? errno : EIO;
    d->staged = 0;
}

static void stage_octets(struct smtp_session *s, const char *data, size_t len)
{
    struct data_state *d = s->data;
    d->octets += len;
    deadline_add_octets(&s->deadline, len);
    if (d->octets > limits(s)->max_message_size)
        d->too_big = true;
    /* A refused BDAT chunk is read and dropped: data_begin never opened a message for it. */
    if (d->too_big || d->storage_errno != 0 || d->refusal.code != 0)
        return;
    while (len > 0) {
        size_t room = sizeof d->stage - d->staged;
        size_t n = len < room ? len : room;
        memcpy(d->stage + d->staged, data, n);
        d->staged += n;
        data += n;
        len -= n;
        if (d->staged == sizeof d->stage)
            flush_stage(s);
    }
}

/* The verdict on a complete message that must not be stored; NULL when it is good. */
static const struct smtp_reply *message_rejection(struct smtp_session *s, struct smtp_reply *r)
{
    struct data_state *d = s->data;
    if (d->bad_line_ending)
        return reply_set(r, 550, "5.6.0",
                         "Bare CR or LF in message data is not allowed (RFC 5321 2.3.8)");
    if (d->line_too_long)
        return reply_set(r, 550, "5.5.2", "Message line longer than %u octets (RFC 5321 4.5.3.1.6)",
                         limits(s)->max_line_length);
    if (d->too_big)
        return reply_set(r, 552, "5.3.4", "Message size exceeds fixed maximum message size");
    if (d->storage_errno != 0)
        return reply_set(r, 452, "4.3.1", "Insufficient system storage");
    return NULL;
}

static void send_data_reply(struct smtp_session *s, const struct smtp_reply *reply)
{
    /* RFC 2033 4.2: LMTP answers DATA once per accepted recipient, in RCPT order. */
    size_t count = is_lmtp(s) ? s->txn.rcpt_count : 1;
    metrics_count_intake_reply(s->server->settings.role, reply->code, count);
    for (size_t i = 0; i < count; i++)
        write_hook_reply(s, reply);
}
static void finish_data_phase(struct smtp_session *s)
{
    transaction_clear(&s->txn);
    line_reader_set_limit(&s->reader, COMMAND_LINE_MAX);
    set_io_timeouts(s, false);
    enter_state(s, STATE_READY);
}

static void end_of_data(struct smtp_session *s)
{
    struct smtp_reply rejection;
    flush_stage(s);
    const struct smtp_reply *verdict = message_rejection(s, &rejection);
    if (verdict != NULL) {
        log_info("message.rejected", " session=%s peer=%s code=%d reason=%s", s->id, s->peer,
                 verdict->code, verdict->enhanced);
        send_data_reply(s, verdict);
        abort_message(s);
        finish_data_phase(s);
        return;
    }
    free(s->data);
    s->data = NULL;
    /* Reading goes on while the store commits: what the client sends meanwhile waits in the
     * input buffer (held: process_input takes no command; INPUT_HIGH_WATER bounds it), and
     * its end of input is seen and kept for after the reply (input_ended). Disabling and
     * enabling reading around each commit cost two epoll_ctl per message. */
    enter_state(s, STATE_COMMITTING);
    hooks(s)->data_end(hooks_ctx(s), s);
}

void smtp_session_data_done(struct smtp_session *s, const struct smtp_reply *reply)
{
    if (free_if_peer_gone(s))
        return;
    send_data_reply(s, reply);
    finish_data_phase(s);
    resume_after_hook(s);
}

/* One line of message data. RFC 5321 4.1.1.4: the data ends with CRLF "." CRLF; only a "."
 * line with CRLF after a line that itself ended in CRLF counts (no SMTP smuggling through
 * bare LF or CR); RFC 5321 4.5.2: a leading dot is removed. */
void data_line(struct smtp_session *s, const struct line *line)
{
    struct data_state *d = s->data;
    bool crlf = !line->bare_lf;
    if (line->len == 1 && line->text[0] == '.' && crlf && !line->bare_cr &&
        d->previous_line_crlf) {
        end_of_data(s);
        return;
    }
    if (line->bare_lf || line->bare_cr)
        d->bad_line_ending = true;
    d->previous_line_crlf = crlf;
    const char *text = line->text;
    size_t len = line->len;
    if (len > 0 && text[0] == '.') {
        text++;
        len--;
    }
    stage_octets(s, text, len);
    stage_octets(s, "\r\n", 2);
}

/* The end of the run of plain lines at the start of [p, end): lines that end in CRLF, hold no
 * other CR, do not start with a dot and fit within limit octets (their line ending included).
 * Such a line needs no unstuffing (RFC 5321 4.5.2), cannot end the message (4.1.1.4) and is
 * no bare line ending (2.3.8): what data_line() would stage is the line as it stands. */
static const char *plain_run_end(const char *p, const char *end, size_t limit)
{
    while (p < end && *p != '.') {
        size_t room = (size_t)(end - p) < limit ? (size_t)(end - p) : limit;
        const char *lf = memchr(p, '\n', room);
        if (lf == NULL || lf == p || lf[-1] != '\r' ||
            memchr(p, '\r', (size_t)(lf - 1 - p)) != NULL)
            break;
        p = lf + 1;
    }
    return p;
}

/* Stages the run of plain lines at the start of the input's first contiguous part straight
 * from the input buffer, in one copy, where the line reader takes a line at a time (copy,
 * drain, two stagings: most of the event loop's work on a large message). The line after the
 * run, and a line the part cuts off, go through take_line() and data_line(). true when it
 * took any. */
bool data_take_plain_lines(struct smtp_session *s, struct evbuffer *in, size_t limit)
{
    struct evbuffer_iovec part;
    if (evbuffer_peek(in, -1, NULL, &part, 1) < 1 || part.iov_len == 0)
        return false;
    const char *start = part.iov_base;
    size_t taken = (size_t)(plain_run_end(start, start + part.iov_len, limit) - start);
    if (taken == 0)
        return false;
    s->data->previous_line_crlf = true;
    stage_octets(s, start, taken);
    evbuffer_drain(in, taken);
    return true;
}

/* ---- BDAT (RFC 3030) ---- */

/* RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF, chunk-size = 1*DIGIT. */
static int parse_bdat(const char *arg, uint64_t *size, bool *last)
{
    char *end;
    if (*arg < '0' || *arg > '9' || strspn(arg, "0123456789") > 19)
        return -1;
    errno = 0;
    *size = strtoull(arg, &end, 10);
    *last = false;
    if (errno != 0)
        return -1;
    if (*end == '\0')
        return 0;
    if (strcasecmp(end, " LAST") != 0)
        return -1;
    *last = true;
    return 0;
}

/* The first BDAT of a transaction opens the message; a refusal is kept in *d and sent after
 * the chunk has been read (RFC 3030 2: the octets are always consumed). */
static struct data_state *open_chunked_message(struct smtp_session *s)
{
    struct data_state *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    s->data = d;
    if (s->state != STATE_RCPT)
        reply_set(&d->refusal, 503, "5.5.1", "BDAT needs MAIL and RCPT first");
    else if (hooks(s)->data_begin(hooks_ctx(s), s, &d->refusal) == 0)
        d->refusal.code = 0;
    return d;
}

void cmd_bdat(struct smtp_session *s, const char *arg)
{
    uint64_t size;
    bool last;
    if (parse_bdat(arg, &size, &last) != 0) {
        /* RFC 3030 2: without a valid size the chunk cannot be skipped: close. */
        reply_send(output(s), 501, "5.5.4", "Syntax: BDAT chunk-size [LAST]; closing");
        close_after_flush(s);
        return;
    }
    struct data_state *d = s->data ? s->data : open_chunked_message(s);
    if (d == NULL) {
        reply_send(output(s), 452, "4.3.1", "Out of memory; closing");
        close_after_flush(s);
        return;
    }
    d->chunk_left = size;
    d->chunk_last = last;
    enter_state(s, STATE_CHUNK);
    set_io_timeouts(s, true);
}

static void end_of_chunk(struct smtp_session *s)
{
    struct data_state *d = s->data;
    flush_stage(s);
    if (d->refusal.code != 0) {
        struct smtp_reply refusal = d->refusal;
        bool opened = refusal.code != 503;
        if (opened)
            abort_message(s);
        free(s->data);
        s->data = NULL;
        enter_state(s, s->txn.rcpt_count > 0 ? STATE_RCPT
                       : s->txn.active         ? STATE_MAIL
                                               : (s->helo[0] ? STATE_READY : STATE_GREETING));
        set_io_timeouts(s, false);
        write_hook_reply(s, &refusal);
        if (!s->close_after_reply)
            count_error(s);
        return;
    }
    if (d->chunk_last) {
        enter_state(s, STATE_DATA);
        end_of_data(s);
        return;
    }
    enter_state(s, STATE_RCPT);
    set_io_timeouts(s, false);
    reply_send(output(s), 250, "2.0.0", "%llu octets received",
               (unsigned long long)d->octets);
}

/* Takes the octets of the current chunk out of the input: no lines, no dot-stuffing. */
void read_chunk(struct smtp_session *s, struct evbuffer *in)
{
    char buf[16384];
    struct data_state *d = s->data;
    while (d->chunk_left > 0 && evbuffer_get_length(in) > 0) {
        size_t want = d->chunk_left < sizeof buf ? (size_t)d->chunk_left : sizeof buf;
        int n = evbuffer_remove(in, buf, want);
        if (n <= 0)
            break;
        d->chunk_left -= (uint64_t)n;
        stage_octets(s, buf, (size_t)n);
    }
    if (d->chunk_left == 0)
        end_of_chunk(s);
}
