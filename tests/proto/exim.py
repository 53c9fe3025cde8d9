# SPDX-License-Identifier: ISC
"""A private Exim 4.96 for tests: the front MTA that relays to odmrd's intake over STARTTLS.

Debian's exim4-daemon-light conflicts with Postfix as a package, so scripts/install-deps
unpacks its binary into /var/cache/odmrd-tests/exim (ODMR_EXIM names another binary). It
never touches a system Exim: its own config file, spool (with the hints databases that make
it reuse a connection) and logs live in one directory; it runs no daemon and listens on no
port. Messages are queued with `-odq` and delivered by one two-stage queue run (`-qqff`),
which sends every message for one host over one connection.

Exim drops privileges to its exim_user: as root that is `nobody`, otherwise the caller
itself (Exim keeps the caller's uid for a config given with -C, and the caller must be
trusted to set the envelope sender: trusted_users names it).

    ex = Exim(workdir, odmrd_port=2525)
    ex.submit("sender@elsewhere.test", ["u@example.org"], message_bytes)
    ex.run_queue()
    ex.log()   # "<=" arrivals, "=>" deliveries, "==" deferrals, "**" failures
"""
import grp
import os
import pwd
import signal
import subprocess

EXIM = os.environ.get("ODMR_EXIM", "/var/cache/odmrd-tests/exim/usr/sbin/exim4")

# exim_path: the binary re-executes itself to hand a connection on to the next message; its
# compiled-in /usr/sbin/exim4 is not there.
CONFIG = """\
exim_path = {exim}
primary_hostname = exim.test.example
qualify_domain = exim.test.example
spool_directory = {spool}
log_file_path = {logs}/%slog
exim_user = {user}
exim_group = {group}
trusted_users = {caller}
keep_environment =
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
queue_only = true
remote_max_parallel = 1
queue_run_max = 1

begin routers

odmrd:
  driver = manualroute
  domains = *
  route_list = * 127.0.0.1
  self = send
  transport = to_odmrd

begin transports

# STARTTLS required, odmrd's self-signed certificate accepted; no DNS-based extras.
to_odmrd:
  driver = smtp
  port = {port}
  allow_localhost
  hosts_require_tls = *
  tls_verify_hosts = :
  tls_try_verify_hosts = :
  hosts_try_dane = :
  hosts_try_chunking = :
  hosts_try_prdr = :
  hosts_try_fastopen = :
  connect_timeout = 10s
  command_timeout = 30s

begin retry

*  *  F,1h,10m
"""


def unusable_reason():
    """None when a private Exim can run here, else why not (for pytest.skip)."""
    if not os.access(EXIM, os.X_OK):
        return "Exim is not unpacked at %s (scripts/install-deps does it)" % EXIM
    try:
        pwd.getpwnam("Debian-exim")
    except KeyError:
        return "the Debian-exim account that the binary names is missing (scripts/install-deps)"
    return None


class Exim:
    """One private Exim under `workdir`, relaying every domain to 127.0.0.1:odmrd_port."""

    def __init__(self, workdir, odmrd_port):
        self.dir = os.path.abspath(workdir)
        self.spool = os.path.join(self.dir, "spool")
        self.logs = os.path.join(self.dir, "log")
        self.conf = os.path.join(self.dir, "exim.conf")
        caller = pwd.getpwuid(os.geteuid())
        account = pwd.getpwnam("nobody") if os.geteuid() == 0 else caller
        self.uid, self.gid = account.pw_uid, account.pw_gid
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        for d in (self.spool, self.logs):
            os.makedirs(d, exist_ok=True)
            os.chown(d, self.uid, self.gid)
            os.chmod(d, 0o750)
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(exim=EXIM, spool=self.spool, logs=self.logs,
                                  user=account.pw_name,
                                  group=grp.getgrgid(account.pw_gid).gr_name,
                                  caller=caller.pw_name, port=odmrd_port))
        os.chmod(self.conf, 0o644)
        self.stderr_log = []

    def exim(self, *args, input=None, timeout=120):
        """Runs the private Exim and waits until every process it left behind (the ones a
        reused connection is handed on to) has closed its stderr, which they inherit. Exim
        logs to stderr, not to mainlog, wherever a -C config has cost it its privilege (every
        process when not root; as root, the ones that take a connection over): kept here."""
        try:
            r = subprocess.run([EXIM, "-C", self.conf, *args], input=input,
                               capture_output=True, timeout=timeout)
        finally:
            self.kill_leftovers()
        self.stderr_log.append(r.stderr.decode(errors="replace"))
        if r.returncode != 0:
            raise RuntimeError("exim %s failed (%d): %s%s\n%s" % (
                " ".join(args), r.returncode, r.stdout.decode(errors="replace"),
                self.stderr_log[-1], self.log()[-3000:]))
        return r

    def kill_leftovers(self):
        """SIGKILL, by PID, any process still running with this instance's config file."""
        needle = self.conf.encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if needle in f.read().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass

    def submit(self, sender, rcpts, message):
        """Queues one message (-odq: no delivery yet)."""
        self.exim("-odq", "-oi", "-f", sender, "--", *rcpts, input=message)

    def run_queue(self, timeout=120):
        """One two-stage queue run, forced: routes everything, then delivers each host's
        messages over one connection; returns when every delivery process has ended."""
        self.exim("-qqff", timeout=timeout)

    def queue_count(self):
        return int(self.exim("-bpc").stdout.strip() or 0)

    def log(self):
        """mainlog and what Exim logged to stderr: "<=" arrivals, "=>" deliveries, "=="
        deferrals, "**" failures."""
        try:
            with open(os.path.join(self.logs, "mainlog"), errors="replace") as f:
                main = f.read()
        except OSError:
            main = ""
        return main + "".join(self.stderr_log)
