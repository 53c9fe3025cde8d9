# SPDX-License-Identifier: ISC
"""odmrd under systemd (issue 11): the sd_notify protocol over $NOTIFY_SOCKET, tested with a
datagram socket of our own, and the units checked by systemd-analyze."""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import conftest
from conftest import BIN, ROOT, wait_port
from lifecycle import stop_when_started


def notify_socket(workdir, abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = "@odmrd-test-%d-%s" % (os.getpid(), os.path.basename(workdir))
        sock.bind("\0" + name[1:])
    else:
        name = os.path.join(workdir, "notify.sock")
        sock.bind(name)
        os.chmod(name, 0o777)   # odmrd, started as root, sends after switching to nobody
    sock.settimeout(10)
    return sock, name


def receive(sock):
    return sock.recv(4096).decode()


def ports_open(d):
    for port in (d.smtp_port, d.lmtp_port, d.odmr_port, d.odmrs_port):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return True


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_reloading_stopping(make_odmrd, workdir, monkeypatch, abstract):
    sock, name = notify_socket(workdir, abstract)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    d = make_odmrd(start=False)
    d.start()
    try:
        assert receive(sock) == "READY=1"
        assert ports_open(d)          # READY comes after every listener is open
        d.proc.send_signal(signal.SIGHUP)
        state = receive(sock)
        assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", state), state
        usec = int(state.split("=")[-1])
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 60
        assert receive(sock) == "READY=1"
        assert "event=users.reloaded" in d.log()
        d.proc.send_signal(signal.SIGTERM)
        assert receive(sock) == "STOPPING=1"
        assert d.proc.wait(timeout=15) == 0    # (d.stop() would send a second SIGTERM)
        d.stop()
    finally:
        sock.close()
    assert "notify.failed" not in d.log()


def test_without_notify_socket_nothing_is_sent(make_odmrd, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    d = make_odmrd()
    assert stop_when_started(d) == 0
    assert "notify.failed" not in d.log()


def test_bad_notify_socket_is_logged_not_fatal(make_odmrd, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/not/allowed")
    d = make_odmrd()
    assert stop_when_started(d) == 0
    assert "event=notify.failed state=READY" in d.log()


# ---- the units ----

UNITS = sorted(glob.glob(os.path.join(ROOT, "contrib", "*.service")) +
               glob.glob(os.path.join(ROOT, "contrib", "*.timer")))
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def units_with_our_binaries(tmp):
    """The units as they are, with ExecStart= pointing at the built programs (verify checks
    that the command exists)."""
    for unit in UNITS:
        with open(unit) as f:
            text = f.read()
        text = text.replace("/usr/sbin/odmrd", os.path.join(BIN, "odmrd"))
        text = text.replace("/usr/bin/odmr-client", os.path.join(BIN, "odmr-client"))
        with open(os.path.join(tmp, os.path.basename(unit)), "w") as f:
            f.write(text)
    return [os.path.basename(u) for u in UNITS]


@needs_analyze
def test_systemd_analyze_verify_every_unit():
    assert "odmrd.service" in [os.path.basename(u) for u in UNITS]
    with tempfile.TemporaryDirectory() as tmp:
        names = units_with_our_binaries(tmp)
        r = subprocess.run([ANALYZE, "verify", "--man=no"] + names, cwd=tmp,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@needs_analyze
def test_odmrd_service_exposure():
    r = subprocess.run([ANALYZE, "security", "--offline=yes",
                        os.path.join(ROOT, "contrib", "odmrd.service")],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for odmrd.service: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    print("odmrd.service exposure: %s %s" % (m.group(1), m.group(2)))
    assert float(m.group(1)) <= 3.0, r.stdout


def test_sigterm_while_starting_is_a_graceful_stop(make_odmrd):
    """systemctl stop right after start: the handlers are in place before the first port
    opens, so SIGTERM as soon as a port answers ends odmrd with 0, not by the signal."""
    d = make_odmrd(start=False)
    for _ in range(5):
        d.logf = open(d.log_path, "ab")
        d.proc = subprocess.Popen([os.path.join(conftest.BIN, "odmrd"), "-c", d.conf],
                                  stdout=d.logf, stderr=d.logf)
        wait_port(d.smtp_port, proc=d.proc)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=30) == 0, d.log()
        d.stop()
