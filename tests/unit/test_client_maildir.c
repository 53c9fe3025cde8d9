/* SPDX-License-Identifier: ISC */
/* odmr-client local targets: the maildir path expansion (no recipient can leave the template's
 * shape), delivery into tmp/ -> new/, the CRLF -> LF copy, and the MDA argument rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/local.h"

#include <dirent.h>
#include <stdlib.h>

static const char templ[] = "/var/mail/%d/%u/Maildir";

static void test_expand_ok(void **state)
{
    char out[LOCAL_PATH_MAX], err[200];
    assert_int_equal(maildir_expand(templ, "Alice.B@Example.ORG", out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "/var/mail/example.org/Alice.B/Maildir");
    assert_int_equal(maildir_expand("/m/%u%%", "\"a@b\"@x.org", out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "/m/\"a@b\"%");
    assert_int_equal(maildir_expand("/m/fixed", "x@y", out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "/m/fixed");
}

static void test_expand_refuses_traversal(void **state)
{
    static const char *const bad[] = {
        "../x@example.org", "..@example.org", ".hidden@example.org", "a/b@example.org",
        "a..b@example.org", "x@../etc", "x@.example.org", "x@a/b", "a\tb@example.org",
        "a\x7f" "b@example.org", "@example.org", "postmaster", "x\n@example.org",
    };
    char out[LOCAL_PATH_MAX], err[200];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out[0] = '\0';
        if (maildir_expand(templ, bad[i], out, sizeof out, err, sizeof err) != -1)
            fail_msg("accepted '%s' -> '%s'", bad[i], out);
    }
    /* the domain alone in the template: a bad local part does not matter, and vice versa */
    assert_int_equal(maildir_expand("/m/%d", "../x@example.org", out, sizeof out, err, sizeof err), 0);
    assert_int_equal(maildir_expand("/m/%u", "x@..", out, sizeof out, err, sizeof err), 0);
}

static void test_expand_too_long(void **state)
{
    char out[32], err[200], addr[600];
    memset(addr, 'a', 500);
    snprintf(addr + 500, sizeof addr - 500, "@example.org");
    assert_int_equal(maildir_expand(templ, addr, out, sizeof out, err, sizeof err), -1);
}

static void test_template_check(void **state)
{
    char err[200];
    assert_int_equal(maildir_template_check(templ, err, sizeof err), 0);
    assert_int_equal(maildir_template_check("/m/%%/%u", err, sizeof err), 0);
    assert_int_equal(maildir_template_check("m/%u", err, sizeof err), -1);
    assert_int_equal(maildir_template_check("/m/%x", err, sizeof err), -1);
    assert_int_equal(maildir_template_check("/m/%", err, sizeof err), -1);
}

static int spool(const char *text)
{
    FILE *f = tmpfile();
    fputs(text, f);
    fflush(f);
    return dup(fileno(f));   /* the FILE is leaked on purpose: a test */
}

static void read_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void test_deliver_maildir(void **state)
{
    char base[] = "/tmp/odmr-maildir-XXXXXX", dir[300], path[600], buf[4096];
    assert_non_null(mkdtemp(base));
    snprintf(dir, sizeof dir, "%s/example.org/u/Maildir", base);
    int fd = spool("Subject: x\r\n\r\nline one\r\n.dot\r\nend\r\n");
    struct smtp_client_reply r;
    maildir_deliver(dir, fd, "s@sender.example", "u@example.org", &r);
    assert_int_equal(r.code, 250);
    snprintf(path, sizeof path, "%s/new", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        files++;
        snprintf(path, sizeof path, "%s/new/%s", dir, e->d_name);
        read_file(path, buf, sizeof buf);
        assert_string_equal(buf, "Return-Path: <s@sender.example>\nDelivered-To: u@example.org\n"
                                 "Subject: x\n\nline one\n.dot\nend\n");
    }
    closedir(d);
    assert_int_equal(files, 1);
    snprintf(path, sizeof path, "%s/tmp", dir);
    d = opendir(path);
    while ((e = readdir(d)) != NULL)
        assert_true(e->d_name[0] == '.');
    closedir(d);
    snprintf(path, sizeof path, "%s/cur", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    close(fd);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    assert_int_equal(system(cmd), 0);
}

static void test_deliver_maildir_unwritable(void **state)
{
    int fd = spool("x\r\n");
    struct smtp_client_reply r;
    maildir_deliver("/proc/odmr-no/Maildir", fd, "", "u@example.org", &r);
    assert_int_equal(r.code / 100, 4);
    close(fd);
}

static void test_copy_lf_across_chunks(void **state)
{
    /* a CRLF split across the 64 KiB read boundary */
    size_t n = LOCAL_COPY_CHUNK + 10;
    char *text = malloc(n + 1);
    memset(text, 'a', n);
    text[LOCAL_COPY_CHUNK - 1] = '\r';
    text[LOCAL_COPY_CHUNK] = '\n';
    text[n - 2] = '\r';
    text[n - 1] = '\n';
    text[n] = '\0';
    int in = spool(text);
    FILE *outf = tmpfile();
    assert_int_equal(local_copy_lf(in, fileno(outf), 0), 0);
    assert_int_equal(lseek(fileno(outf), 0, SEEK_END), (off_t)n - 2);
    fclose(outf);
    close(in);
    free(text);
}

static void test_mda_args(void **state)
{
    char out[100];
    assert_int_equal(mda_expand_arg("-f%s", "a b@c", "r@d", out, sizeof out), 0);
    assert_string_equal(out, "-fa b@c");
    assert_int_equal(mda_expand_arg("%r", "s", "r@d", out, sizeof out), 0);
    assert_string_equal(out, "r@d");
    assert_int_equal(mda_expand_arg("100%%", "s", "r", out, sizeof out), 0);
    assert_string_equal(out, "100%");
    assert_int_equal(mda_expand_arg("%x", "s", "r", out, sizeof out), -1);
    assert_int_equal(mda_expand_arg("%r", "s", "a-very-long-recipient@example.org", out, 8), -1);
    assert_int_equal(mda_address_ok("-oQ/tmp@x"), -1);
    assert_int_equal(mda_address_ok("a-b@x"), 0);
    assert_int_equal(mda_address_ok(""), 0);
}

static void test_mda_parse(void **state)
{
    struct mda_command c;
    char err[200];
    assert_int_equal(mda_parse("/usr/sbin/sendmail  -i -f %s\t-- %r", &c, err, sizeof err), 0);
    assert_int_equal(c.argc, 6);
    assert_string_equal(c.argv[0], "/usr/sbin/sendmail");
    assert_string_equal(c.argv[4], "--");
    assert_string_equal(c.argv[5], "%r");
    assert_null(c.argv[6]);
    assert_int_equal(mda_parse("sendmail %r", &c, err, sizeof err), -1);
    assert_int_equal(mda_parse("", &c, err, sizeof err), -1);
    assert_int_equal(mda_parse("/bin/x %d", &c, err, sizeof err), -1);
}

static void deliver_with(const char *command, int want)
{
    struct mda_command c;
    char err[200];
    struct smtp_client_reply r;
    assert_int_equal(mda_parse(command, &c, err, sizeof err), 0);
    int fd = spool("Subject: x\r\n\r\nbody\r\n");
    mda_deliver(&c, fd, "s@x", "r@y", 10, &r);
    close(fd);
    if (r.code != want)
        fail_msg("%s: %d %s", command, r.code, r.text);
}

static void test_mda_exit_codes(void **state)
{
    deliver_with("/bin/dd of=/dev/null status=none", 250);
    deliver_with("/bin/true", 250);   /* does not read stdin: judged by its exit status */
    deliver_with("/bin/false", 554);
    deliver_with("/nonexistent/mda %r", 451);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expand_ok),
        cmocka_unit_test(test_expand_refuses_traversal),
        cmocka_unit_test(test_expand_too_long),
        cmocka_unit_test(test_template_check),
        cmocka_unit_test(test_deliver_maildir),
        cmocka_unit_test(test_deliver_maildir_unwritable),
        cmocka_unit_test(test_copy_lf_across_chunks),
        cmocka_unit_test(test_mda_args),
        cmocka_unit_test(test_mda_parse),
        cmocka_unit_test(test_mda_exit_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
