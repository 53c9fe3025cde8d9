/* SPDX-License-Identifier: ISC */
/* odmr-client settings (settings.h): the table of settings, the config file, the flags. */
#include "client/settings.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/config.h"

enum {
    PASSWORD_MAX = 1024,           /* octets of the password file's first line, incl. LF */
    EVERY_MAX = 7 * 86400,
    TIMEOUT_MAX = 86400,           /* a day: beyond it a wait is a hang, not a timeout */
    FACTOR_MAX = 100,
    /* Debian's inih is built with INI_MAX_LINE 200 on the stack: 3 of those are CR, LF and
     * NUL. A longer line would be cut and its tail read as another line, so it is refused. */
    LINE_MAX_CHARS = 200 - 3,
};

/* RFC 5321 4.5.3.2 gives the minimum waits of an SMTP client (4.5.3.2.1-.6) and server
 * (4.5.3.2.7); RFC 2645 5.2.1 lets the provider take its time over ATRN. Connect has no RFC
 * value: a minute is generous on any real path (the kernel itself gives up after ~2 min). */
static const unsigned default_timeouts[TIMEOUT_KIND_COUNT] = {
    [TIMEOUT_CONNECT] = 60,
    [TIMEOUT_GREETING] = 300,          /* 4.5.3.2.1 initial 220 */
    [TIMEOUT_COMMAND] = 300,           /* 4.5.3.2.2 MAIL, 4.5.3.2.3 RCPT */
    [TIMEOUT_ATRN] = 600,
    [TIMEOUT_DATA_INIT] = 120,         /* 4.5.3.2.4 DATA initiation */
    [TIMEOUT_DATA_BLOCK] = 180,        /* 4.5.3.2.5 data block */
    [TIMEOUT_DATA_END] = 600,          /* 4.5.3.2.6 DATA termination */
    [TIMEOUT_SERVER_COMMAND] = 300,    /* 4.5.3.2.7 server timeout */
    [TIMEOUT_SERVER_DATA] = 180,       /* 4.5.3.2.5 seen from the receiving side */
};

/* ---- a setting ---- */

struct setting;

/* Where a value comes from: relative paths in the file are relative to the file's directory;
 * a list given by flags replaces the file's list instead of adding to it. */
struct setting_input {
    const char *base_dir;    /* NULL: the current directory (flags) */
    bool from_flags;
};

typedef int (*setting_parser)(struct client_options *o, const struct setting *s,
                              const char *value, const struct setting_input *in, char *err,
                              size_t errlen);

struct setting {
    const char *section;
    const char *key;          /* in the file */
    const char *flag;         /* --flag; NULL: no flag */
    char short_flag;          /* -v; 0: none */
    bool takes_value;         /* false: a switch ("yes" when given as a flag) */
    setting_parser parse;
    size_t field;             /* strings: offset of the char *; timeouts: the kind */
};

__attribute__((format(printf, 3, 4)))
static int set_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- value parsers ---- */

static char **string_field(struct client_options *o, const struct setting *s)
{
    return (char **)((char *)o + s->field);
}

static int replace_string(char **field, const char *value, char *err, size_t errlen)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return set_error(err, errlen, "out of memory");
    free(*field);
    *field = copy;
    return 0;
}

static int parse_string(struct client_options *o, const struct setting *s, const char *value,
                        const struct setting_input *in, char *err, size_t errlen)
{
    if (value[0] == '\0')
        return set_error(err, errlen, "empty value");
    return replace_string(string_field(o, s), value, err, errlen);
}

static int parse_path(struct client_options *o, const struct setting *s, const char *value,
                      const struct setting_input *in, char *err, size_t errlen)
{
    char joined[PATH_MAX];
    if (value[0] == '\0')
        return set_error(err, errlen, "empty path");
    if (value[0] == '/' || in->base_dir == NULL)
        return replace_string(string_field(o, s), value, err, errlen);
    if ((size_t)snprintf(joined, sizeof joined, "%s/%s", in->base_dir, value) >= sizeof joined)
        return set_error(err, errlen, "path too long");
    return replace_string(string_field(o, s), joined, err, errlen);
}

/* HOST, HOST:PORT, [v6], [v6]:PORT; the port defaults to 366 (RFC 2645 4; Debian's
 * /etc/services has no "odmr", so it is always numeric). */
static int split_server(const char *arg, const char **host, size_t *hlen, const char **port)
{
    *port = "366";
    *host = arg;
    if (arg[0] == '[') {
        const char *close = strchr(arg, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return -1;
        *host = arg + 1;
        *hlen = (size_t)(close - *host);
        if (close[1] == ':')
            *port = close + 2;
        return 0;
    }
    const char *colon = strchr(arg, ':');
    *hlen = colon ? (size_t)(colon - arg) : strlen(arg);
    if (colon != NULL)
        *port = colon + 1;
    return 0;
}

static int parse_server(struct client_options *o, const struct setting *s, const char *value,
                        const struct setting_input *in, char *err, size_t errlen)
{
    const char *host, *port;
    size_t hlen;
    if (split_server(value, &host, &hlen, &port) != 0 || hlen == 0 || hlen >= sizeof o->host ||
        port[0] == '\0' || strlen(port) > 5 || strspn(port, "0123456789") != strlen(port) ||
        atoi(port) < 1 || atoi(port) > 65535)
        return set_error(err, errlen, "bad value \"%s\" (expected HOST, HOST:PORT or [IPv6]:PORT)",
                    value);
    if (replace_string(&o->server, value, err, errlen) != 0)
        return -1;
    memcpy(o->host, host, hlen);
    o->host[hlen] = '\0';
    snprintf(o->port, sizeof o->port, "%s", port);
    return 0;
}

static int parse_tls(struct client_options *o, const struct setting *s, const char *value,
                     const struct setting_input *in, char *err, size_t errlen)
{
    static const struct { const char *name; enum tls_mode mode; } modes[] = {
        {"starttls", TLS_MODE_STARTTLS}, {"implicit", TLS_MODE_IMPLICIT}, {"none", TLS_MODE_NONE},
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(value, modes[i].name) == 0) {
            o->tls = modes[i].mode;
            return 0;
        }
    return set_error(err, errlen, "bad value \"%s\" (expected starttls, implicit or none)", value);
}

static int add_pin(struct client_options *o, const char *text, char *err, size_t errlen)
{
    struct tls_pin pin;
    if (tls_pin_parse(text, &pin) != 0)
        return set_error(err, errlen, "bad pin \"%.80s\" (expected sha256: and 44 base64 characters, "
                    "as \"odmrctl tls pin\" prints it)", text);
    if (o->pin_count == CLIENT_PIN_MAX)
        return set_error(err, errlen, "too many pins (at most %d)", CLIENT_PIN_MAX);
    o->pins[o->pin_count++] = pin;
    return 0;
}

/* "sha256:A" or "sha256:A, sha256:B"; the key and the flag may be repeated. Pins from flags
 * replace the file's pins: the command line says which keys to accept now. */
static int parse_pins(struct client_options *o, const struct setting *s, const char *value,
                      const struct setting_input *in, char *err, size_t errlen)
{
    char *copy = strdup(value), *save = NULL;
    int rc = 0, seen = 0;
    if (copy == NULL)
        return set_error(err, errlen, "out of memory");
    if (in->from_flags && !o->pins_from_flags) {
        o->pin_count = 0;
        o->pins_from_flags = true;
    }
    for (char *tok = strtok_r(copy, ", \t", &save); tok != NULL && rc == 0;
         tok = strtok_r(NULL, ", \t", &save), seen++)
        rc = add_pin(o, tok, err, errlen);
    free(copy);
    if (rc == 0 && seen == 0)
        return set_error(err, errlen, "empty value (expected sha256:BASE64)");
    return rc;
}

/* A password on the command line is seen by every local user (ps); one in the config file
 * would make that file a secret. Only a password file of its own holds it. */
static int refuse_password(struct client_options *o, const struct setting *s, const char *value,
                           const struct setting_input *in, char *err, size_t errlen)
{
    return set_error(err, errlen, "a password is never taken from %s; put it in a file of its own "
                "(first line, mode 0600) and name that file with %s",
                in->from_flags ? "the command line (ps shows it)" : "the config file",
                in->from_flags ? "--password-file" : "password_file");
}

/* Durations as odmrd.conf writes them (config_parse_duration): 300, 30s, 5m, 1h, 1d, 1w. */
static int parse_bounded_duration(const char *value, unsigned max, unsigned *out, char *err,
                                  size_t errlen)
{
    time_t t;
    if (config_parse_duration(value, &t) != 0 || t < 1 || t > (time_t)max)
        return set_error(err, errlen, "bad duration \"%s\" (examples: 30s, 5m, 1h; from 1s to %us)",
                    value, max);
    *out = (unsigned)t;
    return 0;
}

static int parse_every(struct client_options *o, const struct setting *s, const char *value,
                       const struct setting_input *in, char *err, size_t errlen)
{
    return parse_bounded_duration(value, EVERY_MAX, &o->every, err, errlen);
}

static int parse_timeout(struct client_options *o, const struct setting *s, const char *value,
                         const struct setting_input *in, char *err, size_t errlen)
{
    return parse_bounded_duration(value, TIMEOUT_MAX, &o->timeouts[s->field], err, errlen);
}

static int parse_factor(struct client_options *o, const struct setting *s, const char *value,
                        const struct setting_input *in, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno != 0 || end == value || *end != '\0' || !(v > 0) || v > FACTOR_MAX)
        return set_error(err, errlen, "bad factor \"%s\" (a number above 0, at most %d)", value,
                    FACTOR_MAX);
    o->timeout_scale = v;
    return 0;
}

static int parse_switch(struct client_options *o, const struct setting *s, const char *value,
                        const struct setting_input *in, char *err, size_t errlen)
{
    if (config_parse_bool(value, (bool *)((char *)o + s->field)) == 0)
        return 0;
    return set_error(err, errlen, "bad value \"%s\" (expected yes or no)", value);
}

/* ---- the table: every setting, its key in the file, its flag ---- */

#define FIELD(f) offsetof(struct client_options, f)
#define TIMEOUT(key, flag, kind) {"timeouts", key, flag, 0, true, parse_timeout, kind}
static const struct setting settings[] = {
    {"provider", "server", "server", 0, true, parse_server, 0},
    {"provider", "tls", "tls", 0, true, parse_tls, 0},
    {"provider", "ca", "ca", 0, true, parse_path, FIELD(ca)},
    {"provider", "tls_name", "tls-name", 0, true, parse_string, FIELD(tls_name)},
    {"provider", "pin", "pin", 0, true, parse_pins, 0},
    {"provider", "user", "user", 0, true, parse_string, FIELD(user)},
    {"provider", "password_file", "password-file", 0, true, parse_path, FIELD(password_file)},
    {"provider", "password", "password", 0, true, refuse_password, 0},
    {"provider", "mech", "mech", 0, true, parse_string, FIELD(mech)},
    {"provider", "domains", "domains", 0, true, parse_string, FIELD(domains)},
    {"local", "deliver", "deliver", 0, true, parse_string, FIELD(deliver)},
    {"local", "helo", "helo", 0, true, parse_string, FIELD(helo)},
    {"run", "every", "every", 0, true, parse_every, 0},
    {"run", "verbose", "verbose", 'v', false, parse_switch, FIELD(verbose)},
    {"timeouts", "timeout_factor", "timeout", 0, true, parse_factor, 0},
    TIMEOUT("connect_timeout", "connect-timeout", TIMEOUT_CONNECT),
    TIMEOUT("greeting_timeout", "greeting-timeout", TIMEOUT_GREETING),
    TIMEOUT("command_timeout", "command-timeout", TIMEOUT_COMMAND),
    TIMEOUT("atrn_timeout", "atrn-timeout", TIMEOUT_ATRN),
    TIMEOUT("data_init_timeout", "data-init-timeout", TIMEOUT_DATA_INIT),
    TIMEOUT("data_block_timeout", "data-block-timeout", TIMEOUT_DATA_BLOCK),
    TIMEOUT("data_end_timeout", "data-end-timeout", TIMEOUT_DATA_END),
    TIMEOUT("server_command_timeout", "server-command-timeout", TIMEOUT_SERVER_COMMAND),
    TIMEOUT("server_data_timeout", "server-data-timeout", TIMEOUT_SERVER_DATA),
};
#undef TIMEOUT
#undef FIELD
enum { SETTING_COUNT = sizeof settings / sizeof settings[0] };

const char *settings_table_key(size_t i, bool *refused)
{
    if (i >= SETTING_COUNT)
        return NULL;
    *refused = settings[i].parse == refuse_password;
    return settings[i].key;
}

/* ---- life cycle ---- */

void settings_init(struct client_options *o)
{
    memset(o, 0, sizeof *o);
    o->tls = TLS_MODE_STARTTLS;
    o->timeout_scale = 1.0;
    memcpy(o->timeouts, default_timeouts, sizeof o->timeouts);
}

void settings_free(struct client_options *o)
{
    char **strings[] = {&o->config_file, &o->server, &o->user, &o->password_file, &o->ca,
                        &o->tls_name, &o->domains, &o->deliver, &o->mech, &o->helo};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        free(*strings[i]);
        *strings[i] = NULL;
    }
    if (o->password != NULL) {
        explicit_bzero(o->password, strlen(o->password));
        free(o->password);
        o->password = NULL;
    }
}

struct timeval client_timeout(const struct client_options *o, enum client_timeout_kind kind)
{
    double s = o->timeouts[kind] * o->timeout_scale;
    if (s < 0.01)
        s = 0.01;
    struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
    return tv;
}

time_t client_timeout_seconds(const struct client_options *o, enum client_timeout_kind kind)
{
    double s = o->timeouts[kind] * o->timeout_scale;
    return s < 1 ? 1 : (time_t)s;
}

/* ---- the config file ---- */

struct file_context {
    struct client_options *o;
    FILE *in;
    struct setting_input input;
    int line;              /* the line inih is handling: read_line counts them */
    int error_line;        /* of the first error found here; 0: none */
    char message[400];
};

__attribute__((format(printf, 2, 3)))
static void file_error(struct file_context *ctx, const char *fmt, ...)
{
    va_list ap;
    if (ctx->error_line != 0)
        return;   /* the first error is the one worth reading */
    ctx->error_line = ctx->line;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
}

/* inih's fgets-like reader, one physical line per call, so ctx->line is exact in the handler.
 * A line that would not fit inih's buffer, or holds a NUL, is an error and reaches inih as an
 * empty line: never cut in two. */
static char *read_line(char *buf, int size, void *stream)
{
    struct file_context *ctx = stream;
    int len = 0, ch = EOF;
    bool too_long = false, nul = false;
    while ((ch = getc(ctx->in)) != EOF && ch != '\n') {
        nul |= ch == '\0';
        if (len < size - 2 && len < LINE_MAX_CHARS)
            buf[len++] = (char)ch;
        else
            too_long = true;
    }
    if (ch == EOF && len == 0 && !too_long)
        return NULL;
    ctx->line++;
    if (too_long || nul) {
        file_error(ctx, too_long ? "line longer than %d characters" : "NUL octet in the line",
                   LINE_MAX_CHARS);
        len = 0;
    }
    buf[len++] = '\n';
    buf[len] = '\0';
    return buf;
}

static const struct setting *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < SETTING_COUNT; i++)
        if (strcmp(settings[i].section, section) == 0 && strcmp(settings[i].key, key) == 0)
            return &settings[i];
    return NULL;
}

static const struct setting *find_key_anywhere(const char *key)
{
    for (size_t i = 0; i < SETTING_COUNT; i++)
        if (strcmp(settings[i].key, key) == 0)
            return &settings[i];
    return NULL;
}

static int on_entry(void *user, const char *section, const char *key, const char *value)
{
    struct file_context *ctx = user;
    char err[300];
    const struct setting *s = find_key(section, key);
    if (s == NULL) {
        const struct setting *elsewhere = find_key_anywhere(key);
        char where[80];
        if (section[0] == '\0')
            snprintf(where, sizeof where, "before any [section]");
        else
            snprintf(where, sizeof where, "in [%.60s]", section);
        if (elsewhere != NULL)
            file_error(ctx, "unknown key \"%s\" %s (it belongs in [%s])", key, where,
                       elsewhere->section);
        else
            file_error(ctx, "unknown key \"%s\" %s", key, where);
        return 0;
    }
    if (s->parse(ctx->o, s, value, &ctx->input, err, sizeof err) != 0) {
        file_error(ctx, "[%s] %s: %s", s->section, s->key, err);
        return 0;
    }
    return 1;
}

int settings_load_stream(struct client_options *o, FILE *in, const char *name,
                         const char *base_dir, char *err, size_t errlen)
{
    struct file_context ctx = {.o = o, .in = in, .input = {base_dir, false}};
    int rc = ini_parse_stream(read_line, &ctx, on_entry, &ctx);
    if (rc < 0)
        return set_error(err, errlen, "%s: cannot parse (out of memory)", name);
    /* inih reports the first line it found wrong (its own syntax errors included); ours may
     * come first (an over-long line), or be the same line with a better message. */
    if (rc > 0 && (ctx.error_line == 0 || rc < ctx.error_line))
        return set_error(err, errlen, "%s:%d: syntax error (expected \"key = value\" or [section])",
                    name, rc);
    if (ctx.error_line != 0)
        return set_error(err, errlen, "%s:%d: %s", name, ctx.error_line, ctx.message);
    return 0;
}

static char *directory_of(const char *path)
{
    char resolved[PATH_MAX];
    if (realpath(path, resolved) == NULL)
        return NULL;
    char *slash = strrchr(resolved, '/');
    if (slash != NULL)
        *(slash == resolved ? slash + 1 : slash) = '\0';
    return strdup(resolved);
}

int settings_load_file(struct client_options *o, const char *path, char *err, size_t errlen)
{
    FILE *in = fopen(path, "r");
    if (in == NULL)
        return set_error(err, errlen, "%s: %s", path, strerror(errno));
    char *dir = directory_of(path);
    int rc = dir == NULL ? set_error(err, errlen, "%s: %s", path, strerror(errno))
                         : settings_load_stream(o, in, path, dir, err, errlen);
    fclose(in);
    free(dir);
    if (rc == 0)
        rc = replace_string(&o->config_file, path, err, errlen);
    return rc;
}

/* ---- the command line ---- */

static const struct setting *find_flag(const char *flag)
{
    for (size_t i = 0; i < SETTING_COUNT; i++)
        if (settings[i].flag != NULL && strcmp(settings[i].flag, flag) == 0)
            return &settings[i];
    return NULL;
}

static int apply_flag(struct client_options *o, const struct setting *s, const char *value,
                      char *err, size_t errlen)
{
    static const struct setting_input from_flags = {NULL, true};
    char why[300];
    if (s->parse(o, s, s->takes_value ? value : "yes", &from_flags, why, sizeof why) != 0)
        return set_error(err, errlen, "--%s: %s", s->flag, why);
    return 0;
}

int settings_apply_flag(struct client_options *o, const char *flag, const char *value, char *err,
                        size_t errlen)
{
    const struct setting *s = find_flag(flag);
    if (s == NULL)
        return set_error(err, errlen, "unknown option --%s", flag);
    return apply_flag(o, s, value, err, errlen);
}

enum { FLAG_CONFIG = 'c', FLAG_HELP = 'h', FLAG_SETTING_BASE = 256 };

/* getopt_long's table, made from the settings table plus -c/--config and -h/--help. */
static void build_long_options(struct option *longs, char *shorts)
{
    size_t n = 0;
    char *s = shorts;
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        if (settings[i].flag == NULL)
            continue;
        longs[n++] = (struct option){settings[i].flag,
                                     settings[i].takes_value ? required_argument : no_argument,
                                     NULL, FLAG_SETTING_BASE + (int)i};
        if (settings[i].short_flag != 0)
            *s++ = settings[i].short_flag;
    }
    longs[n++] = (struct option){"config", required_argument, NULL, FLAG_CONFIG};
    longs[n++] = (struct option){"help", no_argument, NULL, FLAG_HELP};
    longs[n] = (struct option){0};
    strcpy(s, "c:h");
}

static const struct setting *setting_of_short_flag(int ch)
{
    for (size_t i = 0; i < SETTING_COUNT; i++)
        if (settings[i].short_flag != 0 && settings[i].short_flag == ch)
            return &settings[i];
    return NULL;
}

struct given_flag {
    const struct setting *setting;
    const char *value;
};

/* One getopt_long pass: the flags in order, -c's file, --help. */
static enum settings_result collect_flags(int argc, char **argv, struct given_flag *given,
                                          size_t *count, const char **config, char *err,
                                          size_t errlen)
{
    struct option longs[SETTING_COUNT + 3];
    char shorts[SETTING_COUNT + 8];
    int ch;
    build_long_options(longs, shorts);
    optind = 0;      /* glibc: start afresh (the unit tests parse many command lines) */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        if (ch == FLAG_HELP)
            return SETTINGS_HELP;
        if (ch == FLAG_CONFIG) {
            *config = optarg;
            continue;
        }
        const struct setting *s = ch >= FLAG_SETTING_BASE ? &settings[ch - FLAG_SETTING_BASE]
                                                          : setting_of_short_flag(ch);
        if (s == NULL) {
            set_error(err, errlen, "unknown option or missing value: %s", argv[optind - 1]);
            return SETTINGS_ERROR;
        }
        given[(*count)++] = (struct given_flag){s, optarg};
    }
    if (optind != argc) {
        set_error(err, errlen, "unexpected argument: %s", argv[optind]);
        return SETTINGS_ERROR;
    }
    return SETTINGS_OK;
}

enum settings_result settings_from_command_line(struct client_options *o, int argc, char **argv,
                                                char *err, size_t errlen)
{
    struct given_flag *given = calloc((size_t)argc + 1, sizeof *given);
    const char *config = NULL;
    size_t count = 0;
    if (given == NULL) {
        set_error(err, errlen, "out of memory");
        return SETTINGS_ERROR;
    }
    enum settings_result rc = collect_flags(argc, argv, given, &count, &config, err, errlen);
    if (rc == SETTINGS_OK && config != NULL && settings_load_file(o, config, err, errlen) != 0)
        rc = SETTINGS_ERROR;
    for (size_t i = 0; rc == SETTINGS_OK && i < count; i++)
        if (apply_flag(o, given[i].setting, given[i].value, err, errlen) != 0)
            rc = SETTINGS_ERROR;
    free(given);
    return rc;
}

/* ---- checks ---- */

static int check_required(const struct client_options *o, char *err, size_t errlen)
{
    static const struct { const char *flag, *section, *key; size_t offset; } required[] = {
        {"server", "provider", "server", offsetof(struct client_options, server)},
        {"user", "provider", "user", offsetof(struct client_options, user)},
        {"password-file", "provider", "password_file", offsetof(struct client_options, password_file)},
        {"deliver", "local", "deliver", offsetof(struct client_options, deliver)},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (*(char *const *)((const char *)o + required[i].offset) == NULL)
            return set_error(err, errlen, "missing --%s (or [%s] %s in the config file)",
                        required[i].flag, required[i].section, required[i].key);
    return 0;
}

static bool plaintext_mech(const char *mech)
{
    return strcasecmp(mech, "PLAIN") == 0 || strcasecmp(mech, "LOGIN") == 0;
}

int settings_check(struct client_options *o, char *err, size_t errlen)
{
    if (check_required(o, err, errlen) != 0)
        return -1;
    if (o->mech != NULL && o->tls == TLS_MODE_NONE && plaintext_mech(o->mech))
        return set_error(err, errlen, "mech %s needs TLS (it sends the password in clear)", o->mech);
    if (o->pin_count > 0 && o->tls == TLS_MODE_NONE)
        return set_error(err, errlen, "a pin needs TLS: with tls none there is no certificate to check");
    return settings_read_password(o, err, errlen);
}

/* systemd's LoadCredential= writes a credential 0400, root-owned, and lets the service's user
 * read it through a POSIX ACL entry; stat() shows the ACL mask in the group bits (0440) although
 * no group can read it. So in $CREDENTIALS_DIRECTORY the group bits do not count. */
static bool in_credentials_directory(const char *path)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    size_t n = dir != NULL ? strlen(dir) : 0;
    return n > 0 && strncmp(path, dir, n) == 0 && path[n] == '/' && strchr(path + n + 1, '/') == NULL;
}

/* Like fetchmail with its .fetchmailrc and odmrd with its users file: a secret that others can
 * read is refused, not just warned about (docs/client.md). */
static int check_private(const char *path, const struct stat *st, char *err, size_t errlen)
{
    mode_t others = in_credentials_directory(path) ? S_IRWXO : (S_IRWXG | S_IRWXO);
    if (!S_ISREG(st->st_mode))
        return set_error(err, errlen, "password file %s: not a regular file", path);
    if ((st->st_mode & others) != 0)
        return set_error(err, errlen, "password file %s: mode %04o lets other users read or change "
                    "it; chmod 600 it (or 400)", path, (unsigned)(st->st_mode & 07777));
    return 0;
}

static int first_line(int fd, const char *path, char **out, char *err, size_t errlen)
{
    char line[PASSWORD_MAX];
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        close(fd);
        return set_error(err, errlen, "password file %s: %s", path, strerror(errno));
    }
    bool ok = fgets(line, sizeof line, f) != NULL;
    bool whole = ok && (strchr(line, '\n') != NULL || feof(f));
    fclose(f);
    size_t len = ok ? strcspn(line, "\r\n") : 0;
    line[len] = '\0';
    if (ok && whole && len > 0) {
        free(*out);
        *out = strdup(line);
    }
    explicit_bzero(line, sizeof line);
    if (!ok || len == 0)
        return set_error(err, errlen, "password file %s: the first line is empty", path);
    if (!whole)
        return set_error(err, errlen, "password file %s: the first line is longer than %d octets",
                    path, PASSWORD_MAX - 2);
    return *out != NULL ? 0 : set_error(err, errlen, "out of memory");
}

int settings_read_password(struct client_options *o, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(o->password_file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 || fstat(fd, &st) != 0) {
        set_error(err, errlen, "password file %s: %s", o->password_file, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (check_private(o->password_file, &st, err, errlen) != 0) {
        close(fd);
        return -1;
    }
    return first_line(fd, o->password_file, &o->password, err, errlen);
}
