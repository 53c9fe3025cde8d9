# SPDX-License-Identifier: ISC
"""AUTH under attack (issue 9, defects 4 and 7): the per-address failure limit holds against
parallel sessions, every failed or cancelled exchange counts, and SCRAM does not tell known
users from unknown ones."""
import os
import socket
import stat
import threading
import time

import pytest

from saslclient import ScramSha256, cram_md5_response, unb64
from smtpwire import Wire

USERS = {
    "alice": ("alice-secret", ["example.org"], []),
    "nocram": ("nocram-secret", ["nocram.example"], ["--no-cram"]),
}
LIMIT = 10        # [odmr] max_address_failures, default
PARALLEL = 40


@pytest.fixture
def prov(make_odmrd):
    # The per-address session limits (test_limits.py) would refuse most of the PARALLEL
    # sessions at connect; raised here so that the AUTH accounting itself is what is tested.
    return make_odmrd(users=USERS, extra={"odmr.max_sessions_per_address": "100",
                                          "odmr.max_unauthenticated_per_address": "100",
                                          "intake.max_sessions": "200"})


def connect(d, source="127.0.0.1"):
    """An ODMR session from `source` (any 127/8 address is local on Linux), after EHLO."""
    sock = socket.create_connection(("127.0.0.1", d.odmr_port), timeout=20,
                                    source_address=(source, 0))
    w = Wire.__new__(Wire)
    w.sock, w.buf = sock, b""
    assert w.reply().code == 220
    w.expect("EHLO customer.example", 250)
    return w


def cram_login(w, user, password):
    r = w.cmd("AUTH CRAM-MD5")
    if r.code != 334:
        return r
    return w.cmd(cram_md5_response(user, password, r.lines[0]))


def server_first(w, user):
    """Starts SCRAM-SHA-256 for user; returns (client, server-first fields) or (None, reply)."""
    c = ScramSha256(user, "wrong-password")
    r = w.cmd("AUTH SCRAM-SHA-256 " + c.first())
    if r.code != 334:
        return None, r
    fields = dict(item.split("=", 1) for item in unb64(r.lines[0]).decode().split(","))
    return c, (r.lines[0], fields)


def parallel_wrong_guesses(d, mechanism):
    """PARALLEL sessions each send AUTH before any reads a reply to it, then each answers a
    challenge it got with a wrong password. Returns the final reply codes."""
    sessions = [connect(d) for _ in range(PARALLEL)]
    first = ("AUTH CRAM-MD5" if mechanism == "cram" else None)
    clients = []
    for w in sessions:
        c = ScramSha256("alice", "wrong-password")
        clients.append(c)
        w.send((first or "AUTH SCRAM-SHA-256 " + c.first()) + "\r\n")
    codes = []
    for w, c in zip(sessions, clients):
        r = w.reply()
        if r.code == 334:
            answer = (cram_md5_response("alice", "wrong-password", r.lines[0])
                      if mechanism == "cram" else c.final(r.lines[0]))
            r = w.cmd(answer)
        codes.append(r.code)
    for w in sessions:
        w.close()
    return codes


@pytest.mark.parametrize("mechanism", ["cram", "scram"])
def test_parallel_sessions_cannot_exceed_the_address_limit(prov, mechanism):
    codes = parallel_wrong_guesses(prov, mechanism)
    assert codes.count(535) <= LIMIT, codes
    assert codes.count(535) + codes.count(454) == PARALLEL, codes
    # The address is blocked for the window, even with the right password ...
    w = connect(prov)
    r = cram_login(w, "alice", "alice-secret")
    assert r.code == 454 and r.enhanced == "4.7.0", r
    # ... and another address is not.
    other = connect(prov, source="127.0.0.2")
    r = cram_login(other, "alice", "alice-secret")
    assert r.code == 235, r
    assert "event=odmr.auth_refused" in prov.log()


def test_cancel_counts_as_a_failure(prov):
    w = connect(prov)
    for _ in range(2):
        assert w.cmd("AUTH CRAM-MD5").code == 334
        w.expect("*", 501, "5.0.0")
    assert w.cmd("AUTH CRAM-MD5").code == 334
    r = w.cmd("*")
    assert r.code == 421 and r.enhanced == "4.7.0", r
    assert w.closed()
    assert "result=cancelled" in prov.log()


# ---------------------------------------------------------------- SCRAM and unknown users

def test_scram_salt_does_not_reveal_unknown_users(prov):
    known = []
    for _ in range(2):
        w = connect(prov)
        c, (_raw, fields) = server_first(w, "nocram")
        known.append(fields)
        w.close()
    unknown = []
    for _ in range(2):
        w = connect(prov, source="127.0.0.3")
        c, (_raw, fields) = server_first(w, "mallory")
        unknown.append(fields)
        w.close()
    assert known[0]["s"] == known[1]["s"]
    assert unknown[0]["s"] == unknown[1]["s"], "an unknown user's salt must be stable"
    assert len(unb64(unknown[0]["s"])) == len(unb64(known[0]["s"])) == 16
    assert unknown[0]["i"] == known[0]["i"] == "4096"
    assert unknown[0]["s"] != known[0]["s"]
    # Another unknown user gets another salt.
    w = connect(prov, source="127.0.0.3")
    _c, (_raw, other) = server_first(w, "trudy")
    assert other["s"] != unknown[0]["s"]


def test_unknown_user_fails_at_the_proof_and_counts(prov):
    """The exchange runs to the client proof like a wrong password; LIMIT such failures from
    one address (in parallel sessions) block it."""
    results = []

    def one():
        w = connect(prov)
        c, (raw, _fields) = server_first(w, "mallory")
        results.append(w.cmd(c.final(raw)).code)
        w.close()

    threads = [threading.Thread(target=one) for _ in range(LIMIT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [535] * LIMIT
    w = connect(prov)
    r = cram_login(w, "alice", "alice-secret")
    assert r.code == 454, r


def test_abandoned_scram_probes_count(prov):
    """A client that only wants the salt (enumeration) and hangs up after the server-first
    message has made a failed exchange too."""
    for _ in range(LIMIT):
        w = connect(prov)
        c, (_raw, _fields) = server_first(w, "mallory")
        w.close()
    deadline = time.time() + 10
    while prov.log().count("event=odmr.end") < LIMIT and time.time() < deadline:
        time.sleep(0.05)
    w = connect(prov)
    r = cram_login(w, "alice", "alice-secret")
    assert r.code == 454, r
    assert "result=aborted" in prov.log()


def test_server_secret_is_kept_across_restarts(prov):
    w = connect(prov, source="127.0.0.4")
    _c, (_raw, before) = server_first(w, "mallory")
    w.close()
    prov.stop()
    prov.start()
    w = connect(prov, source="127.0.0.4")
    _c, (_raw, after) = server_first(w, "mallory")
    assert before["s"] == after["s"]
    secret = os.path.join(prov.spool, "auth-secret")
    st = os.stat(secret)
    assert st.st_size == 32 and stat.S_IMODE(st.st_mode) == 0o600
    with open(prov.users) as f:
        assert "auth-secret" not in f.read()


def test_user_without_scram_verifier_looks_the_same(make_odmrd):
    """A user with only a CRAM-MD5 secret (a hand-made users file): SCRAM still works, with a
    stable salt of the usual length instead of GNU SASL's fresh 12 octets."""
    d = make_odmrd(users=USERS, start=False)
    with open(d.users) as f:
        lines = f.read().splitlines()
    with open(d.users, "w") as f:
        for line in lines:
            if line.startswith("user alice "):
                line = " ".join(w for w in line.split() if not w.startswith("scram-sha-256="))
            f.write(line + "\n")
    d.start()
    salts = []
    for _ in range(2):
        w = connect(d)
        c = ScramSha256("alice", "alice-secret")
        r = w.cmd("AUTH SCRAM-SHA-256 " + c.first())
        assert r.code == 334, r
        fields = dict(i.split("=", 1) for i in unb64(r.lines[0]).decode().split(","))
        salts.append(fields["s"])
        assert fields["i"] == "4096"
        r = w.cmd(c.final(r.lines[0]))
        assert r.code == 334 and c.verify(r.lines[0]), r
        w.expect("", 235)
    assert salts[0] == salts[1] and len(unb64(salts[0])) == 16
