# SPDX-License-Identifier: ISC
"""odmr-client against real local mail servers (the issue's end-to-end requirement):
intake (smtplib) -> odmrd -> odmr-client -> a real peer, byte-exact, envelope visible, odmrd's
queue empty after.

- Postfix as the SMTP target (`smtp:127.0.0.1:PORT`): a private instance (tests/proto/postfix.py)
  with virtual_mailbox_domains, delivering each recipient to a Maildir by its `virtual` agent,
  which adds `Return-Path:`, `X-Original-To:` and `Delivered-To:`.
- Dovecot as the LMTP target (`lmtp:127.0.0.1:PORT`, `lmtp:unix:/path`): a private instance
  (tests/proto/dovecot.py), Maildir per user; and Dovecot's LDA as an `mda:` target.

Both peers store Maildir files with LF line ends: "byte-exact" below means the stored file ends
with the injected message, CRLF -> LF, and everything above it is the peers' and odmrd's trace
headers, nothing else."""
import os
import pwd
import re
import smtplib
import time

import pytest

from dovecot import dovecot_instance  # noqa: F401 (a fixture)
from postfix import postfix_instance  # noqa: F401 (a fixture)
from test_client import prov, queue_settled, run_client  # noqa: F401 (prov: a fixture)
from notices import Notice, single_failed_notice
from conftest import log_values
from test_push import rcpt_states

SENDER = "s@sender.example"
WAIT = 30.0


def message(tag, lines=()):
    """A complete message (Postfix adds no header of its own to it) with an 8-bit body and the
    lines dot-stuffing must carry: ".", "..", ".x", and a 998-octet line."""
    head = ("Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
            "From: <%s>\r\n"
            "To: <u@example.org>\r\n"
            "Message-ID: <%s@sender.example>\r\n"
            "Subject: peers %s\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "\r\n" % (SENDER, tag, tag)).encode()
    body = [b"first line of " + tag.encode(),
            b"8-bit: caf\xc3\xa9 \xe2\x82\xac 100 \xe6\x97\xa5\xe6\x9c\xac and raw \xe9\xff\x80",
            b".",
            b"..",
            b".leading dot",
            b"x" * 998,
            b" leading space, trailing tab\t"]
    body += list(lines)
    body.append(b"last line")
    return head + b"".join(l + b"\r\n" for l in body)


def big_message(tag, size=1 << 20):
    """About `size` octets: numbered 100-octet lines, every 97th a dot line, every 89th 8-bit."""
    lines = []
    n = 0
    while 100 * len(lines) < size:
        n += 1
        if n % 97 == 0:
            lines.append(b".%05d dot-stuffed" % n)
        elif n % 89 == 0:
            lines.append(b"%05d \xc3\xa9\xc3\xa8\xc3\xa0 " % n + b"y" * 80)
        else:
            lines.append(b"%05d " % n + b"z" * 93)
    return message(tag, lines)


def inject(prov, rcpts, msg, sender=SENDER):
    """Into odmrd's SMTP intake, announced as 8BITMIME (the body is 8-bit)."""
    with smtplib.SMTP("127.0.0.1", prov.smtp_port, timeout=60) as s:
        refused = s.sendmail(sender, rcpts, msg, mail_options=["BODY=8BITMIME"])
    assert refused == {}, refused


def lf(msg):
    return msg.replace(b"\r\n", b"\n")


def added_headers(stored, original):
    """The header fields above the original message in a stored file: [(name, unfolded value)].
    Fails unless the file ends with the original, byte for byte (LF line ends)."""
    want = lf(original)
    assert stored.endswith(want), "stored message does not end with the original " \
        "(len %d vs %d)\n%r" % (len(stored), len(want), stored[:600])
    fields = []
    for line in stored[:-len(want)].decode("ascii").split("\n")[:-1]:
        if line[:1] in (" ", "\t"):
            assert fields, line
            fields[-1][1] += " " + line.strip()
        else:
            name, value = line.split(":", 1)
            fields.append([name, value.strip()])
    return [tuple(f) for f in fields]


def trace_only(fields, peer_by):
    """Below the envelope headers: only Received: fields, odmrd's and the peer's."""
    assert fields and all(name == "Received" for name, _ in fields), fields
    assert any("by mx.test.example (odmrd)" in v for _, v in fields), fields
    assert any(peer_by in v for _, v in fields), fields


def which_original(stored, originals):
    found = [m for m in originals if stored.endswith(lf(m))]
    assert len(found) == 1, stored[:600]
    return found[0]


def wait_for(predicate, what, timeout=WAIT, log=lambda: ""):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() >= deadline:
            raise AssertionError("timed out waiting for %s\n%s" % (what, log()[-4000:]))
        time.sleep(0.05)


# ================================================================ Postfix as the SMTP target

POSTFIX_USERS = ["u@example.org", "v@example.org", "w@example.net", "big@example.net"]


@pytest.fixture
def postfix_vmail(postfix_instance, workdir):
    """A private Postfix that is the final destination for example.org and example.net: its
    virtual(8) agent delivers every known user to <workdir>/vmail/<domain>/<user>/ (Maildir,
    as nobody); an unknown user is refused at RCPT (550 5.1.1)."""
    base = os.path.join(workdir, "vmail")
    os.makedirs(base)
    nobody = pwd.getpwnam("nobody")
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    pf = postfix_instance(main={
        "virtual_mailbox_domains": "example.org, example.net",
        "virtual_mailbox_maps": "inline:{ %s }" % ", ".join(
            "%s=%s/%s/" % (a, a.split("@")[1], a.split("@")[0]) for a in POSTFIX_USERS),
        "virtual_mailbox_base": base,
        "virtual_uid_maps": "static:%d" % nobody.pw_uid,
        "virtual_gid_maps": "static:%d" % nobody.pw_gid,
        # Keep the octets as sent: no header rewriting or added headers for loopback clients.
        "local_header_rewrite_clients": "",
        "always_add_missing_headers": "no",
    })
    pf.vmail = base
    return pf


def envelope_fields(sender, rcpt):
    return [("Return-Path", "<%s>" % sender), ("X-Original-To", rcpt), ("Delivered-To", rcpt)]


def postfix_mail(pf, address):
    local, domain = address.split("@")
    d = os.path.join(pf.vmail, domain, local, "new")
    if not os.path.isdir(d):
        return []
    out = []
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            out.append(f.read())
    return out


def wait_postfix_delivered(pf, counts):
    def done():
        return all(len(postfix_mail(pf, a)) >= n for a, n in counts.items())
    wait_for(done, "Postfix to deliver %r" % counts, log=pf.log)
    wait_for(lambda: pf.queue() == [], "Postfix's queue to empty", log=pf.log)
    return {a: postfix_mail(pf, a) for a in counts}


def test_postfix_smtp_target_byte_exact(prov, postfix_vmail):
    pf = postfix_vmail
    multi = message("multi")
    bounce = message("null-sender")
    big = big_message("big")
    assert len(big) > 1_000_000
    inject(prov, ["u@example.org", "v@example.org", "w@example.net"], multi)
    inject(prov, ["u@example.org"], bounce, sender="")
    inject(prov, ["big@example.net"], big)
    assert len(prov.queue_ids()) == 3

    r = run_client(prov, "smtp:127.0.0.1:%d" % pf.port)
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    assert "messages=3 delivered=3 deferred=0 failed=0" in r.stderr, r.stderr
    # Postfix offers CHUNKING: every message went as one BDAT ... LAST (RFC 3030), no DATA.
    sent = log_values(r.stderr, "target.send", "line")
    assert sum(l.startswith("BDAT ") and l.endswith(" LAST") for l in sent) == 3, sent
    assert "DATA" not in sent, sent

    got = wait_postfix_delivered(pf, {"u@example.org": 2, "v@example.org": 1,
                                      "w@example.net": 1, "big@example.net": 1})
    expected = {("u@example.org", multi): SENDER, ("u@example.org", bounce): "",
                ("v@example.org", multi): SENDER, ("w@example.net", multi): SENDER,
                ("big@example.net", big): SENDER}
    seen = set()
    for rcpt, files in got.items():
        for stored in files:
            original = which_original(stored, [multi, bounce, big])
            sender = expected[(rcpt, original)]
            fields = added_headers(stored, original)
            # virtual(8) puts the envelope on top: Return-Path (RFC 5322 3.6.7), then the
            # recipient as received (X-Original-To) and as delivered (Delivered-To).
            assert fields[:3] == envelope_fields(sender, rcpt), fields
            trace_only(fields[3:], "by postfix.test.example (Postfix) with ESMTP")
            # Postfix's Received names odmr-client (its EHLO) as its client.
            assert any(v.startswith("from customer.example (localhost [127.0.0.1]) by "
                                    "postfix.test.example (Postfix) with ESMTP id ")
                       for _, v in fields[3:]), "\n".join(map(repr, fields))
            seen.add((rcpt, original))
    assert seen == set(expected)
    # Postfix was the final hop for every recipient, nothing bounced or deferred.
    for rcpt in ("u@example.org", "v@example.org", "w@example.net", "big@example.net"):
        assert re.search(r"to=<%s>, relay=virtual, .*status=sent" % re.escape(rcpt), pf.log())
    assert "status=bounced" not in pf.log() and "status=deferred" not in pf.log()


def test_postfix_refuses_one_recipient(prov, postfix_vmail):
    """Postfix refuses an unknown virtual user at RCPT (550 5.1.1): odmr-client returns that
    reply for that recipient, odmrd commits a failed notice for it carrying Postfix's reply, the
    others are delivered and done, and the original is gone."""
    pf = postfix_vmail
    msg = message("refused")
    inject(prov, ["u@example.org", "nosuch@example.org", "w@example.net"], msg)
    r = run_client(prov, "smtp:127.0.0.1:%d" % pf.port)
    assert r.returncode == 0, r.stderr
    [qid] = queue_settled(prov, 1)   # the notice; the original is gone
    [r] = Notice(prov, qid).per_recipient
    assert r["Final-Recipient"] == "rfc822; nosuch@example.org", r
    assert re.match(r"smtp; 550 5\.1\.1 <nosuch@example\.org>: Recipient address rejected: "
                    r"User unknown in virtual mailbox table", r["Diagnostic-Code"]), r
    got = wait_postfix_delivered(pf, {"u@example.org": 1, "w@example.net": 1})
    for rcpt, files in got.items():
        assert len(files) == 1
        assert added_headers(files[0], msg)[:3] == envelope_fields(SENDER, rcpt)
    assert not os.path.exists(os.path.join(pf.vmail, "example.org", "nosuch"))
    assert re.search(r"reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.1 "
                     r"<nosuch@example\.org>: .* helo=<customer\.example>", pf.log()), \
        pf.log()[-3000:]


# ================================================================ Dovecot as the LMTP target

DOVECOT_USERS = ["u@example.org", "v@example.org", "w@example.net"]


@pytest.fixture
def dovecot(dovecot_instance):
    return dovecot_instance(users=DOVECOT_USERS)


def lmtp_target(dv, kind):
    return ("lmtp:127.0.0.1:%d" % dv.port) if kind == "inet" else ("lmtp:unix:%s" % dv.socket)


def check_dovecot_file(stored, original, sender, rcpt, single):
    """An LMTP delivery: Return-Path on top; Delivered-To only for a transaction with one
    recipient (Dovecot saves a message for several once and copies it); then trace headers."""
    fields = added_headers(stored, original)
    envelope = [("Return-Path", "<%s>" % sender)] + ([("Delivered-To", rcpt)] if single else [])
    assert fields[:len(envelope)] == envelope, fields
    trace_only(fields[len(envelope):], "by dovecot.test.example with LMTP")
    return fields


@pytest.mark.parametrize("kind", ["inet", "unix"])
def test_dovecot_lmtp_byte_exact(prov, dovecot, kind):
    dv = dovecot
    multi = message("multi-" + kind)
    bounce = message("null-" + kind)
    big = big_message("big-" + kind)
    inject(prov, ["u@example.org", "v@example.org", "w@example.net"], multi)
    inject(prov, ["u@example.org"], bounce, sender="")
    inject(prov, ["v@example.org"], big)

    r = run_client(prov, lmtp_target(dv, kind))
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    assert "messages=3 delivered=3 deferred=0 failed=0" in r.stderr, r.stderr
    # Dovecot's LMTP offers CHUNKING: BDAT ... LAST, then one reply per recipient as after DATA.
    sent = log_values(r.stderr, "target.send", "line")
    assert sum(l.startswith("BDAT ") for l in sent) == 3 and "DATA" not in sent, sent

    # (original, envelope sender, recipients in its transaction)
    sent = [(multi, SENDER, 3), (bounce, "", 1), (big, SENDER, 1)]
    want = {"u@example.org": [multi, bounce], "v@example.org": [multi, big],
            "w@example.net": [multi]}
    for rcpt, originals in want.items():
        files = dv.messages(rcpt)
        got = sorted(which_original(f, originals) for f in files)
        assert got == sorted(originals), (rcpt, len(files))    # one copy of each, no other
        for f in files:
            [(original, sender, n)] = [x for x in sent if f.endswith(lf(x[0]))]
            check_dovecot_file(f, original, sender, rcpt, single=n == 1)
    # Dovecot's own record of each save, with the envelope it was given.
    assert sorted(dv.deliveries()) == sorted([
        ("lmtp", "u@example.org", SENDER, "u@example.org", "multi-%s@sender.example" % kind),
        ("lmtp", "v@example.org", SENDER, "v@example.org", "multi-%s@sender.example" % kind),
        ("lmtp", "w@example.net", SENDER, "w@example.net", "multi-%s@sender.example" % kind),
        ("lmtp", "u@example.org", "", "u@example.org", "null-%s@sender.example" % kind),
        ("lmtp", "v@example.org", SENDER, "v@example.org", "big-%s@sender.example" % kind)])


def test_dovecot_unknown_user_fails_at_rcpt(prov, dovecot):
    """Dovecot refuses an unknown user at RCPT (550 5.1.1): that recipient fails at odmrd (a
    failed notice replaces it, docs/notices.md), the others are delivered, one copy each."""
    dv = dovecot
    msg = message("unknown")
    inject(prov, ["u@example.org", "nosuch@example.org", "v@example.org"], msg)
    r = run_client(prov, lmtp_target(dv, "unix"))
    assert r.returncode == 0, r.stderr
    single_failed_notice(prov, "nosuch@example.org",
                         "550 5.1.1 <nosuch@example.org> User doesn't exist", "5.1.1")
    for rcpt in ("u@example.org", "v@example.org"):
        [f] = dv.messages(rcpt)
        check_dovecot_file(f, msg, SENDER, rcpt, single=False)
    assert [d[1] for d in dv.deliveries()] == ["u@example.org", "v@example.org"]
    assert not os.path.exists(dv.mailbox("nosuch@example.org"))


def test_dovecot_tempfail_after_data_keeps_message(prov, dovecot):
    """v's mailbox cannot be opened (a file where its Maildir should be): Dovecot saves the
    message for u and answers 451 4.2.0 for v after the dot. docs/client.md "some 2xx, some
    not": the provider gets 451 4.3.0 for the message, which stays queued for both; a rerun
    once v's mailbox is fixed delivers to both, so u gets the documented duplicate."""
    dv = dovecot
    msg = message("tempfail")
    broken = dv.mailbox("v@example.org")
    os.makedirs(os.path.dirname(broken), exist_ok=True)
    os.chown(os.path.dirname(broken), dv.uid, dv.gid)   # u's mailbox is created beside it
    with open(broken, "w") as f:
        f.write("not a maildir\n")
    inject(prov, ["u@example.org", "v@example.org"], msg)

    r = run_client(prov, lmtp_target(dv, "inet"))
    assert r.returncode == 0, r.stderr
    assert "messages=1 delivered=0 deferred=1 failed=0" in r.stderr, r.stderr
    # odmrd records the folded 451 4.3.0 for both; odmr-client's log names v and Dovecot's reason.
    assert re.search(r"level=info event=client\.rcpt_result rcpt=v@example\.org code=451 "
                     r"reply=\"4\.2\.0 <v@example\.org> Internal error", r.stderr), \
        r.stderr
    assert re.search(r"event=client\.rcpt_result rcpt=u@example\.org code=250 ", r.stderr), \
        r.stderr
    [qid] = queue_settled(prov, 1)
    st = rcpt_states(prov, qid)
    for rcpt in ("u@example.org", "v@example.org"):
        assert st[rcpt]["state"] == "pending" and st[rcpt]["attempts"] == 1, st
        assert st[rcpt]["last_reply"].startswith("451 4.3.0 Local delivery accepted only some "
                                                 "recipients"), st
    [first] = dv.messages("u@example.org")
    check_dovecot_file(first, msg, SENDER, "u@example.org", single=False)
    assert os.path.isfile(broken)    # nothing was written for v
    assert [d[1] for d in dv.deliveries()] == ["u@example.org"]

    os.unlink(broken)
    r = run_client(prov, lmtp_target(dv, "inet"))
    assert r.returncode == 0, r.stderr
    assert "messages=1 delivered=1 deferred=0 failed=0" in r.stderr, r.stderr
    assert queue_settled(prov) == []
    u = dv.messages("u@example.org")
    assert len(u) == 2      # the duplicate docs/client.md accepts: never a loss
    [v] = dv.messages("v@example.org")
    for f in u + [v]:
        check_dovecot_file(f, msg, SENDER, "?", single=False)
    assert [d[1] for d in dv.deliveries()] == ["u@example.org", "u@example.org", "v@example.org"]


# ================================================================ Dovecot's LDA as an mda: target

def test_dovecot_lda_as_mda_target(prov, dovecot):
    """docs/client.md's example `mda:/usr/lib/dovecot/dovecot-lda -f %s -d %r`, against the
    private Dovecot (its userdb over the auth socket): one LDA run per recipient, exit 0 ->
    delivered, the null sender included; an unknown user makes the LDA exit EX_NOUSER (67) ->
    554 5.3.0 and that recipient fails at odmrd. (The unknown user has a message of its own:
    in one message with others the replies would fold to 451, docs/client.md.) The LDA adds no
    header: the envelope is what it was given on its command line (its log shows it)."""
    dv = dovecot
    lda = "/usr/lib/dovecot/dovecot-lda"
    if not os.access(lda, os.X_OK):
        pytest.skip("%s is not installed" % lda)
    msg = message("lda")
    bounce = message("lda-null")
    lost = message("lda-unknown")
    inject(prov, ["u@example.org", "w@example.net"], msg)
    inject(prov, ["u@example.org"], bounce, sender="")
    inject(prov, ["nosuch@example.org"], lost)
    r = run_client(prov, "mda:%s -c %s -f %%s -d %%r" % (lda, dv.conf))
    assert r.returncode == 0, r.stderr
    assert "messages=3 delivered=2 deferred=0 failed=1" in r.stderr, r.stderr
    n = single_failed_notice(prov, "nosuch@example.org", "554 5.3.0", "5.3.0")
    # the notice returns the lost message's header (RET default: headers only)
    assert "Message-ID: <lda-unknown@sender.example>" in n.returned.get_payload(), n.raw
    want = {"u@example.org": [msg, bounce], "w@example.net": [msg]}
    for rcpt, originals in want.items():
        files = dv.messages(rcpt)
        assert sorted(which_original(f, originals) for f in files) == sorted(originals)
        for f in files:
            fields = added_headers(f, which_original(f, originals))
            assert len(fields) == 1, fields    # odmrd's Received only
            trace_only(fields, "by mx.test.example (odmrd)")
    assert sorted(dv.deliveries()) == sorted([
        ("lda", "u@example.org", SENDER, "u@example.org", "lda@sender.example"),
        ("lda", "w@example.net", SENDER, "w@example.net", "lda@sender.example"),
        ("lda", "u@example.org", "", "u@example.org", "lda-null@sender.example")])
    assert not os.path.exists(dv.mailbox("nosuch@example.org"))
