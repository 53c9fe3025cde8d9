# SPDX-License-Identifier: ISC
"""Crash safety: SIGKILL odmrd at random points while several clients send. Every message that
got a 250 must be in the queue, intact, after a restart; no partial message may ever be there.
A message whose 250 was lost in the crash may be there whole (a duplicate, not a loss)."""
import random
import re
import signal
import socket
import threading
import time

from smtpwire import Wire

SENDERS = 6
ROUNDS = 5


def make_body(tag, size):
    line = ("%s " % tag).encode() + b"x" * 70 + b"\r\n"
    lines = b"".join(line for _ in range(max(1, size // len(line))))
    return b"Subject: " + tag.encode() + b"\r\nX-Tag: " + tag.encode() + b"\r\n\r\n" + lines


def sender(port, prefix, acknowledged, attempted, stop):
    n = 0
    while not stop.is_set():
        try:
            w = Wire(port, timeout=5)
            if w.reply().code != 220:
                continue
            w.expect("EHLO crash.example", 250)
            while not stop.is_set():
                n += 1
                tag = "%s-%d" % (prefix, n)
                body = make_body(tag, random.choice([200, 5000, 60000, 100000]))
                attempted[tag] = body
                if w.cmd("MAIL FROM:<s@sender.example>").code != 250:
                    break
                if w.cmd("RCPT TO:<%s@example.org>" % tag).code != 250:
                    break
                if w.cmd("DATA").code != 354:
                    break
                w.send(body + b".\r\n")
                r = w.reply()
                if r.code == 250:
                    acknowledged[tag] = body
        except (OSError, EOFError, AssertionError):
            time.sleep(0.02)


def stored_tags(d):
    found = {}
    for qid in d.queue_ids():
        body = d.queue_body(qid)
        m = re.search(rb"X-Tag: (\S+)\r\n", body)
        assert m, "a queued message without its tag: partial? %r" % body[:200]
        found.setdefault(m.group(1).decode(), []).append(body)
    return found


def check_found(found, acknowledged, attempted):
    """found (tag -> stored bodies) holds every acknowledged message, and nothing partial."""
    missing = [tag for tag in acknowledged if tag not in found]
    assert missing == [], "acknowledged but lost: %s" % missing[:10]
    for tag, bodies in found.items():
        # Acknowledged, or a whole message whose 250 was lost in the crash: byte-exact either way.
        assert tag in attempted, tag
        for body in bodies:
            assert body.endswith(attempted[tag]), "message %s is not intact" % tag
            assert body.startswith(b"Received: ")


def kill_while_sending(d, prefix, senders, seconds, acknowledged, attempted):
    """One round: senders sessions send until a SIGKILL of odmrd at a random moment within
    seconds (min, max); odmrd is left stopped."""
    stop = threading.Event()
    threads = [threading.Thread(target=sender, args=(d.smtp_port, "%sc%d" % (prefix, i),
                                                     acknowledged, attempted, stop))
               for i in range(senders)]
    for t in threads:
        t.start()
    time.sleep(random.uniform(*seconds))
    d.stop(sig=signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=20)


def test_sigkill_while_sending(make_odmrd):
    d = make_odmrd()
    acknowledged = {}
    attempted = {}
    for round_no in range(ROUNDS):
        kill_while_sending(d, "r%d" % round_no, SENDERS, (0.3, 1.5), acknowledged, attempted)
        d.start()
    assert len(acknowledged) > 20, "too few messages acknowledged to mean anything"
    check_found(stored_tags(d), acknowledged, attempted)
    d.stop()
    log = d.log()
    assert "queue.recover" in log or "recovered" in log
