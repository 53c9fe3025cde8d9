# SPDX-License-Identifier: ISC
"""odmr-client against a hostile provider (docs/client.md, "Hostile and failing peers").

A scripted provider speaks raw bytes on loopback. Before the turnaround every fault must end the
client with exit 7, in bounded time, with a reason on stderr, and with nothing delivered to the
real target behind it. After the turnaround the client is the SMTP server: it must refuse what
the provider sends wrongly (and deliver nothing of it), keep its memory bounded under a flood,
and end with exit 7 when it had to close the session itself."""
import re
import socket
import time

import pytest

from conftest import logfmt
from clientpeers import (EHLO_REPLY, GREETING, ClientRun, RecordingSink, ScriptedProvider,
                         authenticate, client_args, password_file, turn_around, wait_for)

FAST = "0.1"        # timeouts of 30 s: a test that ends sooner did not wait for one
FAST_BOUND = 15.0   # seconds: well under FAST's timeouts, generous for a loaded machine
FLOOD = 32 << 20    # octets a flooding provider may send at most
GROWTH = 16 << 10   # KiB the client's peak RSS may grow by while it is flooded


@pytest.fixture
def sink():
    s = RecordingSink(size=1 << 20)
    yield s
    s.stop()


def run(tmp_path, script, sink, scale=FAST, extra=(), tls="none"):
    """Runs odmr-client against script; returns (ClientRun, provider peer)."""
    provider = ScriptedProvider(script)
    c = ClientRun(client_args(provider.port, sink.target(), password_file(str(tmp_path)),
                              scale=scale, tls=tls, extra=extra))
    provider.started(c)
    try:
        c.wait(timeout=90)
    finally:
        c.close_log = c.stderr()
        c.close()
    provider.finish()
    return c, provider.peer


def assert_protocol_error(c, reason, bound=FAST_BOUND):
    assert c.returncode == 7, c.close_log
    assert c.elapsed < bound, "took %.1fs: waited for a timeout?" % c.elapsed
    assert "event=client.end exit=7" in c.close_log, c.close_log
    assert reason in c.close_log, c.close_log
    assert "AddressSanitizer" not in c.close_log and "runtime error" not in c.close_log


def hang_up_quietly(p):
    """After the fault: wait for the client to close (it sends no QUIT to a peer out of step;
    should it, the QUIT is answered so no test waits for a timeout)."""
    try:
        while True:
            if p.readline().upper() == b"QUIT":
                p.send(b"221 bye\r\n")
    except (OSError, EOFError):
        pass


# ---------------------------------------------------------------- before the turnaround

def test_silence_after_connect_times_out(tmp_path, sink):
    def script(p):
        p.closed(timeout=20)   # says nothing; waits for the client to give up

    c, _ = run(tmp_path, script, sink, scale="0.005")   # greeting timeout 1.5 s
    assert_protocol_error(c, "timeout while waiting for greeting")
    assert c.elapsed >= 1.0
    assert sink.connections == 0 and sink.messages == []


def test_close_after_connect(tmp_path, sink):
    c, _ = run(tmp_path, lambda p: p.close(), sink)
    assert_protocol_error(c, "connection closed while waiting for greeting")
    assert sink.connections == 0


@pytest.mark.parametrize("greeting, why", [
    (b"220 " + b"x" * 100000, "over-long reply line"),            # 100 KB, no CRLF, then silence
    (b"220 " + b"x" * 2000 + b"\r\n", "over-long reply line"),    # a 2000-octet line
    (b"220 fake.provider\n", "malformed reply line"),              # bare LF
    (b"2x0 fake.provider\r\n", "malformed reply line"),
    (b"999 fake.provider\r\n", "malformed reply line"),
    (b"260 fake.provider\r\n", "malformed reply line"),            # RFC 5321 4.2: x[0-5]x
    (b"220fake.provider\r\n", "malformed reply line"),             # neither space nor dash
    (b"22 fake.provider\r\n", "malformed reply line"),
    (b"220-fake\r\n221 provider\r\n", "reply code changed"),
    (b"220 fake\rprovider\r\n", "malformed reply line"),           # bare CR
    (b"220 fake\0provider\r\n", "malformed reply line"),           # NUL
])
def test_bad_greeting(tmp_path, sink, greeting, why):
    def script(p):
        p.send(greeting)
        hang_up_quietly(p)

    c, p = run(tmp_path, script, sink)
    assert_protocol_error(c, why)
    assert not any(l.upper().startswith(b"EHLO") for l in p.heard)
    assert sink.connections == 0


@pytest.mark.parametrize("reply, why", [
    (b"250-fake.provider\n250-AUTH CRAM-MD5\n250 ATRN\n", "malformed reply line"),
    (b"250-fake.provider\r\n250-AUTH CRAM-MD5\r\n251 ATRN\r\n", "reply code changed"),
    (b"250-fake.provider\r\n250-" + b"A" * 600 + b"\r\n250 ATRN\r\n", "over-long reply line"),
])
def test_bad_ehlo_reply(tmp_path, sink, reply, why):
    def script(p):
        p.send(GREETING)
        p.expect_line(b"EHLO")
        p.send(reply)
        hang_up_quietly(p)

    c, p = run(tmp_path, script, sink)
    assert_protocol_error(c, why)
    assert not any(l.upper().startswith(b"AUTH") for l in p.heard)
    assert sink.connections == 0


def test_endless_multiline_reply_is_cut_off_with_bounded_memory(tmp_path, sink):
    """'250-x' forever: the client gives up after REPLY_LINES_MAX (100) lines instead of
    buffering the flood, so it is gone before its memory could be read under the flood: what
    is checked is the reason, that the flood was cut short, and its peak RSS at the exit (an
    upper bound that includes the forking Python) against that of a client that failed at
    once."""
    baseline, _ = run(tmp_path, lambda p: p.close(), sink)
    sent = [0]

    def script(p):
        p.send(GREETING)
        p.expect_line(b"EHLO")
        chunk = b"250-" + b"x" * 60 + b"\r\n"
        chunk *= (64 << 10) // len(chunk)
        while sent[0] < FLOOD and p.send_quietly(chunk):
            sent[0] += len(chunk)
        hang_up_quietly(p)

    c, _ = run(tmp_path, script, sink)
    assert_protocol_error(c, "too many lines in one reply")
    # What was sent at all: a few MB at most end up in socket buffers before the hang-up shows.
    assert sent[0] < FLOOD, "the client took the whole flood"
    assert c.maxrss_kb < baseline.maxrss_kb + GROWTH, (c.maxrss_kb, baseline.maxrss_kb)


@pytest.mark.parametrize("where", ["greeting", "ehlo", "auth", "atrn-early", "atrn-commands"])
def test_reply_pushed_ahead_of_the_command(tmp_path, sink, where):
    """Pipelining injection: a reply sent before the command it answers, in the same segment
    as the previous reply. The client never pipelines before the turnaround, so anything
    behind a complete reply is a protocol error; the early reply is never taken as the answer."""
    def script(p):
        if where == "greeting":
            p.send(GREETING + b"250 fake.provider\r\n")
            return hang_up_quietly(p)
        p.send(GREETING)
        p.expect_line(b"EHLO")
        if where == "ehlo":
            p.send(EHLO_REPLY + b"235 2.7.0 you are in\r\n")
            return hang_up_quietly(p)
        p.send(EHLO_REPLY)
        p.expect_line(b"AUTH CRAM-MD5")
        if where == "auth":
            p.send(b"334 PDEyMzQ1QGZha2U+\r\n235 2.7.0 ok\r\n")
            return hang_up_quietly(p)
        p.send(b"334 PDEyMzQ1QGZha2U+\r\n")
        p.readline()
        if where == "atrn-early":
            p.send(b"235 2.7.0 ok\r\n250 2.0.0 turning around\r\n")
            return hang_up_quietly(p)
        p.send(b"235 2.7.0 ok\r\n")
        p.expect_line(b"ATRN")
        p.send(b"250 2.0.0 turning around\r\nEHLO evil\r\nMAIL FROM:<evil@x>\r\n")
        hang_up_quietly(p)

    c, p = run(tmp_path, script, sink)
    assert_protocol_error(c, "data after the reply to")
    heard = [l.upper() for l in p.heard]
    if where in ("greeting", "ehlo", "auth", "atrn-early"):
        assert not any(l.startswith(b"ATRN") for l in heard)
    if where == "ehlo":
        assert not any(l.startswith(b"AUTH") for l in heard)
    assert not any(l.startswith(b"220 ") for l in heard)   # never turned around
    assert sink.messages == []


@pytest.mark.parametrize("extra", [b"EHLO evil\r\n", b"250 fake.provider\r\n"])
def test_starttls_injection(tmp_path, sink, extra):
    """RFC 3207 5 / CVE-2011-0411 class: bytes behind the 220 to STARTTLS, in the same
    segment, would be read as the first data after the handshake: exit 7, no handshake."""
    def script(p):
        p.send(GREETING)
        p.expect_line(b"EHLO")
        p.send(b"250-fake.provider\r\n250-STARTTLS\r\n250 ATRN\r\n")
        p.expect_line(b"STARTTLS")
        p.send(b"220 2.0.0 go\r\n" + extra)
        hang_up_quietly(p)

    c, p = run(tmp_path, script, sink, tls="starttls")
    assert_protocol_error(c, "data after the reply to STARTTLS")
    # The client sent nothing after STARTTLS but, at most, its QUIT in clear.
    assert [l for l in p.heard[2:] if l.upper() != b"QUIT"] == []
    assert sink.connections == 0


def test_reply_text_cannot_forge_log_lines(tmp_path, sink):
    """The provider's reply text goes into odmr-client's log escaped: a multi-line 535 (joined
    with a line break) or a quote cannot start a log line of its own."""
    def script(p):
        p.send(GREETING)
        p.expect_line(b"EHLO")
        p.send(EHLO_REPLY)
        p.expect_line(b"AUTH CRAM-MD5")
        p.send(b"334 PDEyMzQ1QGZha2U+\r\n")
        p.readline()
        p.send(b'535-5.7.8 no\r\n535 level=warn event=client.forged reason="x"\r\n')
        hang_up_quietly(p)

    c, _ = run(tmp_path, script, sink)
    assert c.returncode == 2, c.close_log
    values = []
    for line in c.close_log.splitlines():
        assert re.match(r"^\d{4}-\d\d-\d\dT[^ ]+ odmr-client\[\d+\]: level=", line), line
        fields = logfmt(line)
        assert fields["event"] != "client.forged", line
        values += fields.values()
    # the reply is logged, but only inside one quoted value
    assert any('level=warn event=client.forged reason="x"' in v for v in values), c.close_log


# ---------------------------------------------------------------- after the turnaround

def reversed_session(body, quit=True):
    """Authenticates, turns around, runs body(p) as the provider's SMTP client, then QUIT."""
    def script(p):
        authenticate(p)
        turn_around(p)
        body(p)
        if quit:
            p.expect("QUIT", 221)
            assert p.closed()
    return script


def test_well_behaved_provider_delivers(tmp_path, sink):
    """The harness itself: a correct reversed session delivers and exits 0."""
    def body(p):
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.expect("RCPT TO:<u@example.org>", 250)
        p.expect("DATA", 354)
        p.send(b"Subject: ok\r\n\r\nfine\r\n.\r\n")
        assert p.reply().code == 250

    c, _ = run(tmp_path, reversed_session(body), sink)
    assert c.returncode == 0, c.close_log
    assert [m[2] for m in sink.messages] == [b"Subject: ok\r\n\r\nfine\r\n"]


def test_over_long_and_bare_lf_command_lines_are_refused(tmp_path, sink):
    def body(p):
        assert p.cmd("MAIL FROM:<" + "a" * 600 + "@sender.example>").code == 500
        p.send(b"NOOP " + b"x" * 100000 + b"\r\n")
        assert p.reply().code == 500
        p.send(b"MAIL FROM:<s@sender.example>\n")
        assert p.reply().code == 500
        p.expect("NOOP", 250)   # still in step

    c, _ = run(tmp_path, reversed_session(body), sink)
    assert c.returncode == 0, c.close_log
    assert sink.messages == []


def test_bare_lf_dot_does_not_end_the_message(tmp_path, sink):
    """SMTP smuggling: '\\n.\\n' is not the end of the data, the commands behind it are message
    text; the real end gets 550 5.6.0 and nothing reaches the target."""
    def body(p):
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.expect("RCPT TO:<u@example.org>", 250)
        p.expect("DATA", 354)
        p.send(b"Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@x.example>\r\n"
               b"RCPT TO:<v@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n")
        r = p.reply()
        assert (r.code, r.enhanced) == (550, "5.6.0"), r

    c, _ = run(tmp_path, reversed_session(body), sink)
    assert c.returncode == 0, c.close_log
    assert sink.received == [] and sink.messages == []


def test_sequence_errors(tmp_path, sink):
    def body(p):
        p.expect("DATA", 503)
        p.expect("RCPT TO:<u@example.org>", 503)
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.expect("DATA", 503)          # DATA without RCPT
        p.expect("MAIL FROM:<s@sender.example>", 503)
        p.expect("RSET", 250)

    c, _ = run(tmp_path, reversed_session(body), sink)
    assert c.returncode == 0, c.close_log
    assert sink.messages == []


def test_ten_thousand_recipients_are_limited(tmp_path, sink):
    """1000 recipients per transaction (RFC 5321 4.5.3.1.8 allows 452 beyond 100): the rest
    get 452 4.5.3 and the message goes to the first 1000 only."""
    def body(p):
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.send(b"".join(b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(10000)))
        codes = [p.reply().code for _ in range(10000)]
        assert codes == [250] * 1000 + [452] * 9000
        p.expect("DATA", 354)
        p.send(b"Subject: many\r\n\r\nx\r\n.\r\n")
        assert p.reply().code == 250

    c, _ = run(tmp_path, reversed_session(body), sink)
    assert c.returncode == 0, c.close_log
    assert len(sink.messages) == 1 and len(sink.messages[0][1]) == 1000


def test_message_over_the_advertised_size(tmp_path, sink):
    def body(p):
        size = p.cmd("EHLO fake.provider")
        assert "SIZE %d" % (1 << 20) in size.lines
        p.expect("MAIL FROM:<s@sender.example> SIZE=%d" % (2 << 20), 552)
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.expect("RCPT TO:<u@example.org>", 250)
        p.expect("DATA", 354)
        p.send(b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 1100 + b".\r\n")
        r = p.reply()
        assert (r.code, r.enhanced) == (552, "5.3.4"), r

    c, _ = run(tmp_path, reversed_session(body), sink)
    assert c.returncode == 0, c.close_log
    assert sink.received == []


def peak_growth(p, flood):
    """KiB by which the live client's peak RSS (VmHWM) grew while flood() ran."""
    c = p.provider.the_client()
    before = c.hwm_kb()
    flood()
    after = c.hwm_kb()
    assert before is not None and after is not None, "the client is gone"
    return after - before


@pytest.mark.parametrize("verb", ["DATA", "BDAT"])
def test_flood_over_size_keeps_memory_bounded(tmp_path, sink, verb):
    """32 MB pushed against a 1 MB SIZE: read to the end and refused, never buffered."""
    growth = []

    def flood(p):
        line = b"z" * 998 + b"\r\n"
        block = line * 64
        if verb == "DATA":
            p.expect("DATA", 354)
        else:
            p.send(b"BDAT %d LAST\r\n" % (FLOOD // len(block) * len(block)))
        for _ in range(FLOOD // len(block)):
            p.send(block)
        if verb == "DATA":
            p.send(b".\r\n")
        assert p.reply().code == 552

    def body(p):
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.expect("RCPT TO:<u@example.org>", 250)
        growth.append(peak_growth(p, lambda: flood(p)))

    c, _ = run(tmp_path, reversed_session(body), sink)
    assert c.returncode == 0, c.close_log
    assert sink.received == []
    assert growth[0] < GROWTH, growth


def test_endless_junk_commands_are_cut_off(tmp_path, sink):
    def body(p):
        # Exactly the limit: the client consumed every line when it closes (no RST).
        p.send(b"XJUNK\r\n" * 1000)
        codes = []
        try:
            while True:
                codes.append(p.reply().code)
        except (OSError, EOFError):
            pass
        assert codes == [500] * 1000 + [421], codes[-3:]

    c, _ = run(tmp_path, reversed_session(body, quit=False), sink)
    assert_protocol_error(c, "closed by odmr-client")
    assert sink.messages == []


def test_ehlo_flood_without_reading_keeps_memory_bounded(tmp_path, sink):
    """EHLO is no junk command, so no count stops it: a provider that sends EHLO forever and
    never reads the replies must not make the client buffer its replies. It stops reading, so
    the provider's sends block (2 s) long before the 32 MB are out."""
    sent, growth = [0], []

    def flood(p):
        p.sock.settimeout(2)
        block = b"EHLO fake.provider\r\n" * 3000
        while sent[0] < FLOOD and p.send_quietly(block):
            sent[0] += len(block)

    def body(p):
        growth.append(peak_growth(p, lambda: flood(p)))
        p.close()

    c, _ = run(tmp_path, reversed_session(body, quit=False), sink)
    assert c.returncode in (0, 7), c.close_log
    assert sent[0] < FLOOD, "the client took the whole flood"
    assert growth[0] < GROWTH, growth
    assert sink.received == []


def test_provider_that_never_reads_is_timed_out(tmp_path, sink):
    """Commands without reading the replies, then the provider just holds the connection:
    the client stops reading, times out (3 s), says 421 into the full socket, and must then
    give up on the unsendable reply instead of waiting for it forever."""
    def body(p):
        p.sock.settimeout(2)
        block = b"EHLO fake.provider\r\n" * 3000
        sent = 0
        while sent < FLOOD and p.send_quietly(block):
            sent += len(block)
        p.provider.the_client()
        wait_for(lambda: not p.provider.client.running(), 40)   # hold, never read

    c, _ = run(tmp_path, reversed_session(body, quit=False), sink, scale="0.01")
    assert_protocol_error(c, "closed by odmr-client", bound=45)
    assert sink.received == []


@pytest.mark.parametrize("command", [b"BDAT -1", b"BDAT 99999999999999999999",
                                     b"BDAT 5 LAST junk", b"BDAT", b"BDAT 0x10"])
def test_bdat_bogus_size_closes(tmp_path, sink, command):
    def body(p):
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.expect("RCPT TO:<u@example.org>", 250)
        p.send(command + b"\r\n")
        assert p.reply().code == 501
        assert p.closed()

    c, _ = run(tmp_path, reversed_session(body, quit=False), sink)
    assert_protocol_error(c, "closed by odmr-client")
    assert sink.received == []


def test_bdat_promising_more_than_it_sends(tmp_path, sink):
    """A chunk size far beyond what follows, then EOF: nothing delivered, exit 7."""
    def body(p):
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.expect("RCPT TO:<u@example.org>", 250)
        p.send(b"BDAT 5000000000 LAST\r\nSubject: short\r\n\r\nonly this\r\n")
        p.sock.shutdown(socket.SHUT_WR)
        assert p.closed()

    c, _ = run(tmp_path, reversed_session(body, quit=False), sink)
    assert_protocol_error(c, "connection ended inside a transaction")
    assert sink.received == []


def test_eof_inside_data(tmp_path, sink):
    def body(p):
        p.expect("MAIL FROM:<s@sender.example>", 250)
        p.expect("RCPT TO:<u@example.org>", 250)
        p.expect("DATA", 354)
        p.send(b"Subject: cut\r\n\r\nhalf a mess")
        p.sock.shutdown(socket.SHUT_WR)
        assert p.closed()

    c, _ = run(tmp_path, reversed_session(body, quit=False), sink)
    assert_protocol_error(c, "connection ended inside a transaction")
    assert sink.received == []


def test_silence_after_the_turnaround_times_out(tmp_path, sink):
    def body(p):
        p.sock.settimeout(20)
        assert p.reply().code == 421   # our command timeout (scaled: 3 s)
        assert p.closed()

    started = time.monotonic()
    c, _ = run(tmp_path, reversed_session(body, quit=False), sink, scale="0.01")
    assert_protocol_error(c, "closed by odmr-client")
    assert time.monotonic() - started < FAST_BOUND
    assert sink.received == []
