# SPDX-License-Identifier: ISC
"""Sending notices out through [bounce] relay (docs/notices.md "Sending notices out"): a private
Postfix on loopback is the relay and hands what it accepts to a recording sink; relay down,
back-off and delivery once it is back; a 5xx from the relay with and without [bounce]
postmaster; notices for hosted domains stay held."""
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

import postfix
from conftest import BIN
from notices import notice_ids
from test_client import Sink
from test_push import USERS, inject, push

REFUSE_BAD = "550 5.1.1 <bad@example.org>: no such user"


def refuse_bad(address, txn):
    return REFUSE_BAD if address == "bad@example.org" else "250 2.1.5 OK"


def until(what, timeout=30, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    return what()


@pytest.fixture
def relay_env():
    """(sink, make_postfix): the sink records what the private Postfix relays to it; the
    Postfix is configured (port known) but started by the test."""
    reason = postfix.unusable_reason()
    if reason:
        pytest.skip(reason)
    sink = Sink(pipelining=False)
    tmp = tempfile.mkdtemp(prefix="postfix-relay-")
    os.chmod(tmp, 0o755)
    made = []

    def make(relay_domains=("sender.example",), main=None):
        pf = postfix.Postfix(os.path.join(tmp, "pf%d" % len(made)), relay_domains=relay_domains,
                             transports={d: "smtp:[127.0.0.1]:%d" % sink.port
                                         for d in relay_domains}, main=main)
        made.append(pf)
        return pf
    try:
        yield sink, make
    finally:
        for pf in made:
            pf.stop()
        sink.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def relay_odmrd(make_odmrd, pf, **bounce):
    extra = {"bounce.relay": "127.0.0.1:%d" % pf.port, "bounce.retry_min": "1s",
             "bounce.retry_max": "2s"}
    extra.update({"bounce." + k: v for k, v in bounce.items()})
    return make_odmrd(users=USERS, extra=extra)


def without_postfix_received(data):
    """The message as Postfix relayed it, minus the one Received: field Postfix put on top."""
    assert data.startswith(b"Received: "), data[:200]
    lines = data.split(b"\r\n")
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def refused_notice(d):
    """Pushes a message whose one recipient the customer refuses: its failed notice, to
    s@sender.example (a domain no customer hosts), is filed for the admin."""
    inject(d, ["bad@example.org"], b"Subject: relay me\r\n\r\nbody\r\n")
    push(d, rcpt=refuse_bad)
    assert d.wait_log("event=notice.committed")


def test_relay_down_then_back_delivers_the_notice_byte_exact(make_odmrd, relay_env):
    sink, make_pf = relay_env
    pf = make_pf()                       # configured, not started: the relay is down
    d = relay_odmrd(make_odmrd, pf)
    refused_notice(d)
    [nid] = notice_ids(d)
    queued = d.queue_body(nid)
    # refused connections count attempts with a growing back-off; the notice stays queued
    assert d.wait_log("outcome=deferred", count=2, timeout=20), d.log()[-3000:]
    assert re.search(r"event=notice_relay\.rcpt id=%s rcpt=s@sender\.example outcome=deferred "
                     r"attempts=1 .*retry_in=1" % nid, d.log()), d.log()[-3000:]
    assert notice_ids(d) == [nid]
    assert re.search(r"attempts=([2-9]|\d\d)", d.queue_show(nid)), d.queue_show(nid)
    pf.start()
    assert until(lambda: sink.messages, timeout=40), pf.log()[-3000:] + d.log()[-2000:]
    [(sender, rcpts, data)] = [m[:3] for m in sink.messages]
    assert sender == "" and rcpts == ["s@sender.example"], sink.messages
    assert without_postfix_received(data) == queued
    assert until(lambda: notice_ids(d) == [], timeout=10)
    assert re.search(r"event=notice_relay\.rcpt id=%s rcpt=s@sender\.example outcome=sent" % nid,
                     d.log())
    # the Postfix-style line (docs/push.md "Log lines"): deferred while down, then sent
    relay = r"127\.0\.0\.1:%d" % pf.port
    assert re.search(r"level=info event=delivery id=%s to=s@sender\.example relay=%s "
                     r"delay=\d+\.\d dsn=4\.\d\.\d status=deferred \(" % (nid, relay), d.log()), \
        d.log()[-3000:]
    assert re.search(r"level=info event=delivery id=%s to=s@sender\.example relay=%s "
                     r"delay=\d+\.\d dsn=2\.\d\.\d status=sent \(250 2\.0\.0 Ok[^\n]*\)$"
                     % (nid, relay), d.log(), re.M), d.log()[-3000:]
    assert re.search(r"from=<>.*\n(.*\n)*.*to=<s@sender\.example>.*status=sent", pf.log())
    assert d.stop() == 0, d.log()[-3000:]   # clean exit (no leak under ASan)


def rejecting_postfix(make_pf):
    """A Postfix that relays only for provider.example: RCPT TO:<s@sender.example> gets
    554 5.7.1 Relay access denied (reject_unauth_destination)."""
    pf = make_pf(relay_domains=("provider.example",),
                 main={"mynetworks": "192.0.2.1/32",
                       "smtpd_relay_restrictions": "reject_unauth_destination"})
    return pf.start()


def test_relay_5xx_without_postmaster_is_logged_and_dropped(make_odmrd, relay_env):
    sink, make_pf = relay_env
    pf = rejecting_postfix(make_pf)
    d = relay_odmrd(make_odmrd, pf)
    refused_notice(d)
    assert d.wait_log("event=notice_relay.dropped", timeout=30), d.log()[-3000:]
    assert re.search(r"event=notice_relay\.rcpt .*rcpt=s@sender\.example outcome=refused "
                     r'.*reply="554 5\.7\.1', d.log()), d.log()[-3000:]
    assert re.search(r"event=delivery id=\w+ to=s@sender\.example relay=127\.0\.0\.1:%d "
                     r"delay=\d+\.\d dsn=5\.7\.1 status=bounced \(554 5\.7\.1 " % pf.port,
                     d.log()), d.log()[-3000:]
    assert until(lambda: notice_ids(d) == [], timeout=10)
    assert d.queue_ids() == []
    time.sleep(1.5)
    assert sink.messages == []
    # never a notice about a notice (RFC 3461 6.2)
    assert d.log().count("event=notice.committed") == 1


def test_relay_5xx_with_postmaster_readdresses_the_notice(make_odmrd, relay_env):
    sink, make_pf = relay_env
    pf = rejecting_postfix(make_pf)
    d = relay_odmrd(make_odmrd, pf, postmaster="postmaster@provider.example")
    refused_notice(d)
    [nid] = until(lambda: notice_ids(d), timeout=5)
    queued = d.queue_body(nid)
    assert until(lambda: sink.messages, timeout=40), d.log()[-3000:] + pf.log()[-2000:]
    [(sender, rcpts, data)] = [m[:3] for m in sink.messages]
    assert sender == "" and rcpts == ["postmaster@provider.example"]
    copy = without_postfix_received(data)
    head, rest = copy.split(b"\r\n", 2)[:2], copy.split(b"\r\n", 2)[2]
    assert head[0] == b"X-Odmrd-Notice-For: <s@sender.example>"
    assert re.match(rb"X-Odmrd-Relay-Reply: 554 5\.7\.1 .*Relay access denied", head[1]), head
    assert rest == queued
    assert re.search(r"event=notice_relay\.readdressed id=%s copy=\w+" % nid, d.log())
    assert until(lambda: d.queue_ids() == [], timeout=10), d.queue_ids()
    assert d.log().count("event=notice.committed") == 1
    assert d.stop() == 0, d.log()[-3000:]


def test_notice_for_a_hosted_sender_stays_held_for_the_customer(make_odmrd, relay_env):
    sink, make_pf = relay_env
    pf = make_pf().start()
    d = relay_odmrd(make_odmrd, pf)
    inject(d, ["bad@example.org"], sender="writer@bob.example")
    push(d, rcpt=refuse_bad)
    [nid] = until(lambda: d.queue_ids("bob.example"), timeout=5)
    time.sleep(3)   # three scans
    assert d.queue_ids("bob.example") == [nid]
    assert "event=notice_relay.connect" not in d.log()
    assert sink.messages == []


def test_odmrd_t_with_a_relay(make_odmrd):
    d = make_odmrd(users=USERS, extra={"bounce.relay": "127.0.0.1:25"}, start=False)
    r = subprocess.run([os.path.join(BIN, "odmrd"), "-c", d.conf, "-t"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "no [bounce] relay" not in r.stderr, r.stderr
    d.extra["bounce.relay"] = "no-port"
    d.write_config()
    r = subprocess.run([os.path.join(BIN, "odmrd"), "-c", d.conf, "-t"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 78 and "[bounce] relay" in r.stderr, r.stderr


def test_shutdown_while_the_relay_says_nothing(make_odmrd):
    """A relay that accepts the connection and never greets: SIGTERM ends the connection, the
    notice counts an attempt and stays queued, odmrd exits cleanly at once."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        d = make_odmrd(users=USERS, extra={
            "bounce.relay": "127.0.0.1:%d" % silent.getsockname()[1], "bounce.retry_min": "1s"})
        refused_notice(d)
        [nid] = notice_ids(d)
        assert d.wait_log("event=notice_relay.connect", timeout=10), d.log()[-2000:]
        started = time.time()
        assert d.stop() == 0, d.log()[-3000:]
        assert time.time() - started < 10
        assert re.search(r"event=notice_relay\.rcpt id=%s .*outcome=deferred .*aborted" % nid,
                         d.log()), d.log()[-2000:]
        d.start_fully()
        assert nid in d.queue_ids()
    finally:
        silent.close()
