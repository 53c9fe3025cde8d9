# SPDX-License-Identifier: ISC
"""Interop with Debian's fetchmail (6.4.x) as the ODMR customer (RFC 2645; DESIGN section 5).

fetchmail authenticates with CRAM-MD5 (always), sends `ATRN <fetchdomains>`, and after the `250`
becomes a line-by-line pipe between odmrd and its `smtphost`. The smtphost here is `Sink`, a small
threaded SMTP server on loopback that records each transaction's envelope and exact data octets,
and can be told to refuse a recipient with 550 or every MAIL with 451.

Exit codes: man fetchmail (EXIT CODES) documents 0 mail retrieved, 1 no mail, 2 socket error,
3 authentication failed. In ODMR mode 6.4.37 really gives 0 for "453 You have no mail" and 128
for "535" (asserted below, so a fetchmail that changes this shows up here). docs/fetchmail.md is
the guide these tests back.
"""
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading

import pytest

from notices import check_failed_notice, for_original
from saslclient import cram_md5_response
from smtpwire import Wire

FETCHMAIL = shutil.which("fetchmail") or "/usr/bin/fetchmail"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

pytestmark = pytest.mark.skipif(not os.access(FETCHMAIL, os.X_OK), reason="fetchmail not installed")

USERS = {
    "alice": ("alice-secret", ["example.org", "example.net"], []),
    "bob": ("bob-secret", ["bob.example"], []),
}
ALICE_DOMAINS = ("example.org", "example.net")

EXIT_MAIL, EXIT_NOMAIL, EXIT_SOCKET, EXIT_AUTHFAIL = 0, 1, 2, 3
# What fetchmail 6.4.37 really returns in ODMR mode (tests a and e; docs/fetchmail.md).
EXIT_ODMR_NOMAIL = 0        # after ATRN's 453, although the man page says 1
EXIT_ODMR_AUTHFAIL = 128    # after AUTH's 535, although the man page says 3


# ---------------------------------------------------------------- the local SMTP listener

def unstuff(lines):
    """RFC 5321 4.5.2: drop the leading dot a sender added to a line starting with a dot."""
    return b"".join(line[1:] if line.startswith(b".") else line for line in lines)


class Sink:
    """SMTP server on 127.0.0.1 (one thread per connection). It advertises PIPELINING, CHUNKING
    and STARTTLS (as a real MTA behind fetchmail would) but implements none of them: odmrd's
    compat profile must not use them (docs/push.md). `reject` holds recipients answered 550;
    `mail_reply`, when set, answers every MAIL."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.reject = set()
        self.mail_reply = None
        self.lmtp_only = False      # behave like an LMTP server: 500 to EHLO and HELO
        self.transactions = []      # {"mail_from", "rcpts", "raw", "data"} per accepted DATA
        self.commands = []          # every command line received, in order
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.acceptor = threading.Thread(target=self.accept_loop, daemon=True)
        self.acceptor.start()

    def accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
            t = threading.Thread(target=self.serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def serve(self, conn):
        conn.settimeout(60)
        f = conn.makefile("rb")
        try:
            self.session(conn, f)
        except (OSError, ValueError):
            pass
        finally:
            f.close()
            conn.close()

    def session(self, conn, f):
        def send(text):
            conn.sendall(text.encode())

        send("220 sink.customer.example ESMTP test sink\r\n")
        mail_from, rcpts = None, []
        while True:
            line = f.readline(4096)
            if not line:
                return
            command = line.rstrip(b"\r\n").decode("latin-1")
            with self.lock:
                self.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if self.lmtp_only and verb in ("EHLO", "HELO"):
                send("500 5.5.1 unknown command\r\n")
            elif verb == "EHLO":
                send("250-sink.customer.example\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n"
                     "250-8BITMIME\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == "HELO":
                send("250 sink.customer.example\r\n")
            elif verb == "MAIL":
                if self.mail_reply:
                    send(self.mail_reply + "\r\n")
                    continue
                mail_from, rcpts = command[len("MAIL FROM:"):].split(" ")[0], []
                send("250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                address = command[len("RCPT TO:"):].split(" ")[0].strip("<>")
                if mail_from is None:
                    send("503 5.5.1 need MAIL\r\n")
                elif address in self.reject:
                    send("550 5.1.1 <%s>: Recipient address rejected: no such user\r\n" % address)
                else:
                    rcpts.append(address)
                    send("250 2.1.5 Ok\r\n")
            elif verb == "DATA":
                if not rcpts:
                    send("554 5.5.1 no valid recipients\r\n")
                    continue
                send("354 End data with <CR><LF>.<CR><LF>\r\n")
                lines = []
                while True:
                    data_line = f.readline(1 << 20)
                    if not data_line:
                        return
                    if data_line == b".\r\n":
                        break
                    lines.append(data_line)
                with self.lock:
                    self.transactions.append({"mail_from": mail_from.strip("<>"),
                                              "rcpts": list(rcpts), "raw": b"".join(lines),
                                              "data": unstuff(lines)})
                    n = len(self.transactions)
                mail_from, rcpts = None, []
                send("250 2.0.0 Ok: queued as SINK%d\r\n" % n)
            elif verb == "RSET":
                mail_from, rcpts = None, []
                send("250 2.0.0 Ok\r\n")
            elif verb == "NOOP":
                send("250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                send("221 2.0.0 Bye\r\n")
                return
            else:
                send("502 5.5.2 not implemented here\r\n")

    def stop(self):
        self.stopping.set()
        self.lsock.close()
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()


@pytest.fixture
def prov(make_odmrd):
    return make_odmrd(users=USERS)


# ---------------------------------------------------------------- fetchmail

class FetchmailRun:
    def __init__(self, returncode, output):
        self.returncode = returncode
        self.output = output

    def __repr__(self):
        return "fetchmail exit %d:\n%s" % (self.returncode, self.output)


def run_fetchmail(workdir, port, sink_port, user="alice", password="alice-secret",
                  domains=ALICE_DOMAINS, tls=None, timeout=120, name="fetchmail",
                  poll=None, tls_options=""):
    """One poll (`-N`, no daemon). `tls` is None for plaintext or the CA file for implicit TLS
    with certificate checking. Returns FetchmailRun; the dialogue (-v) is in .output."""
    home = os.path.join(workdir, name)
    os.makedirs(home, exist_ok=True)
    rc = os.path.join(home, "fetchmailrc")
    lines = [
        "set no syslog",
        "set no bouncemail",
        "poll %s with protocol ODMR service %d timeout 60"
        % (poll or ("localhost" if tls else "127.0.0.1"), port),
        '    user "%s" there with password "%s"' % (user, password),
        "    fetchdomains %s" % ",".join(domains),
        "    smtphost 127.0.0.1/%d" % sink_port,
    ]
    if tls:
        lines.append('    ssl sslcertck sslcertfile "%s"%s' % (tls, tls_options))
    fd = os.open(rc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=home, FETCHMAILHOME=home, LC_ALL="C")
    p = subprocess.Popen([FETCHMAIL, "-f", rc, "--nodetach", "--nosyslog", "-v",
                          "--pidfile", os.path.join(home, "fetchmail.pid"),
                          "--idfile", os.path.join(home, "fetchids")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=home)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError("fetchmail did not finish within %d s:\n%s"
                             % (timeout, out.decode(errors="replace")))
    return FetchmailRun(p.returncode, out.decode(errors="replace"))


# ---------------------------------------------------------------- helpers

def inject(d, sender, rcpts, body):
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        refused = s.sendmail(sender, rcpts, body)
        assert not refused, refused


def held_ids(d, domains=ALICE_DOMAINS):
    ids = set()
    for domain in domains:
        ids.update(d.queue_ids(domain))
    return ids


def inject_three(d):
    """The three messages of case (a); returns {subject: (sender, alice's recipients)}."""
    inject(d, "one@sender.example", ["u1@example.org"],
           b"Subject: one\r\nFrom: one@sender.example\r\n\r\nfirst message\r\n")
    inject(d, "dot@sender.example", ["u2@example.net"],
           b"Subject: dot\r\n\r\nbefore\r\n.a line starting with a dot\r\n..two dots\r\n"
           b".\r\n \r\nafter\r\n")
    inject(d, "multi@sender.example", ["m1@example.org", "m2@example.net", "other@bob.example"],
           b"Subject: multi\r\n\r\nfor two of alice's domains and one of bob's\r\n")
    return {
        "one": ("one@sender.example", ["u1@example.org"]),
        "dot": ("dot@sender.example", ["u2@example.net"]),
        "multi": ("multi@sender.example", ["m1@example.org", "m2@example.net"]),
    }


def recipients(show):
    """Parse `odmrctl queue show`: {address: {"state", "attempts", "last_reply", ...}}."""
    result, current = {}, None
    for line in show.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and "] <" in stripped:
            current = result.setdefault(stripped.split("<", 1)[1].rstrip(">"), {})
        elif current is not None and stripped.startswith("last_reply="):
            current["last_reply"] = stripped[len("last_reply="):]
        elif current is not None:
            for field in stripped.split():
                if "=" in field:
                    key, value = field.split("=", 1)
                    current[key] = value
    return result


def subject_of(octets):
    for line in octets.split(b"\r\n"):
        if line.startswith(b"Subject: "):
            return line[len(b"Subject: "):].decode()
    return None


def stored_bodies(d, ids):
    """Stored octets (with odmrd's Received header) by subject."""
    return {subject_of(body): body for body in (d.queue_body(i) for i in ids)}


def assert_delivered(sink, expected, bodies):
    """Each message arrived once, byte-exact, with exactly alice's recipients."""
    got = {subject_of(t["data"]): t for t in sink.transactions}
    assert len(sink.transactions) == len(expected), sink.transactions
    assert set(got) == set(expected)
    for subject, (sender, rcpts) in expected.items():
        t = got[subject]
        assert t["data"] == bodies[subject], subject
        assert t["mail_from"] == sender
        assert sorted(t["rcpts"]) == sorted(rcpts)
    for command in sink.commands:
        assert command.split(" ")[0].upper() not in ("STARTTLS", "BDAT"), sink.commands


# ---------------------------------------------------------------- (a) plaintext

def test_plaintext_delivery_byte_exact(prov, sink, workdir):
    expected = inject_three(prov)
    ids = held_ids(prov)
    assert len(ids) == 3
    bodies = stored_bodies(prov, ids)
    bob_before = prov.queue_ids("bob.example")
    assert len(bob_before) == 1

    run = run_fetchmail(workdir, prov.odmr_port, sink.port)
    assert run.returncode == EXIT_MAIL, run
    assert_delivered(sink, expected, bodies)
    # The dot-stuffed line went over the wire stuffed, and came out as stored.
    dot = [t for t in sink.transactions if subject_of(t["data"]) == "dot"][0]
    assert b"\r\n..a line starting with a dot\r\n...two dots\r\n..\r\n" in dot["raw"]

    # Nothing left for alice; bob's recipient of the shared message stays queued, pending.
    assert held_ids(prov) == set()
    assert prov.queue_ids("bob.example") == bob_before
    rcpts = recipients(prov.queue_show(bob_before[0]))
    assert rcpts["other@bob.example"]["state"] == "pending"
    assert rcpts["other@bob.example"]["attempts"] == "0"
    assert rcpts["m1@example.org"]["state"] == rcpts["m2@example.net"]["state"] == "done"

    # A second poll: 453 You have no mail. The man page's "no mail" code is 1, but fetchmail
    # 6.4.x's ODMR driver ends such a poll with 0 ("normal termination, status 0").
    again = run_fetchmail(workdir, prov.odmr_port, sink.port, name="fetchmail2")
    assert again.returncode == EXIT_ODMR_NOMAIL, again
    assert "ODMR< 453 4.3.0 You have no mail" in again.output, again
    assert sink.connections == 1
    assert len(sink.transactions) == 3


# ---------------------------------------------------------------- (b) implicit TLS

def openssl(*args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=odmrd test CA %s" % name, "-keyout", "%s.key" % name,
            "-out", "%s.pem" % name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return os.path.join(d, "%s.pem" % name)


@pytest.fixture
def pki(workdir):
    """A test CA, a server certificate for localhost/127.0.0.1 signed by it, and an unrelated
    CA (the wrong one)."""
    d = os.path.join(workdir, "pki")
    os.makedirs(d)
    ca = make_ca(d, "ca")
    wrong = make_ca(d, "wrong")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem", cwd=d)
    return {"ca": ca, "wrong": wrong, "cert": os.path.join(d, "server.pem"),
            "key": os.path.join(d, "server.key")}


def test_implicit_tls_with_certificate_check(make_odmrd, sink, workdir, pki):
    prov = make_odmrd(users=USERS, extra={"tls.cert": pki["cert"], "tls.key": pki["key"]})
    expected = inject_three(prov)
    # A longer message: many lines that must each reach fetchmail in their own TLS record.
    long_body = b"Subject: long\r\n\r\n" + b"".join(
        b"%s line %04d of a longer message\r\n" % (b"." if n % 7 == 0 else b"", n)
        for n in range(400))
    inject(prov, "long@sender.example", ["l1@example.org"], long_body)
    expected["long"] = ("long@sender.example", ["l1@example.org"])
    ids = held_ids(prov)
    bodies = stored_bodies(prov, ids)

    # The wrong CA: fetchmail refuses the certificate, nothing is delivered, the queue is intact.
    refused = run_fetchmail(workdir, prov.odmrs_port, sink.port, tls=pki["wrong"], name="wrong")
    assert refused.returncode == EXIT_SOCKET, refused
    assert "certificate verify failed" in refused.output, refused
    assert "AUTH" not in refused.output
    assert sink.transactions == [] and sink.connections == 0
    assert held_ids(prov) == ids

    run = run_fetchmail(workdir, prov.odmrs_port, sink.port, tls=pki["ca"], name="right")
    assert run.returncode == EXIT_MAIL, run
    assert "Subject CommonName: localhost" in run.output, run
    assert "verification error" not in run.output, run
    assert_delivered(sink, expected, bodies)
    assert held_ids(prov) == set()
    log = prov.log()
    assert "event=push.start" in log and "profile=compat tls=1" in log, log
    assert "messages=4 delivered=5 deferred=0 failed=0 clean=1" in log, log


def test_implicit_tls_with_odmrd_self_signed_certificate(prov, sink, workdir):
    """The certificate odmrd makes on first run (CN and DNS name = [server] hostname) works when
    the customer is given it as sslcertfile and, polling by address, names it in sslcommonname."""
    inject(prov, "s@sender.example", ["u@example.org"], b"Subject: self\r\n\r\nbody\r\n")
    ids = held_ids(prov)
    bodies = stored_bodies(prov, ids)
    cert = os.path.join(prov.dir, "tls", "cert.pem")
    poll = "mx.test.example via 127.0.0.1"
    mismatch = run_fetchmail(workdir, prov.odmrs_port, sink.port, tls=cert, poll=poll,
                             name="mismatch")
    assert mismatch.returncode == EXIT_SOCKET, mismatch
    assert "hostname mismatch" in mismatch.output, mismatch
    assert held_ids(prov) == ids and sink.connections == 0

    run = run_fetchmail(workdir, prov.odmrs_port, sink.port, tls=cert, poll=poll,
                        tls_options=" sslcommonname mx.test.example", name="named")
    assert run.returncode == EXIT_MAIL, run
    assert_delivered(sink, {"self": ("s@sender.example", ["u@example.org"])}, bodies)
    assert held_ids(prov) == set()


# ---------------------------------------------------------------- (c) a recipient refused

def test_recipient_refused_with_550(prov, sink, workdir):
    with smtplib.SMTP("127.0.0.1", prov.smtp_port, timeout=30) as s:
        refused = s.sendmail("s@sender.example",
                             ["good1@example.org", "bad@example.org", "good2@example.net"],
                             b"Subject: partly refused\r\n\r\nbody-only-text\r\n",
                             mail_options=["ENVID=fm+2B42"], rcpt_options=["ORCPT=rfc822;x+2By"])
        assert not refused, refused
    inject(prov, "s@sender.example", ["good3@example.net"], b"Subject: fine\r\n\r\nbody\r\n")
    ids = held_ids(prov)
    bodies = stored_bodies(prov, ids)
    partly = [i for i in ids if subject_of(prov.queue_body(i)) == "partly refused"][0]
    sink.reject.add("bad@example.org")

    run = run_fetchmail(workdir, prov.odmr_port, sink.port)
    assert run.returncode == EXIT_MAIL, run
    assert_delivered(sink, {
        "partly refused": ("s@sender.example", ["good1@example.org", "good2@example.net"]),
        "fine": ("s@sender.example", ["good3@example.net"]),
    }, bodies)

    # The refused recipient's failed notice is committed (held for the admin: sender.example
    # is not hosted), then the original is gone: its other recipients were delivered.
    assert held_ids(prov) == set()
    assert partly not in prov.queue_ids()
    [n] = for_original(prov, partly)
    check_failed_notice(n, partly, "s@sender.example", {"bad@example.org": {
        "status": "5.1.1", "remote": "sink.customer.example", "orcpt": "rfc822; x+y",
        "diagnostic": "smtp; 550 5.1.1 <bad@example.org>: Recipient address rejected: "
                      "no such user"}}, envid="fm+42", subject="partly refused",
        body_marker="body-only-text")
    assert "event=notice.failed" in prov.log() and "held=admin" in prov.log()

    # A later poll does not retry the refused recipient.
    before = len(sink.transactions)
    again = run_fetchmail(workdir, prov.odmr_port, sink.port, name="again")
    assert again.returncode == EXIT_ODMR_NOMAIL and "You have no mail" in again.output, again
    assert len(sink.transactions) == before


# ---------------------------------------------------------------- (d) temporary failure

def test_temporary_failure_keeps_mail_then_delivers(prov, sink, workdir):
    expected = inject_three(prov)
    ids = held_ids(prov)
    bodies = stored_bodies(prov, ids)
    sink.mail_reply = "451 4.3.0 sink is busy, try later"

    # fetchmail cannot see the outcome of the relayed transactions: it ends with 0.
    run = run_fetchmail(workdir, prov.odmr_port, sink.port, name="busy")
    assert run.returncode == EXIT_MAIL, run
    assert run.output.count("ODMR> 451 4.3.0 sink is busy") == 3, run
    assert sink.transactions == []
    assert held_ids(prov) == ids
    for i in ids:
        for address, r in recipients(prov.queue_show(i)).items():
            if address.endswith("@bob.example"):
                assert r["state"] == "pending" and r["attempts"] == "0", r
                continue
            assert r["state"] == "pending" and r["attempts"] == "1", (address, r)
            assert r["last_reply"] == "451 4.3.0 sink is busy, try later", r

    sink.mail_reply = None
    healthy = run_fetchmail(workdir, prov.odmr_port, sink.port, name="healthy")
    assert healthy.returncode == EXIT_MAIL, healthy
    assert_delivered(sink, expected, bodies)
    assert held_ids(prov) == set()


# ---------------------------------------------------------------- (e) wrong password

def test_wrong_password(prov, sink, workdir):
    inject(prov, "s@sender.example", ["u@example.org"], b"Subject: x\r\n\r\nbody\r\n")
    ids = held_ids(prov)
    run = run_fetchmail(workdir, prov.odmr_port, sink.port, password="not-the-password")
    assert "SMTP< 535 5.7.8" in run.output, run
    # man fetchmail documents 3 (AUTHFAIL); 6.4.37's ODMR driver leaks its internal SMTP error
    # value instead (SM_ERROR = 128, "Query status=128").
    assert run.returncode == EXIT_ODMR_AUTHFAIL, run
    assert sink.connections == 0 and sink.transactions == []
    assert held_ids(prov) == ids
    assert "result=failed" in prov.log()


# ---------------------------------------------------------------- smtphost is an LMTP server

def test_lmtp_smtphost_keeps_mail_queued(prov, sink, workdir):
    """fetchmail relays blindly and sends no LHLO: odmrd's EHLO and HELO both get 500 from an
    LMTP server. odmrd ends the push; nothing is attempted, the mail stays queued untouched."""
    inject(prov, "s@sender.example", ["u@example.org"], b"Subject: x\r\n\r\nbody\r\n")
    ids = held_ids(prov)
    sink.lmtp_only = True
    run = run_fetchmail(workdir, prov.odmr_port, sink.port)
    assert run.returncode == EXIT_MAIL, run     # fetchmail does not notice
    assert [c.split(" ")[0] for c in sink.commands][:2] == ["EHLO", "HELO"], sink.commands
    assert not any(c.startswith("MAIL") for c in sink.commands), sink.commands
    assert held_ids(prov) == ids
    r = recipients(prov.queue_show(ids.pop()))["u@example.org"]
    assert r["state"] == "pending" and r["attempts"] == "0", r
    assert 'clean=0 reason="refused: HELO refused: 500' in prov.log()


# ---------------------------------------------------------------- TLS close_notify

def strict_eof_context():
    """A client context that reports a TCP EOF without close_notify (Python ignores it by
    default), as fetchmail does: "SSL routines::unexpected eof while reading"."""
    ctx = ssl._create_unverified_context()
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def read_to_eof(w):
    w.sock.settimeout(10)
    while w.sock.recv(65536):
        pass


def test_tls_close_notify_after_quit_and_after_push(prov):
    # Before the turnaround: QUIT, 221, then the TLS session must end with close_notify.
    w = Wire(prov.odmrs_port)
    w.starttls(strict_eof_context())
    assert w.reply().code == 220
    w.expect("QUIT", 221)
    quit_error = None
    try:
        read_to_eof(w)
    except ssl.SSLError as e:
        quit_error = e

    # After the push: the reversed session ends with odmrd's QUIT and the customer's 221.
    inject(prov, "s@sender.example", ["u@example.org"], b"Subject: x\r\n\r\nbody\r\n")
    w = Wire(prov.odmrs_port)
    w.starttls(strict_eof_context())
    assert w.reply().code == 220
    w.expect("EHLO customer.example", 250)
    challenge = w.cmd("AUTH CRAM-MD5")
    assert challenge.code == 334
    assert w.cmd(cram_md5_response("alice", "alice-secret", challenge.lines[0])).code == 235
    w.expect("ATRN example.org", 250)
    w.send("220 customer.example ESMTP\r\n")
    while True:
        line = w.readline()
        if line == b"QUIT":
            w.send("221 bye\r\n")
            break
        if line.startswith(b"DATA"):
            w.send("354 go\r\n")
        elif line == b"." or line.split(b" ")[0] in (b"EHLO", b"MAIL", b"RCPT"):
            w.send("250 ok\r\n")
    push_error = None
    try:
        read_to_eof(w)
    except ssl.SSLError as e:
        push_error = e
    assert held_ids(prov) == set()
    assert quit_error is None and push_error is None, (quit_error, push_error)
