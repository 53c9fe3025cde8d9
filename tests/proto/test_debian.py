# SPDX-License-Identifier: ISC
"""The Debian package (issue 11): built by dpkg-buildpackage from a clean copy of the tree
(never in the repository), listed with dpkg-deb -c, extracted into a throwaway root with
dpkg -x, checked by lintian; then its postinst and the installed odmrd run against the FHS
paths inside a private mount namespace (copies of /etc and /var/spool), serving a message
end to end as the odmrd user."""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, free_port, wait_port
from smtpwire import greet, transaction

VERSION = open(os.path.join(ROOT, "VERSION")).read().strip()
TOOLS = ("dpkg-buildpackage", "dh", "dpkg-deb", "lintian")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
needs_tools = pytest.mark.skipif(
    bool(MISSING), reason="cannot build the .deb: %s not installed (scripts/install-deps "
    "installs debhelper, dpkg-dev, lintian and fakeroot)" % ", ".join(MISSING))



def test_debian_changelog_carries_the_version():
    with open(os.path.join(ROOT, "debian", "changelog")) as f:
        first = f.readline()
    m = re.match(r"odmrd \(([^)]+)\) ", first)
    assert m and m.group(1) == VERSION, (first, VERSION)


def copy_tree(dest):
    """The tracked and the untracked-but-not-ignored files: what a clean clone would hold plus
    the change being tested, never build products."""
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True, timeout=60).stdout
    for rel in files.decode().split("\0"):
        if rel and os.path.isfile(os.path.join(ROOT, rel)):
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), os.path.join(dest, rel))


@pytest.fixture(scope="module")
def package():
    # make check runs the protocol tests twice, the second time against the ASan binaries
    # (ODMR_BIN); the package does not use them, so it is built and checked once.
    if "ODMR_BIN" in os.environ:
        pytest.skip("the package is built and checked in the run against bin/")
    with tempfile.TemporaryDirectory(prefix="odmrd-deb-") as tmp:
        src = os.path.join(tmp, "odmrd-" + VERSION)
        copy_tree(src)
        r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b", "-j2"], cwd=src,
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        deb = os.path.join(tmp, "odmrd_%s_%s.deb" % (VERSION, arch()))
        root = os.path.join(tmp, "root")
        subprocess.run(["dpkg", "-x", deb, root], check=True, timeout=120)
        control = os.path.join(tmp, "control")
        subprocess.run(["dpkg-deb", "-e", deb, control], check=True, timeout=120)
        yield {"dir": tmp, "src": src, "deb": deb, "root": root, "control": control,
               "changes": glob.glob(os.path.join(tmp, "*.changes"))[0]}


def arch():
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def listing(deb):
    """path -> (mode string, owner) from dpkg-deb -c."""
    out = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    print(out)
    entries = {}
    for line in out.splitlines():
        mode, owner, _size, _date, _time, path = line.split(None, 5)
        entries[path.split(" -> ")[0].lstrip(".").rstrip("/") or "/"] = (mode, owner)
    return entries


@needs_tools
def test_package_files_owners_and_modes(package):
    entries = listing(package["deb"])
    expected = {
        "/usr/sbin/odmrd": "-rwxr-xr-x", "/usr/sbin/odmrctl": "-rwxr-xr-x",
        "/usr/bin/odmr-client": "-rwxr-xr-x",
        "/etc/odmrd/odmrd.conf": "-rw-r--r--", "/etc/odmrd/tls": "drwx------",
        "/var/spool/odmrd": "drwx------",
        "/lib/systemd/system/odmrd.service": "-rw-r--r--",
        "/lib/systemd/system/odmr-client.service": "-rw-r--r--",
        "/lib/systemd/system/odmr-client@.service": "-rw-r--r--",
        "/lib/systemd/system/odmr-client.timer": "-rw-r--r--",
        "/usr/share/man/man8/odmrd.8.gz": "-rw-r--r--",
        "/usr/share/man/man8/odmrctl.8.gz": "-rw-r--r--",
        "/usr/share/man/man1/odmr-client.1.gz": "-rw-r--r--",
        "/usr/share/man/man5/odmrd.conf.5.gz": "-rw-r--r--",
        "/usr/share/doc/odmrd/copyright": "-rw-r--r--",
        "/usr/share/doc/odmrd/README.md": "-rw-r--r--",
        "/usr/share/doc/odmrd/examples/odmrd.conf.example": "-rw-r--r--",
    }
    for path, mode in expected.items():
        assert entries.get(path, (None,))[0] == mode, (path, entries.get(path))
    assert {owner for _mode, owner in entries.values()} == {"root/root"}
    with open(os.path.join(package["control"], "conffiles")) as f:
        assert f.read().split() == ["/etc/odmrd/odmrd.conf"]
    with open(os.path.join(package["root"], "etc/odmrd/odmrd.conf")) as f:
        assert re.search(r"^user = odmrd$", f.read(), re.M)


@needs_tools
def test_extracted_programs_use_fhs_paths(package):
    sbin = os.path.join(package["root"], "usr", "sbin")
    r = subprocess.run([os.path.join(sbin, "odmrd"), "--version"], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.startswith("odmrd (odmrd) %s\n" % VERSION)
    r = subprocess.run([os.path.join(sbin, "odmrd"), "--help"], capture_output=True,
                       text=True, timeout=30)
    assert "(default: /etc/odmrd/odmrd.conf)" in r.stdout


@needs_tools
def test_lintian_reports_no_errors(package):
    r = subprocess.run(["lintian", "--display-info", "--tag-display-limit", "0",
                        package["changes"]], capture_output=True, text=True, timeout=600)
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EWIPX]: ", line)]
    print("lintian:\n" + "\n".join(tags or ["(no tags)"]))
    assert not [t for t in tags if t.startswith("E: ")], tags
    assert r.returncode == 0, r.stdout + r.stderr


# ---- the installed package, run: postinst and odmrd on the FHS paths ----

def can_unshare():
    if shutil.which("unshare") is None or shutil.which("nsenter") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


NAMESPACE_SETUP = r"""
set -eu
cp -a /etc "$T/etc"; mount --bind "$T/etc" /etc
mkdir "$T/spool"; mount --bind "$T/spool" /var/spool
cp -a "$PKG/etc/odmrd" /etc/odmrd
cp -a "$PKG/var/spool/odmrd" /var/spool/odmrd
sh -e "$POSTINST" configure
cat >> /etc/odmrd/odmrd.conf <<CONF
[server]
hostname = mx.test.example
[intake]
smtp_listen = 127.0.0.1:$SMTP
lmtp_listen = 127.0.0.1:$LMTP
[odmr]
listen = 127.0.0.1:$ODMR
CONF
printf 'alice-secret\n' | "$PKG/usr/sbin/odmrctl" user add alice example.org
"$PKG/usr/sbin/odmrd" -t
exec "$PKG/usr/sbin/odmrd"
"""


def in_namespace(pid, *argv):
    return subprocess.run(["nsenter", "--mount=/proc/%d/ns/mnt" % pid, *argv],
                          capture_output=True, text=True, timeout=60)


def uid_of(passwd, name):
    with open(passwd) as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2]), int(fields[3])
    raise AssertionError("no account %s in %s" % (name, passwd))


@needs_tools
@pytest.mark.skipif(not can_unshare(), reason="needs root, unshare(1) and nsenter(1)")
def test_installed_package_serves_a_message_as_odmrd(package, workdir):
    """The source postinst (the debhelper parts only talk to systemd) runs against copies of
    /etc and /var/spool mounted over the real ones in a mount namespace of odmrd's own; then
    the extracted odmrd starts without -c, as systemd would start it, from /etc/odmrd."""
    ports = {name: free_port() for name in ("SMTP", "LMTP", "ODMR")}
    env = dict(os.environ, T=workdir, PKG=package["root"],
               POSTINST=os.path.join(package["src"], "debian", "odmrd.postinst"),
               **{k: str(v) for k, v in ports.items()})
    log_path = os.path.join(workdir, "odmrd.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["unshare", "--mount", "sh", "-c", NAMESPACE_SETUP], env=env,
                                stdout=log, stderr=log)
    try:
        for port in ports.values():
            wait_port(port, timeout=60, proc=proc)
        served_as_odmrd(proc, package["root"], workdir, ports, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        print(open(log_path).read())
    assert rc == 0


def served_as_odmrd(proc, pkg, workdir, ports, log_path):
    uid, gid = uid_of(os.path.join(workdir, "etc", "passwd"), "odmrd")
    deadline = time.time() + 10
    while "event=started" not in open(log_path).read() and time.time() < deadline:
        time.sleep(0.05)
    with open("/proc/%d/status" % proc.pid) as f:
        status = f.read()
    assert re.search(r"^Uid:\s+%d\s+%d" % (uid, uid), status, re.M), status
    spool = os.stat(os.path.join(workdir, "spool", "odmrd"))
    assert (spool.st_uid, spool.st_gid, oct(spool.st_mode & 0o777)) == (uid, gid, "0o700")
    users = os.stat(os.path.join(workdir, "etc", "odmrd", "users"))
    assert (users.st_uid, oct(users.st_mode & 0o777)) == (uid, "0o600")
    tls = os.stat(os.path.join(workdir, "etc", "odmrd", "tls"))
    assert (tls.st_uid, tls.st_gid, oct(tls.st_mode & 0o777)) == (0, gid, "0o750")
    key = os.stat(os.path.join(workdir, "etc", "odmrd", "tls", "key.pem"))
    assert key.st_uid == 0 and key.st_mode & 0o077 == 0     # made by odmrd, still root
    w = greet(ports["SMTP"])
    transaction(w, rcpts=("<bob@example.org>",))
    w.expect("DATA", 354)
    w.send("Subject: from the package\r\n\r\nhello\r\n.\r\n")
    assert w.reply().code == 250
    w.expect("QUIT", 221)
    odmrctl = os.path.join(pkg, "usr", "sbin", "odmrctl")
    assert len(in_namespace(proc.pid, odmrctl, "queue", "list", "--ids").stdout.split()) == 1
    pin = in_namespace(proc.pid, odmrctl, "tls", "pin").stdout.strip()
    assert pin.startswith("sha256:"), pin
    password = os.path.join(workdir, "alice.pw")
    with open(password, "w") as f:
        f.write("alice-secret\n")
    os.chmod(password, 0o600)
    mail = os.path.join(workdir, "mail")
    r = subprocess.run([os.path.join(pkg, "usr", "bin", "odmr-client"),
                        "--server", "127.0.0.1:%d" % ports["ODMR"], "--user", "alice",
                        "--password-file", password, "--pin", pin,
                        "--deliver", "maildir:%s/%%u" % mail], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    delivered = glob.glob(os.path.join(mail, "bob", "new", "*"))
    assert len(delivered) == 1
    assert open(delivered[0], "rb").read().endswith(b"Subject: from the package\n\nhello\n")
    deadline = time.time() + 10
    while in_namespace(proc.pid, odmrctl, "queue", "list", "--ids").stdout.split() and \
            time.time() < deadline:
        time.sleep(0.1)
    assert in_namespace(proc.pid, odmrctl, "queue", "list", "--ids").stdout.split() == []


# ---- under systemd as PID 1 ----
# systemd-nspawn boots this machine's own system (an overlay over /, so nothing of the host
# changes) with systemd as PID 1 in a container with its own network: there the package is
# installed with dpkg -i and odmrd runs as the service of contrib/odmrd.service, hardening,
# Type=notify and all. The host's cgroup v1 hierarchy lacks controllers nspawn wants;
# SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 gives the container the unified (v2) one.

def can_boot_container():
    return (os.geteuid() == 0 and shutil.which("systemd-nspawn") is not None
            and shutil.which("nsenter") is not None and os.path.exists("/lib/systemd/systemd"))


class Container:
    def __init__(self, workdir, debdir):
        self.upper = os.path.join(workdir, "ovl")
        self.merged = os.path.join(self.upper, "merged")
        for d in ("up", "work", "merged"):
            os.makedirs(os.path.join(self.upper, d))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        "lowerdir=/,upperdir=%s/up,workdir=%s/work" % (self.upper, self.upper),
                        self.merged], check=True, timeout=30)
        self.log = open(os.path.join(workdir, "nspawn.log"), "wb")
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--private-network",
             "-D", self.merged, "--bind-ro=%s:/mnt/deb" % debdir,
             "--machine=odmrd-test-%d" % os.getpid(), "--console=pipe", "-b"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=env)
        self.pid1 = self.find_pid1()

    def find_pid1(self):
        deadline = time.time() + 30
        while time.time() < deadline and self.proc.poll() is None:
            r = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"],
                               capture_output=True, text=True)
            if r.stdout.strip():
                return int(r.stdout.split()[0])
            time.sleep(0.1)
        self.proc.kill()
        self.proc.wait(timeout=30)
        subprocess.run(["umount", "-l", self.merged], timeout=30)
        raise AssertionError("systemd did not start in the container: %s"
                             % open(self.log.name).read()[-2000:])

    def run(self, script, check=True, timeout=120, stdin=None):
        r = subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "sh", "-c", script],
                           capture_output=True, text=True, timeout=timeout, input=stdin)
        if check:
            assert r.returncode == 0, (script, r.returncode, r.stdout, r.stderr)
        return r

    def wait_booted(self):
        deadline = time.time() + 90
        while time.time() < deadline:
            state = self.run("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.3)
        raise AssertionError("the container did not finish booting: %r" % state)

    def close(self):
        # Killing the container's PID 1 kills every process of its PID namespace; killing
        # systemd-nspawn alone would leave them running.
        try:
            os.kill(self.pid1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()
        subprocess.run(["umount", "-l", self.merged], timeout=30)


def service_property(box, name):
    out = box.run("systemctl show odmrd -p %s --value" % name).stdout
    return out.strip()


SEND = r"""
import smtplib, sys
with smtplib.SMTP("127.0.0.1", 2525) as s:
    s.sendmail("sender@elsewhere.example", ["bob@example.org"],
               b"Subject: " + sys.argv[1].encode() + b"\r\n\r\nhello from PID 1\r\n")
"""


def send(box, subject):
    box.run("%s -c '%s' '%s'" % (sys.executable, SEND.replace("'", "'\\''"), subject))


@needs_tools
@pytest.mark.skipif(not can_boot_container(), reason="needs root, systemd-nspawn and nsenter")
def test_package_under_systemd_as_pid1(package, workdir):
    box = Container(workdir, package["dir"])
    try:
        box.wait_booted()
        box.run("dpkg -i /mnt/deb/%s" % os.path.basename(package["deb"]))
        # A policy-rc.d (container images carry one) may have kept dpkg from starting it.
        box.run("systemctl start odmrd")
        served_under_systemd(box, package)
    finally:
        print(box.run("journalctl --no-pager -o short-monotonic -u odmrd", check=False).stdout)
        box.close()


def served_under_systemd(box, package):
    # Type=notify: "active (running)" means odmrd sent READY=1 after it bound its listeners.
    assert service_property(box, "Type") == "notify"
    assert service_property(box, "ActiveState") == "active"
    assert service_property(box, "SubState") == "running"
    main_pid = service_property(box, "MainPID")
    assert box.run("ps -o user= -p %s" % main_pid).stdout.strip() == "odmrd"
    box.run("odmrctl user add alice example.org", stdin="alice-secret\n")
    box.run("systemctl reload odmrd")              # ExecReload: SIGHUP, RELOADING=1 .. READY=1
    assert service_property(box, "ActiveState") == "active"
    assert service_property(box, "MainPID") == main_pid
    send(box, "under systemd")
    assert len(box.run("odmrctl queue list --ids").stdout.split()) == 1
    pin = box.run("odmrctl tls pin").stdout.strip()
    box.run("install -m 600 /dev/null /root/alice.pw && echo alice-secret > /root/alice.pw")
    box.run("odmr-client --server 127.0.0.1:3366 --user alice --password-file /root/alice.pw "
            "--pin %s --deliver maildir:/root/mail/%%u" % pin)
    got = box.run("cat /root/mail/bob/new/*").stdout
    assert got.endswith("Subject: under systemd\n\nhello from PID 1\n"), got
    journal_priorities(box)
    fetched_by_the_client_units(box, pin)
    box.run("systemctl stop odmrd")
    assert service_property(box, "ActiveState") == "inactive"
    assert service_property(box, "Result") == "success"
    assert service_property(box, "ExecMainStatus") == "0"


def journal_priorities(box):
    """odmrd writes <N> priorities on the journal stream: journalctl -p filters by them."""
    everything = box.run("journalctl --no-pager -o cat -u odmrd _PID=%s"
                         % service_property(box, "MainPID")).stdout
    assert "event=config.reloaded" in everything and "event=listen" in everything, everything
    warnings = box.run("journalctl --no-pager -o cat -u odmrd -p warning _PID=%s"
                       % service_property(box, "MainPID")).stdout.splitlines()
    assert warnings and all("level=warn" in w or "level=error" in w for w in warnings), warnings
    assert not any(re.match(r"^\d{4}-\d\d-\d\d", line) for line in everything.splitlines())


CLIENT_CONF = """[provider]
server = 127.0.0.1:3366
pin = %s
user = alice
[local]
deliver = smtp:127.0.0.1:2526
"""


def fetched_by_the_client_units(box, pin):
    """odmr-client.service as packaged (DynamicUser=, LoadCredential= of the password, the
    sandbox) fetches into an SMTP target: Postfix's smtp-sink dumping each transaction."""
    send(box, "for the client unit")
    box.run("mkdir -p /etc/odmr-client && install -m 600 /dev/null /etc/odmr-client/password"
            " && echo alice-secret > /etc/odmr-client/password")
    box.run("cat > /etc/odmr-client.conf", stdin=CLIENT_CONF % pin)
    box.run("install -d -m 1777 /var/tmp/sink && systemd-run --unit=odmrd-test-sink "
            "/usr/sbin/smtp-sink -u nobody -d /var/tmp/sink/%%M. 127.0.0.1:2526 10")
    box.run("systemctl start odmr-client.service", timeout=180)   # oneshot: returns when done
    assert box.run("systemctl show odmr-client -p Result --value").stdout.strip() == "success"
    dumps = box.run("cat /var/tmp/sink/*").stdout
    assert dumps.count("Subject: for the client unit") == 1, dumps
    assert "Subject: under systemd" not in dumps, dumps
    assert box.run("odmrctl queue list --ids").stdout.split() == []
