# SPDX-License-Identifier: ISC
"""The per-recipient delivery line (docs/push.md "Log lines"): one Postfix-style
`event=delivery id= to= relay= delay= dsn= status=... (reply)` line for every recipient
outcome odmrd decides, here for a push (sent, deferred, bounced) and for expiry."""
import re

from test_client import Sink, queue_settled, run_client
from test_notices import wait_log
from test_push import USERS, inject

LINE = (r"level=info event=delivery id=(?P<id>%s) to=(?P<to>%s) "
        r"relay=(?P<relay>%s) delay=(?P<delay>\d+\.\d) dsn=(?P<dsn>%s) "
        r"status=(?P<status>%s) \((?P<reply>%s)\)$")


def delivery_lines(d):
    return [l for l in d.log().splitlines() if " event=delivery " in l]


def test_push_sent_deferred_bounced(make_odmrd):
    d = make_odmrd(users=USERS)
    rcpts = ["ok@example.org", "later@example.org", "bad@example.org"]
    qid = inject(d, rcpts)
    sink = Sink(rcpt_replies={"later@example.org": "451 4.3.0 try later",
                              "bad@example.org": "550 5.1.1 no such user"})
    r = run_client(d, sink.target())
    assert r.returncode == 0, r.stderr
    wait_log(d, " event=delivery ", count=3)
    queue_settled(d, count=2)   # the original (later@ pending) and bad@'s failed notice
    lines = delivery_lines(d)
    assert len(lines) == 3, lines
    relay = r"customer\[127\.0\.0\.1\] user=alice"
    expected = {
        "ok@example.org": (r"2\.\d+\.\d+", "sent", r"250 [^()]*"),
        "later@example.org": (r"4\.3\.0", "deferred", r"451 4\.3\.0 try later"),
        "bad@example.org": (r"5\.1\.1", "bounced", r"550 5\.1\.1 no such user"),
    }
    seen = {}
    for line in lines:
        for to, (dsn, status, reply) in expected.items():
            m = re.search(LINE % (re.escape(qid), re.escape(to), relay, dsn, status, reply),
                          line)
            if m:
                assert m.group("id") == qid
                assert 0 <= float(m.group("delay")) < 60
                seen[to] = line
    assert sorted(seen) == sorted(expected), lines
    # the existing lines stay
    assert d.log().count("event=push.rcpt") == 3


def test_expiry_logs_expired(make_odmrd):
    d = make_odmrd(users=USERS, extra={"queue.max_hold": "2s"})
    qid = inject(d, ["u@example.org"])
    wait_log(d, "event=notice.original_removed", timeout=30)
    lines = [l for l in delivery_lines(d) if "id=%s " % qid in l]
    assert len(lines) == 1, lines
    m = re.search(LINE % (re.escape(qid), re.escape("u@example.org"), "none", r"5\.4\.7",
                          "expired", r"expired: held \d+ seconds, max_hold 2 seconds"),
                  lines[0])
    assert m, lines
    assert float(m.group("delay")) >= 2.0
    assert "event=expire.rcpt id=%s" % qid in d.log()
