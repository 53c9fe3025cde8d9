# SPDX-License-Identifier: ISC
"""SIGHUP reloads the TLS certificate and key (issue 11): new sessions get the new pair (an
ECDSA key after odmrd's RSA one), a session already running keeps going; a pair that does
not load, or files the account cannot see, leave the old pair in place."""
import hashlib
import os
import pwd
import signal
import smtplib
import socket
import ssl
import subprocess
import time

from conftest import BIN
from lifecycle import wait_log


def context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsSession:
    """An implicit-TLS ODMR session: greeting read, EHLO sent."""

    def __init__(self, port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context().wrap_socket(raw)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")
        self.command(b"EHLO client.example", b"250")

    def reply(self):
        while True:
            line = self.file.readline()
            if line[3:4] != b"-":
                return line

    def command(self, line, code):
        self.sock.sendall(line + b"\r\n")
        got = self.reply()
        assert got.startswith(code), got

    def fingerprint(self):
        return hashlib.sha256(self.sock.getpeercert(binary_form=True)).hexdigest()

    def close(self):
        self.command(b"QUIT", b"221")
        self.sock.close()


def fingerprint_of_port(port):
    s = TlsSession(port)
    fp = s.fingerprint()
    s.close()
    return fp


def fingerprint_of_starttls(port):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.starttls(context=context())
        return hashlib.sha256(smtp.sock.getpeercert(binary_form=True)).hexdigest()


def fingerprint_of_pem(path):
    der = subprocess.run(["openssl", "x509", "-in", path, "-outform", "DER"],
                         capture_output=True, check=True, timeout=30).stdout
    return hashlib.sha256(der).hexdigest()


def let_the_account_see(d):
    """odmrd makes its TLS directory root's, 0700; the account odmrd switches to must be able
    to look at the files (and read them) for a reload."""
    if d.run_user:
        pw = pwd.getpwnam(d.run_user)
        os.chown(os.path.join(d.dir, "tls"), pw.pw_uid, pw.pw_gid)


def new_pair(d, name, mismatched=False):
    """An ECDSA pair written beside odmrd's files, then renamed over them (as a deploy hook
    copies a renewed certificate), readable by the account odmrd runs as."""
    tls = os.path.join(d.dir, "tls")
    cert, key = os.path.join(tls, name + ".cert"), os.path.join(tls, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                    "/CN=" + name, "-keyout", key, "-out", cert], capture_output=True,
                   check=True, timeout=60)
    if mismatched:
        other = key + ".other"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", other], check=True, timeout=60)
        os.replace(other, key)
    let_the_account_see(d)
    if d.run_user:
        pw = pwd.getpwnam(d.run_user)
        for path in (cert, key):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    os.replace(cert, os.path.join(tls, "cert.pem"))
    os.replace(key, os.path.join(tls, "key.pem"))
    return os.path.join(tls, "cert.pem")


def sighup_and_wait(d, event):
    before = d.log().count(event)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, event, before + 1)
    wait_log(d, "event=users.reloaded", d.log().count("event=users.reloaded"))


def test_new_sessions_get_the_new_certificate_running_ones_go_on(make_odmrd):
    d = make_odmrd()
    wait_log(d, "event=started")
    old = fingerprint_of_port(d.odmrs_port)
    running = TlsSession(d.odmrs_port)
    assert running.fingerprint() == old
    cert = new_pair(d, "renewed.test.example")
    sighup_and_wait(d, "event=tls.reloaded")
    new = fingerprint_of_pem(cert)
    assert new != old
    assert fingerprint_of_port(d.odmrs_port) == new           # ODMR, implicit TLS
    assert fingerprint_of_starttls(d.smtp_port) == new         # intake STARTTLS
    pin = subprocess.run([os.path.join(BIN, "odmrctl"), "tls", "pin", cert],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert "event=tls.reloaded cert=%s pin=%s" % (cert, pin) in d.log()
    running.command(b"NOOP", b"250")                           # undisturbed
    assert running.fingerprint() == old
    running.close()
    assert d.stop() == 0


def test_a_pair_that_does_not_load_keeps_the_old_one(make_odmrd):
    d = make_odmrd()
    wait_log(d, "event=started")
    old = fingerprint_of_port(d.odmrs_port)
    let_the_account_see(d)
    d.proc.send_signal(signal.SIGHUP)                          # nothing changed: nothing said
    wait_log(d, "event=users.reloaded")
    assert "event=tls." not in d.log().split("event=started")[1]
    new_pair(d, "broken.test.example", mismatched=True)
    sighup_and_wait(d, "event=tls.reload_failed")
    assert "keeping=old" in d.log()
    assert fingerprint_of_port(d.odmrs_port) == old
    assert d.stop() == 0


def test_files_the_account_cannot_see_keep_the_old_pair(make_odmrd):
    d = make_odmrd()
    if not d.run_user:
        return                                  # only root switches accounts
    wait_log(d, "event=started")
    old = fingerprint_of_port(d.odmrs_port)
    new_pair(d, "hidden.test.example")
    os.chown(os.path.join(d.dir, "tls"), 0, 0)
    os.chmod(os.path.join(d.dir, "tls"), 0o700)
    sighup_and_wait(d, "event=tls.not_reloaded")
    assert "level=warn event=tls.not_reloaded error=\"%s/tls/cert.pem: Permission denied\"" \
        % d.dir in d.log()
    assert fingerprint_of_port(d.odmrs_port) == old
    sighup_and_wait(d, "event=tls.not_reloaded")                # said once, then debug
    assert "level=debug event=tls.not_reloaded" in d.log()
    assert d.stop() == 0
