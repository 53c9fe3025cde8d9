/* SPDX-License-Identifier: ISC */
/* libFuzzer target: the SMTP reply reader (lib/reply_reader.c) as the smtp_client engine uses it
 * (bare LF tolerated) and as odmr-client uses it through wire_read_reply() (CRLF only), fed in
 * random-sized pieces. Checks the grammar and the bounds the readers promise. */
#include <event2/buffer.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "client/wire.h"
#include "lib/reply.h"
#include "lib/reply_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)              \
    do {                         \
        if (!(cond))             \
            __builtin_trap();    \
    } while (0)

static void check_line(const struct reply_line *l, int code_before, bool allow_bare_lf)
{
    CHECK(l->code >= 200 && l->code <= 559 && (l->code / 10) % 10 <= 5);
    CHECK(l->len + 2 <= REPLY_LINE_MAX || (allow_bare_lf && l->len + 1 <= REPLY_LINE_MAX));
    CHECK(strlen(l->line) == l->len);
    CHECK(memchr(l->line, '\r', l->len) == NULL && memchr(l->line, '\n', l->len) == NULL);
    CHECK(l->index < REPLY_LINES_MAX);
    CHECK(l->index == 0 || l->code == code_before);
    CHECK(l->text[0] == '\0' || (l->text == l->line + 4 && strlen(l->text) == l->len - 4));
}

/* One reader, every line until the input is used up or the reader reports an error. */
static void run_reader(const uint8_t *data, size_t size, size_t piece, bool allow_bare_lf)
{
    struct reply_reader r;
    struct evbuffer *in = evbuffer_new();
    int code = 0;
    reply_reader_init(&r, allow_bare_lf);
    bool failed = false;
    for (size_t off = 0; off < size && !failed; off += piece) {
        evbuffer_add(in, data + off, size - off < piece ? size - off : piece);
        struct reply_line l;
        enum reply_status st;
        while (!failed && (st = reply_reader_next(&r, in, &l)) != REPLY_AGAIN) {
            failed = st != REPLY_LINE;
            if (!failed) {
                check_line(&l, code, allow_bare_lf);
                code = l.code;
            }
            CHECK(reply_status_name(st) != NULL);
        }
        /* Bounded memory: the reader never holds more than one line. */
        CHECK(r.lines.cap <= 2 * REPLY_LINE_MAX);
    }
    reply_reader_free(&r);
    evbuffer_free(in);
}

/* odmr-client's reader: complete replies, their text and EHLO keyword lookups. */
static void run_wire(const uint8_t *data, size_t size, size_t piece)
{
    struct wire_reader r;
    struct evbuffer *in = evbuffer_new();
    wire_reader_init(&r);
    int rc = 0;
    for (size_t off = 0; off < size && rc >= 0; off += piece) {
        evbuffer_add(in, data + off, size - off < piece ? size - off : piece);
        struct smtp_client_reply out;
        while ((rc = wire_read_reply(&r, in, &out)) > 0) {
            char line[REPLY_LINE_MAX], args[64], text[PEER_REPLY_TEXT];
            CHECK(out.lines >= 1 && out.lines <= REPLY_LINES_MAX);
            CHECK(strlen(out.text) < sizeof out.text);
            CHECK(peer_reply_line(&out, 0, line, sizeof line) != NULL);
            CHECK(strlen(peer_reply_text(&out, text, sizeof text)) <= strlen(out.text));
            (void)wire_ehlo_has(&out, "AUTH", args, sizeof args);
            (void)wire_ehlo_has(&out, "SIZE", NULL, 0);
        }
        if (rc < 0)
            CHECK(wire_reader_error(&r) != NULL);
    }
    wire_reader_free(&r);
    evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = 1 + data[0] % 97;
    run_reader(data + 1, size - 1, piece, true);
    run_reader(data + 1, size - 1, piece, false);
    run_wire(data + 1, size - 1, piece);
    return 0;
}
