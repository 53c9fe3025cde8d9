/* SPDX-License-Identifier: ISC */
/* libFuzzer target: the bounded line reader, fed in random-sized pieces. */
#include <event2/buffer.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib/linereader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct line_reader reader;
    struct evbuffer *in = evbuffer_new();
    struct line line;
    size_t limit = 8 + data[0] * 4;
    size_t piece = 1 + data[1] % 64;
    line_reader_init(&reader, limit);
    for (size_t off = 2; off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        evbuffer_add(in, data + off, n);
        enum line_status st;
        while ((st = line_reader_next(&reader, in, &line)) != LINE_AGAIN) {
            if (st == LINE_OK && (line.len + 1 > limit || strlen(line.text) > line.len))
                __builtin_trap();
        }
    }
    line_reader_free(&reader);
    evbuffer_free(in);
    return 0;
}
