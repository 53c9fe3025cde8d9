# SPDX-License-Identifier: ISC
"""Delay warnings ([queue] delay_warning, docs/notices.md): once per recipient with NOTIFY
containing DELAY or no NOTIFY (RFC 3461 4.1), Action delayed, Status 4.4.7, Will-Retry-Until =
arrival + max_hold; the mark survives a restart. Parsed with Python's `email` package."""
import email.utils
import os
import re
import time

from notices import HOSTNAME, Notice, _date, notice_ids
from test_push import USERS, inject, push

WARN = {"queue.delay_warning": "2s", "queue.max_hold": "1d"}


def wait_for(what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if what():
            return True
        time.sleep(0.1)
    return what()


def test_delay_warning_once_per_recipient(make_odmrd):
    d = make_odmrd(users=USERS, extra=WARN)
    qid = inject(d, ["a@example.org", "b@example.org", "c@example.org"],
                 b"Subject: slow\r\n\r\nslow-body-marker\r\n", mail_params=" RET=FULL ENVID=w1")
    # different NOTIFY per recipient needs its own RCPT parameters: a second message
    qid2 = inject(d, ["n@example.org"], rcpt_params=" NOTIFY=FAILURE")
    qid3 = inject(d, ["d@example.org"], rcpt_params=" NOTIFY=DELAY ORCPT=rfc822;orig+2Bd@x.example")
    qid4 = inject(d, ["z@example.org"], sender="")
    assert wait_for(lambda: d.log().count("event=notice.delayed") >= 4), d.log()[-3000:]
    time.sleep(3.5)   # three more scans: no second warning
    log = d.log()
    assert log.count("event=notice.delayed") == 4, log[-3000:]
    assert len(set(notice_ids(d)) - {qid4}) == 2   # qid4 is from <> itself
    found = [Notice(d, i) for i in notice_ids(d) if i != qid4]

    def of(original):
        return [x for x in found if ("held as %s." % original) in x.human]
    assert of(qid2) == [] and of(qid4) == []
    [n] = of(qid)
    check_delayed(n, qid, ["a@example.org", "b@example.org", "c@example.org"], envid="w1")
    assert n.returned.get_content_type() == "text/rfc822-headers"   # RET is for failed ones
    assert "slow-body-marker" not in n.raw.decode()
    [n3] = of(qid3)
    check_delayed(n3, qid3, ["d@example.org"])
    assert n3.per_recipient[0]["Original-Recipient"] == "rfc822; orig+d@x.example"
    # the originals are still held, their recipients pending
    assert {qid, qid2, qid3, qid4} <= set(d.queue_ids())
    assert "state=pending" in d.queue_show(qid)
    # the mark is on disk: a restart warns nobody again
    d.stop()
    d.start_fully()
    time.sleep(3.5)
    assert d.log().count("event=notice.delayed") == 4
    # delivered later as usual
    push(d, rcpt="250 2.1.5 OK")
    assert qid not in d.queue_ids()
    assert d.stop() == 0, d.log()[-3000:]


def check_delayed(n, original_id, rcpts, envid=None):
    assert n.envelope_sender == "<>" and n.envelope_rcpts == ["s@sender.example"]
    m = n.msg
    assert m["Subject"] == "Delayed Mail (still being retried)"
    assert m["From"] == "Mail Delivery System <MAILER-DAEMON@%s>" % HOSTNAME
    assert m["Auto-Submitted"] == "auto-replied"
    assert "held as %s." % original_id in n.human
    pm = n.per_message
    assert pm["Reporting-MTA"] == "dns; " + HOSTNAME
    if envid:
        assert pm["Original-Envelope-Id"] == envid
    arrival = _date(pm["Arrival-Date"])
    assert [r["Final-Recipient"] for r in n.per_recipient] == ["rfc822; " + a for a in rcpts]
    for r in n.per_recipient:
        assert r["Action"] == "delayed", r
        assert r["Status"] == "4.4.7", r
        assert r["Diagnostic-Code"] == "X-odmrd; not yet collected by the customer's server", r
        assert "Remote-MTA" not in r and "Last-Attempt-Date" not in r, r
        until = email.utils.parsedate_to_datetime(r["Will-Retry-Until"])
        assert (until - arrival).total_seconds() == 86400, (until, arrival)


def test_no_delay_warning_by_default(make_odmrd):
    d = make_odmrd(users=USERS, extra={"queue.max_hold": "1d"})
    inject(d, ["a@example.org"])
    time.sleep(3)
    assert notice_ids(d) == [] and "event=notice.delayed" not in d.log()
    assert re.search(r"event=expire\.start max_hold=86400 period=\d+ delay_warning=0\b", d.log())


def test_a_version_1_entry_is_read_and_rewritten_as_version_2(make_odmrd):
    d = make_odmrd(users=USERS, extra={"queue.max_hold": "1d"})
    qid = inject(d, ["a@example.org"])
    d.stop()
    entry = os.path.join(d.spool, "dom", "example.org", qid)
    with open(entry, "w") as f:
        f.write("ODMRD 1\nrcpt 0 pending 2 1795925358 =451%20later\nend\n")
    d.start_fully()
    assert "attempts=2" in d.queue_show(qid)
    push(d, rcpt="451 4.7.1 still later")
    with open(entry) as f:
        text = f.read()
    assert text.startswith("ODMRD 2\nrcpt 0 pending 3 ") and " - =451%204.7.1" in text, text
