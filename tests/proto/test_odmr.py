# SPDX-License-Identifier: ISC
"""The ODMR service before and at the turnaround (RFC 2645, RFC 4954, RFC 2195, RFC 3207)."""
import hashlib
import hmac
import smtplib
import ssl
import threading
import time

import pytest

from saslclient import ScramSha256, b64, cram_md5_response, unb64
from smtpwire import Wire

USERS = {
    "alice": ("alice-secret", ["example.org", "example.net"], []),
    "bob": ("bob-secret", ["bob.example"], []),
    "tim": ("tanstaaftanstaaf", ["tim.example"], []),
    "nocram": ("nocram-secret", ["nocram.example"], ["--no-cram"]),
}


@pytest.fixture
def prov(make_odmrd):
    return make_odmrd(users=USERS)


def inject(d, rcpts, body=b"Subject: held\r\n\r\nheld mail\r\n", sender="s@sender.example"):
    with smtplib.SMTP("127.0.0.1", d.smtp_port) as s:
        s.sendmail(sender, rcpts, body)


def connect(d, port=None):
    w = Wire(port or d.odmr_port)
    r = w.reply()
    assert r.code == 220, r
    return w


def ehlo(w):
    r = w.expect("EHLO customer.example", 250)
    return r


def cram_login(w, user, password):
    r = w.cmd("AUTH CRAM-MD5")
    assert r.code == 334, r
    return w.cmd(cram_md5_response(user, password, r.lines[0]))


def login(d, user="alice", password="alice-secret"):
    w = connect(d)
    ehlo(w)
    r = cram_login(w, user, password)
    assert r.code == 235 and r.enhanced == "2.7.0", r
    return w


# ---------------------------------------------------------------- greeting and EHLO

def test_ehlo_advertises_auth_and_atrn(prov):
    w = connect(prov)
    r = ehlo(w)
    keywords = {line.split()[0]: line for line in r.lines[1:]}
    assert "ATRN" in keywords and "AUTH" in keywords and "STARTTLS" in keywords
    mechs = keywords["AUTH"].split()[1:]
    assert "CRAM-MD5" in mechs and "SCRAM-SHA-256" in mechs
    assert "PLAIN" not in mechs and "LOGIN" not in mechs


def test_other_commands_are_502(prov):
    w = connect(prov)
    ehlo(w)
    for command in ("MAIL FROM:<a@b.example>", "RCPT TO:<u@example.org>", "DATA",
                    "VRFY alice", "EXPN x", "HELP"):
        w.expect(command, 502, "5.5.1")
    # Verbs odmrd does not know: 500 5.5.2 as on the intake port (RFC 5321 4.2.3, RFC 3463
    # X.5.2; they were 502 5.5.1 here, 500 5.5.1 there).
    for command in ("ETRN example.org", "TURN"):
        w.expect(command, 500, "5.5.2")
    w.expect("NOOP", 250)
    w.expect("RSET", 250)
    w.expect("QUIT", 221)
    assert w.closed()


def test_helo_then_auth_needs_ehlo(prov):
    w = connect(prov)
    w.expect("HELO customer.example", 250)
    w.expect("AUTH CRAM-MD5", 503, "5.5.1")
    ehlo(w)
    assert cram_login(w, "alice", "alice-secret").code == 235


# ---------------------------------------------------------------- AUTH

def test_cram_md5_rfc2195_worked_example(prov):
    # RFC 2195: secret tanstaaftanstaaf, this challenge gives this digest and response.
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    assert hmac.new(b"tanstaaftanstaaf", challenge, hashlib.md5).hexdigest() == \
        "b913a602c7eda7a495b4e6e7334d3890"
    assert cram_md5_response("tim", "tanstaaftanstaaf", b64(challenge)) == \
        "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    # The same computation against odmrd's own challenge authenticates user tim.
    w = connect(prov)
    ehlo(w)
    r = w.cmd("AUTH CRAM-MD5")
    assert r.code == 334
    challenge = unb64(r.lines[0])
    assert challenge.startswith(b"<") and challenge.endswith(b">")
    r = w.cmd(cram_md5_response("tim", "tanstaaftanstaaf", r.lines[0]))
    assert r.code == 235 and r.enhanced == "2.7.0"


def test_cram_md5_wrong_password(prov):
    w = connect(prov)
    ehlo(w)
    r = cram_login(w, "alice", "wrong")
    assert r.code == 535 and r.enhanced == "5.7.8"
    assert "peer=127.0.0.1" in prov.log() and "result=failed" in prov.log()


def test_cram_md5_disabled_user(prov):
    w = connect(prov)
    ehlo(w)
    assert cram_login(w, "nocram", "nocram-secret").code == 535


def test_auth_cancel(prov):
    w = connect(prov)
    ehlo(w)
    assert w.cmd("AUTH CRAM-MD5").code == 334
    w.expect("*", 501)
    assert cram_login(w, "alice", "alice-secret").code == 235


def test_auth_twice(prov):
    w = login(prov)
    w.expect("AUTH CRAM-MD5", 503, "5.5.1")


def test_plain_refused_before_tls(prov):
    w = connect(prov)
    ehlo(w)
    w.expect("AUTH PLAIN " + b64("\0alice\0alice-secret"), 538, "5.7.11")
    w.expect("AUTH LOGIN", 538, "5.7.11")
    w.expect("AUTH EXTERNAL", 538, "5.7.11")
    w.expect("AUTH NONSENSE", 504, "5.5.4")


def test_bad_base64(prov):
    w = connect(prov)
    ehlo(w)
    assert w.cmd("AUTH CRAM-MD5").code == 334
    w.expect("!!!not base64!!!", 501, "5.5.2")


def test_auth_line_too_long(prov):
    w = connect(prov)
    ehlo(w)
    assert w.cmd("AUTH CRAM-MD5").code == 334
    w.expect("A" * 20000, 500, "5.5.6")


def test_three_failures_close_the_session(prov):
    w = connect(prov)
    ehlo(w)
    assert cram_login(w, "alice", "bad1").code == 535
    assert cram_login(w, "alice", "bad2").code == 535
    r = cram_login(w, "alice", "bad3")
    assert r.code == 421
    assert w.closed()


def test_scram_sha_256(prov):
    w = connect(prov)
    ehlo(w)
    c = ScramSha256("alice", "alice-secret")
    r = w.cmd("AUTH SCRAM-SHA-256 " + c.first())
    assert r.code == 334, r
    r = w.cmd(c.final(r.lines[0]))
    assert r.code == 334 and c.verify(r.lines[0]), r
    w.expect("", 235, "2.7.0")


def test_scram_wrong_password(prov):
    w = connect(prov)
    ehlo(w)
    c = ScramSha256("alice", "nope")
    r = w.cmd("AUTH SCRAM-SHA-256 " + c.first())
    r = w.cmd(c.final(r.lines[0]))
    assert r.code == 535


def tls_login_plain(prov, user, password):
    w = connect(prov)
    ehlo(w)
    w.expect("STARTTLS", 220, "2.0.0")
    w.starttls()
    r = ehlo(w)
    assert not any(line.startswith("STARTTLS") for line in r.lines)
    mechs = [line for line in r.lines if line.startswith("AUTH ")][0].split()[1:]
    assert "PLAIN" in mechs and "SCRAM-SHA-256-PLUS" in mechs
    return w, w.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password)))


def test_plain_after_starttls(prov):
    w, r = tls_login_plain(prov, "alice", "alice-secret")
    assert r.code == 235
    w2, r2 = tls_login_plain(prov, "nocram", "nocram-secret")
    assert r2.code == 235, "PLAIN checks the SCRAM verifier when no secret is stored"
    w3, r3 = tls_login_plain(prov, "alice", "wrong")
    assert r3.code == 535


def test_scram_plus_with_channel_binding(prov):
    w = connect(prov)
    ehlo(w)
    w.expect("STARTTLS", 220)
    w.starttls()
    ehlo(w)
    binding = w.sock.get_channel_binding("tls-exporter") if "tls-exporter" in \
        getattr(ssl, "CHANNEL_BINDING_TYPES", []) else None
    if binding is None:
        pytest.skip("this Python has no tls-exporter channel binding")
    c = ScramSha256("alice", "alice-secret", channel_binding=binding)
    r = w.cmd("AUTH SCRAM-SHA-256-PLUS " + c.first())
    r = w.cmd(c.final(r.lines[0]))
    assert r.code == 334 and c.verify(r.lines[0])
    w.expect("", 235)


def test_starttls_injection(prov):
    w = connect(prov)
    ehlo(w)
    w.send("STARTTLS\r\nEHLO x\r\n")
    r = w.reply()
    assert r.code == 554
    assert w.closed()


def test_starttls_twice(prov):
    w = connect(prov)
    ehlo(w)
    w.expect("STARTTLS", 220)
    w.starttls()
    ehlo(w)
    w.expect("STARTTLS", 503, "5.5.1")


def test_implicit_tls_port(prov):
    ctx = ssl._create_unverified_context()
    w = Wire(prov.odmrs_port)
    w.starttls(ctx)
    assert w.reply().code == 220
    r = ehlo(w)
    assert not any(line.startswith("STARTTLS") for line in r.lines)
    assert cram_login(w, "alice", "alice-secret").code == 235


# ---------------------------------------------------------------- ATRN

def test_atrn_before_auth(prov):
    w = connect(prov)
    ehlo(w)
    w.expect("ATRN", 530, "5.7.0")
    w.expect("ATRN example.org", 530, "5.7.0")


def test_atrn_no_mail_then_quit(prov):
    w = login(prov)
    w.expect("ATRN", 453)
    w.expect("ATRN example.org", 453)
    w.expect("QUIT", 221)


def test_atrn_unauthorized_domain_among_authorized(prov):
    inject(prov, ["u@example.org", "v@bob.example"])
    w = login(prov)
    r = w.expect("ATRN example.org,bob.example", 450)
    assert "bob.example" in r.text
    assert "domain=bob.example" in prov.log()
    r = w.expect("ATRN other.example", 450)
    # Nothing was sent: both still queued, and the session is still authenticated.
    assert len(prov.queue_ids("example.org")) == 1
    assert len(prov.queue_ids("bob.example")) == 1
    w.expect("ATRN nonsense..", 501)


def test_atrn_spaces_mixed_case_and_busy(prov):
    inject(prov, ["u@example.net"])
    first = login(prov)
    first.send("ATRN Example.ORG, EXAMPLE.net\r\n")
    assert first.reply().code == 250
    second = login(prov)
    r = second.expect("ATRN example.net", 451)
    assert "example.net" in r.text
    first.close()


def test_bytes_after_atrn_are_a_protocol_error(prov):
    inject(prov, ["u@example.org"])
    w = login(prov)
    w.send("ATRN example.org\r\n220 customer.example ESMTP\r\n")
    r = w.reply()
    assert r.code == 554
    assert w.closed()
    assert len(prov.queue_ids("example.org")) == 1
    # The lease was released: a proper session can take the domain now.
    w2 = login(prov)
    w2.send("ATRN example.org\r\n")
    assert w2.reply().code == 250


@pytest.mark.parametrize("port", ["starttls", "implicit"])
def test_quit_over_tls_ends_the_session_at_once(prov, port):
    """A TLS bufferevent writes the 221 at once, before the session waits for its output to
    drain: odmrd must still close and end the session then, not after the closing timer."""
    if port == "implicit":
        w = Wire(prov.odmrs_port)
        w.starttls(ssl._create_unverified_context())
        assert w.reply().code == 220
    else:
        w = connect(prov)
        ehlo(w)
        w.expect("STARTTLS", 220)
        w.starttls()
    ehlo(w)
    assert cram_login(w, "alice", "alice-secret").code == 235
    t0 = time.monotonic()
    w.expect("QUIT", 221)
    assert w.closed(timeout=10)            # odmrd closes, the customer never does
    assert time.monotonic() - t0 < 3
    deadline = time.time() + 5
    while "event=odmr.end" not in prov.log() and time.time() < deadline:
        time.sleep(0.05)
    assert "event=odmr.end" in prov.log()
