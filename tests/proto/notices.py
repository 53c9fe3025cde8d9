# SPDX-License-Identifier: ISC
"""Reading odmrd's delivery status notices back from its queue and parsing them with Python's
`email` package (RFC 3464 inside RFC 6522): independent of odmrd's own code."""
import email
import email.policy
import email.utils
import re
import time


class Notice:
    """One notice: the queue id, the envelope shown by odmrctl, the parsed message and its
    three parts (human text, per-message fields, per-recipient field groups, returned part)."""

    def __init__(self, d, qid):
        self.qid = qid
        self.show = d.queue_show(qid)
        self.raw = d.queue_body(qid)
        self.msg = email.message_from_bytes(self.raw, policy=email.policy.compat32)
        assert self.msg.get_content_type() == "multipart/report", self.msg.get_content_type()
        assert self.msg.get_param("report-type") == "delivery-status"
        self.parts = self.msg.get_payload()
        self.human = self.parts[0].get_payload(decode=True).decode("utf-8")
        status = self.parts[1]
        assert status.get_content_type() in ("message/delivery-status",
                                             "message/global-delivery-status")
        # compat32 parses message/delivery-status into a list of header blocks; the RFC 6533
        # global type (UTF-8 allowed) stays text: parse its blocks the same way.
        blocks = status.get_payload()
        if status.get_content_type() == "message/global-delivery-status":
            text = status.as_bytes().decode("utf-8").split("\n\n", 1)[1]
            blocks = [email.message_from_string(b + "\n", policy=email.policy.compat32)
                      for b in re.split(r"\r?\n\r?\n", text.strip("\r\n"))]
        self.per_message = dict(blocks[0].items())
        self.per_recipient = [dict(b.items()) for b in blocks[1:]]
        self.returned = self.parts[2] if len(self.parts) > 2 else None

    @property
    def envelope_sender(self):
        return re.search(r"^sender:\s+(.*)$", self.show, re.M).group(1)

    @property
    def envelope_rcpts(self):
        return re.findall(r"^\s+\[\d+\] <([^>]*)>", self.show, re.M)

    def recipient(self, address):
        for r in self.per_recipient:
            if r["Final-Recipient"] == "rfc822; " + address:
                return r
        raise AssertionError("no per-recipient fields for %s in %r" % (address,
                                                                       self.per_recipient))


def notice_ids(d):
    """Queue ids of the notices (messages from the null reverse-path), oldest first."""
    return [qid for qid in d.queue_ids() if re.search(r"^sender:\s+<>$", d.queue_show(qid), re.M)]


def notices(d):
    return [Notice(d, qid) for qid in notice_ids(d)]


def for_original(d, original_id):
    """The notices that name original_id (the first part says "held as ID")."""
    return [n for n in notices(d) if ("held as %s." % original_id) in n.human]


HOSTNAME = "mx.test.example"   # [server] hostname of conftest's odmrd


def _date(value):
    """An RFC 5322 date: parsed, timezone-aware, and recent."""
    when = email.utils.parsedate_to_datetime(value)
    assert when.tzinfo is not None, value
    assert abs(time.time() - when.timestamp()) < 3600, value
    return when


def check_failed_notice(n, original_id, sender, failed, envid=None, ret="HDRS",
                        subject=None, body_marker=None):
    """Checks one failed notice field by field (RFC 3464 2.2, 2.3; RFC 3461 6; RFC 6522).
    failed: {address: {"status", "diagnostic", "remote" (name or None), "orcpt" (or None)}}
    in the order the notice must list them."""
    # the notice's own envelope: from <>, to the original sender (RFC 3461 6.2, RFC 5321 6.1)
    assert n.envelope_sender == "<>", n.show
    assert n.envelope_rcpts == [sender], n.show
    # top-level header
    m = n.msg
    assert m["From"] == "Mail Delivery System <MAILER-DAEMON@%s>" % HOSTNAME
    assert m["To"] == "<%s>" % sender
    assert m["Subject"] == "Undelivered Mail Returned to Sender"
    _date(m["Date"])
    assert re.fullmatch(r"<%s\.[0-9a-f]{16}@%s>" % (original_id, re.escape(HOSTNAME)),
                        m["Message-ID"]), m["Message-ID"]
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["MIME-Version"] == "1.0"
    assert len(n.parts) == 3, [p.get_content_type() for p in n.parts]
    # 1: the human-readable part
    assert n.parts[0].get_content_type() == "text/plain"
    assert "held as %s." % original_id in n.human
    for address in failed:
        assert "<%s>:" % address in n.human, n.human
    # 2: per-message fields
    pm = n.per_message
    assert pm["Reporting-MTA"] == "dns; " + HOSTNAME, pm
    if envid is None:
        assert "Original-Envelope-Id" not in pm, pm
    else:
        assert pm["Original-Envelope-Id"] == envid, pm
    assert pm["Received-From-MTA"].startswith("dns; "), pm
    _date(pm["Arrival-Date"])
    # 2: per-recipient fields, exactly the failed recipients, in order
    assert [r["Final-Recipient"] for r in n.per_recipient] == \
        ["rfc822; " + a for a in failed], n.per_recipient
    for r, (address, want) in zip(n.per_recipient, failed.items()):
        if want.get("orcpt") is None:
            assert "Original-Recipient" not in r, r
        else:
            assert r["Original-Recipient"] == want["orcpt"], r
        assert r["Action"] == "failed", r
        assert r["Status"] == want["status"], r
        if want.get("remote") is None:
            assert "Remote-MTA" not in r, r
        else:
            assert r["Remote-MTA"] == "dns; " + want["remote"], r
        assert r["Diagnostic-Code"] == want["diagnostic"], r
        if "last_attempt" not in want or want["last_attempt"]:
            _date(r["Last-Attempt-Date"])
    # 3: the original, whole (RET=FULL) or its headers only (RET=HDRS and the default)
    third = n.returned
    if ret == "FULL":
        assert third.get_content_type() == "message/rfc822"
        inner = third.get_payload()[0]
    else:
        assert third.get_content_type() == "text/rfc822-headers"
        inner = email.message_from_string(third.get_payload(), policy=email.policy.compat32)
    assert inner["Received"] is not None and ("id %s" % original_id) in inner["Received"]
    if subject is not None:
        assert inner["Subject"] == subject
    if body_marker is not None:
        raw = third.as_string()
        assert (body_marker in raw) == (ret == "FULL"), raw


def single_failed_notice(d, rcpt, diagnostic, status):
    """The queue holds exactly one message, the failed notice for `rcpt` alone (the original is
    gone): checks its envelope, Action, Status and that Diagnostic-Code starts with
    "smtp; " + diagnostic. Returns the Notice."""
    deadline = time.time() + 10
    while time.time() < deadline and (len(d.queue_ids()) != 1 or len(notice_ids(d)) != 1):
        time.sleep(0.05)
    ids = d.queue_ids()
    assert len(ids) == 1 and notice_ids(d) == ids, [d.queue_show(i) for i in ids]
    n = Notice(d, ids[0])
    assert n.envelope_sender == "<>", n.show
    [r] = n.per_recipient
    assert r["Final-Recipient"] == "rfc822; " + rcpt, r
    assert r["Action"] == "failed" and r["Status"] == status, r
    assert r["Diagnostic-Code"].startswith("smtp; " + diagnostic), r
    return n
