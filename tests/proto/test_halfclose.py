# SPDX-License-Identifier: ISC
"""A client that ends its sending side (TLS close_notify, TCP FIN) right after its last
commands still gets every reply it earned: the 250 to the final dot, the 221 to a pipelined
QUIT (issue 9, defect 1; docs/architecture.md, "the client half-closes"). Exim ends every
reused TLS connection this way; a lost 250 made it send the message again. An end of input
with nothing left to answer still ends the session at once."""
import re
import socket
import time

import pytest

from smtpwire import TlsBio, Wire, greet, transaction

MESSAGE = (b"Subject: half-close\r\nMessage-ID: <%s@client.example>\r\n\r\n"
           b"body of %s\r\n.\r\n")


@pytest.fixture(autouse=True)
def exits_cleanly(odmrd):
    """After each test odmrd stops on SIGTERM with status 0 (under ASan: no error, no leak)."""
    yield
    assert odmrd.stop() == 0, odmrd.log()[-3000:]


def queued_once(d, reply, tag):
    """The 250 names the queue id; that message, and no other, is in the queue."""
    assert reply.code == 250 and reply.enhanced == "2.0.0", reply
    qid = reply.lines[0].split()[-1]
    assert d.queue_ids() == [qid]
    assert d.queue_body(qid).endswith(b"\r\n\r\nbody of " + tag + b"\r\n")
    return qid


def starttls_transaction(d):
    w = greet(d.smtp_port)
    w.expect("STARTTLS", 220, "2.0.0")
    t = TlsBio(w.sock)
    t.handshake()
    t.expect("EHLO tls.example", 250)
    transaction(t)
    t.expect("DATA", 354)
    return t


def test_starttls_dot_quit_close_notify_fin_gets_250_and_221(odmrd):
    t = starttls_transaction(odmrd)
    # The message's end, QUIT, the close_notify and the FIN reach odmrd together, as Exim's.
    t.queue(MESSAGE % (b"tls1", b"tls1") + b"QUIT\r\n")
    t.close_notify_and_fin()
    queued_once(odmrd, t.reply(), b"tls1")
    bye = t.reply()
    assert bye.code == 221 and bye.enhanced == "2.0.0", bye
    assert t.closed_cleanly()          # then odmrd's own close_notify, then its FIN
    assert "reason=disconnect" not in odmrd.log()


def test_starttls_dot_close_notify_fin_without_quit_gets_250(odmrd):
    t = starttls_transaction(odmrd)
    t.queue(MESSAGE % (b"tls2", b"tls2"))
    t.close_notify_and_fin()
    queued_once(odmrd, t.reply(), b"tls2")
    assert t.closed_cleanly()


def test_plain_dot_quit_fin_gets_250_and_221(odmrd):
    w = greet(odmrd.smtp_port)
    transaction(w)
    w.expect("DATA", 354)
    w.send(MESSAGE % (b"tcp1", b"tcp1") + b"QUIT\r\n")
    w.sock.shutdown(socket.SHUT_WR)
    queued_once(odmrd, w.reply(), b"tcp1")
    assert w.reply().code == 221
    assert w.closed()


def test_plain_pipelined_replies_then_fin_all_arrive(odmrd):
    """Replies still queued when the FIN is read leave before the close."""
    w = greet(odmrd.smtp_port)
    w.send(b"NOOP\r\n" * 50 + b"RSET\r\n")
    w.sock.shutdown(socket.SHUT_WR)
    codes = [w.reply().code for _ in range(51)]
    assert codes == [250] * 51
    assert w.closed()


def test_lmtp_dot_quit_fin_gets_a_reply_per_recipient_and_221(odmrd):
    w = Wire(odmrd.lmtp_port)
    assert w.reply().code == 220
    w.expect("LHLO front.example", 250)
    transaction(w, rcpts=("<u@example.org>", "<v@bob.example>"))
    w.expect("DATA", 354)
    w.send(MESSAGE % (b"lmtp1", b"lmtp1") + b"QUIT\r\n")
    w.sock.shutdown(socket.SHUT_WR)
    first, second = w.reply(), w.reply()
    qid = queued_once(odmrd, first, b"lmtp1")
    assert second.code == 250 and second.lines[0].split()[-1] == qid
    assert w.reply().code == 221
    assert w.closed()


def test_fin_with_nothing_pending_ends_the_session_at_once(odmrd):
    w = greet(odmrd.smtp_port)
    # Ours is the last SMTP session started (the fixture's port probes came before it).
    sid = re.findall(r"event=session\.start session=(S\w+) ", odmrd.log())[-1]
    w.sock.shutdown(socket.SHUT_WR)
    assert w.closed(timeout=2)
    deadline = time.time() + 2
    while "event=session.end session=%s " % sid not in odmrd.log() and time.time() < deadline:
        time.sleep(0.02)
    assert "event=session.end session=%s " % sid in odmrd.log()


def test_fin_in_the_middle_of_data_queues_nothing(odmrd):
    w = greet(odmrd.smtp_port)
    transaction(w)
    w.expect("DATA", 354)
    w.send(b"Subject: cut\r\n\r\nhalf a mess")
    w.sock.shutdown(socket.SHUT_WR)
    assert w.closed(timeout=2)
    assert odmrd.queue_ids() == []
    assert "reason=disconnect" in odmrd.log()


# ---------------------------------------------------------------- the ODMR port

def odmr_tls(d, implicit):
    if implicit:
        t = TlsBio(socket.create_connection(("127.0.0.1", d.odmrs_port), timeout=10))
        t.handshake()
        assert t.reply().code == 220
        return t
    w = Wire(d.odmr_port)
    assert w.reply().code == 220
    w.expect("STARTTLS", 220)
    t = TlsBio(w.sock)
    t.handshake()
    return t


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_odmr_failed_auth_quit_close_notify_fin(odmrd, implicit):
    """A failed AUTH is answered after a delay; a customer that pipelined QUIT and then
    half-closed still gets the 535 and the 221, then odmrd's close_notify and FIN, never a
    reset (one for the unread close_notify would throw away a 221 still on its way)."""
    t = odmr_tls(odmrd, implicit)
    t.expect("EHLO customer.example", 250)
    t.queue(b"AUTH PLAIN AGFsaWNlAHdyb25n\r\nQUIT\r\n")   # alice / wrong
    t.close_notify_and_fin()
    failed = t.reply()
    assert failed.code == 535 and failed.enhanced == "5.7.8", failed
    assert t.reply().code == 221
    assert t.closed_cleanly()


def test_odmr_implicit_tls_replies_then_close_notify_fin(odmrd):
    sock = socket.create_connection(("127.0.0.1", odmrd.odmrs_port), timeout=10)
    t = TlsBio(sock)
    t.handshake()
    assert t.reply().code == 220
    t.queue(b"EHLO customer.example\r\nNOOP\r\n")
    t.close_notify_and_fin()
    assert t.reply().code == 250
    assert t.reply().code == 250
    assert t.closed_cleanly()
