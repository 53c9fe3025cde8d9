# SPDX-License-Identifier: ISC
"""Relayed notices (RFC 3461 5.2.2 (b), RFC 3464 2.3.3 Action: relayed): a recipient with
NOTIFY=SUCCESS that a customer without DSN accepted gets a relayed notice, committed before it
is recorded done; toward a customer with DSN the parameters are passed on and no notice is
written. Parsed with Python's `email` package (notices.py)."""
import re

import pytest

from notices import HOSTNAME, Notice, _date, for_original, notice_ids
from test_push import BASIC_EXT, USERS, inject, push

DSN_EXT = BASIC_EXT + ("DSN",)


@pytest.fixture
def prov(make_odmrd):
    return make_odmrd(users=USERS)


def test_success_toward_a_customer_without_dsn_gives_a_relayed_notice(prov):
    qid = inject(prov, ["a@example.org", "b@example.org", "c@example.org"],
                 b"Subject: tell me\r\n\r\nrelayed-body-marker\r\n",
                 mail_params=" RET=FULL ENVID=env+2B1", rcpt_params=" NOTIFY=SUCCESS,FAILURE "
                 "ORCPT=rfc822;orig+2Ba@example.org")
    cust = push(prov, ext=BASIC_EXT, final="250 2.0.0 Ok: queued as 4XYZ")
    [t] = cust.txns
    assert t.accepted == ["a@example.org", "b@example.org", "c@example.org"]
    assert b"RET=" not in t.mail and all(b"NOTIFY" not in r for r, _code in t.rcpts)
    prov.settle()
    assert qid not in prov.queue_ids()          # delivered: removed after the notice
    [n] = for_original(prov, qid)
    assert n.envelope_sender == "<>" and n.envelope_rcpts == ["s@sender.example"]
    m = n.msg
    assert m["Subject"] == "Relayed Mail (no further notices)"
    assert m["From"] == "Mail Delivery System <MAILER-DAEMON@%s>" % HOSTNAME
    assert m["To"] == "<s@sender.example>"
    assert m["Auto-Submitted"] == "auto-replied"
    _date(m["Date"])
    pm = n.per_message
    assert pm["Reporting-MTA"] == "dns; " + HOSTNAME
    assert pm["Original-Envelope-Id"] == "env+1"
    assert pm["Received-From-MTA"].startswith("dns; sender.example")
    _date(pm["Arrival-Date"])
    assert [r["Final-Recipient"] for r in n.per_recipient] == [
        "rfc822; %s@example.org" % x for x in "abc"]
    for r in n.per_recipient:
        assert r["Action"] == "relayed", r
        assert r["Status"] == "2.0.0", r
        assert r["Original-Recipient"] == "rfc822; orig+a@example.org", r
        assert r["Remote-MTA"] == "dns; customer.example", r
        assert r["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: queued as 4XYZ", r
        _date(r["Last-Attempt-Date"])
    # RFC 3461 4.3: RET is for failed notices; a relayed one returns the headers only
    assert n.returned.get_content_type() == "text/rfc822-headers"
    assert "relayed-body-marker" not in n.returned.as_string()
    assert "Subject: tell me" in n.returned.get_payload()
    assert len(re.findall(r"event=notice\.relayed .*id=%s " % qid, prov.log())) == 3
    # the notice was committed before the original was recorded delivered
    log = prov.log()
    assert log.index("event=notice.committed") < log.index("event=queue.removed id=%s" % qid)
    assert prov.stop() == 0, prov.log()[-3000:]


@pytest.mark.parametrize("notify", [None, "FAILURE", "NEVER", "DELAY,FAILURE"])
def test_no_relayed_notice_without_notify_success(prov, notify):
    qid = inject(prov, ["a@example.org"],
                 rcpt_params=(" NOTIFY=" + notify) if notify else "")
    push(prov, ext=BASIC_EXT)
    prov.settle()
    assert qid not in prov.queue_ids()
    assert notice_ids(prov) == []


def test_no_relayed_notice_for_the_null_sender(prov):
    inject(prov, ["a@example.org"], sender="", rcpt_params=" NOTIFY=SUCCESS")
    push(prov, ext=BASIC_EXT)
    assert prov.queue_ids() == [] and notice_ids(prov) == []


def test_customer_with_dsn_gets_the_parameters_and_no_notice(prov):
    qid = inject(prov, ["a@example.org"], mail_params=" RET=HDRS ENVID=e1",
                 rcpt_params=" NOTIFY=SUCCESS ORCPT=rfc822;a@example.org")
    cust = push(prov, ext=DSN_EXT)
    [t] = cust.txns
    assert t.mail.endswith(b" RET=HDRS ENVID=e1"), t.mail
    assert t.rcpts == [(b"RCPT TO:<a@example.org> NOTIFY=SUCCESS ORCPT=rfc822;a@example.org",
                        250)]
    prov.settle()
    assert qid not in prov.queue_ids()
    assert notice_ids(prov) == []
    assert "event=notice.relayed" not in prov.log()


# ---------------------------------------------------------------- through odmr-client

def via_client(prov, keywords):
    from test_client import Sink, run_client
    qid = inject(prov, ["a@example.org"], b"Subject: via client\r\n\r\nx\r\n",
                 mail_params=" RET=HDRS ENVID=c1",
                 rcpt_params=" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.org")
    sink = Sink(keywords=keywords)
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    prov.settle()
    assert qid not in prov.queue_ids()
    return qid, sink


def test_odmr_client_toward_a_dsn_target_passes_the_parameters(prov):
    qid, sink = via_client(prov, ["8BITMIME", "SIZE 10000000", "DSN", "ENHANCEDSTATUSCODES"])
    [(mail, rcpts)] = sink.envelopes
    assert mail.endswith(" RET=HDRS ENVID=c1"), mail
    assert rcpts == ["RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.org"]
    assert notice_ids(prov) == []
    assert re.search(r"event=push\.ready .* dsn=1 ", prov.log())


def test_odmr_client_toward_a_target_without_dsn_gives_a_relayed_notice(prov):
    qid, sink = via_client(prov, ["8BITMIME", "SIZE 10000000", "ENHANCEDSTATUSCODES"])
    [(mail, rcpts)] = sink.envelopes
    assert "RET=" not in mail and rcpts == ["RCPT TO:<a@example.org>"]
    # odmr-client no longer claims DSN for a target without it (RFC 3461 5.2.2)
    assert re.search(r"event=push\.ready .* dsn=0 ", prov.log())
    [n] = for_original(prov, qid)
    assert n.msg["Subject"] == "Relayed Mail (no further notices)"
    assert n.per_message["Original-Envelope-Id"] == "c1"
    assert n.per_message["Reporting-MTA"] == "dns; " + HOSTNAME
    _date(n.per_message["Arrival-Date"])
    [r] = n.per_recipient
    assert r["Final-Recipient"] == "rfc822; a@example.org"
    assert r["Original-Recipient"] == "rfc822; a@example.org"
    assert r["Action"] == "relayed"
    assert r["Status"] == "2.0.0"
    assert r["Remote-MTA"].startswith("dns; "), r
    assert r["Diagnostic-Code"].startswith("smtp; 250"), r
    _date(r["Last-Attempt-Date"])
    assert n.returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: via client" in n.returned.get_payload()
