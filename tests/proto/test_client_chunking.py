# SPDX-License-Identifier: ISC
"""odmr-client's side of the reversed session, driven by a scripted provider: CHUNKING/BDAT
(RFC 3030) edge cases that odmrd's own push never produces."""
import os
import socket
import subprocess
import tempfile
import threading

from test_client import CLIENT, Sink
from smtpwire import Wire


class SessionClosed(Exception):
    """The script saw the client close the session (no QUIT to send)."""


class FakeProvider:
    """Accepts one odmr-client connection, lets it authenticate (CRAM-MD5, any response), answers
    ATRN with 250, then runs `script(wire)` as the SMTP client of the reversed session."""

    def __init__(self, script, quit=True):
        self.quit = quit          # False: the script ends with the client gone, no QUIT
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.listener.accept()
            w = Wire.__new__(Wire)
            w.sock, w.buf = conn, b""
            w.sock.settimeout(10)
            w.send("220 fake.provider ESMTP\r\n")
            assert w.readline().upper().startswith(b"EHLO")
            w.send("250-fake.provider\r\n250-AUTH CRAM-MD5\r\n250 ATRN\r\n")
            assert w.readline().upper().startswith(b"AUTH CRAM-MD5")
            w.send("334 PDEyMzQ1QGZha2U+\r\n")
            w.readline()
            w.send("235 2.7.0 ok\r\n")
            assert w.readline().upper().startswith(b"ATRN")
            w.send("250 2.0.0 turning around\r\n")
            assert w.reply().code == 220
            r = w.cmd("EHLO fake.provider")
            assert r.code == 250 and "CHUNKING" in r.lines, r
            self.script(w)
            if self.quit:
                w.expect("QUIT", 221)
        except Exception as e:  # reported by the test
            self.error = e

    def finish(self):
        self.thread.join(timeout=20)
        self.listener.close()
        assert self.error is None, self.error


def run_client(port, target):
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("secret\n")
    os.chmod(f.name, 0o600)
    try:
        return subprocess.run([CLIENT, "--server", "127.0.0.1:%d" % port, "--user", "u",
                               "--password-file", f.name, "--deliver", target, "--tls", "none",
                               "--mech", "CRAM-MD5", "--timeout", "0.05"],
                              capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)


def test_bdat_chunks_zero_length_last_and_sequence_errors():
    body1 = b"Subject: chunked\r\n\r\nfirst part, "
    body2 = b"second part\r\n.a line starting with a dot stays as it is\r\n"

    def script(w):
        # BDAT before MAIL: the chunk is read and thrown away, then 503.
        w.send(b"BDAT 5\r\nhello")
        assert w.reply().code == 503
        w.expect("MAIL FROM:<s@sender.example>", 250)
        w.expect("RCPT TO:<u@example.org>", 250)
        w.send(b"BDAT %d\r\n" % len(body1) + body1)
        assert w.reply().code == 250
        w.expect("DATA", 503)
        w.send(b"BDAT %d\r\n" % len(body2) + body2)
        assert w.reply().code == 250
        w.send(b"BDAT 0 LAST\r\n")
        r = w.reply()
        assert r.code == 250, r
        # A second message in one pipelined write: MAIL, RCPT, BDAT LAST.
        body3 = b"Subject: second\r\n\r\nno dot-stuffing: \r\n.\r\n in the middle\r\n"
        w.send(b"MAIL FROM:<>\r\nRCPT TO:<v@example.org>\r\nBDAT %d LAST\r\n" % len(body3)
               + body3)
        assert [w.reply().code for _ in range(3)] == [250, 250, 250]

    sink = Sink()
    provider = FakeProvider(script)
    r = run_client(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    assert [(m[0], m[1], m[2]) for m in sink.messages] == [
        ("s@sender.example", ["u@example.org"], body1 + body2),
        ("", ["v@example.org"],
         b"Subject: second\r\n\r\nno dot-stuffing: \r\n.\r\n in the middle\r\n"),
    ]


def test_bdat_bad_size_closes():
    def script(w):
        w.expect("MAIL FROM:<s@sender.example>", 250)
        w.expect("RCPT TO:<u@example.org>", 250)
        w.send(b"BDAT lots\r\n")
        assert w.reply().code == 501
        assert w.closed()
        raise SessionClosed()

    sink = Sink()
    provider = FakeProvider(script)
    run_client(provider.port, sink.target())
    provider.thread.join(timeout=20)
    provider.listener.close()
    assert isinstance(provider.error, SessionClosed), provider.error
    assert sink.messages == []
