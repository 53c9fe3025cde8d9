# SPDX-License-Identifier: ISC
"""odmr-client end to end: intake -> odmrd -> odmr-client -> a local SMTP/LMTP sink
(RFC 2645, RFC 5321, RFC 2033). The sinks are written here with the standard library so the
target's replies can be chosen per recipient."""
import os
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from conftest import BIN, logfmt
from test_odmr import USERS, inject, login

CLIENT = os.path.join(BIN, "odmr-client")


class Sink(socketserver.ThreadingTCPServer):
    """A minimal SMTP or LMTP server that records every transaction.
    rcpt_replies / data_replies: address -> reply line ("550 5.1.1 no such user").
    keywords: the EHLO/LHLO keywords instead of 8BITMIME, [PIPELINING], [CHUNKING], SIZE.
    envelopes: (MAIL line, [RCPT lines]) of each message in `messages`, as received."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, lmtp=False, rcpt_replies=None, data_replies=None, pipelining=True,
                 drop_after_rcpt=False, mail_replies=None, chunking=False, keywords=None):
        self.lmtp = lmtp
        self.chunking = chunking                  # advertise CHUNKING, take BDAT (RFC 3030)
        self.mail_replies = mail_replies or {}
        self.rcpt_replies = rcpt_replies or {}
        self.data_replies = data_replies or {}
        self.pipelining = pipelining              # advertise PIPELINING
        self.keywords = keywords
        self.drop_after_rcpt = drop_after_rcpt    # hang up right after the first RCPT reply
        self.messages = []
        self.envelopes = []
        self.commands = []                        # every command line, in order
        self.aborted = 0                          # connections lost inside DATA
        self.connections = 0
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def target(self):
        return "%s:127.0.0.1:%d" % ("lmtp" if self.lmtp else "smtp", self.port)

    def ehlo_reply(self):
        words = self.keywords
        if words is None:
            words = ["8BITMIME"] + ["PIPELINING"] * self.pipelining + \
                ["CHUNKING"] * self.chunking + ["SIZE 10000000"]
        lines = ["sink.example"] + list(words)
        return "\r\n".join("250%s%s" % ("-" if i < len(lines) - 1 else " ", l)
                           for i, l in enumerate(lines))


class SinkHandler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        srv = self.server
        srv.connections += 1
        self.reply("220 sink.example %s" % ("LMTP" if srv.lmtp else "ESMTP"))
        sender, rcpts, envelope = None, [], None
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode()
            srv.commands.append(cmd)
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "LHLO"):
                self.reply(srv.ehlo_reply())
            elif verb == "MAIL":
                sender, rcpts = cmd[len("MAIL FROM:"):].split(" ")[0].strip("<>"), []
                envelope = (cmd, [])
                self.reply(srv.mail_replies.get(sender, "250 2.1.0 ok"))
            elif verb == "RCPT":
                if envelope is not None:
                    envelope[1].append(cmd)
                addr = cmd[len("RCPT TO:"):].split(" ")[0].strip("<>")
                r = srv.rcpt_replies.get(addr, "250 2.1.5 ok")
                if r.startswith("2"):
                    rcpts.append(addr)
                self.reply(r)
                if srv.drop_after_rcpt:
                    srv.drop_after_rcpt = False
                    return
            elif verb in ("DATA", "BDAT"):
                if verb == "BDAT":
                    size, last = cmd.split(" ")[1:3]   # one chunk, LAST: what odmr-client sends
                    assert srv.chunking and last == "LAST", cmd
                    data = self.rfile.read(int(size))
                    if len(data) < int(size):
                        srv.aborted += 1
                        return
                else:
                    self.reply("354 go")
                    data = b""
                    while True:
                        l = self.rfile.readline()
                        if not l:
                            srv.aborted += 1   # no final dot: nothing is delivered (RFC 5321)
                            return
                        if l == b".\r\n":
                            break
                        data += l[1:] if l.startswith(b".") else l
                if not rcpts:
                    self.reply("554 5.5.1 no valid recipients")   # it said 354 all the same
                    continue
                results = [srv.data_replies.get(a, "250 2.0.0 delivered") for a in rcpts]
                # recorded before the replies: the client may exit as soon as it has them
                srv.messages.append((sender, list(rcpts), data, results))
                srv.envelopes.append(envelope)
                if srv.lmtp:
                    for r in results:
                        self.reply(r)
                else:
                    self.reply(results[0])
            elif verb == "RSET":
                sender, rcpts = None, []
                self.reply("250 2.0.0 ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.1 no")


def queue_settled(prov, count=0, seconds=5):
    """odmrd records outcomes off its event loop, after the customer has seen its 250 and may
    already have exited: wait (bounded) until the queue holds `count` messages."""
    deadline = time.time() + seconds
    while len(prov.queue_ids()) != count and time.time() < deadline:
        time.sleep(0.05)
    return prov.queue_ids()


@pytest.fixture
def prov(make_odmrd):
    return make_odmrd(users=USERS)


def password_file(prov, secret, mode=0o600):
    """odmr-client refuses a password file that others can read (docs/client.md)."""
    path = os.path.join(prov.dir, "pw-%d" % abs(hash(secret)))
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, mode)
    return path


def run_client(prov, target, user="alice", secret="alice-secret", tls=("--tls", "none"),
               extra=(), timeout=60, prefix=(), env=None):
    args = [*prefix, CLIENT, "--server", "127.0.0.1:%d" % prov.odmr_port, "--user", user,
            "--password-file", password_file(prov, secret), "--deliver", target,
            "--helo", "customer.example", "--timeout", "0.05", "-v", *tls, *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def cert(prov):
    return os.path.join(prov.dir, "tls", "cert.pem")


BODY = b"Subject: held\r\n\r\nheld mail\r\n.leading dot\r\n"


def test_help_documents_exit_codes():
    r = subprocess.run([CLIENT, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 ", "64 "):
        assert "\n  " + code in r.stdout


def test_usage_error():
    r = subprocess.run([CLIENT, "--server", "x"], capture_output=True, text=True)
    assert r.returncode == 64


def test_end_to_end_smtp_byte_exact(prov):
    inject(prov, ["u@example.org", "v@example.org"], body=BODY)
    inject(prov, ["w@example.net"], body=BODY, sender="")
    sink = Sink()
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    got = sorted((m[0], tuple(m[1])) for m in sink.messages)
    assert got == [("", ("w@example.net",)), ("s@sender.example", ("u@example.org", "v@example.org"))]
    for m in sink.messages:
        assert m[2].endswith(BODY) and b"Received:" in m[2]
    # X-ODMR-FAST in our EHLO reply: odmrd pushes with PIPELINING (docs/client.md).
    assert "pipelining=1" in prov.log()


def test_many_messages_and_a_large_one_pipelined(prov):
    big = b"Subject: big\r\n\r\n" + b"".join(b"%06d %s\r\n" % (i, b"x" * 90) for i in range(20000))
    for i in range(30):
        inject(prov, ["m%d@example.org" % i], body=BODY)
    inject(prov, ["big@example.net"], body=big)
    sink = Sink()
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    assert len(sink.messages) == 31
    assert any(m[2].endswith(big) for m in sink.messages)
    # X-ODMR-FAST got the fast profile: PIPELINING and CHUNKING (BDAT) on the reversed session.
    ready = [l for l in prov.log().splitlines() if "event=push.ready" in l][-1]
    assert "pipelining=1" in ready and "chunking=1" in ready, ready


@pytest.mark.parametrize("lmtp", [False, True])
def test_target_with_chunking_gets_bdat(prov, lmtp):
    """A target offering CHUNKING gets each message as one BDAT <size> LAST (RFC 3030): no DATA,
    no dot stuffing, the octets byte for byte; LMTP still answers per recipient."""
    inject(prov, ["u@example.org", "v@example.org"], body=BODY)
    inject(prov, ["w@example.org"], body=b"Subject: dots\r\n\r\n.dot\r\n..two\r\n")
    sink = Sink(lmtp=lmtp, chunking=True,
                data_replies={"v@example.org": "452 4.2.2 mailbox full"} if lmtp else {})
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert not any(c.upper().startswith("DATA") for c in sink.commands), sink.commands
    bdats = [c for c in sink.commands if c.startswith("BDAT ")]
    assert len(bdats) == 2 and all(c.endswith(" LAST") for c in bdats), bdats
    bodies = sorted(m[2] for m in sink.messages)
    assert any(b.endswith(BODY) for b in bodies), bodies
    assert any(b.endswith(b"Subject: dots\r\n\r\n.dot\r\n..two\r\n") for b in bodies), bodies
    if lmtp:   # v@ deferred by the target: the message stays for v@ only
        (kept,) = queue_settled(prov, 1)
        assert "v@example.org" in prov.queue_show(kept)
    else:
        assert queue_settled(prov) == []


def test_end_to_end_lmtp(prov):
    inject(prov, ["u@example.org", "v@example.org"], body=BODY)
    sink = Sink(lmtp=True)
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    assert sink.messages[0][1] == ["u@example.org", "v@example.org"]


def test_lmtp_mixed_results_keep_everything_queued(prov):
    inject(prov, ["u@example.org", "v@example.org"], body=BODY)
    sink = Sink(lmtp=True, data_replies={"v@example.org": "452 4.2.2 mailbox full"})
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert len(prov.queue_ids()) == 1
    assert "451" in prov.log()


def test_no_mail(prov):
    sink = Sink()
    r = run_client(prov, sink.target())
    assert r.returncode == 1, r.stderr


def test_wrong_password(prov):
    sink = Sink()
    r = run_client(prov, sink.target(), secret="wrong")
    assert r.returncode == 2, r.stderr


def test_unauthorized_domain(prov):
    inject(prov, ["u@bob.example"])
    sink = Sink()
    r = run_client(prov, sink.target(), extra=("--domains", "bob.example"))
    assert r.returncode == 4, r.stderr
    assert len(prov.queue_ids()) == 1


def test_busy(prov):
    inject(prov, ["u@example.org"])
    holder = login(prov)
    holder.send("ATRN example.org\r\n")
    assert holder.reply().code == 250
    sink = Sink()
    r = run_client(prov, sink.target(), extra=("--domains", "example.org"))
    assert r.returncode == 5, r.stderr
    holder.close()


def test_target_down_before_atrn(prov):
    inject(prov, ["u@example.org"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_client(prov, "smtp:127.0.0.1:%d" % port)
    assert r.returncode == 6, r.stderr
    assert len(prov.queue_ids()) == 1
    # Authenticated, but ATRN was never sent: no turnaround, no push, mail still held.
    assert "result=ok" in prov.log()
    assert "odmr.turnaround" not in prov.log() and "push.start" not in prov.log()
    assert "to=ATRN" not in r.stderr and "client.target_unavailable" in r.stderr


def test_target_refuses_one_recipient(prov):
    inject(prov, ["u@example.org", "bad@example.org"], body=BODY)
    sink = Sink(rcpt_replies={"bad@example.org": "550 5.1.1 no such user"})
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert [m[1] for m in sink.messages] == [["u@example.org"]]
    ids = prov.queue_ids()
    assert len(ids) == 1   # bad@ failed: the original is gone, its failed notice is held
    show = prov.queue_show(ids[0])
    assert "sender:     <>" in show and "<s@sender.example>" in show, show
    assert "Status: 5.1.1" in prov.queue_body(ids[0]).decode()


def test_verbose_logs_target_replies_quoted(prov):
    """-v logs every target reply (event=target.reply), the target's text quoted: a reply
    cannot forge a log field or a line of its own."""
    inject(prov, ["u@example.org", "bad@example.org"], body=BODY)
    sink = Sink(rcpt_replies={"bad@example.org": "550 5.1.1 no level=error event=forged"})
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    replies = [logfmt(l) for l in r.stderr.splitlines() if "event=target.reply" in l]
    assert {"level": "debug", "event": "target.reply", "code": "550",
            "text": "5.1.1 no level=error event=forged"} in replies, r.stderr
    assert any(f["code"] == "250" for f in replies), r.stderr
    # the forged pair stays inside the quoted text: no line parses as event=forged
    assert all(logfmt(l).get("event") != "forged" for l in r.stderr.splitlines()), r.stderr


def test_target_451_keeps_all(prov):
    inject(prov, ["u@example.org", "v@example.org"], body=BODY)
    sink = Sink(data_replies={"u@example.org": "451 4.3.0 try later"})
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert len(prov.queue_ids()) == 1
    show = prov.queue_show(prov.queue_ids()[0])
    assert "failed" not in show


def test_tls_self_signed_without_ca_fails(prov):
    sink = Sink()
    r = run_client(prov, sink.target(), tls=())
    assert r.returncode == 3, r.stderr


def test_tls_with_ca_succeeds(prov):
    inject(prov, ["u@example.org"], body=BODY)
    sink = Sink()
    r = run_client(prov, sink.target(),
                   tls=("--ca", cert(prov), "--tls-name", "mx.test.example"))
    assert r.returncode == 0, r.stderr
    assert "mech=SCRAM-SHA-256-PLUS" in r.stderr
    assert queue_settled(prov) == []
    assert len(sink.messages) == 1


def test_implicit_tls_with_ca(prov):
    inject(prov, ["u@example.org"], body=BODY)
    sink = Sink()
    args = ["--tls", "implicit", "--ca", cert(prov), "--tls-name", "mx.test.example"]
    r = subprocess.run([CLIENT, "--server", "127.0.0.1:%d" % prov.odmrs_port, "--user", "alice",
                        "--password-file", password_file(prov, "alice-secret"),
                        "--deliver", sink.target(), "--timeout", "0.05", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []


def test_tls_wrong_name_fails(prov):
    sink = Sink()
    r = run_client(prov, sink.target(), tls=("--ca", cert(prov), "--tls-name", "other.example"))
    assert r.returncode == 3, r.stderr


def test_cram_md5_mech(prov):
    inject(prov, ["u@example.org"], body=BODY)
    sink = Sink()
    r = run_client(prov, sink.target(), extra=("--mech", "CRAM-MD5"))
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_forced_mech_over_tls_while_plus_is_offered(prov, mech):
    """RFC 5802 6: plain SCRAM chosen while -PLUS is offered goes without channel binding
    ("n"); sending "y" there would make odmrd (rightly) suspect a downgrade."""
    inject(prov, ["u@example.org"], body=BODY)
    sink = Sink()
    r = run_client(prov, sink.target(), extra=("--mech", mech),
                   tls=("--ca", cert(prov), "--tls-name", "mx.test.example"))
    assert r.returncode == 0, r.stderr
    assert "mech=%s " % mech in r.stderr, r.stderr
    assert queue_settled(prov) == []
    assert len(sink.messages) == 1
