# SPDX-License-Identifier: ISC
"""SMTP and LMTP intake: every reply, the limits at their exact boundary, smuggling probes,
byte-exact storage with the envelope and DSN parameters."""
import os
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import BIN, small_tmpfs_spool
from smtpwire import Wire, greet, transaction


def queued(d, domain=None):
    return d.queue_ids(domain)


# ---------------------------------------------------------------- greeting and EHLO

def test_greeting_and_ehlo_extensions(odmrd):
    w = Wire(odmrd.smtp_port)
    g = w.reply()
    assert g.code == 220 and g.lines[0].startswith("mx.test.example ")
    r = w.expect("EHLO client.example", 250)
    keywords = {line.split()[0] for line in r.lines[1:]}
    assert {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN",
            "STARTTLS"} <= keywords
    assert "SIZE 52428800" in r.lines
    w.expect("QUIT", 221, "2.0.0")
    assert w.closed()


def test_helo_and_no_parameters_after_helo(odmrd):
    w = greet(odmrd.smtp_port, ehlo=None)
    w.expect("HELO client.example", 250)
    w.expect("MAIL FROM:<a@b.example> SIZE=10", 555, "5.5.4")
    w.expect("MAIL FROM:<a@b.example>", 250, "2.1.0")


def test_ehlo_syntax(odmrd):
    w = greet(odmrd.smtp_port, ehlo=None)
    w.expect("EHLO", 501, "5.5.4")
    w.expect("EHLO bad..name", 501, "5.5.4")
    w.expect("EHLO [127.0.0.1]", 250)


def test_sequence_errors(odmrd):
    w = greet(odmrd.smtp_port, ehlo=None)
    w.expect("MAIL FROM:<a@b.example>", 503, "5.5.1")
    w.expect("EHLO c.example", 250)
    w.expect("RCPT TO:<u@example.org>", 503, "5.5.1")
    w.expect("DATA", 503, "5.5.1")
    w.expect("MAIL FROM:<a@b.example>", 250)
    w.expect("MAIL FROM:<a@b.example>", 503, "5.5.1")
    w.expect("DATA", 503, "5.5.1")


def test_misc_commands(odmrd):
    w = greet(odmrd.smtp_port)
    w.expect("NOOP", 250, "2.0.0")
    w.expect("VRFY someone", 252)
    w.expect("EXPN list", 502, "5.5.1")
    assert w.expect("HELP", 214).code == 214
    w.expect("RSET", 250, "2.0.0")
    w.expect("FOO bar", 500, "5.5.2")   # RFC 5321 4.2.3, RFC 3463 X.5.2 (was 5.5.1)
    w.expect("LHLO x.example", 500, "5.5.1")


# ---------------------------------------------------------------- recipients and relaying

@pytest.mark.parametrize("rcpt", [
    "<u@other.example>", "<u@sub.example.org>", "<u@[127.0.0.1]>", "<u@example.org.evil.example>",
    "<postmaster@other.example>", "<@example.org:u@other.example>",
])
def test_relay_refused(odmrd, rcpt):
    w = greet(odmrd.smtp_port)
    w.expect("MAIL FROM:<a@b.example>", 250)
    w.expect("RCPT TO:" + rcpt, 550, "5.7.1")
    w.expect("DATA", 503)
    assert queued(odmrd) == []


def test_hosted_domain_any_case_and_source_route(odmrd):
    w = greet(odmrd.smtp_port)
    w.expect("MAIL FROM:<a@b.example>", 250)
    w.expect("RCPT TO:<U@EXAMPLE.ORG>", 250, "2.1.5")
    w.expect("RCPT TO:<@relay.example:v@Example.Net>", 250, "2.1.5")


def test_recipient_syntax(odmrd):
    w = greet(odmrd.smtp_port)
    w.expect("MAIL FROM:<a@b.example>", 250)
    w.expect("RCPT TO:u@example.org", 501)
    w.expect("RCPT TO:<u@example.org> NOTIFY=SOMETIMES", 501, "5.5.4")
    w.expect("RCPT TO:<u@example.org> FOO=1", 555, "5.5.4")
    w.expect("RCPT TO:<%s@example.org>" % ("a" * 65), 501)
    w.expect("RCPT TO:<%s@example.org>" % ("a" * 64), 250)


def test_smtputf8_needs_parameter(odmrd):
    w = greet(odmrd.smtp_port)
    w.expect("MAIL FROM:<j\u00f6rg@b.example>", 553, "5.6.7")
    w.expect("MAIL FROM:<j\u00f6rg@b.example> SMTPUTF8", 250)
    w.expect("RCPT TO:<\u00fcser@example.org>", 250)


def test_mail_parameters(odmrd):
    w = greet(odmrd.smtp_port)
    w.expect("MAIL FROM:<a@b.example> BODY=BINARYMIME", 555, "5.5.4")
    w.expect("MAIL FROM:<a@b.example> RET=MAYBE", 501, "5.5.4")
    w.expect("MAIL FROM:<a@b.example> ENVID=bad=id", 501)
    w.expect("MAIL FROM:<a@b.example> AUTH=<>", 555, "5.5.4")
    w.expect("MAIL FROM:<a@b.example> SIZE=abc", 501, "5.5.4")
    w.expect("MAIL FROM:<> BODY=8BITMIME RET=HDRS ENVID=QQ+2B1 SIZE=100", 250)


# ---------------------------------------------------------------- limits at the boundary

@pytest.fixture
def small(make_odmrd):
    return make_odmrd(extra={"intake.max_message_size": "10000", "intake.max_recipients": "100",
                             "intake.max_errors": "5", "intake.command_timeout": "2s"})


def test_size_at_mail(small):
    w = greet(small.smtp_port)
    assert "SIZE 10000" in w.cmd("EHLO again.example").lines
    w.expect("MAIL FROM:<a@b.example> SIZE=10000", 250)
    w.expect("RSET", 250)
    w.expect("MAIL FROM:<a@b.example> SIZE=10001", 552, "5.3.4")


def data_of_size(n):
    """Message octets (as stored) of exactly n bytes, lines of 100 octets."""
    body = b""
    line = b"x" * 98 + b"\r\n"
    while len(body) + len(line) <= n:
        body += line
    rest = n - len(body)
    if rest:
        body += b"y" * (rest - 2) + b"\r\n" if rest >= 2 else b""
    assert len(body) == n or rest == 1
    return body


def test_size_during_data_boundary(small):
    for size, code in ((10000, 250), (10002, 552)):
        w = greet(small.smtp_port)
        transaction(w)
        w.expect("DATA", 354)
        w.send(data_of_size(size) + b".\r\n")
        r = w.reply()
        assert r.code == code, (size, r)
        if code == 552:
            assert r.enhanced == "5.3.4"
    assert len(queued(small)) == 1


def test_recipient_limit(small):
    w = greet(small.smtp_port)
    w.expect("MAIL FROM:<a@b.example>", 250)
    for i in range(100):
        w.expect("RCPT TO:<u%d@example.org>" % i, 250)
    w.expect("RCPT TO:<u100@example.org>", 452, "4.5.3")
    w.expect("DATA", 354)
    w.send("Subject: many\r\n\r\nhi\r\n.\r\n")
    assert w.reply().code == 250
    ids = queued(small)
    assert len(ids) == 1
    assert small.queue_show(ids[0]).count("example.org") >= 100


def test_command_line_length(odmrd):
    w = greet(odmrd.smtp_port)
    # RFC 5321 4.5.3.1.4: 512 octets including CRLF
    w.expect("NOOP " + "x" * (512 - 2 - 5), 250)
    w.expect("NOOP " + "x" * (513 - 2 - 5), 500, "5.5.2")
    w.expect("NOOP", 250)


def test_text_line_length_in_data(odmrd):
    for length, code in ((1000, 250), (1001, 550)):
        w = greet(odmrd.smtp_port)
        transaction(w)
        w.expect("DATA", 354)
        w.send(b"Subject: long\r\n\r\n" + b"z" * (length - 2) + b"\r\n.\r\n")
        r = w.reply()
        assert r.code == code, (length, r)
    assert len(queued(odmrd)) == 1


def test_error_limit_closes_session(small):
    w = greet(small.smtp_port)
    for _ in range(4):
        w.expect("BOGUS", 500)
    r = w.cmd("BOGUS")
    assert r.code == 500
    assert w.reply().code == 421
    assert w.closed()


def test_idle_timeout(small):
    w = greet(small.smtp_port)
    time.sleep(2.5)
    r = w.reply()
    assert r.code == 421 and r.enhanced == "4.4.2"
    assert w.closed()


def test_bare_lf_command_rejected(odmrd):
    w = greet(odmrd.smtp_port)
    w.send("NOOP\n")
    r = w.reply()
    assert r.code == 500 and r.enhanced == "5.5.2"


# ---------------------------------------------------------------- DATA and smuggling

SMUGGLED = b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n"


@pytest.mark.parametrize("probe", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"],
                         ids=["lf.lf", "crlf.lf", "lf.crlf", "cr.crlf", "crlf.cr"])
def test_smuggling_probes(odmrd, probe):
    w = greet(odmrd.smtp_port)
    transaction(w)
    w.expect("DATA", 354)
    w.send(b"Subject: probe\r\n\r\nbody" + probe + SMUGGLED + b"\r\n.\r\n")
    r = w.reply()
    # The probe never ends DATA: the one reply is for the whole message, and it is refused.
    assert r.code == 550 and r.enhanced == "5.6.0", r
    w.expect("NOOP", 250)
    assert queued(odmrd) == []
    assert "evil@evil.example" not in odmrd.log()


def test_dot_unstuffing_and_byte_exact(odmrd):
    w = greet(odmrd.smtp_port)
    transaction(w)
    w.expect("DATA", 354)
    body = b"Subject: dots\r\n\r\n..leading dot\r\n.\xff8bit\r\nlast\r\n"
    w.send(body + b".\r\n")
    r = w.reply()
    assert r.code == 250 and r.enhanced == "2.0.0"
    qid = r.lines[0].split()[-1]
    stored = odmrd.queue_body(qid)
    assert stored.startswith(b"Received: from client.example ([127.0.0.1])\r\n")
    assert stored.endswith(b"Subject: dots\r\n\r\n.leading dot\r\n\xff8bit\r\nlast\r\n")


def test_pipelined_transactions(odmrd):
    w = greet(odmrd.smtp_port)
    batch = b""
    for i in range(5):
        batch += (b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u%d@example.org>\r\nDATA\r\n" % i)
        batch += b"Subject: %d\r\n\r\nbody\r\n.\r\n" % i
    w.send(batch + b"QUIT\r\n")
    codes = [w.reply().code for _ in range(5 * 4 + 1)]
    assert codes == [250, 250, 354, 250] * 5 + [221]
    assert len(queued(odmrd)) == 5


def small_window_client(port):
    """A greeted connection whose receive buffer is 2 KiB: the server's replies back up."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    w = Wire.__new__(Wire)
    w.sock, w.buf = s, b""
    assert w.reply().code == 220
    return w


def test_pipelined_replies_that_fill_the_socket(odmrd):
    """docs/architecture.md "Replies on a plain socket": 2000 transactions sent in one go (as
    test_pipelined_transactions) by a client with a 2 KiB receive buffer that reads nothing
    until it has sent everything. About 200 KiB of replies cannot all be written at once: the
    session writes what the socket takes, the bufferevent the rest, the input waits while
    64 KiB of replies are unsent, and each commit holds its transaction's last reply while
    the input goes on arriving. Every reply must come, in order, and every message be queued."""
    n = 2000
    w = small_window_client(odmrd.smtp_port)
    w.expect("EHLO client.example", 250)
    w.send(b"".join(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u%d@example.org>\r\nDATA\r\n"
                    b"Subject: %d\r\n\r\nbody\r\n.\r\n" % (i % 7, i) for i in range(n)))
    replies = [w.reply() for _ in range(4 * n)]   # no QUIT: no closing flush sends the rest
    assert [r.code for r in replies] == [250, 250, 354, 250] * n
    w.expect("QUIT", 221)
    assert sum(len(" ".join(r.lines)) for r in replies) > 64 * 1024   # OUTPUT_HIGH_WATER
    ids = queued(odmrd)
    assert len(ids) == n
    assert odmrd.queue_body(ids[-1]).endswith(b"Subject: %d\r\n\r\nbody\r\n" % (n - 1))


def test_replies_beyond_the_socket_buffers_all_arrive(odmrd):
    """docs/architecture.md "Replies on a plain socket": 50000 EHLO (each answered with its
    whole keyword list) from a client with a 2 KiB receive buffer that starts reading only
    after a pause: about 6 MB of replies, more than the socket buffers take (4 MB at most
    here), so the session's own write stops short, the bufferevent writes the rest, and the
    input waits while 64 KiB of replies are unsent. Every reply must still come, in order
    (no closing flush may be what sends the last ones)."""
    n = 50000
    w = small_window_client(odmrd.smtp_port)
    sender = threading.Thread(target=w.send, args=(b"EHLO client.example\r\n" * n,))
    sender.start()
    time.sleep(0.5)
    first = w.reply()
    assert first.code == 250 and len(first.lines) > 3
    for i in range(n - 1):
        r = w.reply()
        assert (r.code, r.lines) == (first.code, first.lines), (i, r)
    sender.join()
    w.expect("NOOP", 250)


def test_disconnect_mid_data_queues_nothing(odmrd):
    w = greet(odmrd.smtp_port)
    transaction(w)
    w.expect("DATA", 354)
    w.send(b"Subject: cut\r\n\r\nhalf a message\r\n")
    w.close()
    time.sleep(0.3)
    assert queued(odmrd) == []


# ---------------------------------------------------------------- real clients, envelopes, DSN

def test_smtplib_envelope_and_dsn(odmrd):
    msg = b"From: a@b.example\r\nTo: u@example.org\r\nSubject: smtplib\r\n\r\nHello\r\n"
    with smtplib.SMTP("127.0.0.1", odmrd.smtp_port) as s:
        s.ehlo("smtplib.example")
        refused = s.sendmail("a@b.example", ["u@example.org", "v@example.net"], msg,
                             mail_options=["RET=HDRS", "ENVID=ID+2B42", "BODY=8BITMIME"],
                             rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;u+40example.org"])
        assert refused == {}
    (qid,) = queued(odmrd)
    assert odmrd.queue_body(qid).endswith(msg)
    show = odmrd.queue_show(qid)
    for needle in ("a@b.example", "u@example.org", "v@example.net", "HDRS", "ID+2B42",
                   "SUCCESS,FAILURE", "rfc822;u+40example.org", "8BITMIME"):
        assert needle in show, (needle, show)
    assert queued(odmrd, "example.org") == [qid]
    assert queued(odmrd, "example.net") == [qid]
    assert queued(odmrd, "bob.example") == []


def test_swaks_injection(odmrd, tmp_path):
    body = "Subject: via swaks\n\nline one\nline two\n"
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % odmrd.smtp_port, "--helo",
                        "swaks.example", "--from", "s@sender.example", "--to", "x@bob.example",
                        "--data", body], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    (qid,) = queued(odmrd, "bob.example")
    stored = odmrd.queue_body(qid)
    # swaks ends --data with one more CRLF of its own
    assert stored.endswith(b"Subject: via swaks\r\n\r\nline one\r\nline two\r\n\r\n")
    show = odmrd.queue_show(qid)
    assert "s@sender.example" in show and "x@bob.example" in show


def test_starttls(odmrd):
    ctx = ssl._create_unverified_context()
    with smtplib.SMTP("127.0.0.1", odmrd.smtp_port) as s:
        s.ehlo("tls.example")
        code, _ = s.starttls(context=ctx)
        assert code == 220
        s.ehlo("tls.example")
        assert not s.has_extn("starttls")
        s.sendmail("a@b.example", ["u@example.org"], b"Subject: tls\r\n\r\nx\r\n")
    (qid,) = queued(odmrd)
    assert b"with ESMTPS id" in odmrd.queue_body(qid)


def test_starttls_injection_refused(odmrd):
    w = greet(odmrd.smtp_port)
    w.send("STARTTLS\r\nMAIL FROM:<evil@evil.example>\r\n")
    r = w.reply()
    assert r.code == 554
    assert w.closed()


def test_starttls_twice(odmrd):
    w = greet(odmrd.smtp_port)
    w.expect("STARTTLS", 220, "2.0.0")
    w.starttls()
    w.expect("EHLO again.example", 250)
    w.expect("STARTTLS", 503, "5.5.1")


def test_quit_after_starttls_gets_221_and_close_notify(odmrd):
    """After STARTTLS the TLS layer writes into the plain socket buffer below it: the 221 and
    the close_notify must leave before the connection closes (they were once freed unsent).
    smtplib's `with` hides this (SMTP.__exit__ swallows the lost 221), so raw wire here."""
    w = greet(odmrd.smtp_port)
    w.expect("STARTTLS", 220, "2.0.0")
    w.starttls()
    w.expect("EHLO again.example", 250)
    transaction(w)
    w.expect("QUIT", 221, "2.0.0")
    assert w.closed()                      # a clean TLS EOF: SSLEOFError without close_notify


# ---------------------------------------------------------------- LMTP

def test_lmtp_one_reply_per_recipient(odmrd):
    w = Wire(odmrd.lmtp_port)
    assert w.reply().code == 220
    w.expect("EHLO x.example", 500)
    w.expect("LHLO front.example", 250)
    w.expect("MAIL FROM:<a@b.example>", 250)
    w.expect("RCPT TO:<u@example.org>", 250)
    w.expect("RCPT TO:<nobody@other.example>", 550, "5.7.1")
    w.expect("RCPT TO:<v@bob.example>", 250)
    w.expect("DATA", 354)
    w.send("Subject: lmtp\r\n\r\nhi\r\n.\r\n")
    assert [w.reply().code, w.reply().code] == [250, 250]
    w.expect("QUIT", 221)
    (qid,) = queued(odmrd)
    assert b"with LMTP id" in odmrd.queue_body(qid)


def test_lmtp_unix_socket(odmrd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(odmrd.lmtp_socket)
    s.settimeout(5)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220 ")
    s.sendall(b"LHLO unix.example\r\nQUIT\r\n")
    lines = [f.readline() for _ in range(2)]
    assert lines[0].startswith(b"250")
    s.close()


# ---------------------------------------------------------------- local parts and disk full

def test_unknown_local_part_refused(make_odmrd):
    d = make_odmrd(start=False)
    with open(d.users, "a") as f:
        f.write("domain example.org local-parts=alice,postmaster\n")
    d.hand_users_file_over()
    d.start()
    w = greet(d.smtp_port)
    w.expect("MAIL FROM:<a@b.example>", 250)
    w.expect("RCPT TO:<Alice@example.org>", 250)
    w.expect("RCPT TO:<mallory@example.org>", 550, "5.1.1")
    w.expect("RCPT TO:<anyone@example.net>", 250)


def test_disk_full_gives_452_and_leaves_nothing(make_odmrd):
    with small_tmpfs_spool(make_odmrd(start=False)) as d:
        w = greet(d.smtp_port)
        transaction(w)
        w.expect("DATA", 354)
        w.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 600 + b".\r\n")
        r = w.reply()
        assert r.code == 452 and r.enhanced == "4.3.1", r
        assert queued(d) == []
        assert os.listdir(os.path.join(d.spool, "tmp")) == []
        # A small message still fits afterwards: the failed one left nothing behind.
        transaction(w)
        w.expect("DATA", 354)
        w.send(b"Subject: small\r\n\r\nsmall\r\n.\r\n")
        assert w.reply().code == 250
        assert len(queued(d)) == 1


# ---------------------------------------------------------------- RCPT TO:<Postmaster> (RFC 5321 4.5.1)

def stored_envelope(d, qid):
    """The envelope lines of msg/<qid> as stored, id and arrival time left out."""
    with open(os.path.join(d.spool, "msg", qid), "rb") as f:
        header = f.read().split(b"\n\n", 1)[0].decode()
    lines = header.splitlines()
    assert lines[0] == "ODMRQ 1" and lines[1] == "id " + qid and lines[2].startswith("arrival ")
    return lines[3:]


def send_to_postmaster(d, rcpts):
    w = greet(d.smtp_port)
    w.expect("MAIL FROM:<a@b.example>", 250)
    for rcpt in rcpts:
        w.expect("RCPT TO:" + rcpt, 250, "2.1.5")
    w.expect("DATA", 354)
    w.send("Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
    assert w.reply().code == 250
    w.expect("QUIT", 221)
    (qid,) = queued(d)
    return qid


ENVELOPE_HEAD = ["sender =a@b.example", "body 7BIT", "smtputf8 0", "ret -", "envid -", "size 0",
                 "helo =client.example", "client =127.0.0.1", "protocol =ESMTP"]


def test_bare_postmaster_is_held_for_the_admin(odmrd):
    """Without [server] postmaster: accepted, stored as postmaster@<hostname>, what was sent kept
    as ORCPT; held although no user lists that domain, shown by odmrctl, nothing breaks."""
    qid = send_to_postmaster(odmrd, ["<PostMaster>", "<postmaster> NOTIFY=FAILURE"])
    assert stored_envelope(odmrd, qid) == ENVELOPE_HEAD + [
        "rcpt =mx.test.example =postmaster@mx.test.example - =rfc822;PostMaster",
        "rcpt =mx.test.example =postmaster@mx.test.example =FAILURE =rfc822;postmaster",
    ]
    assert queued(odmrd, "mx.test.example") == [qid]
    listing = odmrd.ctl("queue", "list").stdout
    assert qid in listing and "mx.test.example" in listing
    show = odmrd.queue_show(qid)
    assert "<postmaster@mx.test.example>" in show and "orcpt=rfc822;PostMaster" in show
    # The daemon goes on serving; other domains are unaffected.
    w = greet(odmrd.smtp_port)
    transaction(w)
    assert queued(odmrd, "example.org") == []


def test_postmaster_goes_to_the_configured_address(make_odmrd):
    """[server] postmaster in a hosted domain: held for that domain's customer like any mail;
    the client's own ORCPT is kept."""
    d = make_odmrd(extra={"server.postmaster": "hostmaster@Example.ORG"})
    qid = send_to_postmaster(d, ["<postmaster>",
                                 "<POSTMASTER> ORCPT=rfc822;postmaster@front.example"])
    assert stored_envelope(d, qid) == ENVELOPE_HEAD + [
        "rcpt =example.org =hostmaster@Example.ORG - =rfc822;postmaster",
        "rcpt =example.org =hostmaster@Example.ORG - =rfc822;postmaster@front.example",
    ]
    assert queued(d, "example.org") == [qid]


def test_postmaster_setting_is_checked(odmrd, tmp_path):
    for bad in ("postmaster", "a@[127.0.0.1]", "two words@example.org", "a@-bad-.example"):
        conf = tmp_path / "pm.conf"
        conf.write_text(open(odmrd.conf).read() + "[server]\npostmaster = %s\n" % bad)
        r = subprocess.run([os.path.join(BIN, "odmrd"), "-c", str(conf), "-t"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "[server] postmaster" in r.stderr, (bad, r.stderr)
    conf.write_text(open(odmrd.conf).read() + "[server]\npostmaster = admin@provider.example\n")
    r = subprocess.run([os.path.join(BIN, "odmrd"), "-c", str(conf), "-t"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
