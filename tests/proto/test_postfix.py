# SPDX-License-Identifier: ISC
"""Postfix as the real front MTA: it accepts mail for the hosted domains and hands it to odmrd
over LMTP (TCP and unix socket) or SMTP. A private Postfix instance (tests/proto/postfix.py)
runs on loopback beside a private odmrd; nothing of the system's Postfix is touched."""
import os
import re
import smtplib
import time

import pytest

from postfix import postfix_instance, unusable_reason  # noqa: F401 (a fixture)

SENDER = "sender@elsewhere.test"
WAIT = 30.0

pytestmark = pytest.mark.skipif(unusable_reason() is not None,
                                reason=unusable_reason() or "")


def start_odmrd(make_odmrd, start=True):
    # Started as root, odmrd needs an account to drop to.
    extra = {"server.user": "nobody"} if os.geteuid() == 0 else {}
    d = make_odmrd(extra=extra, start=False)
    os.chmod(d.dir, 0o755)
    return d.start() if start else d


def transport(d, kind):
    return {
        "lmtp-inet": "lmtp:inet:127.0.0.1:%d" % d.lmtp_port,
        "lmtp-unix": "lmtp:unix:%s" % d.lmtp_socket,
        "smtp": "smtp:[127.0.0.1]:%d" % d.smtp_port,
    }[kind]


def front(postfix_instance, d, kind, domains=("example.org", "example.net", "bob.example"),
          extra_domains=()):
    """A private Postfix relaying `domains` (and `extra_domains`) to odmrd via `kind`."""
    all_domains = list(domains) + list(extra_domains)
    return postfix_instance(relay_domains=all_domains,
                            transports={dom: transport(d, kind) for dom in all_domains},
                            # Keep the message octets as sent: no header rewriting or
                            # added headers for loopback clients.
                            main={"local_header_rewrite_clients": "",
                                  "always_add_missing_headers": "no"})


def message(tag):
    # Complete headers, so Postfix's cleanup adds none between them; a dot-stuffed line to
    # check transparency end to end.
    return ("Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
            "From: <%s>\r\n"
            "To: <someone@example.org>\r\n"
            "Message-ID: <%s@elsewhere.test>\r\n"
            "Subject: via postfix %s\r\n"
            "\r\n"
            "first line\r\n"
            ".leading dot\r\n"
            "last line %s\r\n" % (SENDER, tag, tag, tag)).encode()


def envelope(show):
    """(sender, [recipients], protocol) from `odmrctl queue show`."""
    sender = re.search(r"^sender:\s+<(.*)>$", show, re.M)
    protocol = re.search(r"^protocol:\s+(\S+)", show, re.M)
    rcpts = re.findall(r"^\s+\[\d+\] <(.*)>$", show, re.M)
    assert sender and protocol, show
    return sender.group(1), rcpts, protocol.group(1)


def seen_rcpts(by_id):
    return sorted(r for rcpts in by_id.values() for r in rcpts)


def send(pf, rcpts, msg, sender=SENDER):
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
        refused = s.sendmail(sender, rcpts, msg)
    assert refused == {}, refused


def wait_queued(d, pf, domain, n=1, timeout=WAIT):
    deadline = time.time() + timeout
    while True:
        ids = d.queue_ids(domain)
        if len(ids) >= n or time.time() >= deadline:
            break
        time.sleep(0.2)
    assert len(ids) == n, "odmrd queue for %s: %r after %.0fs\n--- postfix maillog\n%s\n" \
        "--- odmrd log\n%s" % (domain, ids, timeout, pf.log()[-4000:], d.log()[-4000:])
    return ids


# ---------------------------------------------------------------- hand-off that works

@pytest.mark.parametrize("kind", ["lmtp-inet", "lmtp-unix", "smtp"])
def test_postfix_hands_mail_to_odmrd(postfix_instance, make_odmrd, kind):
    d = start_odmrd(make_odmrd)
    pf = front(postfix_instance, d, kind)
    msg = message(kind)
    send(pf, ["alice@example.org"], msg)
    [qid] = wait_queued(d, pf, "example.org")
    body = d.queue_body(qid)
    assert body.endswith(msg), body
    # Postfix's own Received: line is there, below odmrd's.
    assert b"by postfix.test.example (Postfix)" in body
    sender, rcpts, protocol = envelope(d.queue_show(qid))
    assert (sender, rcpts) == (SENDER, ["alice@example.org"])
    assert protocol == ("ESMTP" if kind == "smtp" else "LMTP")
    assert d.queue_ids("bob.example") == []
    m = pf.wait_log(r"to=<alice@example\.org>, relay=[^ ]*(127\.0\.0\.1|\.sock)[^ ]*, .*status=sent",
                    timeout=10)
    assert m, pf.log()


def test_lmtp_unix_socket_in_postfix_queue_directory(postfix_instance, make_odmrd):
    # The set-up docs/postfix.md gives for Debian's chrooted lmtp: odmrd's socket in
    # $queue_directory/private, the transport naming it relative to the queue directory.
    pf = postfix_instance(relay_domains=["example.org"],
                          transports={"example.org": "lmtp:unix:private/odmrd-lmtp"},
                          main={"local_header_rewrite_clients": "",
                                "always_add_missing_headers": "no"})
    d = start_odmrd(make_odmrd, start=False)
    sock = os.path.join(pf.queue_dir, "private", "odmrd-lmtp")
    d.extra["intake.lmtp_listen"] = "127.0.0.1:%d unix:%s" % (d.lmtp_port, sock)
    d.write_config()
    d.start()
    msg = message("queue-dir-socket")
    send(pf, ["alice@example.org"], msg)
    [qid] = wait_queued(d, pf, "example.org")
    assert d.queue_body(qid).endswith(msg)
    assert pf.wait_log(r"to=<alice@example\.org>, relay=[^ ]*odmrd-lmtp.*status=sent",
                       timeout=10), pf.log()


@pytest.mark.parametrize("kind", ["lmtp-unix", "smtp"])
def test_several_recipients_and_domains(postfix_instance, make_odmrd, kind):
    d = start_odmrd(make_odmrd)
    pf = front(postfix_instance, d, kind)
    msg = message("multi-" + kind)
    send(pf, ["alice@example.org", "info@example.net", "bob@bob.example"], msg)
    # The three domains share one next hop, so Postfix sends one transaction with three
    # recipients; odmrd indexes the message under each recipient's domain.
    seen = {}
    for domain, rcpt in (("example.org", "alice@example.org"), ("example.net", "info@example.net"),
                         ("bob.example", "bob@bob.example")):
        [qid] = wait_queued(d, pf, domain)
        assert d.queue_body(qid).endswith(msg)
        sender, rcpts, _ = envelope(d.queue_show(qid))
        assert sender == SENDER and rcpt in rcpts
        seen[qid] = rcpts
    assert seen_rcpts(seen) == ["alice@example.org", "bob@bob.example", "info@example.net"]
    for rcpt in seen_rcpts(seen):
        assert pf.wait_log(r"to=<%s>.*status=sent" % re.escape(rcpt), timeout=10), pf.log()


def test_empty_sender_is_kept(postfix_instance, make_odmrd):
    # A bounce (null reverse path) relayed by Postfix keeps its empty envelope sender.
    d = start_odmrd(make_odmrd)
    pf = front(postfix_instance, d, "lmtp-inet")
    msg = message("null-sender")
    send(pf, ["alice@example.org"], msg, sender="")
    [qid] = wait_queued(d, pf, "example.org")
    assert d.queue_body(qid).endswith(msg)
    assert envelope(d.queue_show(qid))[:2] == ("", ["alice@example.org"])


def test_postfix_retries_until_odmrd_is_up(postfix_instance, make_odmrd):
    # odmrd down: Postfix defers (mail stays at Postfix); once odmrd is up the retry lands it.
    d = start_odmrd(make_odmrd, start=False)
    pf = front(postfix_instance, d, "lmtp-inet")
    msg = message("retry")
    send(pf, ["alice@example.org"], msg)
    assert pf.wait_log(r"to=<alice@example\.org>.*status=deferred", timeout=WAIT), pf.log()
    assert [m["queue_id"] for m in pf.queue()], "Postfix should still hold the message"
    d.start()
    # postqueue -f makes the retry happen now and clears Postfix's "dead destination" mark,
    # which otherwise can hold the retry back for longer than the test waits.
    pf.flush()
    [qid] = wait_queued(d, pf, "example.org")
    assert d.queue_body(qid).endswith(msg)
    assert pf.wait_log(r"to=<alice@example\.org>.*status=sent", timeout=10), pf.log()


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("kind", ["lmtp-inet", "lmtp-unix", "smtp"])
def test_unhosted_domain_bounces_at_postfix(postfix_instance, make_odmrd, kind):
    # Postfix relays a domain odmrd does not host: odmrd answers 550 5.7.1 to RCPT, Postfix
    # bounces, nothing is queued at odmrd.
    d = start_odmrd(make_odmrd)
    pf = front(postfix_instance, d, kind, extra_domains=("unhosted.example",))
    send(pf, ["x@unhosted.example"], message("refused-" + kind))
    m = pf.wait_log(r"to=<x@unhosted\.example>.* dsn=([^,]+), status=(\w+)", timeout=WAIT)
    assert m, pf.log()
    assert m.group(1) == "5.7.1" and m.group(2) == "bounced", m.group(0)
    assert d.queue_ids() == []
    # The bounce went back towards the sender, the message is gone from Postfix.
    assert pf.wait_log(r"sender non-delivery notification", timeout=10), pf.log()


def test_mixed_recipients_over_lmtp(postfix_instance, make_odmrd):
    # One LMTP transaction, one hosted and one unhosted recipient: per-recipient replies, the
    # hosted one is queued, the other bounces.
    d = start_odmrd(make_odmrd)
    pf = front(postfix_instance, d, "lmtp-inet", domains=("example.org",),
               extra_domains=("unhosted.example",))
    # Both domains share one next hop, so Postfix sends them in one transaction.
    msg = message("mixed")
    send(pf, ["alice@example.org", "x@unhosted.example"], msg)
    [qid] = wait_queued(d, pf, "example.org")
    assert d.queue_body(qid).endswith(msg)
    assert envelope(d.queue_show(qid))[:2] == (SENDER, ["alice@example.org"])
    m = pf.wait_log(r"to=<x@unhosted\.example>.* dsn=([^,]+), status=(\w+)", timeout=WAIT)
    assert m and m.group(2) == "bounced", pf.log()
    assert pf.wait_log(r"to=<alice@example\.org>.*status=sent", timeout=10), pf.log()
