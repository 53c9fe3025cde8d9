# SPDX-License-Identifier: ISC
"""odmr-client passes the envelope parameters on to its target, on EVERY message of a session,
the first one included (issue 9, defect 2: the first MAIL and its RCPTs used to be composed
before the target's EHLO reply was parsed, and lost SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY
and ORCPT). And only what the target advertises (RFC 5321 4.1.1.11): SIZE with SIZE (RFC
1870), BODY=8BITMIME with 8BITMIME (RFC 6152), SMTPUTF8 with SMTPUTF8 (RFC 6531), RET, ENVID,
NOTIFY and ORCPT with DSN (RFC 3461 5.2.1/5.2.2); a message that needs SMTPUTF8 or 8BITMIME
toward a target without it is refused to the provider (553 5.6.7 / 554 5.6.3) and never reaches
the target. docs/client.md, "Envelope parameters".

The whole MAIL and RCPT lines the target received are compared, for an SMTP target with and
without PIPELINING, with CHUNKING, and an LMTP target (the in-repo Sink); a real Postfix shows
that the DSN parameters reached it (its queue file, `postcat`)."""
import os
import re
import subprocess

import pytest

from postfix import SBIN, postfix_instance  # noqa: F401 (a fixture)
from smtpwire import Wire
from test_client import Sink, prov, queue_settled, run_client  # noqa: F401 (prov: a fixture)
from test_client_chunking import FakeProvider, run_client as run_scripted
from test_client_pipelining import one_write

UTF8_SENDER = "s\u00e9nder@sender.example"
UTF8_RCPT = "j\u00f6rg@example.org"

# (MAIL parameters, [(recipient, RCPT parameters)], sender): every parameter odmrd's intake
# takes, in several messages, so that the first one of the session carries them too.
MESSAGES = [
    ("BODY=8BITMIME RET=HDRS ENVID=first+2Benvid",
     [("u@example.org", "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@example.org"),
      ("v@example.org", "NOTIFY=NEVER")], "s@sender.example"),
    ("SMTPUTF8 BODY=8BITMIME RET=FULL ENVID=utf8-envid",
     [(UTF8_RCPT, "NOTIFY=DELAY,FAILURE ORCPT=rfc822;j+C3+B6rg@example.org")], UTF8_SENDER),
    ("", [("w@example.net", "")], ""),
    ("ENVID=third", [("u@example.org", "ORCPT=rfc822;U@Example.ORG")], "s@sender.example"),
]


def body(i):
    return ("Subject: params %d\r\n\r\n8-bit: caf\u00e9 \u20ac\r\n.dot line\r\n" % i).encode()


def inject_with_params(prov, mail_params, rcpts, sender, data):
    """One message into odmrd's intake, with the parameters exactly as given."""
    w = Wire(prov.smtp_port)
    try:
        assert w.reply().code == 220
        w.expect("EHLO client.example", 250)
        size = " SIZE=%d" % len(data)
        w.expect("MAIL FROM:<%s>%s%s" % (sender, size, " " + mail_params if mail_params else ""),
                 250)
        for rcpt, params in rcpts:
            w.expect("RCPT TO:<%s>%s" % (rcpt, " " + params if params else ""), 250)
        w.expect("DATA", 354)
        w.send(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")   # RFC 5321 4.5.2
        assert w.reply().code == 250
        w.expect("QUIT", 221)
    finally:
        w.close()


def expected_lines(mail_params, rcpts, sender, stored_size):
    """What odmrd pushes and odmr-client must pass on to a target with every extension: odmrd
    declares the stored size (RFC 1870) and keeps the order SIZE BODY SMTPUTF8 RET ENVID."""
    words = mail_params.split()
    order = ["BODY=", "SMTPUTF8", "RET=", "ENVID="]
    kept = sorted(words, key=lambda w: [w.startswith(o) for o in order].index(True))
    mail = " ".join(["MAIL FROM:<%s>" % sender, "SIZE=%d" % stored_size] + kept)
    rcpt_lines = []
    for rcpt, params in rcpts:
        ps = sorted(params.split(), key=lambda p: not p.startswith("NOTIFY="))
        rcpt_lines.append(" ".join(["RCPT TO:<%s>" % rcpt] + ps))
    return mail, rcpt_lines


ALL_EXTENSIONS = ["8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES", "SIZE 10000000"]
TARGETS = {
    "smtp-pipelining": dict(keywords=["PIPELINING"] + ALL_EXTENSIONS),
    "smtp-one-at-a-time": dict(keywords=ALL_EXTENSIONS, pipelining=False),
    "smtp-chunking": dict(keywords=["PIPELINING", "CHUNKING"] + ALL_EXTENSIONS, chunking=True),
    "lmtp": dict(keywords=["PIPELINING"] + ALL_EXTENSIONS, lmtp=True),
}


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_every_message_keeps_every_parameter(prov, kind):
    for i, (mail_params, rcpts, sender) in enumerate(MESSAGES):
        inject_with_params(prov, mail_params, rcpts, sender, body(i))
    sink = Sink(**TARGETS[kind])
    r = run_client(prov, sink.target())
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    assert len(sink.messages) == len(MESSAGES), sink.commands
    for (sender, _, data, _), (mail, rcpt_lines) in zip(sink.messages, sink.envelopes):
        [i] = [i for i in range(len(MESSAGES)) if data.endswith(body(i))]
        want = expected_lines(*MESSAGES[i], len(data))
        assert (mail, rcpt_lines) == want, "message %d (%s):\n%r\n%r" % (i, kind, (mail, rcpt_lines),
                                                                         want)
    assert "event=client.dsn_not_relayed" not in r.stderr


# ---------------------------------------------------------------- capability rules

def send_message(w, mail, rcpts, data=b"Subject: x\r\n\r\nx\r\n"):
    """MAIL, RCPTs one at a time, BDAT LAST when a recipient was accepted (else RSET).
    Returns the RCPT replies."""
    w.expect(mail, 250)
    replies = [w.cmd(rcpt) for rcpt in rcpts]
    if any(r.code == 250 for r in replies):
        w.send(b"BDAT %d LAST\r\n" % len(data) + data)
        assert w.reply().code == 250
    else:
        w.expect("RSET", 250)
    return replies


FULL_MAIL = ("MAIL FROM:<%s> SIZE=30 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1" % UTF8_SENDER)
FULL_RCPT = "RCPT TO:<%s> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;j+C3+B6rg@example.org" % UTF8_RCPT


@pytest.mark.parametrize("pipelining", [True, False])
def test_parameters_the_target_does_not_advertise_are_left_out(pipelining):
    """A target with 8BITMIME and SMTPUTF8 but neither SIZE nor DSN: the first message (and the
    second) go without SIZE, RET, ENVID, NOTIFY, ORCPT (RFC 1870, RFC 3461 5.2.2 (a)); the
    recipient that asked NOTIFY=SUCCESS gets the target's 250 with a line saying that no
    delivery notice will come from here, and the log names it."""
    seen = []

    def script(w):
        for _ in range(2):
            seen.append(send_message(w, FULL_MAIL, [FULL_RCPT, "RCPT TO:<v@example.org>"]))

    sink = Sink(keywords=["8BITMIME", "SMTPUTF8"] + ["PIPELINING"] * pipelining,
                pipelining=pipelining)
    provider = FakeProvider(script)
    r = run_scripted(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    assert sink.envelopes == [("MAIL FROM:<%s> BODY=8BITMIME SMTPUTF8" % UTF8_SENDER,
                               ["RCPT TO:<%s>" % UTF8_RCPT, "RCPT TO:<v@example.org>"])] * 2
    for first, second in seen:
        assert first.code == 250 and first.lines[-1] == (
            "NOTIFY=SUCCESS,FAILURE not relayed: the local delivery target does not offer DSN"), \
            first
        assert second.code == 250 and len(second.lines) == 1, second
    assert r.stderr.count("event=client.dsn_not_relayed") == 2, r.stderr


def test_size_without_a_limit_is_still_size():
    """RFC 1870: "SIZE" with no number (or 0) is the extension without a fixed limit: SIZE= goes
    on, from the first message on."""
    def script(w):
        for _ in range(2):
            send_message(w, "MAIL FROM:<s@sender.example> SIZE=30", ["RCPT TO:<u@example.org>"])

    sink = Sink(keywords=["PIPELINING", "8BITMIME", "SIZE"])
    provider = FakeProvider(script)
    r = run_scripted(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    assert [e[0] for e in sink.envelopes] == ["MAIL FROM:<s@sender.example> SIZE=30"] * 2


NEEDS = [
    # (what the target lacks, the message's MAIL, the refusal)
    ("SMTPUTF8", "MAIL FROM:<%s> SMTPUTF8" % UTF8_SENDER, (553, "5.6.7")),
    ("8BITMIME", "MAIL FROM:<s@sender.example> BODY=8BITMIME", (554, "5.6.3")),
]


@pytest.mark.parametrize("lacks,mail,refusal", NEEDS, ids=[n[0] for n in NEEDS])
@pytest.mark.parametrize("kind", ["smtp-pipelining", "smtp-one-at-a-time", "lmtp"])
def test_message_the_target_cannot_take_is_refused(kind, lacks, mail, refusal):
    """RFC 6531 3.5 (553 5.6.7) / RFC 6152 3 (554 5.6.3, no conversion here): the first message
    of the session already; every recipient gets the refusal, the target sees no MAIL for it.
    A transaction left open on the target (the provider's RSET after an accepted RCPT) is still
    reset first, and the plain message after it goes through."""
    replies = {}

    def script(w):
        replies["first"] = send_message(w, mail, ["RCPT TO:<u@example.org>",
                                                  "RCPT TO:<v@example.org>"])
        w.expect("MAIL FROM:<s@sender.example>", 250)
        w.expect("RCPT TO:<u@example.org>", 250)
        w.expect("RSET", 250)      # the target's transaction stays open
        replies["after_rset"] = send_message(w, mail, ["RCPT TO:<u@example.org>"])
        replies["plain"] = send_message(w, "MAIL FROM:<s@sender.example>",
                                        ["RCPT TO:<u@example.org>"])

    keywords = [k for k in ["PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "SIZE 1000000"]
                if k != lacks and (k != "PIPELINING" or kind != "smtp-one-at-a-time")]
    sink = Sink(keywords=keywords, lmtp=kind == "lmtp", pipelining="PIPELINING" in keywords)
    provider = FakeProvider(script)
    r = run_scripted(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    for reply in replies["first"] + replies["after_rset"]:
        assert (reply.code, reply.enhanced) == refusal, reply
        assert lacks in reply.text, reply
    assert [x.code for x in replies["plain"]] == [250]
    # The target saw the aborted plain transaction, its RSET, then only the plain message.
    mails = [c for c in sink.commands if c.split(" ")[0] in ("MAIL", "RCPT", "RSET", "DATA",
                                                             "BDAT")]
    assert mails[:3] == ["MAIL FROM:<s@sender.example>", "RCPT TO:<u@example.org>", "RSET"], \
        sink.commands
    assert mails[3:5] == ["MAIL FROM:<s@sender.example>", "RCPT TO:<u@example.org>"], \
        sink.commands
    assert len(sink.messages) == 1


@pytest.mark.parametrize("lmtp", [False, True])
def test_refused_message_with_its_data_pipelined_behind(lmtp):
    """odmrd's fast profile: MAIL, RCPT and BDAT in one write. The refused message's DATA is
    not sent to the target either (nothing after the MAIL that was not sent); the next message
    in the same write pattern is delivered with its parameters."""
    def script(w):
        codes = one_write(w, UTF8_SENDER, ["u@example.org"], b"x\r\n",
                          params=" SMTPUTF8 BODY=8BITMIME")
        assert codes[:2] == [250, 553], codes
        w.expect("RSET", 250)
        codes = one_write(w, "s@sender.example", ["u@example.org"], b"y\r\n",
                          params=" BODY=8BITMIME")
        assert codes == [250, 250, 250], codes

    sink = Sink(keywords=["PIPELINING", "8BITMIME"], lmtp=lmtp)
    provider = FakeProvider(script)
    r = run_scripted(provider.port, sink.target())
    provider.finish()
    assert r.returncode == 0, r.stderr
    cmds = [c for c in sink.commands if c.split(" ")[0] in ("MAIL", "RCPT", "DATA", "BDAT")]
    assert cmds == ["MAIL FROM:<s@sender.example> BODY=8BITMIME", "RCPT TO:<u@example.org>",
                    "DATA"], sink.commands
    assert [m[2] for m in sink.messages] == [b"y\r\n"]


# ---------------------------------------------------------------- a real Postfix

def postcat(pf, queue_id):
    return subprocess.run([os.path.join(SBIN, "postcat"), "-c", pf.config_dir, "-e", "-q",
                           queue_id], capture_output=True, text=True, timeout=60).stdout


def test_postfix_receives_dsn_parameters_on_the_first_message(prov, postfix_instance):
    """Postfix (DSN, SMTPUTF8, 8BITMIME, SIZE, PIPELINING, CHUNKING) as the target, every
    message put on hold: its queue files hold what reached it. The first message of the
    session keeps its ENVID, RET, NOTIFY and ORCPT, and is taken as 8-bit."""
    pf = postfix_instance(relay_domains=["example.org", "example.net"], hold=True)
    for i, (mail_params, rcpts, sender) in enumerate(MESSAGES[:1] + MESSAGES[3:]):
        inject_with_params(prov, mail_params, rcpts, sender, body(i))
    r = run_client(prov, "smtp:127.0.0.1:%d" % pf.port)
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    held = [q["queue_id"] for q in pf.queue()]
    assert len(held) == 2, pf.queue()
    records = {}
    for qid in held:
        text = postcat(pf, qid)
        records["ENVID=third" if "envelope_id=third" in text else "first"] = text
    first = records["first"]
    # Postfix keeps ENVID xtext-decoded (RFC 3461 4.4: "+2B" is "+").
    assert re.search(r"^named_attribute: envelope_id=first\+envid$", first, re.M), first
    assert re.search(r"^named_attribute: ret_flags=2$", first, re.M), first     # RET=HDRS
    assert re.search(r"^named_attribute: dsn_orig_rcpt=rfc822;u@example\.org$", first, re.M), \
        first
    assert re.search(r"^named_attribute: notify_flags=6$", first, re.M), first  # SUCCESS,FAILURE
    assert re.search(r"^named_attribute: notify_flags=1$", first, re.M), first  # NEVER
    assert re.search(r"^named_attribute: encoding=8bit$", first, re.M), first
    third = records["ENVID=third"]
    assert re.search(r"^named_attribute: envelope_id=third$", third, re.M), third
    assert re.search(r"^named_attribute: dsn_orig_rcpt=rfc822;U@Example\.ORG$", third, re.M), \
        third
