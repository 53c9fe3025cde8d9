/* SPDX-License-Identifier: ISC */
/* Delivery through an MDA command (sendmail -i, procmail, dovecot-lda, ...): argv split at
 * spaces once, when the option is read; %s and %r become whole values inside their argument
 * and are never split or seen by a shell. One process per recipient, the message on stdin. */
#include "client/local.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { EX_TEMPFAIL_CODE = 75, ARG_MAX_LEN = 2048, WAIT_STEP_MS = 5 };

int mda_parse(const char *text, struct mda_command *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strlen(text) >= sizeof out->text) {
        snprintf(err, errlen, "mda command too long");
        return -1;
    }
    snprintf(out->text, sizeof out->text, "%s", text);
    char *save = NULL;
    for (char *a = strtok_r(out->text, " \t", &save); a != NULL; a = strtok_r(NULL, " \t", &save)) {
        if (out->argc == MDA_MAX_ARGS) {
            snprintf(err, errlen, "mda command has more than %d arguments", MDA_MAX_ARGS);
            return -1;
        }
        char probe[8];
        if (mda_expand_arg(a, "", "", probe, sizeof probe) < 0 && errno == EINVAL) {
            snprintf(err, errlen, "unknown escape in mda argument '%s' (use %%s %%r %%%%)", a);
            return -1;
        }
        out->argv[out->argc++] = a;
    }
    if (out->argc == 0 || out->argv[0][0] != '/') {
        snprintf(err, errlen, "mda command must start with an absolute path (no shell, no PATH)");
        return -1;
    }
    return 0;
}

int mda_probe(const struct mda_command *c, char *err, size_t errlen)
{
    struct stat st;
    if (stat(c->argv[0], &st) != 0 || !S_ISREG(st.st_mode) || access(c->argv[0], X_OK) != 0) {
        snprintf(err, errlen, "mda %s is not an executable file", c->argv[0]);
        return -1;
    }
    return 0;
}

/* A value starting with '-' could be taken as an option by the command, whatever its argv
 * says; refusing it costs nothing real (RFC 5321 addresses do not need it). */
int mda_address_ok(const char *addr)
{
    return addr[0] == '-' ? -1 : 0;
}

/* 0, or -1 with errno EINVAL (unknown escape) or ENAMETOOLONG. */
int mda_expand_arg(const char *arg, const char *sender, const char *rcpt, char *out, size_t len)
{
    static const struct { char escape; int which; } table[] = {{'s', 0}, {'r', 1}, {'%', 2}};
    const char *values[] = {sender, rcpt, "%"};
    size_t at = 0;
    int rc = 0;
    for (const char *p = arg; *p != '\0'; p++) {
        const char *v = NULL;
        for (size_t i = 0; p[0] == '%' && i < sizeof table / sizeof table[0]; i++)
            if (table[i].escape == p[1])
                v = values[table[i].which];
        if (p[0] == '%' && v == NULL) {
            errno = EINVAL;
            return -1;
        }
        size_t n = v ? strlen(v) : 1;
        if (at + n >= len) {
            errno = ENAMETOOLONG;
            rc = -1;   /* keep scanning: an unknown escape wins */
            continue;
        }
        memcpy(out + at, v ? v : p, n);
        at += n;
        p += v != NULL;
    }
    if (len > 0)
        out[at < len ? at : len - 1] = '\0';
    return rc;
}

/* ---- running it ---- */

static void mda_child(const struct mda_command *c, char **argv, int in_fd, int report_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);   /* the daemon loop blocks SIGTERM */
    signal(SIGPIPE, SIG_DFL);
    if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
        _exit(EX_TEMPFAIL_CODE);
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);   /* the provider's socket stays with us */
    execv(argv[0], argv);
    int e = errno;
    (void)!write(report_fd, &e, sizeof e);
    _exit(127);
}

static int wait_child(pid_t pid, long long deadline_ms, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
        if (local_now_ms() >= deadline_ms) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
            errno = ETIMEDOUT;
            return -1;
        }
        nanosleep(&(struct timespec){0, WAIT_STEP_MS * 1000000L}, NULL);
    }
}

static void mda_verdict(int status, struct smtp_client_reply *out)
{
    if (WIFSIGNALED(status))
        peer_reply_set(out, 451, "4.3.0 MDA killed by signal %d", WTERMSIG(status));
    else if (WEXITSTATUS(status) == 0)
        peer_reply_set(out, 250, "2.0.0 Delivered by MDA");
    else if (WEXITSTATUS(status) == EX_TEMPFAIL_CODE)
        peer_reply_set(out, 451, "4.3.0 MDA temporary failure (exit 75)");
    else
        peer_reply_set(out, 554, "5.3.0 MDA failed (exit %d)", WEXITSTATUS(status));
}

static int build_argv(const struct mda_command *c, const char *sender, const char *rcpt,
                      char **argv, char *store, size_t store_len)
{
    size_t at = 0;
    for (size_t i = 0; i < c->argc; i++) {
        if (mda_expand_arg(c->argv[i], sender, rcpt, store + at, store_len - at) != 0)
            return -1;
        argv[i] = store + at;
        at += strlen(store + at) + 1;
    }
    argv[c->argc] = NULL;
    return 0;
}

/* Feeds the message: 0 or an errno. A child that exits without reading all of it (EPIPE) is
 * judged by its exit status alone. */
static int mda_feed(int spool_fd, int pipe_fd, long long deadline_ms)
{
    int rc = local_copy_lf(spool_fd, pipe_fd, deadline_ms);
    int saved = errno;
    close(pipe_fd);
    return rc == 0 || saved == EPIPE ? 0 : saved;
}

static void mda_run(const struct mda_command *c, char **argv, int spool_fd, long long deadline_ms,
                struct smtp_client_reply *out)
{
    int in[2], report[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(report, O_CLOEXEC) != 0) {
        local_reply_errno(out, errno, "Cannot run the MDA");
        return;
    }
    pid_t pid = fork();
    if (pid == 0)
        mda_child(c, argv, in[0], report[1]);
    close(in[0]);
    close(report[1]);
    int exec_errno = 0;
    if (pid < 0 || read(report[0], &exec_errno, sizeof exec_errno) == (ssize_t)sizeof exec_errno) {
        int e = pid < 0 ? errno : exec_errno;
        close(in[1]);
        close(report[0]);
        if (pid > 0)
            waitpid(pid, NULL, 0);
        local_reply_errno(out, e, "Cannot run the MDA");
        return;
    }
    close(report[0]);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    int status = 0;
    int fed = mda_feed(spool_fd, in[1], deadline_ms);
    if (wait_child(pid, deadline_ms, &status) != 0)
        peer_reply_set(out, 451, "4.3.0 MDA timed out");
    else if (fed != 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        local_reply_errno(out, fed, "Cannot feed the MDA");   /* never 250 for a cut message */
    else
        mda_verdict(status, out);
}

void mda_deliver(const struct mda_command *c, int spool_fd, const char *sender, const char *rcpt,
                 double timeout_seconds, struct smtp_client_reply *out)
{
    char *argv[MDA_MAX_ARGS + 1];
    char *store = malloc(c->argc * ARG_MAX_LEN);
    if (store == NULL || build_argv(c, sender, rcpt, argv, store, c->argc * ARG_MAX_LEN) != 0)
        peer_reply_set(out, 451, "4.3.0 Cannot build the MDA command line");
    else
        mda_run(c, argv, spool_fd, local_now_ms() + (long long)(timeout_seconds * 1000), out);
    free(store);
}
