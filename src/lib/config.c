/* SPDX-License-Identifier: ISC */
/* odmrd.conf loader: a table of known keys, each with a parser; anything else is an error. */
#include "lib/config.h"
#include "lib/paths.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/smtp_grammar.h"

enum value_kind {
    VALUE_STRING, VALUE_LIST, VALUE_SIZE, VALUE_DURATION, VALUE_COUNT, VALUE_PATH,
    VALUE_DURATION_OR_OFF,   /* a duration, or 0 = off */
    VALUE_BOOL,              /* yes/no, true/false, on/off, 1/0 */
};

struct config_key {
    const char *section;
    const char *name;
    enum value_kind kind;
    size_t offset;        /* of the field in struct config */
    size_t count_offset;  /* VALUE_LIST: the count field */
};

#define FIELD(f) offsetof(struct config, f)
static const struct config_key config_keys[] = {
    {"server", "hostname", VALUE_STRING, FIELD(hostname), 0},
    {"server", "spool", VALUE_PATH, FIELD(spool), 0},
    {"server", "users", VALUE_PATH, FIELD(users), 0},
    {"server", "user", VALUE_STRING, FIELD(user), 0},
    {"server", "log_level", VALUE_STRING, FIELD(log_level), 0},
    {"server", "postmaster", VALUE_STRING, FIELD(postmaster), 0},
    {"server", "log", VALUE_STRING, FIELD(log), 0},
    {"intake", "smtp_listen", VALUE_LIST, FIELD(smtp_listen), FIELD(smtp_listen_count)},
    {"intake", "lmtp_listen", VALUE_LIST, FIELD(lmtp_listen), FIELD(lmtp_listen_count)},
    {"intake", "max_message_size", VALUE_SIZE, FIELD(max_message_size), 0},
    {"intake", "max_recipients", VALUE_COUNT, FIELD(max_recipients), 0},
    {"intake", "max_line_length", VALUE_COUNT, FIELD(max_line_length), 0},
    {"intake", "max_errors", VALUE_COUNT, FIELD(max_errors), 0},
    {"intake", "max_junk_commands", VALUE_COUNT, FIELD(max_junk_commands), 0},
    {"intake", "max_sessions", VALUE_COUNT, FIELD(max_sessions), 0},
    {"intake", "max_sessions_per_address", VALUE_COUNT, FIELD(max_sessions_per_address), 0},
    {"intake", "min_data_rate", VALUE_COUNT, FIELD(min_data_rate), 0},
    {"intake", "command_timeout", VALUE_DURATION, FIELD(command_timeout), 0},
    {"intake", "data_timeout", VALUE_DURATION, FIELD(data_timeout), 0},
    {"intake", "commit_workers", VALUE_COUNT, FIELD(commit_workers), 0},
    {"odmr", "listen", VALUE_LIST, FIELD(odmr_listen), FIELD(odmr_listen_count)},
    {"odmr", "tls_listen", VALUE_LIST, FIELD(odmr_tls_listen), FIELD(odmr_tls_listen_count)},
    {"odmr", "command_timeout", VALUE_DURATION, FIELD(odmr_command_timeout), 0},
    {"odmr", "max_errors", VALUE_COUNT, FIELD(odmr_max_errors), 0},
    {"odmr", "max_auth_failures", VALUE_COUNT, FIELD(max_auth_failures), 0},
    {"odmr", "max_address_failures", VALUE_COUNT, FIELD(max_address_failures), 0},
    {"odmr", "failure_window", VALUE_DURATION, FIELD(failure_window), 0},
    {"odmr", "max_sessions_per_address", VALUE_COUNT, FIELD(odmr_max_sessions_per_address), 0},
    {"odmr", "max_unauthenticated_per_address", VALUE_COUNT,
     FIELD(odmr_max_unauthenticated_per_address), 0},
    {"odmr", "push_open_files", VALUE_COUNT, FIELD(push_open_files), 0},
    {"odmr", "push_greeting_timeout", VALUE_DURATION, FIELD(push_greeting_timeout), 0},
    {"odmr", "push_command_timeout", VALUE_DURATION, FIELD(push_command_timeout), 0},
    {"odmr", "push_data_init_timeout", VALUE_DURATION, FIELD(push_data_init_timeout), 0},
    {"odmr", "push_data_block_timeout", VALUE_DURATION, FIELD(push_data_block_timeout), 0},
    {"odmr", "push_data_end_timeout", VALUE_DURATION, FIELD(push_data_end_timeout), 0},
    {"tls", "cert", VALUE_PATH, FIELD(tls_cert), 0},
    {"tls", "key", VALUE_PATH, FIELD(tls_key), 0},
    {"tls", "ca", VALUE_PATH, FIELD(tls_ca), 0},
    {"tls", "handshake_timeout", VALUE_DURATION, FIELD(tls_handshake_timeout), 0},
    {"queue", "max_hold", VALUE_DURATION, FIELD(max_hold), 0},
    {"queue", "domain_max_messages", VALUE_SIZE, FIELD(domain_max_messages), 0},
    {"queue", "domain_max_bytes", VALUE_SIZE, FIELD(domain_max_bytes), 0},
    {"queue", "min_free", VALUE_SIZE, FIELD(min_free), 0},
    {"queue", "delay_warning", VALUE_DURATION_OR_OFF, FIELD(delay_warning), 0},
    {"bounce", "relay", VALUE_STRING, FIELD(bounce_relay), 0},
    {"bounce", "postmaster", VALUE_STRING, FIELD(bounce_postmaster), 0},
    {"bounce", "retry_min", VALUE_DURATION, FIELD(bounce_retry_min), 0},
    {"bounce", "retry_max", VALUE_DURATION, FIELD(bounce_retry_max), 0},
    {"metrics", "listen", VALUE_STRING, FIELD(metrics_listen), 0},
    {"metrics", "allow_remote", VALUE_BOOL, FIELD(metrics_allow_remote), 0},
    {"metrics", "top_domains", VALUE_COUNT, FIELD(metrics_top_domains), 0},
};
#undef FIELD

struct load_context {
    struct config *cfg;
    const char *path;
    char *base_dir;  /* directory of the config file, for relative paths */
    char message[256];
};

int config_parse_duration(const char *text, time_t *out)
{
    static const struct { char suffix; time_t seconds; } units[] = {
        {'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 604800},
    };
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (end == text || errno != 0 || value < 0)
        return -1;
    time_t unit = 1;
    if (*end != '\0') {
        size_t i;
        for (i = 0; i < sizeof units / sizeof units[0]; i++)
            if (units[i].suffix == *end)
                break;
        if (i == sizeof units / sizeof units[0] || end[1] != '\0')
            return -1;
        unit = units[i].seconds;
    }
    if (value > LLONG_MAX / unit)
        return -1;
    *out = (time_t)(value * unit);
    return 0;
}

int config_parse_size(const char *text, uint64_t *out)
{
    static const char suffixes[] = "kmgt";
    char *end;
    errno = 0;
    if (*text == '-')
        return -1;
    unsigned long long value = strtoull(text, &end, 10);
    if (end == text || errno != 0)
        return -1;
    uint64_t multiple = 1;
    if (*end != '\0') {
        const char *s = strchr(suffixes, *end | 0x20);
        if (s == NULL || end[1] != '\0')
            return -1;
        for (const char *p = suffixes; p <= s; p++)
            multiple *= 1024;
    }
    if (value > UINT64_MAX / multiple)
        return -1;
    *out = value * multiple;
    return 0;
}

int config_parse_bool(const char *text, bool *out)
{
    static const struct { const char *word; bool value; } words[] = {
        {"yes", true}, {"true", true}, {"on", true}, {"1", true},
        {"no", false}, {"false", false}, {"off", false}, {"0", false},
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcasecmp(text, words[i].word) == 0) {
            *out = words[i].value;
            return 0;
        }
    return -1;
}

/* inih (as Debian builds it) does not pass line numbers to the handler; it returns the line
 * of the first error instead, and config_load() prefixes "FILE:LINE: " then. Only the first
 * message is kept, matching that line. */
__attribute__((format(printf, 2, 3)))
static int set_error(struct load_context *ctx, const char *fmt, ...)
{
    va_list ap;
    if (ctx->message[0] != '\0')
        return 0;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    return 0;
}

static char *resolve_path(const struct load_context *ctx, const char *value)
{
    if (value[0] == '/' || ctx->base_dir == NULL)
        return strdup(value);
    size_t n = strlen(ctx->base_dir) + strlen(value) + 2;
    char *joined = malloc(n);
    if (joined)
        snprintf(joined, n, "%s/%s", ctx->base_dir, value);
    return joined;
}

static int store_list(struct config *cfg, const struct config_key *key, const char *value)
{
    char **items = (char **)((char *)cfg + key->offset);
    size_t *count = (size_t *)((char *)cfg + key->count_offset);
    for (size_t i = 0; i < *count; i++)
        free(items[i]);
    *count = 0;
    char *copy = strdup(value);
    if (copy == NULL)
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ,\t", &save); tok; tok = strtok_r(NULL, " ,\t", &save)) {
        if (*count == CONFIG_LISTEN_MAX) {
            free(copy);
            return -1;
        }
        items[(*count)++] = strdup(tok);
    }
    free(copy);
    return 0;
}

static int store_value(struct load_context *ctx, const struct config_key *key,
                       const char *value)
{
    void *field = (char *)ctx->cfg + key->offset;
    switch (key->kind) {
    case VALUE_STRING:
    case VALUE_PATH:
        free(*(char **)field);
        *(char **)field = key->kind == VALUE_PATH ? resolve_path(ctx, value) : strdup(value);
        return 1;
    case VALUE_LIST:
        if (store_list(ctx->cfg, key, value) != 0)
            return set_error(ctx, "[%s] %s: too many addresses (at most 8)",
                             key->section, key->name);
        return 1;
    case VALUE_SIZE:
        if (config_parse_size(value, field) != 0)
            return set_error(ctx, "%s: bad size \"%s\" (examples: 1048576, 10M, 1G)",
                             key->name, value);
        return 1;
    case VALUE_DURATION:
    case VALUE_DURATION_OR_OFF:
        if (config_parse_duration(value, field) != 0 ||
            (*(time_t *)field == 0 && key->kind == VALUE_DURATION))
            return set_error(ctx, "%s: bad duration \"%s\" (at least 1s; examples: 30s, 5m, 7d)",
                             key->name, value);
        return 1;
    case VALUE_COUNT: {
        uint64_t n;
        if (config_parse_size(value, &n) != 0 || n == 0 || n > UINT_MAX)
            return set_error(ctx, "%s: bad number \"%s\"", key->name, value);
        *(unsigned *)field = (unsigned)n;
        return 1;
    }
    case VALUE_BOOL:
        if (config_parse_bool(value, field) != 0)
            return set_error(ctx, "%s: \"%s\" is not yes or no", key->name, value);
        return 1;
    }
    return 0;
}

static int on_ini_entry(void *user, const char *section, const char *name, const char *value)
{
    struct load_context *ctx = user;
    for (size_t i = 0; i < sizeof config_keys / sizeof config_keys[0]; i++) {
        const struct config_key *key = &config_keys[i];
        if (strcmp(key->section, section) == 0 && strcmp(key->name, name) == 0)
            return store_value(ctx, key, value);
    }
    return set_error(ctx, "unknown key \"%s\" in section [%s]", name, section);
}

static void set_default_string(char **field, const char *value)
{
    if (*field == NULL)
        *field = strdup(value);
}

static void apply_defaults(struct config *cfg, const char *base_dir)
{
    char host[256] = "localhost";
    char path[PATH_MAX];

    gethostname(host, sizeof host - 1);
    set_default_string(&cfg->hostname, host);
    /* lib/paths: ./run in-tree, FHS paths when installed */
    paths_default(DEFAULT_SPOOL, base_dir, path, sizeof path);
    set_default_string(&cfg->spool, path);
    paths_default(DEFAULT_USERS, base_dir, path, sizeof path);
    set_default_string(&cfg->users, path);
    paths_default(DEFAULT_TLS_CERT, base_dir, path, sizeof path);
    set_default_string(&cfg->tls_cert, path);
    paths_default(DEFAULT_TLS_KEY, base_dir, path, sizeof path);
    set_default_string(&cfg->tls_key, path);
    set_default_string(&cfg->log_level, "info");
    set_default_string(&cfg->log, "stderr");
    if (cfg->smtp_listen_count == 0 && cfg->lmtp_listen_count == 0) {
        cfg->smtp_listen[cfg->smtp_listen_count++] = strdup("127.0.0.1:2525");
        cfg->lmtp_listen[cfg->lmtp_listen_count++] = strdup("127.0.0.1:2424");
    }
    if (cfg->odmr_listen_count == 0)
        cfg->odmr_listen[cfg->odmr_listen_count++] = strdup("127.0.0.1:3366");
}

static void init_numbers(struct config *cfg)
{
    cfg->max_message_size = 50ull << 20;
    cfg->max_recipients = 1000;
    cfg->max_line_length = 1000;
    cfg->max_errors = 20;
    cfg->odmr_max_errors = 20;
    cfg->max_junk_commands = 100;
    cfg->max_sessions = 1000;
    /* Postfix's smtpd_client_connection_count_limit is 50; a front MTA's parallel
     * deliveries stay well below it. ODMR customers poll with one or two sessions. */
    cfg->max_sessions_per_address = 50;
    cfg->odmr_max_sessions_per_address = 20;
    cfg->odmr_max_unauthenticated_per_address = 10;
    cfg->push_open_files = 256;
    cfg->min_data_rate = 500;          /* Postfix's smtpd_min_data_rate */
    cfg->tls_handshake_timeout = 30;
    cfg->command_timeout = 300;
    cfg->data_timeout = 180;
    cfg->odmr_command_timeout = 300;
    cfg->max_auth_failures = 3;
    cfg->max_address_failures = 10;
    cfg->failure_window = 15 * 60;
    /* RFC 5321 4.5.3.2: the client's minimum timeouts per step */
    cfg->push_greeting_timeout = 300;
    cfg->push_command_timeout = 300;
    cfg->push_data_init_timeout = 120;
    cfg->push_data_block_timeout = 180;
    cfg->push_data_end_timeout = 600;
    cfg->commit_workers = 16;
    cfg->max_hold = 5 * 86400;   /* Postfix's maximal_queue_lifetime */
    cfg->bounce_retry_min = 300;   /* Postfix's minimal_backoff_time */
    cfg->bounce_retry_max = 3600;  /* about Postfix's maximal_backoff_time (4000s) */
    cfg->metrics_top_domains = 10;  /* docs/metrics.md: bounded series per scrape */
}

/* RFC 5321 4.5.1: RCPT TO:<Postmaster> must be accepted; odmrd stores it as [server]
 * postmaster, or as postmaster@hostname. Either must be a plain ASCII local@domain (the domain
 * names a queue directory: no address literal). */
/* An address odmrd files mail under: a plain ASCII local@domain (the domain names a queue
 * directory: no address literal). 0, or -1 with why. */
static int check_mailbox(const char *address, const char **why)
{
    char text[600];
    struct smtp_path_command path;
    *why = "";
    snprintf(text, sizeof text, "TO:<%s>", address);
    if (smtp_parse_rcpt_to(text, false, &path, why) == SMTP_PARSE_OK) {
        if (path.mailbox.domain[0] != '\0' && !path.mailbox.domain_is_literal)
            return 0;
        *why = path.mailbox.domain_is_literal ? "an address literal is not a queue domain"
                                              : "no domain";
    }
    return -1;
}

/* RFC 5321 4.5.1: RCPT TO:<Postmaster> must be accepted; odmrd stores it as [server]
 * postmaster, or as postmaster@hostname. [bounce] postmaster is checked the same way. */
static int validate_postmaster(const struct config *cfg, char *err, size_t errlen)
{
    char fallback[300];
    const char *why;
    snprintf(fallback, sizeof fallback, "postmaster@%s", cfg->hostname);
    if (cfg->bounce_postmaster != NULL && check_mailbox(cfg->bounce_postmaster, &why) != 0) {
        snprintf(err, errlen, "[bounce] postmaster: \"%s\" is not an address local@domain (%s)",
                 cfg->bounce_postmaster, why);
        return -1;
    }
    if (check_mailbox(cfg->postmaster != NULL ? cfg->postmaster : fallback, &why) == 0)
        return 0;
    if (cfg->postmaster != NULL)
        snprintf(err, errlen, "[server] postmaster: \"%s\" is not an address local@domain (%s)",
                 cfg->postmaster, why);
    else
        snprintf(err, errlen, "[server] hostname \"%s\" is not a domain name, so "
                 "RCPT TO:<postmaster> has nowhere to go: set [server] postmaster", cfg->hostname);
    return -1;
}

static int validate(const struct config *cfg, char *err, size_t errlen)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    bool level_ok = false;
    for (size_t i = 0; i < 4; i++)
        level_ok |= strcmp(cfg->log_level, levels[i]) == 0;
    if (!level_ok) {
        snprintf(err, errlen, "[server] log_level: \"%s\" is not debug, info, warn or error",
                 cfg->log_level);
        return -1;
    }
    if (strcmp(cfg->log, "stderr") != 0 && strcmp(cfg->log, "syslog") != 0) {
        snprintf(err, errlen, "[server] log: \"%s\" is not stderr or syslog", cfg->log);
        return -1;
    }
    /* RFC 5321 4.5.3.1.6 and 4.5.3.1.8: receivers must take 1000-octet lines, 100 recipients */
    if (cfg->max_line_length < 1000) {
        snprintf(err, errlen, "[intake] max_line_length: must be at least 1000 (RFC 5321 4.5.3.1.6)");
        return -1;
    }
    if (cfg->max_recipients < 100) {
        snprintf(err, errlen, "[intake] max_recipients: must be at least 100 (RFC 5321 4.5.3.1.8)");
        return -1;
    }
    /* RFC 4954 9: a server SHOULD NOT drop the connection before 3 failed attempts */
    if (cfg->max_auth_failures < 3) {
        snprintf(err, errlen, "[odmr] max_auth_failures: must be at least 3 (RFC 4954 9)");
        return -1;
    }
    return validate_postmaster(cfg, err, errlen);
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    init_numbers(cfg);
    err[0] = '\0';
    char *base_dir = NULL;
    if (path != NULL) {
        char resolved[PATH_MAX];
        if (realpath(path, resolved) == NULL) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        cfg->path = strdup(resolved);
        base_dir = strdup(resolved);
        char *slash = strrchr(base_dir, '/');
        if (slash)
            *(slash == base_dir ? slash + 1 : slash) = '\0';
        struct load_context ctx = {cfg, path, base_dir, ""};
        int rc = ini_parse(path, on_ini_entry, &ctx);
        if (rc != 0) {
            if (rc < 0)
                snprintf(err, errlen, "%s: cannot read the file", path);
            else
                snprintf(err, errlen, "%s:%d: %s", path, rc,
                         ctx.message[0] ? ctx.message : "syntax error (expected key = value)");
            free(base_dir);
            config_free(cfg);
            return -1;
        }
    }
    apply_defaults(cfg, base_dir);
    free(base_dir);
    if (validate(cfg, err, errlen) != 0) {
        config_free(cfg);
        return -1;
    }
    return 0;
}

static void free_list(char **items, size_t *count)
{
    for (size_t i = 0; i < *count; i++)
        free(items[i]);
    *count = 0;
}

void config_free(struct config *cfg)
{
    char **strings[] = {&cfg->hostname, &cfg->spool, &cfg->users, &cfg->user, &cfg->log_level,
                        &cfg->postmaster, &cfg->log, &cfg->tls_cert, &cfg->tls_key,
                        &cfg->tls_ca, &cfg->path, &cfg->bounce_relay, &cfg->bounce_postmaster,
                        &cfg->metrics_listen};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        free(*strings[i]);
        *strings[i] = NULL;
    }
    free_list(cfg->smtp_listen, &cfg->smtp_listen_count);
    free_list(cfg->lmtp_listen, &cfg->lmtp_listen_count);
    free_list(cfg->odmr_listen, &cfg->odmr_listen_count);
    free_list(cfg->odmr_tls_listen, &cfg->odmr_tls_listen_count);
}

/* ---- odmrd -n: the settings that differ from the defaults ---- */

/* A size or a duration in the largest unit that divides it exactly, as config files write it. */
static void format_scaled(char *out, size_t outlen, unsigned long long value,
                          const unsigned long long *units, const char *suffixes)
{
    for (size_t i = 0; suffixes[i] != '\0'; i++)
        if (value != 0 && value % units[i] == 0) {
            snprintf(out, outlen, "%llu%c", value / units[i], suffixes[i]);
            return;
        }
    snprintf(out, outlen, "%llu", value);
}

static void format_value(const struct config *cfg, const struct config_key *key, char *out,
                         size_t outlen)
{
    static const unsigned long long sizes[] = {1ull << 40, 1ull << 30, 1ull << 20, 1ull << 10};
    static const unsigned long long times[] = {604800, 86400, 3600, 60, 1};
    const char *field = (const char *)cfg + key->offset;
    out[0] = '\0';
    switch (key->kind) {
    case VALUE_STRING:
    case VALUE_PATH:
        snprintf(out, outlen, "%s", *(char *const *)field ? *(char *const *)field : "");
        return;
    case VALUE_LIST: {
        size_t count = *(const size_t *)((const char *)cfg + key->count_offset);
        for (size_t i = 0, o = 0; i < count && o < outlen; i++)
            o += (size_t)snprintf(out + o, outlen - o, "%s%s", i ? " " : "",
                                  ((char *const *)field)[i]);
        return;
    }
    case VALUE_SIZE:
        format_scaled(out, outlen, *(const uint64_t *)field, sizes, "TGMk");
        return;
    case VALUE_DURATION:
    case VALUE_DURATION_OR_OFF:   /* 0 (off) is written "0" */
        format_scaled(out, outlen, (unsigned long long)*(const time_t *)field, times, "wdhms");
        return;
    case VALUE_COUNT:
        snprintf(out, outlen, "%u", *(const unsigned *)field);
        return;
    case VALUE_BOOL:
        snprintf(out, outlen, "%s", *(const bool *)field ? "yes" : "no");
        return;
    }
}

/* The defaults as config_load() would apply them to a file in cfg->path's directory. */
static void load_defaults(struct config *def, const struct config *cfg)
{
    char *base_dir = cfg->path ? strdup(cfg->path) : NULL;
    char *slash = base_dir ? strrchr(base_dir, '/') : NULL;
    if (slash)
        *(slash == base_dir ? slash + 1 : slash) = '\0';
    memset(def, 0, sizeof *def);
    init_numbers(def);
    apply_defaults(def, base_dir);
    free(base_dir);
}

void config_print_changed(const struct config *cfg, FILE *out)
{
    char value[2048], fallback[2048];
    const char *section = NULL;
    struct config def;
    load_defaults(&def, cfg);
    for (size_t i = 0; i < sizeof config_keys / sizeof config_keys[0]; i++) {
        const struct config_key *key = &config_keys[i];
        format_value(cfg, key, value, sizeof value);
        format_value(&def, key, fallback, sizeof fallback);
        if (strcmp(value, fallback) == 0)
            continue;
        if (section == NULL || strcmp(section, key->section) != 0)
            fprintf(out, "[%s]\n", key->section);
        section = key->section;
        fprintf(out, "%s = %s\n", key->name, value);
    }
    config_free(&def);
}

size_t config_changed_keys(const struct config *a, const struct config *b, char *out,
                           size_t outlen)
{
    char va[2048], vb[2048];
    size_t changed = 0, o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof config_keys / sizeof config_keys[0]; i++) {
        const struct config_key *key = &config_keys[i];
        format_value(a, key, va, sizeof va);
        format_value(b, key, vb, sizeof vb);
        if (strcmp(va, vb) == 0)
            continue;
        changed++;
        if (o < outlen)
            o += (size_t)snprintf(out + o, outlen - o, "%s%s.%s", o ? "," : "", key->section,
                                  key->name);
    }
    return changed;
}
