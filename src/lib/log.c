/* Event log: one line per event, key=value, on stderr (odmrd runs in the foreground; the
 * supervisor or a pipe to logger(1) takes it from there). */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "odmr";
static enum log_level log_min_level = LOG_LEVEL_INFO;

static const char *const level_names[] = {
    [LOG_LEVEL_DEBUG] = "debug",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_WARN] = "warn",
    [LOG_LEVEL_ERROR] = "error",
};

void log_init(const char *program, enum log_level min_level)
{
    log_program = program;
    log_min_level = min_level;
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

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
    char line[2048];
    char stamp[40];
    va_list ap;

    if (level < log_min_level)
        return;
    format_timestamp(stamp, sizeof stamp);
    int n = snprintf(line, sizeof line, "%s %s[%d]: level=%s event=%s", stamp, log_program,
                     (int)getpid(), level_names[level], event);
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
    line[n++] = '\n';
    /* One write per line keeps lines whole when several threads log. */
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
}

const char *log_quote(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (dstlen == 0)
        return dst;
    for (size_t i = 0; i < srclen && o + 1 < dstlen; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c > 32 && c < 127 && c != '"' && c != '\\') {
            dst[o++] = (char)c;
        } else if (o + 4 < dstlen) {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            break;
        }
    }
    dst[o] = '\0';
    return dst;
}
