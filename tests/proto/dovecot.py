# SPDX-License-Identifier: ISC
"""A private Dovecot LMTP server for tests (Dovecot's `lmtp` service, Debian `dovecot-lmtpd`).

It never touches a system Dovecot: `dovecot -F -c CONFIG` runs in the foreground as a child of
the test, with base_dir (sockets, master.pid), state_dir, the log and the mailboxes in one
temporary directory, an LMTP listener on a loopback port and one unix socket, no other
protocol. Users come from a passwd-file; each user's mail goes to the Maildir
`<dir>/mail/<domain>/<local part>`, written as the mail account (nobody when run as root:
Dovecot refuses root as a mail user).

From pytest, the `dovecot_instance` fixture (a factory):

    dv = dovecot_instance(users=["u@example.org", "v@example.org"])
    dv.port, dv.socket                       # lmtp:127.0.0.1:PORT, lmtp:unix:PATH
    dv.messages("u@example.org")             # the delivered files, bytes
"""
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from ports import free_port

DOVECOT = shutil.which("dovecot", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/dovecot"
LMTP_BIN = "/usr/lib/dovecot/lmtp"


DELIVERY = re.compile(r"\b(lmtp|lda)\(([^)]*)\)<\d+><[^>]*>: Info: msgid=(?:<([^>]*)>|\S*) "
                      r"from_envelope=<([^>]*)> to_envelope=<([^>]*)>: saved mail to INBOX$",
                      re.M)


def unusable_reason():
    """None when a private Dovecot LMTP server can run here, else why not (for pytest.skip)."""
    if not os.access(DOVECOT, os.X_OK):
        return "dovecot is not installed (%s; Debian package dovecot-lmtpd)" % DOVECOT
    if not os.access(LMTP_BIN, os.X_OK):
        return "Dovecot's LMTP server is not installed (%s; Debian package dovecot-lmtpd)" \
            % LMTP_BIN
    return None


def version():
    r = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if len(fields) > 1 and fields[1] == str(pid):
                kids.append(int(entry))
    return kids


class Dovecot:
    """One private Dovecot (LMTP only) under `workdir` (created if missing)."""

    def __init__(self, workdir, users=(), port=None, hostname="dovecot.test.example",
                 extra=""):
        self.dir = os.path.abspath(workdir)
        self.base_dir = os.path.join(self.dir, "run")
        self.state_dir = os.path.join(self.dir, "state")
        self.mail_dir = os.path.join(self.dir, "mail")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.users_file = os.path.join(self.dir, "users")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.port = port or free_port()
        self.socket = os.path.join(self.base_dir, "lmtp")
        self.hostname = hostname
        self.extra = extra
        self.proc = None
        self.pids = set()
        if os.geteuid() == 0:
            mail_user = pwd.getpwnam("nobody")
            self.uid, self.gid = mail_user.pw_uid, mail_user.pw_gid
            self.internal_user = self.login_user = None   # Dovecot's defaults (dovecot, dovenull)
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(self.uid).pw_name
            self.internal_user = self.login_user = me
        self.users = []
        self.write_config()
        for u in users:
            self.add_user(u)

    def mailbox(self, address):
        local, domain = address.rsplit("@", 1)
        return os.path.join(self.mail_dir, domain.lower(), local.lower())

    def add_user(self, address):
        self.users.append(address)
        with open(self.users_file, "a") as f:
            f.write("%s:{PLAIN}unused:%d:%d::%s\n" % (address, self.uid, self.gid,
                                                       self.mailbox(address)))

    def write_config(self):
        for d in (self.dir, self.base_dir, self.state_dir, self.mail_dir):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chown(self.mail_dir, self.uid, self.gid)
        open(self.users_file, "a").close()
        lines = [
            "base_dir = %s" % self.base_dir,
            "state_dir = %s" % self.state_dir,
            "log_path = %s" % self.log_path,
            "instance_name = dovecot-odmr-test",
            "hostname = %s" % self.hostname,
            "protocols = lmtp",
            "ssl = no",
            "listen = 127.0.0.1",
            "mail_location = maildir:%s/%%d/%%n" % self.mail_dir,
            # The envelope in the log: a message saved once for several recipients carries no
            # Delivered-To, and the LDA adds no Return-Path.
            "deliver_log_format = msgid=%m from_envelope=<%{from_envelope}> "
            "to_envelope=<%{to_envelope}>: %$",
            "first_valid_uid = %d" % min(self.uid, 500),
            "passdb {\n  driver = passwd-file\n  args = %s\n}" % self.users_file,
            "userdb {\n  driver = passwd-file\n  args = %s\n}" % self.users_file,
            "service lmtp {\n"
            "  inet_listener lmtp {\n    address = 127.0.0.1\n    port = %d\n  }\n"
            "  unix_listener lmtp {\n    mode = 0666\n  }\n"
            "}" % self.port,
        ]
        if self.internal_user:
            lines += ["default_internal_user = %s" % self.internal_user,
                      "default_internal_group = %s" % grp.getgrgid(self.gid).gr_name,
                      "default_login_user = %s" % self.login_user,
                      # Not root: no chroot for the one service that wants it.
                      "service anvil {\n  chroot =\n}"]
        if self.extra:
            lines.append(self.extra)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    # ---- running ----
    def start(self, timeout=30):
        self.logf = open(os.path.join(self.dir, "dovecot.stderr"), "ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdout=self.logf,
                                     stderr=self.logf, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        need = {"inet": False, "unix": False}
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            need["inet"] = need["inet"] or self._greets(socket.AF_INET, ("127.0.0.1", self.port))
            need["unix"] = need["unix"] or self._greets(socket.AF_UNIX, self.socket)
            if all(need.values()):
                return self
            time.sleep(0.05)
        rc = self.proc.poll()
        self.stop()
        raise RuntimeError("private Dovecot did not answer LMTP on 127.0.0.1:%d and %s "
                           "(exit %s)\n%s" % (self.port, self.socket, rc, self.log()[-3000:]))

    @staticmethod
    def _greets(family, address):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(address)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        return False

    def _remember_processes(self):
        if self.proc is not None and _alive(self.proc.pid):
            self.pids.add(self.proc.pid)
            self.pids.update(_children_of(self.proc.pid))

    def stop(self, timeout=20):
        """SIGTERM to the master (it stops its services), then wait until every process it
        forked is gone; whatever is left after the deadline is killed by PID."""
        if self.proc is None:
            return
        self._remember_processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._remember_processes()
            if self.proc.poll() is not None and not [p for p in self.pids if _alive(p)]:
                break
            time.sleep(0.05)
        for pid in [p for p in self.pids if _alive(p)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        self.pids = set()
        self.logf.close()

    def log(self):
        out = ""
        for name in (self.log_path, os.path.join(self.dir, "dovecot.stderr")):
            try:
                with open(name, "r", errors="replace") as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def deliveries(self):
        """Every save Dovecot logged, in order: (service, user, envelope sender, envelope
        recipient, Message-ID), service "lmtp" or "lda" (deliver_log_format above)."""
        return [(m.group(1), m.group(2), m.group(4), m.group(5), m.group(3))
                for m in DELIVERY.finditer(self.log())]

    # ---- the mailboxes ----
    def messages(self, address):
        """Every message in the user's INBOX (new/ and cur/), oldest file name first."""
        found = []
        for sub in ("new", "cur"):
            d = os.path.join(self.mailbox(address), sub)
            if os.path.isdir(d):
                found += [os.path.join(d, f) for f in os.listdir(d)]
        out = []
        for path in sorted(found, key=os.path.basename):
            with open(path, "rb") as f:
                out.append(f.read())
        return out


# ---- pytest ----
try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:
    @pytest.fixture
    def dovecot_instance():
        """A factory: dovecot_instance(users=[...], extra="dovecot.conf lines") starts a
        private Dovecot LMTP server; every instance made is stopped at teardown."""
        reason = unusable_reason()
        if reason:
            pytest.skip(reason)
        made = []
        # Short path: the unix socket's path must fit in sun_path (108 bytes).
        tmp = tempfile.mkdtemp(prefix="dovecot-test-")
        os.chmod(tmp, 0o755)   # the mail account must reach its mailboxes
        try:
            def make(**kwargs):
                dv = Dovecot(os.path.join(tmp, "dv%d" % len(made)), **kwargs)
                made.append(dv)
                return dv.start()
            yield make
        finally:
            for dv in made:
                dv.stop()
            if os.environ.get("KEEP_DOVECOT_DIR"):
                sys.stderr.write("private Dovecot kept in %s\n" % tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
