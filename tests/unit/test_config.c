/* SPDX-License-Identifier: ISC */
/* Config loading: defaults, every key kind, and precise errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"

static char path[64];

static void write_file(const char *text)
{
    strcpy(path, "/tmp/odmr-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int load(const char *text, struct config *cfg, char *err, size_t errlen)
{
    write_file(text);
    int rc = config_load(cfg, path, err, errlen);
    unlink(path);
    return rc;
}

static void test_defaults(void **state)
{
    struct config cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, NULL, err, sizeof err), 0);
    assert_int_equal(cfg.max_message_size, 50ull << 20);
    assert_int_equal(cfg.max_recipients, 1000);
    assert_int_equal(cfg.max_line_length, 1000);
    assert_int_equal(cfg.command_timeout, 300);
    assert_int_equal(cfg.max_hold, 5 * 86400);
    assert_int_equal(cfg.delay_warning, 0);   /* off, like Postfix's delay_warning_time */
    assert_null(cfg.bounce_relay);
    assert_null(cfg.bounce_postmaster);
    assert_int_equal(cfg.bounce_retry_min, 300);
    assert_int_equal(cfg.bounce_retry_max, 3600);
    /* RFC 5321 4.5.3.2 client timeouts for the reversed session */
    assert_int_equal(cfg.odmr_command_timeout, 300);
    assert_int_equal(cfg.push_greeting_timeout, 300);
    assert_int_equal(cfg.push_command_timeout, 300);
    assert_int_equal(cfg.push_data_init_timeout, 120);
    assert_int_equal(cfg.push_data_block_timeout, 180);
    assert_int_equal(cfg.push_data_end_timeout, 600);
    assert_int_equal(cfg.max_auth_failures, 3);
    assert_int_equal(cfg.max_address_failures, 10);
    assert_int_equal(cfg.failure_window, 15 * 60);
    assert_string_equal(cfg.smtp_listen[0], "127.0.0.1:2525");
    assert_string_equal(cfg.spool, "./run/spool");
    /* the connection limits and deadlines (docs/intake.md) */
    assert_int_equal(cfg.max_sessions_per_address, 50);
    assert_int_equal(cfg.min_data_rate, 500);
    assert_int_equal(cfg.odmr_max_sessions_per_address, 20);
    assert_int_equal(cfg.odmr_max_unauthenticated_per_address, 10);
    assert_int_equal(cfg.push_open_files, 256);
    assert_int_equal(cfg.tls_handshake_timeout, 30);
    config_free(&cfg);
}

static void test_limit_keys(void **state)
{
    struct config cfg;
    char err[256];
    assert_int_equal(load("[intake]\nmax_sessions_per_address = 3\nmin_data_rate = 1k\n"
                          "[odmr]\nmax_sessions_per_address = 4\n"
                          "max_unauthenticated_per_address = 2\npush_open_files = 1k\n"
                          "[tls]\nhandshake_timeout = 10s\n",
                          &cfg, err, sizeof err),
                     0);
    assert_int_equal(cfg.max_sessions_per_address, 3);
    assert_int_equal(cfg.min_data_rate, 1024);
    assert_int_equal(cfg.odmr_max_sessions_per_address, 4);
    assert_int_equal(cfg.odmr_max_unauthenticated_per_address, 2);
    assert_int_equal(cfg.push_open_files, 1024);
    assert_int_equal(cfg.tls_handshake_timeout, 10);
    config_free(&cfg);
    assert_int_equal(load("[odmr]\nmax_unauthenticated_per_address = 0\n", &cfg, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "max_unauthenticated_per_address: bad number"));
    assert_int_equal(load("[odmr]\npush_open_files = 0\n", &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "push_open_files: bad number"));
}

static void test_values(void **state)
{
    struct config cfg;
    char err[256];
    assert_int_equal(load("[server]\nhostname = mx.example\nspool = /var/spool/odmr\n"
                          "[intake]\nsmtp_listen = 127.0.0.1:25, [::1]:25\nmax_message_size = 10M\n"
                          "max_recipients = 100\n[queue]\nmax_hold = 5d\n"
                          "[odmr]\ncommand_timeout = 30s\npush_data_end_timeout = 20m\n"
                          "max_auth_failures = 5\nmax_address_failures = 4\nfailure_window = 1h\n",
                          &cfg, err, sizeof err),
                     0);
    assert_string_equal(cfg.hostname, "mx.example");
    assert_string_equal(cfg.spool, "/var/spool/odmr");
    assert_int_equal(cfg.smtp_listen_count, 2);
    assert_string_equal(cfg.smtp_listen[1], "[::1]:25");
    assert_int_equal(cfg.max_message_size, 10u << 20);
    assert_int_equal(cfg.max_hold, 5 * 86400);
    assert_int_equal(cfg.odmr_command_timeout, 30);
    assert_int_equal(cfg.push_data_end_timeout, 20 * 60);
    assert_int_equal(cfg.push_data_init_timeout, 120);
    assert_int_equal(cfg.max_auth_failures, 5);
    assert_int_equal(cfg.max_address_failures, 4);
    assert_int_equal(cfg.failure_window, 3600);
    config_free(&cfg);
}

static void test_bounce_and_delay_warning(void **state)
{
    struct config cfg;
    char err[256];
    assert_int_equal(load("[queue]\ndelay_warning = 4h\n[bounce]\nrelay = 127.0.0.1:25\n"
                          "postmaster = pm@provider.example\nretry_min = 1s\nretry_max = 2s\n",
                          &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.delay_warning, 4 * 3600);
    assert_string_equal(cfg.bounce_relay, "127.0.0.1:25");
    assert_string_equal(cfg.bounce_postmaster, "pm@provider.example");
    assert_int_equal(cfg.bounce_retry_min, 1);
    assert_int_equal(cfg.bounce_retry_max, 2);
    config_free(&cfg);
    assert_int_equal(load("[queue]\ndelay_warning = 0\n", &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.delay_warning, 0);
    config_free(&cfg);
}

static void test_metrics_keys(void **state)
{
    struct config cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, NULL, err, sizeof err), 0);
    assert_null(cfg.metrics_listen);                  /* off */
    assert_false(cfg.metrics_allow_remote);
    assert_int_equal(cfg.metrics_top_domains, 10);
    config_free(&cfg);
    assert_int_equal(load("[metrics]\nlisten = [::1]:9366\nallow_remote = Yes\ntop_domains = 3\n",
                          &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.metrics_listen, "[::1]:9366");
    assert_true(cfg.metrics_allow_remote);
    assert_int_equal(cfg.metrics_top_domains, 3);
    config_free(&cfg);
    static const struct { const char *text; bool value; } words[] = {
        {"no", false}, {"off", false}, {"0", false}, {"false", false},
        {"on", true}, {"1", true}, {"TRUE", true},
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        bool value = !words[i].value;
        assert_int_equal(config_parse_bool(words[i].text, &value), 0);
        assert_int_equal(value, words[i].value);
    }
}

static void test_errors(void **state)
{
    static const struct { const char *text; const char *message; } bad[] = {
        {"[server]\nnope = 1\n", ":2: unknown key \"nope\" in section [server]"},
        {"[intake]\nmax_message_size = lots\n", ":2: max_message_size: bad size"},
        {"[queue]\nmax_hold = 3 days\n", ":2: max_hold: bad duration"},
        {"[odmr]\n\npush_command_timeout = 0s\n", ":3: push_command_timeout: bad duration"},
        {"[intake]\nmax_recipients = 99\n", "must be at least 100"},
        {"[intake]\nmax_line_length = 999\n", "must be at least 1000"},
        {"[server]\nlog_level = loud\n", "log_level"},
        {"[odmr]\nmax_auth_failures = 2\n", "max_auth_failures: must be at least 3"},
        {"[odmr]\nmax_address_failures = 0\n", ":2: max_address_failures: bad number"},
        {"[odmr]\nfailure_window = 0s\n", ":2: failure_window: bad duration"},
        {"garbage line\n", ":1: syntax error"},
        {"[queue]\ndelay_warning = soon\n", ":2: delay_warning: bad duration"},
        {"[bounce]\nretry_min = 0\n", ":2: retry_min: bad duration"},
        {"[bounce]\npostmaster = nobody\n", "[bounce] postmaster: \"nobody\" is not an address"},
        {"[metrics]\nallow_remote = maybe\n", ":2: allow_remote: \"maybe\" is not yes or no"},
        {"[metrics]\ntop_domains = 0\n", ":2: top_domains: bad number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct config cfg;
        char err[256];
        assert_int_equal(load(bad[i].text, &cfg, err, sizeof err), -1);
        if (strstr(err, bad[i].message) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].message);
    }
}

static void test_unreadable(void **state)
{
    struct config cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, "/nonexistent/odmrd.conf", err, sizeof err), -1);
    assert_non_null(strstr(err, "No such file"));
}

static void test_parsers(void **state)
{
    time_t t;
    uint64_t n;
    assert_int_equal(config_parse_duration("90", &t), 0);
    assert_int_equal(t, 90);
    assert_int_equal(config_parse_duration("2h", &t), 0);
    assert_int_equal(t, 7200);
    assert_int_equal(config_parse_duration("-1", &t), -1);
    assert_int_equal(config_parse_duration("5x", &t), -1);
    assert_int_equal(config_parse_duration("", &t), -1);
    assert_int_equal(config_parse_size("1k", &n), 0);
    assert_int_equal(n, 1024);
    assert_int_equal(config_parse_size("1G", &n), 0);
    assert_int_equal(n, 1ull << 30);
    assert_int_equal(config_parse_size("-5", &n), -1);
    assert_int_equal(config_parse_size("99999999999999999999T", &n), -1);
}

/* RFC 5321 4.5.1: RCPT TO:<Postmaster> needs somewhere to go (issue 9, defect 11c). */
static void test_postmaster(void **state)
{
    struct config cfg;
    char err[256];
    assert_int_equal(load("[server]\npostmaster = hostmaster@Example.ORG\n", &cfg, err,
                          sizeof err), 0);
    assert_string_equal(cfg.postmaster, "hostmaster@Example.ORG");
    config_free(&cfg);
    static const char *const bad[] = {"postmaster", "a@[192.0.2.1]", "a b@x.example",
                                      "@x.example"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[server]\npostmaster = %s\n", bad[i]);
        assert_int_equal(load(text, &cfg, err, sizeof err), -1);
        assert_non_null(strstr(err, "[server] postmaster"));
    }
    /* Unset, postmaster@hostname must be an address. */
    assert_int_equal(load("[server]\nhostname = not_a_domain\n", &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "set [server] postmaster"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_limit_keys),   cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors),     cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_bounce_and_delay_warning), cmocka_unit_test(test_metrics_keys),
        cmocka_unit_test(test_parsers),    cmocka_unit_test(test_postmaster),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
