/* SPDX-License-Identifier: ISC */
/* One line per event on stderr: "TIME PROG[PID]: level=L event=NAME key=value ..." (see
 * enum log_sink for the journal and syslog), logfmt: a value with spaces is in double quotes.
 * Values supplied by a peer must go through log_quote() so a line stays one line. */
#ifndef ODMR_LIB_LOG_H
#define ODMR_LIB_LOG_H

#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Where lines go: stderr as "TIME PROG[PID]: level=..."; stderr as "<N>level=..." when stderr
 * is the systemd journal (JOURNAL_STREAM matches it: the journal stamps and names lines
 * itself, <N> is the sd-daemon(3) priority: <7> debug, <6> info, <4> warn, <3> error);
 * syslog(3) with LOG_MAIL, "level=..." at the matching priority. */
enum log_sink { LOG_SINK_STDERR, LOG_SINK_JOURNAL, LOG_SINK_SYSLOG };

/* Chooses stderr or the journal by JOURNAL_STREAM. */
void log_init(const char *program, enum log_level min_level);
/* From now on to syslog(3): LOG_MAIL, ident = the program, with the pid. */
void log_use_syslog(void);
enum log_sink log_current_sink(void);
/* A new minimum level (a reloaded configuration). */
void log_set_level(enum log_level min_level);
/* fmt continues the line after "event=NAME"; it should be " key=value" pairs. */
void log_event(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies src into dst as one logfmt value for a key=value log line: bare when it is printable
 * ASCII without space, '"', '\' or '='; else in double quotes, with '"' and '\' escaped by
 * a backslash and anything that is not printable ASCII (controls, 8-bit) as \xHH. A value cut
 * to fit dstlen keeps its closing quote; always NUL-terminated. Returns dst. */
const char *log_quote(char *dst, size_t dstlen, const char *src, size_t srclen);
/* What log_quote() writes between its double quotes, without them: for peer text that goes
 * into a value the caller quotes itself (reason="... %s ..."). Always NUL-terminated. */
const char *log_escape(char *dst, size_t dstlen, const char *src, size_t srclen);

#define log_info(ev, ...)  log_event(LOG_LEVEL_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_event(LOG_LEVEL_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_LEVEL_ERROR, ev, __VA_ARGS__)
#define log_debug(ev, ...) log_event(LOG_LEVEL_DEBUG, ev, __VA_ARGS__)

#endif
