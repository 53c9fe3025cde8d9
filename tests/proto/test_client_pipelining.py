# SPDX-License-Identifier: ISC
"""odmr-client's relay to its target with PIPELINING (RFC 2920): [RSET] MAIL RCPT [DATA] in one
group, DATA only when the provider's DATA/BDAT is already buffered; what happens when that DATA
is answered 354 and the message then does not come (or every recipient was refused); one spool
file for the session (messages shorter than the one before); a target connection lost between
RCPT and the data; AUTH with an initial response (RFC 4954). Driven by the scripted provider of
test_client_chunking."""
import base64
import os
import socket
import subprocess
import tempfile
import threading

from test_client import CLIENT, Sink
from test_client_chunking import FakeProvider, run_client
from smtpwire import Wire


def one_write(w, sender, rcpts, body, mode="BDAT", params=""):
    """MAIL (with params), the RCPTs and the data in one write (what odmrd's fast profile
    does)."""
    out = ("MAIL FROM:<%s>%s\r\n" % (sender, params)).encode()
    for r in rcpts:
        out += b"RCPT TO:<%s>\r\n" % r.encode()
    if mode == "BDAT":
        out += b"BDAT %d LAST\r\n" % len(body) + body
    else:
        out += b"DATA\r\n"
    w.send(out)
    return [w.reply().code for _ in range(len(rcpts) + 2)]


def test_group_pipelined_and_spool_rewritten():
    big = b"Subject: big\r\n\r\n" + b"".join(b"line %06d of the big one\r\n" % i
                                            for i in range(8000))
    small = b"Subject: small\r\n\r\nshort\r\n.dot\r\n"
    middle = b"Subject: middle\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + b"m" * 5000 + b"\r\n"
    bodies = [big, small, middle, b"", small + b"no final line break"]

    def script(w):
        for body in bodies:
            codes = one_write(w, "s@sender.example", ["u@example.org"], body)
            assert codes == [250, 250, 250], codes

    sink = Sink()
    provider = FakeProvider(script)
    r = run_client(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    assert [m[2] for m in sink.messages] == bodies[:4] + [small + b"no final line break\r\n"]
    assert sink.connections == 2 and sink.aborted == 0   # the check before ATRN, the session
    # MAIL, RCPT and DATA went to the target as one group: DATA right after the RCPT.
    first = sink.commands.index("MAIL FROM:<s@sender.example>")
    assert sink.commands[first:first + 3] == ["MAIL FROM:<s@sender.example>",
                                              "RCPT TO:<u@example.org>", "DATA"]


def test_without_pipelining_one_at_a_time_and_no_rcpt_after_refused_mail():
    def script(w):
        codes = one_write(w, "refused@sender.example", ["u@example.org"], b"x\r\n")
        assert codes == [250, 553, 503], codes   # MAIL refused at the target: RCPT's verdict
        w.expect("RSET", 250)
        codes = one_write(w, "s@sender.example", ["u@example.org"], b"ok\r\n")
        assert codes == [250, 250, 250], codes

    sink = Sink(pipelining=False,
                mail_replies={"refused@sender.example": "553 5.7.1 sender refused"})
    provider = FakeProvider(script)
    r = run_client(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    # No RCPT after the refused MAIL; DATA only once the message is there (no PIPELINING).
    cmds = [c.split(":")[0] for c in sink.commands if c.split(" ")[0] in ("MAIL", "RCPT", "DATA")]
    assert cmds == ["MAIL FROM", "MAIL FROM", "RCPT TO", "DATA"], sink.commands
    assert [m[2] for m in sink.messages] == [b"ok\r\n"]


def test_every_recipient_refused_but_354_gets_a_lone_dot():
    """The test Sink answers DATA with 354 even without recipients (RFC 5321 allows 503/554
    only as a MAY): RFC 2920 3.1 says to send a single dot then. The provider's BDAT is
    refused by odmr-client's engine (no recipient), the target connection stays usable."""
    def script(w):
        codes = one_write(w, "s@sender.example", ["nobody@example.org"], b"lost\r\n")
        assert codes == [250, 550, 503], codes
        w.expect("RSET", 250)
        codes = one_write(w, "s@sender.example", ["u@example.org"], b"second\r\n")
        assert codes == [250, 250, 250], codes

    sink = Sink(rcpt_replies={"nobody@example.org": "550 5.1.1 no such user"})
    provider = FakeProvider(script)
    r = run_client(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    delivered = [m for m in sink.messages if m[1]]
    assert [(m[1], m[2]) for m in delivered] == [(["u@example.org"], b"second\r\n")]
    assert sink.connections == 2 and sink.aborted == 0


def test_data_answered_354_then_message_rejected_drops_the_target_connection():
    """DATA went to the target with the RCPT (the provider's DATA was buffered behind it), then
    the message is rejected by odmr-client's engine (bare LF): the target must never see the
    dot, nor a command inside its data. The connection is dropped, the next message reopens."""
    def script(w):
        codes = one_write(w, "s@sender.example", ["u@example.org"], b"", mode="DATA")
        assert codes == [250, 250, 354], codes
        w.send(b"Subject: bad\r\n\r\nbare\nLF\r\n.\r\n")
        assert w.reply().code == 550
        codes = one_write(w, "s@sender.example", ["u@example.org"], b"good\r\n")
        assert codes == [250, 250, 250], codes

    sink = Sink()
    provider = FakeProvider(script)
    r = run_client(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    assert [m[2] for m in sink.messages] == [b"good\r\n"]
    assert sink.aborted == 1 and sink.connections == 3   # the check, the dropped one, the next


def test_target_lost_between_rcpt_and_data_closes_the_session():
    """The target hangs up after accepting the RCPT: the message gets 421 and the session ends
    (docs/client.md, "Hostile and failing peers"; the provider keeps the message), never a DATA
    on a new connection without MAIL (503, a permanent failure)."""
    def script(w):
        w.expect("MAIL FROM:<s@sender.example>", 250)
        w.expect("RCPT TO:<u@example.org>", 250)
        w.send(b"BDAT 6 LAST\r\nfirst\n")
        r = w.reply()
        assert r.code == 421, r
        assert w.sock.recv(1) == b""          # and the client closes

    sink = Sink(drop_after_rcpt=True)
    provider = FakeProvider(script, quit=False)
    r = run_client(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 7, r.stderr
    assert sink.messages == []
    rcpt = sink.commands.index("RCPT TO:<u@example.org>")
    assert not any(c.startswith(("DATA", "BDAT")) for c in sink.commands[rcpt + 1:]), sink.commands


def test_auth_initial_response():
    """RFC 4954 4: a client-first mechanism (SCRAM) sends its first message with AUTH."""
    seen = {}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        w = Wire.__new__(Wire)
        w.sock, w.buf = conn, b""
        w.sock.settimeout(10)
        w.send("220 fake.provider ESMTP\r\n")
        w.readline()
        w.send("250-fake.provider\r\n250-AUTH SCRAM-SHA-256 CRAM-MD5\r\n250 ATRN\r\n")
        seen["auth"] = w.readline().decode()
        w.send("535 5.7.8 no\r\n")
        try:
            seen["next"] = w.readline().decode()
            w.send("221 bye\r\n")
        except (EOFError, OSError):
            pass
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("secret\n")
    try:
        r = subprocess.run([CLIENT, "--server", "127.0.0.1:%d" % listener.getsockname()[1],
                            "--user", "u", "--password-file", f.name, "--deliver",
                            "smtp:127.0.0.1:9", "--tls", "none", "--timeout", "0.05"],
                           capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)
    t.join(timeout=20)
    listener.close()
    assert r.returncode == 2, r.stderr
    verb, mech, ir = seen["auth"].split(" ")
    assert (verb, mech) == ("AUTH", "SCRAM-SHA-256")
    assert base64.b64decode(ir).startswith(b"n,,n=u,r=")
