# SPDX-License-Identifier: ISC
"""Delivery status notices (docs/notices.md): failed notices for recipients the customer
refuses and for mail held longer than max_hold, read back from odmrd's queue and parsed with
Python's `email` package field by field (notices.py)."""
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BIN
from notices import Notice, check_failed_notice, for_original, notice_ids
from test_client import Sink, run_client
from test_push import USERS, Customer, atrn, inject, login, push, pushes_done, wait_push_done

THREE = ["good1@example.org", "bad@example.org", "good2@example.net"]
REFUSE_BAD = "550 5.1.1 <bad@example.org>: no such user"


@pytest.fixture
def prov(make_odmrd):
    return make_odmrd(users=USERS)


def refuse_bad(address, txn):
    return REFUSE_BAD if address == "bad@example.org" else "250 2.1.5 OK"


def wait_log(d, needle, count=1, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if d.log().count(needle) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("%r not logged %d times; log tail:\n%s" % (needle, count, d.log()[-3000:]))


# ---------------------------------------------------------------- the customer refuses (5xx)

def test_550_to_one_of_three_via_odmr_client(prov):
    qid = inject(prov, THREE, b"Subject: three\r\n\r\nbody-text-marker\r\n",
                 mail_params=" RET=FULL ENVID=client+2Benv", rcpt_params=" ORCPT=rfc822;o+2Bx")
    sink = Sink(rcpt_replies={"bad@example.org": REFUSE_BAD})
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert [m[1] for m in sink.messages] == [["good1@example.org", "good2@example.net"]]
    prov.settle()
    assert qid not in prov.queue_ids()
    [n] = for_original(prov, qid)
    check_failed_notice(n, qid, "s@sender.example", {"bad@example.org": {
        "status": "5.1.1", "remote": "customer.example", "orcpt": "rfc822; o+x",
        "diagnostic": "smtp; " + REFUSE_BAD}}, envid="client+env", ret="FULL",
        subject="three", body_marker="body-text-marker")
    log = prov.log()
    assert len(re.findall(r"event=notice\.failed .*rcpt=bad@example\.org .*held=admin", log)) == 1


def test_lmtp_target_refusing_after_the_data_via_odmr_client(prov):
    """odmr-client folds its LMTP target's per-recipient 5xx into one reply after the data
    (docs/client.md): every recipient gets the failed notice, one notice for the message."""
    qid = inject(prov, ["a@example.org", "b@example.org"])
    refusal = "550 5.2.2 mailbox full"
    sink = Sink(lmtp=True, data_replies={"a@example.org": refusal, "b@example.org": refusal})
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    prov.settle()
    assert qid not in prov.queue_ids()
    [n] = for_original(prov, qid)
    check_failed_notice(n, qid, "s@sender.example", {
        a: {"status": "5.2.2", "remote": "customer.example", "diagnostic": "smtp; " + refusal}
        for a in ("a@example.org", "b@example.org")})


def test_refused_after_the_data_lists_every_recipient_in_one_notice(prov):
    qid = inject(prov, ["a@example.org", "b@example.org", "c@example.org"])
    push(prov, final="554 5.7.1 spam")
    assert qid not in prov.queue_ids()
    [n] = for_original(prov, qid)
    check_failed_notice(n, qid, "s@sender.example", {
        a: {"status": "5.7.1", "remote": "customer.example", "diagnostic": "smtp; 554 5.7.1 spam"}
        for a in ("a@example.org", "b@example.org", "c@example.org")})
    assert prov.log().count("event=notice.failed") == 3   # one line per recipient notified


def test_ret_full_and_hdrs_and_default(prov):
    body = b"Subject: ret %s\r\nX-Mark: 1\r\n\r\nthe-body-itself\r\n"
    ids = {ret: inject(prov, ["bad@example.org"], body % ret.encode(),
                       mail_params=(" RET=" + ret) if ret != "none" else "")
           for ret in ("FULL", "HDRS", "none")}
    push(prov, rcpt=refuse_bad)
    for ret, qid in ids.items():
        [n] = for_original(prov, qid)
        check_failed_notice(n, qid, "s@sender.example", {"bad@example.org": {
            "status": "5.1.1", "remote": "customer.example", "diagnostic": "smtp; " + REFUSE_BAD}},
            ret="FULL" if ret == "FULL" else "HDRS", subject="ret " + ret,
            body_marker="the-body-itself")
    # the headers part holds the header block, nothing of the body
    hdrs = for_original(prov, ids["HDRS"])[0].returned.get_payload()
    assert hdrs.endswith("X-Mark: 1\r\n") or hdrs.endswith("X-Mark: 1\n"), repr(hdrs)


def test_ret_full_over_1_mib_returns_the_headers_and_says_why(prov):
    body = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 15000   # 1.17 MB
    qid = inject(prov, ["bad@example.org"], body, mail_params=" RET=FULL")
    push(prov, rcpt=refuse_bad)
    [n] = for_original(prov, qid)
    check_failed_notice(n, qid, "s@sender.example", {"bad@example.org": {
        "status": "5.1.1", "remote": "customer.example", "diagnostic": "smtp; " + REFUSE_BAD}},
        ret="HDRS", subject="big", body_marker="y" * 76)
    assert "too large to return whole" in n.human
    assert len(n.raw) < 10000


@pytest.mark.parametrize("notify", ["NEVER", "SUCCESS,DELAY"])
def test_no_notice_without_notify_failure(prov, notify):
    qid = inject(prov, ["bad@example.org"], rcpt_params=" NOTIFY=" + notify)
    push(prov, rcpt=refuse_bad)
    assert notice_ids(prov) == []
    assert qid not in prov.queue_ids()   # nothing owed: bounced and removed at once
    assert "event=notice.none" in prov.log() and "reason=notify" in prov.log()


def test_no_notice_for_the_null_sender(prov):
    qid = inject(prov, ["bad@example.org"], sender="")
    push(prov, rcpt=refuse_bad)
    assert notice_ids(prov) == [] and prov.queue_ids() == []
    assert re.search(r"event=notice\.none .*id=%s .*reason=null-sender" % qid, prov.log())


def test_notice_for_a_hosted_sender_is_held_for_that_customer(prov):
    qid = inject(prov, ["bad@example.org"], sender="writer@bob.example")
    push(prov, rcpt=refuse_bad)
    [nid] = prov.queue_ids("bob.example")
    assert "held=customer" in prov.log()
    cust = push(prov, user="bob")
    [t] = cust.delivered()
    assert t.mail.startswith(b"MAIL FROM:<>")
    assert t.accepted == ["writer@bob.example"]
    assert b"report-type=delivery-status" in t.data and qid.encode() in t.data
    assert prov.queue_ids() == [] and nid


def test_8bitmime_original_returned_whole(prov):
    body = "Subject: caf\u00e9 8bit\r\n\r\nna\u00efve\r\n".encode()
    qid = inject(prov, ["bad@example.org"], body, mail_params=" BODY=8BITMIME RET=FULL")
    push(prov, rcpt=refuse_bad)
    [n] = for_original(prov, qid)
    assert re.search(r"^body:\s+8BITMIME$", n.show, re.M), n.show   # queued as 8BITMIME
    assert n.returned.get_content_type() == "message/rfc822"
    assert n.returned["Content-Transfer-Encoding"] == "8bit"
    assert body in n.raw


def test_odmrd_t_says_notices_are_held(prov):
    r = subprocess.run([os.path.join(BIN, "odmrd"), "-c", prov.conf, "-t"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "warning: no [bounce] relay is configured" in r.stderr
    assert "notices are held in the queue" in r.stderr


# ---------------------------------------------------------------- the crash rule

def test_sigkill_after_the_notice_commit_gives_a_second_notice_never_none(prov):
    """The on-disk state "notice committed, original not yet final" is made by refusing odmrd
    (running as nobody) writes to the original's domain directory, so recording the original's
    final state fails right after the notice's commit; odmrd is then killed with SIGKILL."""
    if prov.run_user is None:
        pytest.skip("needs root to run odmrd as another user")
    qid = inject(prov, THREE)
    domdir = os.path.join(prov.spool, "dom", "example.org")
    os.chmod(domdir, 0o500)
    try:
        push(prov, rcpt=refuse_bad)
        wait_log(prov, "event=notice.record_failed")
        prov.stop(sig=signal.SIGKILL)
    finally:
        os.chmod(domdir, 0o700)
    assert len(for_original(prov, qid)) == 1     # committed before the crash
    assert qid in prov.queue_ids()               # the original is not final
    prov.start()
    push(prov, rcpt=refuse_bad)
    assert qid not in prov.queue_ids()
    found = for_original(prov, qid)
    assert 1 <= len(found) <= 2, found           # a duplicate at worst, never none
    assert len(found) == 2
    for n in found:
        assert [r["Final-Recipient"] for r in n.per_recipient] == ["rfc822; bad@example.org"]


# ---------------------------------------------------------------- expiry

def test_expiry_with_max_hold_2s(make_odmrd):
    d = make_odmrd(users=USERS, extra={"queue.max_hold": "2s"})
    qid = inject(d, ["u@example.org", "v@bob.example"], b"Subject: never fetched\r\n\r\nx\r\n",
                 mail_params=" ENVID=exp1", rcpt_params=" ORCPT=rfc822;orig@example.org")
    d.ctl("user", "del", "bob")   # a domain no user holds any more expires too
    wait_log(d, "event=notice.original_removed", timeout=30)
    d.stop()   # read the notice before it expires in turn
    assert qid not in d.queue_ids()
    [n] = for_original(d, qid)
    held = "held for 2 seconds, the customer's server did not collect it"
    check_failed_notice(n, qid, "s@sender.example", {
        a: {"status": "5.4.7", "remote": None, "orcpt": "rfc822; orig@example.org",
            "diagnostic": "X-odmrd; " + held, "last_attempt": False}
        for a in ("u@example.org", "v@bob.example")}, envid="exp1", subject="never fetched")
    assert "Last-Attempt-Date" not in n.per_recipient[0]   # never tried
    assert n.human.count(held) == 2
    log = d.log()
    for a in ("u@example.org", "v@bob.example"):
        assert re.search(r"event=expire\.rcpt id=%s rcpt=%s .*max_hold=2" % (qid, re.escape(a)),
                         log), log
    # The notice expires in turn: from <>, so it gets no notice of its own.
    d.start()
    wait_log(d, "reason=null-sender", timeout=30)
    wait_log(d, "event=notice.original_removed", count=2, timeout=30)
    assert d.queue_ids() == []


def test_expiry_skips_a_message_being_pushed(make_odmrd):
    """A push holds the domain lease: the scan leaves that message alone until the next one."""
    d = make_odmrd(users=USERS, extra={"queue.max_hold": "2s"})
    qid = inject(d, ["u@example.org"])
    c = login(d)
    code, _ = atrn(c)
    assert code == 250
    time.sleep(3.5)   # old enough, and at least one scan while the lease is held
    assert qid in d.queue_ids()
    assert "event=expire.skipped id=%s domain=example.org" % qid in d.log()
    assert "event=expire.rcpt" not in d.log()
    before = pushes_done(d)
    cust = Customer(c).run()
    c.close()
    wait_push_done(d, before + 1)
    assert [t.accepted for t in cust.delivered()] == [["u@example.org"]]
    assert notice_ids(d) == []


def test_young_messages_are_left_alone(make_odmrd):
    """Young messages are not touched (their files are not even opened)."""
    d = make_odmrd(users=USERS, extra={"queue.max_hold": "1h"})
    inject(d, ["u@example.org"])
    time.sleep(1.5)
    assert "event=expire.scan" not in d.log() and notice_ids(d) == []
    assert "event=expire.start max_hold=3600 period=300" in d.log()
