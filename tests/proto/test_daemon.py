# SPDX-License-Identifier: ISC
"""Daemon behaviour: graceful stop, reload, config check, privileges."""
import os
import signal
import socket
import stat
import subprocess
import time

from conftest import BIN
from smtpwire import greet, transaction


def odmrd_check(conf):
    return subprocess.run([os.path.join(BIN, "odmrd"), "-c", conf, "-t"], capture_output=True,
                          text=True, timeout=30)


def test_sigterm_gives_421_and_keeps_committed_mail(make_odmrd):
    d = make_odmrd()
    w = greet(d.smtp_port)
    transaction(w)
    w.expect("DATA", 354)
    w.send("Subject: kept\r\n\r\nkept\r\n.\r\n")
    assert w.reply().code == 250
    in_data = greet(d.smtp_port)
    transaction(in_data)
    in_data.expect("DATA", 354)
    in_data.send("Subject: cut\r\n\r\nhalf")
    idle = greet(d.smtp_port)
    time.sleep(0.2)
    d.proc.send_signal(signal.SIGTERM)
    for conn in (in_data, idle):
        r = conn.reply()
        assert r.code == 421 and r.enhanced == "4.3.2", r
        assert conn.closed()
    assert d.proc.wait(timeout=10) == 0
    d.proc = None
    d.logf.close()
    d.start()
    ids = d.queue_ids()
    assert len(ids) == 1
    assert d.queue_body(ids[0]).endswith(b"Subject: kept\r\n\r\nkept\r\n")


def test_sigterm_with_an_implicit_tls_session_that_never_shook_hands(make_odmrd):
    """A connection to the implicit-TLS ODMR port that never does its handshake: the 421 at
    SIGTERM cannot be written to it, so the session must end by its flush timeout (30 s, or
    the command timeout if shorter: 2 s here) instead of keeping odmrd alive forever."""
    d = make_odmrd(extra={"intake.command_timeout": "2s"})
    silent = socket.create_connection(("127.0.0.1", d.odmrs_port))
    deadline = time.time() + 10
    while "event=odmr.start" not in d.log() and time.time() < deadline:
        time.sleep(0.05)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=45) == 0
    silent.close()
    d.proc = None
    d.logf.close()


def test_sighup_reloads_users(odmrd):
    w = greet(odmrd.smtp_port)
    w.expect("MAIL FROM:<a@b.example>", 250)
    w.expect("RCPT TO:<u@new.example>", 550, "5.7.1")
    odmrd.ctl("user", "add", "carol", "new.example", input="carol-pw\n")
    odmrd.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 5
    while "users.reloaded" not in odmrd.log() and time.time() < deadline:
        time.sleep(0.05)
    w.expect("RCPT TO:<u@new.example>", 250)


def test_config_check_ok(odmrd):
    r = odmrd_check(odmrd.conf)
    assert r.returncode == 0 and "configuration ok" in r.stdout


def test_config_check_errors(odmrd, tmp_path):
    cases = [
        ("[server]\nbogus = 1\n", "unknown key \"bogus\""),
        ("[intake]\nmax_message_size = huge\n", "bad size"),
        ("[intake]\nsmtp_listen = nowhere\n", "expected host:port"),
        ("[server]\nusers = /nonexistent/users\n", "/nonexistent/users"),
    ]
    for text, needle in cases:
        conf = tmp_path / "bad.conf"
        conf.write_text(text)
        r = odmrd_check(str(conf))
        assert r.returncode != 0, text
        assert needle in r.stderr, (text, r.stderr)
    r = odmrd_check(str(tmp_path / "missing.conf"))
    assert r.returncode != 0 and "missing.conf" in r.stderr


def test_users_file_must_be_private(odmrd):
    os.chmod(odmrd.users, 0o644)
    r = odmrd_check(odmrd.conf)
    assert r.returncode != 0 and "chmod" in r.stderr
    os.chmod(odmrd.users, 0o600)


def test_root_needs_user(odmrd, tmp_path):
    if os.geteuid() != 0:
        return
    conf = tmp_path / "root.conf"
    conf.write_text(open(odmrd.conf).read().replace("user = nobody\n", ""))
    r = subprocess.run([os.path.join(BIN, "odmrd"), "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    # With no [server] user it must refuse before binding anything, naming the key.
    assert r.returncode != 0
    assert "set [server] user" in r.stderr


def test_runs_as_unprivileged_user(make_odmrd):
    if os.geteuid() != 0:
        return
    d = make_odmrd(extra={"server.user": "nobody"}, start=False)
    os.chmod(d.dir, 0o755)
    d.start()
    status = open("/proc/%d/status" % d.proc.pid).read()
    uid_line = [l for l in status.splitlines() if l.startswith("Uid:")][0]
    assert uid_line.split()[1] != "0"
    w = greet(d.smtp_port)
    transaction(w)
    w.expect("DATA", 354)
    w.send("Subject: x\r\n\r\nx\r\n.\r\n")
    assert w.reply().code == 250
    owner = os.stat(d.spool).st_uid
    assert owner != 0
    assert stat.S_IMODE(os.stat(d.users).st_mode) == 0o600
