/* One line per event on stderr: "TIME PROG[PID]: level=L event=NAME key=value ...".
 * Values supplied by a peer must go through log_quote() so a line stays one line. */
#ifndef ODMR_LIB_LOG_H
#define ODMR_LIB_LOG_H

#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

void log_init(const char *program, enum log_level min_level);
/* fmt continues the line after "event=NAME"; it should be " key=value" pairs. */
void log_event(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies src into dst as a token safe for a key=value log line: printable ASCII kept,
 * anything else (space, quote, control, 8-bit) escaped as \xHH; always NUL-terminated.
 * Returns dst. */
const char *log_quote(char *dst, size_t dstlen, const char *src, size_t srclen);

#define log_info(ev, ...)  log_event(LOG_LEVEL_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_event(LOG_LEVEL_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_LEVEL_ERROR, ev, __VA_ARGS__)
#define log_debug(ev, ...) log_event(LOG_LEVEL_DEBUG, ev, __VA_ARGS__)

#endif
