# SPDX-License-Identifier: ISC
"""Fixtures that run the real odmrd on loopback with a private spool and users file."""
import contextlib
import os
import pwd
import re
import resource
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from ports import free_port  # noqa: F401  (re-exported to the test modules)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ODMR_BIN", os.path.join(ROOT, "bin"))




def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("odmrd exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


def nofile_limits(nofile):
    """(soft, hard) from `nofile` or the environment's ODMR_TEST_NOFILE ("SOFT:HARD" or "N"):
    the RLIMIT_NOFILE odmrd is started under; None: inherited."""
    text = nofile or os.environ.get("ODMR_TEST_NOFILE")
    if not text:
        return None
    soft, _, hard = str(text).partition(":")
    return int(soft), int(hard or soft)


def open_files_limit(pid):
    """(soft, hard) RLIMIT_NOFILE of a running process, from /proc."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3]), int(line.split()[4])
    raise AssertionError("no open-files line for %d" % pid)


# One key=value pair of a log line (lib/log.h): a bare value, or one in double quotes with
# \" \\ and \xHH escapes (logfmt).
LOGFMT_PAIR = re.compile(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def logfmt_unquote(value):
    if not value.startswith('"'):
        return value
    return re.sub(r'\\(x[0-9a-f]{2}|.)',
                  lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 3 else m.group(1),
                  value[1:-1])


def logfmt(line):
    """{key: value} of one log line, the values unquoted."""
    return {k: logfmt_unquote(v) for k, v in LOGFMT_PAIR.findall(line)}


def log_values(text, event, key):
    """The `key` values of every `event` line in text, unquoted."""
    return [logfmt(line)[key] for line in text.splitlines() if " event=%s " % event in line]


class Odmrd:
    """One odmrd instance: config, users, spool, log, and helpers to read its queue."""

    def __init__(self, workdir, extra=None, users=None, nofile=None):
        self.dir = workdir
        self.spool = os.path.join(workdir, "spool")
        self.users = os.path.join(workdir, "users")
        self.conf = os.path.join(workdir, "odmrd.conf")
        self.log_path = os.path.join(workdir, "odmrd.log")
        self.pick_ports()
        self.lmtp_socket = os.path.join(workdir, "lmtp.sock")
        self.extra = dict(extra or {})
        self.nofile = nofile_limits(nofile)
        if self.nofile and self.nofile[1] < 8192:
            # The default max_sessions (1000 per listener kind) needs more than a small hard
            # limit allows, and odmrd refuses to start then: configure what fits.
            self.extra.setdefault("intake.max_sessions", "40")
        # As root (CI), odmrd must be told which account to run as; tests use nobody.
        if os.geteuid() == 0:
            self.extra.setdefault("server.user", "nobody")
        self.run_user = self.extra.get("server.user")
        self.preexec = None   # run in the child before exec (resource limits in a test)
        self.proc = None
        self.write_config()
        for name, (password, domains, options) in (users or DEFAULT_USERS).items():
            self.ctl("user", "add", name, ",".join(domains), *options, input=password + "\n")

    def pick_ports(self):
        self.smtp_port = free_port()
        self.lmtp_port = free_port()
        self.odmr_port = free_port()
        self.odmrs_port = free_port()

    def write_config(self):
        sections = {
            "server": {"hostname": "mx.test.example", "spool": self.spool, "users": self.users,
                       "log_level": "debug"},
            "intake": {"smtp_listen": "127.0.0.1:%d" % self.smtp_port,
                       "lmtp_listen": "127.0.0.1:%d unix:%s" % (self.lmtp_port, self.lmtp_socket)},
            "odmr": {"listen": "127.0.0.1:%d" % self.odmr_port,
                     "tls_listen": "127.0.0.1:%d" % self.odmrs_port},
            "tls": {"cert": os.path.join(self.dir, "tls", "cert.pem"),
                    "key": os.path.join(self.dir, "tls", "key.pem")},
        }
        for key, value in self.extra.items():
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = value
        with open(self.conf, "w") as f:
            for section, values in sections.items():
                f.write("[%s]\n" % section)
                for name, value in values.items():
                    if value is not None:
                        f.write("%s = %s\n" % (name, value))

    def ctl(self, *args, input=None, check=True):
        r = subprocess.run([os.path.join(BIN, "odmrctl"), "-c", self.conf, *args], input=input,
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError("odmrctl %s failed (%d): %s" % (args, r.returncode, r.stderr))
        self.hand_users_file_over()
        return r

    def hand_users_file_over(self):
        """The users file belongs to the account odmrd runs as, so SIGHUP can re-read it."""
        if self.run_user and os.path.exists(self.users):
            pw = pwd.getpwnam(self.run_user)
            os.chown(self.users, pw.pw_uid, pw.pw_gid)

    def start(self, attempts=3):
        """Starts odmrd and waits for every listener: odmrd opens them one after the other, so
        a loaded machine can see the intake ports open and the ODMR ports not yet. A port taken
        meanwhile (free_port() only says it was free) gets new ports and another try."""
        for attempt in range(attempts):
            self.logf = open(self.log_path, "ab")
            self.proc = subprocess.Popen([os.path.join(BIN, "odmrd"), "-c", self.conf],
                                         stdout=self.logf, stderr=self.logf,
                                         preexec_fn=self.run_preexec)
            try:
                for port in (self.smtp_port, self.lmtp_port, self.odmr_port, self.odmrs_port):
                    wait_port(port, proc=self.proc)
                if self.nofile:
                    assert open_files_limit(self.proc.pid)[1] == self.nofile[1]
                self.wait_probes_closed()
                return self
            except RuntimeError:
                self.stop()
                if attempt + 1 == attempts or "Address already in use" not in self.log():
                    raise
                self.pick_ports()
                self.write_config()

    def wait_probes_closed(self, timeout=10.0):
        """wait_port()'s probe connections count as sessions of their address until odmrd sees
        them close (slow under ASan): a per-address limit test must not start before that."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log()
            if "level=" not in text:
                return   # logging elsewhere (syslog): nothing to wait for here
            # one probe per port (SMTP and LMTP, ODMR and ODMR over TLS) must have been taken
            # (or refused) first: equal counts of nothing said nothing about a probe that odmrd
            # had not accepted yet (CI, under ASan)
            taken = all(text.count("event=%s.start" % p) + text.count("event=%s.refused" % p) >= 2
                        for p in ("session", "odmr"))
            if (taken and text.count("event=session.start") == text.count("event=session.end")
                    and text.count("event=odmr.start") == text.count("event=odmr.end")):
                return
            time.sleep(0.05)

    def limit_files(self):
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def run_preexec(self):
        """In the child before exec: the descriptor limit, then a test's own hook."""
        if self.nofile:
            self.limit_files()
        if self.preexec:
            self.preexec()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.logf.close()
        return rc

    def log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def wait_log(self, needle, count=1, timeout=10.0):
        """True once the log holds needle count times (the log file spans restarts)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log().count(needle) >= count:
                return True
            time.sleep(0.05)
        return False

    def start_fully(self):
        """start() returns once the ports are open, before recovery ends: this also waits for the
        'started' line of the new run too."""
        # A run stopped early may have no "started" line; before the first run, no log at all.
        starts = self.log().count("event=started") if os.path.exists(self.log_path) else 0
        self.start()
        assert self.wait_log("event=started", starts + 1), "odmrd did not finish starting"
        return self

    # ---- the queue, read through odmrctl and the spool ----
    def settle(self, seconds=5):
        """A customer can exit as soon as it has its 250s and the 221, while odmrd still records
        the outcomes off its event loop: wait (bounded) until every turned-around session has
        logged odmr.push_done, i.e. its outcomes are on disk."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            log = self.log() if os.path.exists(self.log_path) else ""
            if log.count("event=odmr.turnaround") <= log.count("event=odmr.push_done"):
                return
            time.sleep(0.05)

    def queue_ids(self, domain=None):
        self.settle()
        args = ["queue", "list", "--ids"] + ([domain] if domain else [])
        out = self.ctl(*args).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def queue_show(self, qid):
        return self.ctl("queue", "show", qid).stdout

    def queue_body(self, qid):
        r = subprocess.run([os.path.join(BIN, "odmrctl"), "-c", self.conf, "queue", "cat", qid],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout


@contextlib.contextmanager
def small_tmpfs_spool(d, size="256k"):
    """Starts d (not yet started) on a small tmpfs mounted on its spool: a real full disk.
    Mounting needs root: the test is skipped otherwise."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    os.makedirs(d.spool, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs",
                        d.spool], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())
    try:
        yield d.start()
    finally:
        d.stop()
        subprocess.run(["umount", d.spool], capture_output=True)


DEFAULT_USERS = {
    "alice": ("alice-secret", ["example.org", "example.net"], []),
    "bob": ("bob-secret", ["bob.example"], []),
}


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="odmrd-test-") as d:
        os.chmod(d, 0o755)
        yield d


@pytest.fixture
def odmrd(workdir):
    daemon = Odmrd(workdir).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def make_odmrd(workdir):
    made = []

    def make(extra=None, users=None, start=True, subdir=None, nofile=None):
        d = os.path.join(workdir, subdir or "d%d" % len(made))
        os.makedirs(d)
        daemon = Odmrd(d, extra=extra, users=users, nofile=nofile)
        made.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in made:
        daemon.stop()
