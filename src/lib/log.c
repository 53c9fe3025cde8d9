/* SPDX-License-Identifier: ISC */
/* Event log: one line per event, key=value, on stderr (odmrd runs in the foreground; the
 * supervisor or a pipe to logger(1) takes it from there), in the journal's form when stderr
 * is the journal, or to syslog(3). */
#include "lib/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "odmr";
static _Atomic enum log_level log_min_level = LOG_LEVEL_INFO;   /* set on reload, read by all */
static enum log_sink log_sink = LOG_SINK_STDERR;

/* sd-daemon(3) prefixes and syslog(3) priorities: the same numbers */
static const int level_priority[] = {
    [LOG_LEVEL_DEBUG] = LOG_DEBUG,
    [LOG_LEVEL_INFO] = LOG_INFO,
    [LOG_LEVEL_WARN] = LOG_WARNING,
    [LOG_LEVEL_ERROR] = LOG_ERR,
};

static const char *const level_names[] = {
    [LOG_LEVEL_DEBUG] = "debug",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_WARN] = "warn",
    [LOG_LEVEL_ERROR] = "error",
};

/* systemd sets JOURNAL_STREAM=DEV:INODE for a stderr connected to the journal; a stderr
 * redirected elsewhere (a file, a pipe) does not match it. */
static bool stderr_is_journal(void)
{
    const char *stream = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char tail;
    if (stream == NULL || sscanf(stream, "%llu:%llu%c", &dev, &ino, &tail) != 2)
        return false;
    return fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
           (unsigned long long)st.st_ino == ino;
}

void log_init(const char *program, enum log_level min_level)
{
    log_program = program;
    log_min_level = min_level;
    log_sink = stderr_is_journal() ? LOG_SINK_JOURNAL : LOG_SINK_STDERR;
}

void log_use_syslog(void)
{
    openlog(log_program, LOG_PID | LOG_NDELAY, LOG_MAIL);
    log_sink = LOG_SINK_SYSLOG;
}

void log_set_level(enum log_level min_level)
{
    log_min_level = min_level;
}

enum log_sink log_current_sink(void)
{
    return log_sink;
}

static void format_timestamp(char *out, size_t outlen)
{
    struct timeval now;
    struct tm utc;

    gettimeofday(&now, NULL);
    gmtime_r(&now.tv_sec, &utc);
    size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &utc);
    snprintf(out + n, outlen - n, ".%03ldZ", (long)(now.tv_usec / 1000));
}

/* getpid() is a system call on every line otherwise (glibc no longer caches it). Logging
 * runs on several threads (the queue's workers), hence atomic; a forked child (odmr-client's
 * MDA) starts again from 0. */
static _Atomic pid_t cached_pid;

static void forget_pid(void)
{
    cached_pid = 0;
}

static void register_forget_pid(void)
{
    pthread_atfork(NULL, NULL, forget_pid);
}

static pid_t log_pid(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pid_t pid = cached_pid;
    if (pid == 0) {
        pthread_once(&once, register_forget_pid);
        pid = getpid();
        cached_pid = pid;
    }
    return pid;
}

/* What comes before "level=": a timestamp and PROG[PID] on a plain stderr, the priority for
 * the journal (which stamps and names the line itself), nothing for syslog. */
static int format_prefix(char *out, size_t outlen, enum log_level level)
{
    char stamp[40];
    switch (log_sink) {
    case LOG_SINK_JOURNAL:
        return snprintf(out, outlen, "<%d>", level_priority[level]);
    case LOG_SINK_SYSLOG:
        out[0] = '\0';
        return 0;
    case LOG_SINK_STDERR:
        break;
    }
    format_timestamp(stamp, sizeof stamp);
    return snprintf(out, outlen, "%s %s[%d]: ", stamp, log_program, (int)log_pid());
}

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    if (level < log_min_level)
        return;
    int n = format_prefix(line, sizeof line, level);
    if (n >= 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, "level=%s event=%s",
                      level_names[level], event);
    if (n < 0)
        return;
    if ((size_t)n < sizeof line) {
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2;
    if (log_sink == LOG_SINK_SYSLOG) {
        line[n] = '\0';
        syslog(level_priority[level], "%s", line);
        return;
    }
    line[n++] = '\n';
    /* One write per line keeps lines whole when several threads log. */
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
}

/* Octets a bare logfmt value may hold: printable ASCII but the space, '"', '\' and '='. */
static bool bare_octet(unsigned char c)
{
    return c > 32 && c < 127 && c != '"' && c != '\\' && c != '=';
}

/* One octet inside double quotes: '"' and '\' escaped by a backslash, the space and other
 * printable ASCII as it is, anything else as \xHH. Returns the length of the escape. */
static size_t quoted_octet(unsigned char c, char out[4])
{
    static const char hex[] = "0123456789abcdef";
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c >= 32 && c < 127) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = '\\';
    out[1] = 'x';
    out[2] = hex[c >> 4];
    out[3] = hex[c & 15];
    return 4;
}

/* Escapes src[i..] into dst[o..] while the escape and `reserve` more octets fit; returns the
 * new o. */
static size_t escape_into(char *dst, size_t dstlen, size_t o, const char *src, size_t srclen,
                          size_t reserve)
{
    for (size_t i = 0; i < srclen; i++) {
        char esc[4];
        size_t n = quoted_octet((unsigned char)src[i], esc);
        if (o + n + reserve > dstlen)
            break;
        memcpy(dst + o, esc, n);
        o += n;
    }
    return o;
}

const char *log_escape(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    if (dstlen == 0)
        return dst;
    dst[escape_into(dst, dstlen, 0, src, srclen, 1)] = '\0';
    return dst;
}

const char *log_quote(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    size_t o = 0, i = 0;
    if (dstlen == 0)
        return dst;
    while (i < srclen && bare_octet((unsigned char)src[i]))
        i++;
    if (i == srclen || dstlen < 3) {      /* bare: a simple value (or no room for quotes) */
        for (i = 0; i < srclen && o + 1 < dstlen && bare_octet((unsigned char)src[i]); i++)
            dst[o++] = src[i];
        dst[o] = '\0';
        return dst;
    }
    dst[o++] = '"';
    o = escape_into(dst, dstlen, o, src, srclen, 2);   /* the closing quote and the NUL fit */
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}
