/* SPDX-License-Identifier: ISC */
/* odmr-client settings: every config key, flags over the file, precise errors (FILE:LINE),
 * durations, the refused password key, pins, the password file's mode, timeouts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/settings.h"

#include <stdio.h>
#include <stdlib.h>

/* Two real pins (of two throwaway keys) and a third, made up. */
#define PIN_A "sha256:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxCo="
#define PIN_B "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
#define PIN_C "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

static char dir[64];

static int setup(void **state)
{
    strcpy(dir, "/tmp/odmr-settings-XXXXXX");
    assert_non_null(mkdtemp(dir));
    unsetenv("CREDENTIALS_DIRECTORY");
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static const char *write_bytes(const char *name, const char *text, size_t len, mode_t mode)
{
    static char path[4][128];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    unlink(p);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
    return p;
}

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    return write_bytes(name, text, strlen(text), mode);
}

/* Loads text as a config file; returns the result, err holds the message. */
static int load_text(struct client_options *o, const char *text, char *err, size_t errlen)
{
    settings_init(o);
    return settings_load_file(o, write_file("c.conf", text, 0644), err, errlen);
}

static enum settings_result parse_args(struct client_options *o, char *err, size_t errlen, ...)
{
    char *argv[40] = {(char *)"odmr-client"};
    int argc = 1;
    va_list ap;
    va_start(ap, errlen);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 39;)
        argv[argc++] = (char *)a;
    va_end(ap);
    settings_init(o);
    return settings_from_command_line(o, argc, argv, err, errlen);
}

static void assert_pin(const struct tls_pin *pin, const char *text)
{
    char out[TLS_PIN_TEXT_MAX];
    assert_string_equal(tls_pin_format(pin, out, sizeof out), text);
}

static void test_defaults(void **state)
{
    struct client_options o;
    settings_init(&o);
    assert_int_equal(o.tls, TLS_MODE_STARTTLS);
    assert_true(o.timeout_scale == 1.0);
    /* RFC 5321 4.5.3.2 */
    assert_int_equal(o.timeouts[TIMEOUT_GREETING], 300);
    assert_int_equal(o.timeouts[TIMEOUT_COMMAND], 300);
    assert_int_equal(o.timeouts[TIMEOUT_DATA_INIT], 120);
    assert_int_equal(o.timeouts[TIMEOUT_DATA_BLOCK], 180);
    assert_int_equal(o.timeouts[TIMEOUT_DATA_END], 600);
    assert_int_equal(o.timeouts[TIMEOUT_SERVER_COMMAND], 300);
    assert_int_equal(o.timeouts[TIMEOUT_SERVER_DATA], 180);
    assert_int_equal(o.timeouts[TIMEOUT_ATRN], 600);
    assert_int_equal(o.timeouts[TIMEOUT_CONNECT], 60);
    assert_int_equal(o.pin_count, 0);
    assert_null(o.server);
    settings_free(&o);
}

static const char every_key[] =
    "# every key odmr-client knows\n"
    "[provider]\n"
    "server = [2001:db8::1]:3366\n"
    "tls = implicit\n"
    "ca = ca.pem\n"
    "tls_name = mx.provider.example\n"
    "pin = " PIN_A ", " PIN_B "\n"
    "pin = " PIN_C "\n"
    "user = alice\n"
    "password_file = /etc/odmr/alice.pw\n"
    "mech = SCRAM-SHA-256\n"
    "domains = example.org,example.net\n"
    "[local]\n"
    "deliver = lmtp:unix:/run/dovecot/lmtp\n"
    "helo = home.example.org\n"
    "[run]\n"
    "every = 5m\n"
    "verbose = yes\n"
    "[timeouts]\n"
    "timeout_factor = 0.5\n"
    "connect_timeout = 10s\n"
    "greeting_timeout = 1m\n"
    "command_timeout = 2m\n"
    "atrn_timeout = 1h\n"
    "data_init_timeout = 30\n"
    "data_block_timeout = 4m\n"
    "data_end_timeout = 20m\n"
    "server_command_timeout = 6m\n"
    "server_data_timeout = 7m\n";

static void test_every_key(void **state)
{
    struct client_options o;
    char err[512] = "", ca[200];
    assert_int_equal(load_text(&o, every_key, err, sizeof err), 0);
    assert_string_equal(o.server, "[2001:db8::1]:3366");
    assert_string_equal(o.host, "2001:db8::1");
    assert_string_equal(o.port, "3366");
    assert_int_equal(o.tls, TLS_MODE_IMPLICIT);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);   /* relative to the file's directory */
    assert_string_equal(o.ca, ca);
    assert_string_equal(o.tls_name, "mx.provider.example");
    assert_int_equal(o.pin_count, 3);
    assert_pin(&o.pins[0], PIN_A);
    assert_pin(&o.pins[1], PIN_B);
    assert_pin(&o.pins[2], PIN_C);
    assert_string_equal(o.user, "alice");
    assert_string_equal(o.password_file, "/etc/odmr/alice.pw");
    assert_string_equal(o.mech, "SCRAM-SHA-256");
    assert_string_equal(o.domains, "example.org,example.net");
    assert_string_equal(o.deliver, "lmtp:unix:/run/dovecot/lmtp");
    assert_string_equal(o.helo, "home.example.org");
    assert_int_equal(o.every, 300);
    assert_true(o.verbose);
    assert_true(o.timeout_scale == 0.5);
    static const unsigned want[TIMEOUT_KIND_COUNT] = {
        [TIMEOUT_CONNECT] = 10, [TIMEOUT_GREETING] = 60, [TIMEOUT_COMMAND] = 120,
        [TIMEOUT_ATRN] = 3600, [TIMEOUT_DATA_INIT] = 30, [TIMEOUT_DATA_BLOCK] = 240,
        [TIMEOUT_DATA_END] = 1200, [TIMEOUT_SERVER_COMMAND] = 360, [TIMEOUT_SERVER_DATA] = 420,
    };
    for (int k = 0; k < TIMEOUT_KIND_COUNT; k++)
        assert_int_equal(o.timeouts[k], want[k]);
    assert_non_null(strstr(o.config_file, "c.conf"));
    settings_free(&o);
}

/* Every key of the table appears in the example above, so a new key cannot go untested. */
static void test_example_covers_the_table(void **state)
{
    bool refused;
    const char *key;
    for (size_t i = 0; (key = settings_table_key(i, &refused)) != NULL; i++) {
        char needle[80];
        if (refused)
            continue;
        snprintf(needle, sizeof needle, "\n%s = ", key);
        assert_non_null(strstr(every_key, needle));
    }
}

static void test_scaled_timeouts(void **state)
{
    struct client_options o;
    char err[256];
    assert_int_equal(load_text(&o, "[timeouts]\ncommand_timeout = 2s\ntimeout_factor = 0.25\n",
                               err, sizeof err), 0);
    struct timeval tv = client_timeout(&o, TIMEOUT_COMMAND);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 500000);
    assert_int_equal(client_timeout_seconds(&o, TIMEOUT_COMMAND), 1);   /* at least 1 */
    assert_int_equal(client_timeout_seconds(&o, TIMEOUT_DATA_END), 150);
    settings_free(&o);
}

static void test_flags_override_file(void **state)
{
    struct client_options o;
    char err[512] = "";
    const char *conf = write_file("o.conf",
                                  "[provider]\nserver = file.example\nuser = alice\n"
                                  "pin = " PIN_A "\npin = " PIN_B "\n[local]\n"
                                  "deliver = smtp:127.0.0.1:25\n[timeouts]\n"
                                  "command_timeout = 1m\n", 0644);
    /* a flag before -c still wins: the file is read first */
    assert_int_equal(parse_args(&o, err, sizeof err, "--server", "flag.example:2366", "-c", conf,
                                "--pin", PIN_C, "--command-timeout", "7s", "--timeout", "0.05",
                                "-v", NULL), SETTINGS_OK);
    assert_string_equal(o.host, "flag.example");
    assert_string_equal(o.port, "2366");
    assert_string_equal(o.user, "alice");                 /* from the file */
    assert_string_equal(o.deliver, "smtp:127.0.0.1:25");
    assert_int_equal(o.pin_count, 1);                     /* --pin replaced the file's pins */
    assert_pin(&o.pins[0], PIN_C);
    assert_int_equal(o.timeouts[TIMEOUT_COMMAND], 7);
    assert_true(o.timeout_scale == 0.05);
    assert_true(o.verbose);
    settings_free(&o);

    /* without --pin the file's pins stay; several --pin add up */
    assert_int_equal(parse_args(&o, err, sizeof err, "--config", conf, NULL), SETTINGS_OK);
    assert_int_equal(o.pin_count, 2);
    settings_free(&o);
    assert_int_equal(parse_args(&o, err, sizeof err, "--pin", PIN_A, "--pin", PIN_B "," PIN_C,
                                "-c", conf, NULL), SETTINGS_OK);
    assert_int_equal(o.pin_count, 3);
    assert_pin(&o.pins[2], PIN_C);
    settings_free(&o);
}

static void test_command_line_errors(void **state)
{
    struct client_options o;
    char err[512] = "";
    assert_int_equal(parse_args(&o, err, sizeof err, "--help", NULL), SETTINGS_HELP);
    settings_free(&o);
    assert_int_equal(parse_args(&o, err, sizeof err, "--command-timeout", "5x", NULL),
                     SETTINGS_ERROR);
    assert_non_null(strstr(err, "--command-timeout: bad duration \"5x\""));
    settings_free(&o);
    assert_int_equal(parse_args(&o, err, sizeof err, "--bogus", NULL), SETTINGS_ERROR);
    assert_non_null(strstr(err, "--bogus"));
    settings_free(&o);
    assert_int_equal(parse_args(&o, err, sizeof err, "--server", "a", "extra", NULL), SETTINGS_ERROR);
    assert_non_null(strstr(err, "unexpected argument: extra"));
    settings_free(&o);
    /* the config file's error comes with its line */
    const char *conf = write_file("bad.conf", "[provider]\n\nserver = x:y\n", 0644);
    assert_int_equal(parse_args(&o, err, sizeof err, "-c", conf, NULL), SETTINGS_ERROR);
    assert_non_null(strstr(err, "bad.conf:3: [provider] server: bad value \"x:y\""));
    settings_free(&o);
    assert_int_equal(parse_args(&o, err, sizeof err, "-c", "/nonexistent/odmr.conf", NULL),
                     SETTINGS_ERROR);
    assert_non_null(strstr(err, "/nonexistent/odmr.conf: No such file"));
    settings_free(&o);
    /* a password is not a flag either (and --password is not taken as --password-file) */
    assert_int_equal(parse_args(&o, err, sizeof err, "--password", "hunter2", NULL), SETTINGS_ERROR);
    assert_non_null(strstr(err, "--password: a password is never taken from the command line"));
    assert_null(strstr(err, "hunter2"));
    settings_free(&o);
}

static void expect_file_error(const char *text, const char *want)
{
    struct client_options o;
    char err[512] = "";
    assert_int_equal(load_text(&o, text, err, sizeof err), -1);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    settings_free(&o);
}

static void test_unknown_keys(void **state)
{
    expect_file_error("[provider]\nuser = a\n\n; comment\nbogus = 1\n",
                      "c.conf:5: unknown key \"bogus\" in [provider]");
    expect_file_error("[timeouts]\nserver = x\n",
                      "c.conf:2: unknown key \"server\" in [timeouts] (it belongs in [provider])");
    expect_file_error("server = x\n",
                      "c.conf:1: unknown key \"server\" before any [section] (it belongs in [provider])");
    /* the first error is reported, with its own line */
    expect_file_error("[run]\nevery = 5m\nnope = 1\n[provider]\nserver = ::\n", "c.conf:3: unknown key");
}

static void test_syntax_errors(void **state)
{
    expect_file_error("[provider]\nuser = a\nthis line has no equals sign\n",
                      "c.conf:3: syntax error");
    expect_file_error("[provider\nuser = a\n", "c.conf:1: syntax error");
    /* a syntax error before a key error: the syntax error's line */
    expect_file_error("[run]\njunk\nbogus = 1\n", "c.conf:2: syntax error");
    char longline[400];
    snprintf(longline, sizeof longline, "[local]\nhelo = a\ndeliver = mda:/bin/cat %0250d\n", 0);
    expect_file_error(longline, "c.conf:3: line longer than 197 characters");
    struct client_options o;
    char err[256];
    static const char nul[] = "[local]\nhelo = a\0b\n";
    settings_init(&o);
    assert_int_equal(settings_load_file(&o, write_bytes("n.conf", nul, sizeof nul - 1, 0644), err,
                                        sizeof err), -1);
    assert_non_null(strstr(err, "n.conf:2: NUL octet"));
    settings_free(&o);
}

static void test_bad_values(void **state)
{
    expect_file_error("[timeouts]\ncommand_timeout = 5 minutes\n",
                      "c.conf:2: [timeouts] command_timeout: bad duration \"5 minutes\"");
    expect_file_error("[timeouts]\ndata_end_timeout = 0s\n", "bad duration \"0s\"");
    expect_file_error("[timeouts]\nconnect_timeout = 2d\n", "bad duration \"2d\"");
    expect_file_error("[timeouts]\ntimeout_factor = 0\n", "bad factor");
    expect_file_error("[timeouts]\ntimeout_factor = nan\n", "bad factor");
    expect_file_error("[run]\nevery = 8d\n", "[run] every: bad duration");
    expect_file_error("[run]\nverbose = maybe\n", "expected yes or no");
    expect_file_error("[provider]\ntls = ssl\n", "expected starttls, implicit or none");
    expect_file_error("[provider]\nuser =\n", "[provider] user: empty value");
    expect_file_error("[provider]\nserver = host:99999999999999999\n", "bad value");
    expect_file_error("[provider]\nserver = host:65536\n", "bad value");
    expect_file_error("[provider]\nserver = host:0\n", "bad value");
    expect_file_error("[provider]\nserver = [::1\n", "bad value");
}

static void test_password_key_refused(void **state)
{
    expect_file_error("[provider]\nuser = alice\npassword = hunter2\n",
                      "c.conf:3: [provider] password: a password is never taken from the "
                      "config file");
    expect_file_error("[provider]\npassword = hunter2\n", "password_file");
    /* in any section, too */
    expect_file_error("[run]\npassword = hunter2\n", "unknown key \"password\" in [run]");
}

static void test_pin_format(void **state)
{
    struct tls_pin pin;
    assert_int_equal(tls_pin_parse(PIN_A, &pin), 0);
    assert_pin(&pin, PIN_A);
    /* curl's --pinnedpubkey form names the same digest */
    assert_int_equal(tls_pin_parse("sha256//Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxCo=", &pin), 0);
    assert_pin(&pin, PIN_A);
    static const char *const bad[] = {
        "",
        "Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxCo=",            /* no prefix */
        "sha1:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxCo=",       /* another digest */
        "SHA256:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxCo=",
        "sha256:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxCo",      /* padding missing */
        "sha256:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxCo==",    /* too long */
        "sha256:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxCp=",     /* non-canonical last bits */
        "sha256:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQfxC==",     /* 31 octets */
        "sha256:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQf Co=",     /* a space */
        "sha256:Hp2ASUzoIg81HhiFGH0gjj+4iRoXH7dtvEH3OYQf!Co=",     /* not base64 */
        "sha256:Hp2ASUzoIg81HhiFGH0gjj-4iRoXH7dtvEH3OYQfxCo=",     /* base64url */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (tls_pin_parse(bad[i], &pin) == 0)
            fail_msg("\"%s\" was taken as a pin", bad[i]);
    expect_file_error("[provider]\npin = sha256:abc\n", "c.conf:2: [provider] pin: bad pin \"sha256:abc\"");
    expect_file_error("[provider]\npin = ,\n", "empty value");
    expect_file_error("[provider]\npin = " PIN_A "," PIN_B "," PIN_C "\npin = " PIN_A "," PIN_B "\n",
                      "c.conf:3: [provider] pin: too many pins (at most 4)");
}

static void test_pin_continuation_lines(void **state)
{
    struct client_options o;
    char err[256];
    /* inih's multi-line values (Python configparser style) call the handler per line */
    assert_int_equal(load_text(&o, "[provider]\npin = " PIN_A "\n  " PIN_B "\n", err, sizeof err), 0);
    assert_int_equal(o.pin_count, 2);
    settings_free(&o);
}

static void complete(struct client_options *o, const char *pwfile)
{
    char err[256];
    settings_init(o);
    assert_int_equal(settings_apply_flag(o, "server", "127.0.0.1", err, sizeof err), 0);
    assert_int_equal(settings_apply_flag(o, "user", "alice", err, sizeof err), 0);
    assert_int_equal(settings_apply_flag(o, "password-file", pwfile, err, sizeof err), 0);
    assert_int_equal(settings_apply_flag(o, "deliver", "smtp:127.0.0.1:25", err, sizeof err), 0);
}

static int check_with(const char *flag, const char *value, const char *pwfile, char *err,
                      size_t errlen)
{
    struct client_options o;
    complete(&o, pwfile);
    if (flag != NULL)
        assert_int_equal(settings_apply_flag(&o, flag, value, err, errlen), 0);
    int rc = settings_check(&o, err, errlen);
    if (rc == 0)
        assert_string_equal(o.password, "s3cret");
    settings_free(&o);
    return rc;
}

static void test_check(void **state)
{
    char err[512];
    const char *pw = write_file("pw", "s3cret\r\nsecond line\n", 0600);
    struct client_options o;
    settings_init(&o);
    assert_int_equal(settings_check(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "missing --server (or [provider] server in the config file)"));
    settings_free(&o);
    assert_int_equal(check_with(NULL, NULL, pw, err, sizeof err), 0);
    /* a pin with tls none: nothing to pin */
    complete(&o, pw);
    assert_int_equal(settings_apply_flag(&o, "tls", "none", err, sizeof err), 0);
    assert_int_equal(settings_apply_flag(&o, "pin", PIN_A, err, sizeof err), 0);
    assert_int_equal(settings_check(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "a pin needs TLS"));
    settings_free(&o);
    complete(&o, pw);
    assert_int_equal(settings_apply_flag(&o, "tls", "none", err, sizeof err), 0);
    assert_int_equal(settings_apply_flag(&o, "mech", "plain", err, sizeof err), 0);
    assert_int_equal(settings_check(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "needs TLS"));
    settings_free(&o);
}

static void test_password_file_mode(void **state)
{
    char err[512];
    static const struct { mode_t mode; int rc; } modes[] = {
        {0600, 0}, {0400, 0}, {0700, 0}, {0640, -1}, {0604, -1}, {0644, -1}, {0620, -1}, {0660, -1},
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        const char *pw = write_file("pwm", "s3cret\n", modes[i].mode);
        err[0] = '\0';
        if (check_with(NULL, NULL, pw, err, sizeof err) != modes[i].rc)
            fail_msg("mode %04o: unexpected result (%s)", (unsigned)modes[i].mode, err);
        if (modes[i].rc != 0)
            assert_non_null(strstr(err, "chmod 600"));
    }
    /* systemd credentials: the group bits are an ACL mask there; others still count */
    const char *cred = write_file("password", "s3cret\n", 0440);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    assert_int_equal(check_with(NULL, NULL, cred, err, sizeof err), 0);
    cred = write_file("password", "s3cret\n", 0444);
    assert_int_equal(check_with(NULL, NULL, cred, err, sizeof err), -1);
    unsetenv("CREDENTIALS_DIRECTORY");
    cred = write_file("password", "s3cret\n", 0440);
    assert_int_equal(check_with(NULL, NULL, cred, err, sizeof err), -1);
    /* empty, missing, not a file */
    assert_int_equal(check_with(NULL, NULL, write_file("empty", "\n", 0600), err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(check_with(NULL, NULL, "/nonexistent/pw", err, sizeof err), -1);
    assert_int_equal(check_with(NULL, NULL, dir, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_setup_teardown(test_every_key, setup, teardown),
        cmocka_unit_test(test_example_covers_the_table),
        cmocka_unit_test_setup_teardown(test_scaled_timeouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flags_override_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_line_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pin_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pin_continuation_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_file_mode, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
