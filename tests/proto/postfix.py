# SPDX-License-Identifier: ISC
"""A private Postfix instance for tests and benchmarks.

It never touches the system instance: its own config_directory, queue_directory,
data_directory and maillog_file live in one temporary directory, and it listens on one
loopback port only. Needs root (Postfix's master runs as root and hands the queue to the
`postfix` account).

From pytest: the `postfix_instance` fixture (a factory, see below). From a script:

    from postfix import Postfix
    pf = Postfix(workdir, relay_domains=["example.org"],
                 transports={"example.org": "lmtp:inet:127.0.0.1:2424"}).start()
    ...
    pf.stop()

Or from a shell: `python3 tests/proto/postfix.py start DIR [--hold] ...` and
`python3 tests/proto/postfix.py stop DIR`.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from ports import free_port

POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/postfix"
SBIN = os.path.dirname(POSTFIX)
POSTQUEUE = os.path.join(SBIN, "postqueue")
POSTSUPER = os.path.join(SBIN, "postsuper")

# Every service the private instance needs, none chrooted (the queue is a temp dir, and
# lmtp:unix:/path must reach a socket outside it). The smtpd service name is filled in.
# `virtual` serves virtual_mailbox_domains (Maildir delivery in a test's own directory) when
# a test sets them through `main`; unused otherwise.
MASTER_CF = """\
# service        type  private unpriv chroot wakeup maxproc command
{listen} inet  n       -       n       -       -       smtpd
pickup           unix  n       -       n       60      1       pickup
cleanup          unix  n       -       n       -       0       cleanup
qmgr             unix  n       -       n       300     1       qmgr
tlsmgr           unix  -       -       n       1000?   1       tlsmgr
rewrite          unix  -       -       n       -       -       trivial-rewrite
bounce           unix  -       -       n       -       0       bounce
defer            unix  -       -       n       -       0       bounce
trace            unix  -       -       n       -       0       bounce
verify           unix  -       -       n       -       1       verify
flush            unix  n       -       n       1000?   0       flush
proxymap         unix  -       -       n       -       -       proxymap
proxywrite       unix  -       -       n       -       1       proxymap
smtp             unix  -       -       n       -       -       smtp
relay            unix  -       -       n       -       -       smtp
showq            unix  n       -       n       -       -       showq
error            unix  -       -       n       -       -       error
retry            unix  -       -       n       -       -       error
discard          unix  -       -       n       -       -       discard
local            unix  -       n       n       -       -       local
virtual          unix  -       n       n       -       -       virtual
lmtp             unix  -       -       n       -       -       lmtp
anvil            unix  -       -       n       -       1       anvil
scache           unix  -       -       n       -       1       scache
postlog          unix-dgram n  -       n       -       1       postlogd
"""


def is_root():
    return os.geteuid() == 0


def unusable_reason():
    """None when a private Postfix can run here, else why not (for pytest.skip)."""
    if not is_root():
        return "a private Postfix instance needs root (its master runs as root)"
    if not os.access(POSTFIX, os.X_OK):
        return "postfix is not installed (%s)" % POSTFIX
    return None


def _children_of(pid):
    """PIDs whose parent is pid (Postfix's master forks every daemon directly)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: the ppid is after the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            kids.append(int(entry))
    return kids


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


class Postfix:
    """One private Postfix instance under `workdir` (created if missing)."""

    def __init__(self, workdir, port=None, relay_domains=(), transports=None, hold=False,
                 main=None, myhostname="postfix.test.example"):
        self.dir = os.path.abspath(workdir)
        self.config_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data_dir = os.path.join(self.dir, "data")
        self.maillog = os.path.join(self.dir, "maillog")
        self.port = port or free_port()
        self.relay_domains = list(relay_domains)
        self.transports = dict(transports or {})
        self.hold = hold
        self.main_extra = dict(main or {})
        self.myhostname = myhostname
        self.master_pid = None
        self.pids = set()
        self.write_config()

    # ---- configuration ----
    def main_cf(self):
        params = {
            "compatibility_level": "3.7",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.myhostname,
            "mydomain": "test.example",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": " ".join(self.relay_domains),
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "smtp_tls_security_level": "none",
            "lmtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            # Nothing leaves the test instance except through transport_maps; bounces to
            # other domains fail here (and double bounces are dropped).
            "default_transport": "error:5.1.2 no outbound mail from the test instance",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir,
            "maillog_file_permissions": "0644",
            # Deliver and retry in seconds, not minutes.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "0",
            "smtp_connect_timeout": "5s",
            "lmtp_connect_timeout": "5s",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "in_flow_delay": "0",
        }
        if self.transports:
            params["transport_maps"] = "inline:{ %s }" % ", ".join(
                "%s=%s" % (dom, tr) for dom, tr in self.transports.items())
        if self.hold:
            # Every accepted message goes to the hold queue: what Postfix does up to and
            # including its durable commit (cleanup's fsync), and nothing after it.
            params["smtpd_recipient_restrictions"] = (
                "check_recipient_access static:HOLD, permit_mynetworks, reject")
        params.update(self.main_extra)
        return "".join("%s = %s\n" % (k, v) for k, v in params.items())

    def write_config(self):
        os.makedirs(self.config_dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.write(self.main_cf())
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen=("127.0.0.1:%d" % self.port).ljust(16)))
        # Postfix wants the queue directory owned by root; its subdirectories are created
        # and handed to `postfix` by `postfix check` / `postfix start` (post-install).
        for d in (self.queue_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)
        os.chown(self.queue_dir, 0, 0)
        os.chmod(self.queue_dir, 0o755)
        pw = _getpwnam("postfix")
        if pw is not None:
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.data_dir, 0o700)

    # ---- running ----
    def cmd(self, *args, check=True, timeout=60):
        r = subprocess.run([POSTFIX, "-c", self.config_dir, *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("postfix %s failed (%d): %s%s\n%s" % (
                " ".join(args), r.returncode, r.stdout, r.stderr, self.log()[-3000:]))
        return r

    def start(self, timeout=30):
        self.cmd("check")
        self.cmd("start")
        deadline = time.time() + timeout
        pidfile = os.path.join(self.queue_dir, "pid", "master.pid")
        while time.time() < deadline:
            try:
                with open(pidfile) as f:
                    self.master_pid = int(f.read().split()[0])
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("private Postfix did not answer on 127.0.0.1:%d\n%s" % (
            self.port, self.log()[-3000:]))

    def _remember_processes(self):
        if self.master_pid and _alive(self.master_pid):
            self.pids.add(self.master_pid)
            self.pids.update(_children_of(self.master_pid))

    def stop(self, timeout=20):
        """postfix stop, then wait until the master and every daemon it forked are gone."""
        self._remember_processes()
        if self.master_pid and _alive(self.master_pid):
            self.cmd("stop", check=False, timeout=timeout + 10)
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._remember_processes()
            left = [p for p in self.pids if _alive(p)]
            if not left:
                break
            time.sleep(0.1)
        for pid in [p for p in self.pids if _alive(p)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.master_pid = None
        self.pids = set()

    def reload(self):
        self.cmd("reload")

    def log(self):
        try:
            with open(self.maillog, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=30):
        """The first maillog match of the regular expression, waiting up to timeout s."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while True:
            m = rx.search(self.log())
            if m or time.time() >= deadline:
                return m
            time.sleep(0.2)

    # ---- the queue ----
    def queue(self):
        """Every queued message as postqueue -j reports it (a list of dicts)."""
        r = subprocess.run([POSTQUEUE, "-c", self.config_dir, "-j"], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("postqueue -j failed: %s" % r.stderr)
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def count_files(self, state="hold"):
        """Queue files in one queue (hold, incoming, active, deferred), without postqueue."""
        n = 0
        for _root, _dirs, files in os.walk(os.path.join(self.queue_dir, state)):
            n += len(files)
        return n

    def flush(self):
        subprocess.run([POSTQUEUE, "-c", self.config_dir, "-f"], capture_output=True,
                       timeout=60)

    def delete_all(self, state=None):
        args = [POSTSUPER, "-c", self.config_dir, "-d", "ALL"] + ([state] if state else [])
        subprocess.run(args, capture_output=True, timeout=120, check=True)


def _getpwnam(name):
    import pwd
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


# ---- pytest ----
try:
    import pytest
except ImportError:  # used from the bench without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def postfix_instance():
        """A factory: postfix_instance(relay_domains=..., transports=..., hold=..., main=...)
        starts a private Postfix; every instance made is stopped at teardown."""
        reason = unusable_reason()
        if reason:
            pytest.skip(reason)
        made = []
        tmp = tempfile.mkdtemp(prefix="postfix-test-")
        os.chmod(tmp, 0o755)   # the postfix account must reach its data directory
        try:
            def make(**kwargs):
                pf = Postfix(os.path.join(tmp, "pf%d" % len(made)), **kwargs)
                made.append(pf)
                return pf.start()
            yield make
        finally:
            for pf in made:
                pf.stop()
            if os.environ.get("KEEP_POSTFIX_DIR"):
                sys.stderr.write("private Postfix kept in %s\n" % tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)


# ---- command line (for shell scripts) ----
def main(argv=None):
    ap = argparse.ArgumentParser(description="run a private Postfix instance")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="configure and start an instance in DIR")
    st.add_argument("dir")
    st.add_argument("--port", type=int, default=None)
    st.add_argument("--hold", action="store_true", help="put every message on hold")
    st.add_argument("--relay-domain", action="append", default=[])
    st.add_argument("--transport", action="append", default=[], metavar="DOMAIN=TRANSPORT")
    sp = sub.add_parser("stop", help="stop the instance in DIR and every process it forked")
    sp.add_argument("dir")
    args = ap.parse_args(argv)
    if args.cmd == "start":
        transports = dict(t.split("=", 1) for t in args.transport)
        pf = Postfix(args.dir, port=args.port, relay_domains=args.relay_domain,
                     transports=transports, hold=args.hold).start()
        print("port=%d config_directory=%s master_pid=%d" % (pf.port, pf.config_dir,
                                                             pf.master_pid))
        return 0
    pf = Postfix.__new__(Postfix)
    pf.dir = os.path.abspath(args.dir)
    pf.config_dir = os.path.join(pf.dir, "etc")
    pf.queue_dir = os.path.join(pf.dir, "queue")
    pf.maillog = os.path.join(pf.dir, "maillog")
    pf.pids = set()
    try:
        with open(os.path.join(pf.queue_dir, "pid", "master.pid")) as f:
            pf.master_pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pf.master_pid = None
    pf.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
