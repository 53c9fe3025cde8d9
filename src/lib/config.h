/* SPDX-License-Identifier: ISC */
/* odmrd.conf: INI file (inih). Section and key names are a contract (README, docs/config.md).
 * Every key has an embedded default, so an empty file is a valid configuration. */
#ifndef ODMR_LIB_CONFIG_H
#define ODMR_LIB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

enum { CONFIG_LISTEN_MAX = 8 };

struct config {
    /* [server] */
    char *hostname;            /* default: gethostname() */
    char *spool;               /* default: ./run/spool (relative paths: to the config file) */
    char *users;               /* default: ./run/users */
    char *user;                /* account to switch to when started as root; NULL = none */
    char *log_level;           /* debug|info|warn|error */
    char *postmaster;          /* where RCPT TO:<Postmaster> goes; NULL: postmaster@hostname */
    char *log;                 /* stderr (the journal's form when stderr is the journal) | syslog */
    /* [intake] */
    char *smtp_listen[CONFIG_LISTEN_MAX];   /* host:port, [v6]:port */
    size_t smtp_listen_count;
    char *lmtp_listen[CONFIG_LISTEN_MAX];   /* host:port or unix:/path */
    size_t lmtp_listen_count;
    uint64_t max_message_size; /* octets; default 50 MiB */
    unsigned max_recipients;   /* per transaction; default 1000 (RFC 5321 4.5.3.1.8: >= 100) */
    unsigned max_line_length;  /* DATA text line incl. CRLF; default 1000 (RFC 5321 4.5.3.1.6) */
    unsigned max_errors;       /* errors (bad commands, refused RCPT) before closing; default 20 */
    unsigned max_junk_commands; /* NOOP, VRFY, HELP, RSET ... per session; default 100 */
    unsigned max_sessions;     /* concurrent sessions per listener kind; default 1000 */
    unsigned max_sessions_per_address; /* SMTP+LMTP over TCP from one address; default 50 */
    time_t command_timeout;    /* RFC 5321 4.5.3.2.7 server timeout, default 5m */
    time_t data_timeout;       /* per data block, default 3m */
    unsigned min_data_rate;    /* octets/s that extend a message's deadline; default 500 */
    unsigned commit_workers;   /* fsync worker threads; default 16 */
    /* [odmr] */
    char *odmr_listen[CONFIG_LISTEN_MAX];
    size_t odmr_listen_count;
    char *odmr_tls_listen[CONFIG_LISTEN_MAX];
    size_t odmr_tls_listen_count;
    time_t odmr_command_timeout;     /* before the turnaround; default 5m */
    unsigned odmr_max_errors;        /* [odmr] max_errors: bad or out-of-sequence commands; 20 */
    unsigned max_auth_failures;      /* failed AUTH per session, then 421; default 3 (>= 3) */
    unsigned max_address_failures;   /* failed AUTH per client address in failure_window: 10 */
    time_t failure_window;           /* default 15m */
    unsigned odmr_max_sessions_per_address;  /* default 20 */
    unsigned odmr_max_unauthenticated_per_address;   /* not yet AUTHed; default 10 */
    /* message files all pushes together hold open beyond one per session (opened ahead, in
     * flight); default 256; counted in the descriptor budget (odmrd/nofile.c) */
    unsigned push_open_files;
    /* the reversed session, odmrd as SMTP client: RFC 5321 4.5.3.2 defaults */
    time_t push_greeting_timeout;    /* customer's 220 after ATRN's 250: 5m */
    time_t push_command_timeout;     /* EHLO, MAIL, RCPT, QUIT: 5m */
    time_t push_data_init_timeout;   /* 354: 2m */
    time_t push_data_block_timeout;  /* each write of message data: 3m */
    time_t push_data_end_timeout;    /* reply to the final dot: 10m */
    /* [tls] */
    char *tls_cert;            /* default: SPOOL/../tls/cert.pem, made self-signed on first run */
    char *tls_key;
    char *tls_ca;              /* CA for client certificates (AUTH EXTERNAL); NULL = none */
    time_t tls_handshake_timeout;   /* STARTTLS and implicit TLS handshakes; default 30s */
    /* [queue] */
    time_t max_hold;           /* default 5d */
    uint64_t domain_max_messages;   /* per hosted domain; 0 (default): no limit */
    uint64_t domain_max_bytes;      /* per hosted domain, queue file octets; 0: no limit */
    uint64_t min_free;              /* octets free on the spool's filesystem; 0: not checked */
    time_t delay_warning;      /* delayed notice after this long; 0 (default) = none */
    /* [bounce]: sending notices out (docs/notices.md) */
    char *bounce_relay;        /* HOST:PORT (SMTP), or NULL: notices stay held for the admin */
    char *bounce_postmaster;   /* where a notice the relay refuses (5xx) goes; NULL: dropped */
    time_t bounce_retry_min;   /* first retry after a failed attempt; default 5m */
    time_t bounce_retry_max;   /* back-off ceiling; default 1h */
    /* [metrics]: Prometheus text format over HTTP (docs/metrics.md) */
    char *metrics_listen;      /* host:port; NULL or "" (default): off */
    bool metrics_allow_remote; /* a listen address that is not loopback; default no */
    unsigned metrics_top_domains;   /* domains with their own queue series; default 10 */
    /* where the file was */
    char *path;
};

/* Loads path (NULL = defaults only). On error returns -1 with "FILE:LINE: message" in err. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);
void config_free(struct config *cfg);

/* odmrd -n (postconf -n): the keys whose effective value differs from the default, as INI
 * ("[section]" then "key = value"; paths resolved, sizes and durations in their largest
 * exact unit). */
void config_print_changed(const struct config *cfg, FILE *out);

/* The keys whose values differ between a and b, as "section.key,section.key" in out (cut at
 * outlen). Returns how many. */
size_t config_changed_keys(const struct config *a, const struct config *b, char *out,
                           size_t outlen);

/* "30s", "5m", "2h", "7d", plain seconds. -1 on error. */
int config_parse_duration(const char *text, time_t *out);
/* yes/no, true/false, on/off, 1/0 (any case). -1 on error. */
int config_parse_bool(const char *text, bool *out);
/* "1024", "10k", "50M", "1G" (binary multiples). -1 on error. */
int config_parse_size(const char *text, uint64_t *out);

#endif
