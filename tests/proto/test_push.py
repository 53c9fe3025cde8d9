# SPDX-License-Identifier: ISC
"""The reversed ODMR session (RFC 2645 5.3, docs/push.md): the test is the customer's SMTP
server on the same socket after ATRN's 250, and records everything odmrd sends byte-exact."""
import os
import re
import select
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from saslclient import cram_md5_response
from conftest import BIN
from notices import for_original
from smtpwire import Wire

REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")

USERS = {
    "alice": ("alice-secret", ["example.org", "example.net"], []),
    "bob": ("bob-secret", ["bob.example"], []),
    "fast": ("fast-secret", ["fast.example"], ["--profile", "fast"]),
}
# A second fast-profile customer for the shared-pool test only (other modules import USERS).
FAST2 = {"fast2": ("fast2-secret", ["fast2.example"], ["--profile", "fast"])}
PASSWORDS = {name: pw for name, (pw, _d, _o) in {**USERS, **FAST2}.items()}

# What a plain Postfix-like customer MTA advertises (no DSN, no PIPELINING).
BASIC_EXT = ("SIZE 100000000", "8BITMIME", "ENHANCEDSTATUSCODES")


@pytest.fixture
def prov(make_odmrd):
    return make_odmrd(users=USERS)


# ---------------------------------------------------------------- transports and lines

class Plain:
    """The raw socket."""

    def __init__(self, sock):
        self.sock = sock

    def send(self, data):
        self.sock.sendall(data)

    def recv(self):
        return self.sock.recv(65536)

    def buffered(self):
        return False


class TlsRecords:
    """TLS through ssl.MemoryBIO over a raw socket, one TLS record at a time, so the test sees
    the plaintext of every application-data record odmrd sends (`records`)."""

    def __init__(self, sock, server_hostname="mx.test.example"):
        self.sock = sock
        self.raw = b""
        self.records = []
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        ctx = ssl._create_unverified_context()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=False,
                                server_hostname=server_hostname)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("EOF during the TLS handshake")
                self.inc.write(chunk)
        self._flush()

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def send(self, data):
        self.obj.write(data)
        self._flush()

    def buffered(self):
        return len(self.raw) > 0

    def recv(self):
        """The plaintext of the next record that has any (b"" on EOF or close_notify)."""
        while True:
            while len(self.raw) < 5 or len(self.raw) < 5 + int.from_bytes(self.raw[3:5], "big"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    return b""
                self.raw += chunk
            n = 5 + int.from_bytes(self.raw[3:5], "big")
            record, self.raw = self.raw[:n], self.raw[n:]
            self.inc.write(record)
            plain = b""
            try:
                while True:
                    piece = self.obj.read(65536)
                    if not piece:
                        break
                    plain += piece
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return b""
            self._flush()
            if plain:
                self.records.append(plain)
                return plain


class Conn:
    """Lines over a transport; every received octet is kept in `rx`."""

    def __init__(self, transport, timeout=20):
        self.t = transport
        self.t.sock.settimeout(timeout)
        self.buf = b""
        self.rx = b""
        self.eof = False

    def _fill(self):
        chunk = self.t.recv()
        if not chunk:
            self.eof = True
            raise EOFError("odmrd closed the connection; unparsed %r" % self.buf)
        self.buf += chunk
        self.rx += chunk

    def send(self, data):
        self.t.send(data.encode() if isinstance(data, str) else data)

    def readline(self):
        """One line including its CRLF."""
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def reply(self):
        lines = []
        while True:
            m = REPLY_LINE.match(self.readline()[:-2])
            assert m, "malformed reply line"
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return int(m.group(1)), lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def expect(self, line, code):
        got = self.cmd(line)
        assert got[0] == code, "%s -> %r, wanted %d" % (line, got, code)
        return got

    def more_within(self, seconds):
        """True when odmrd sends anything more within `seconds` (nothing is answered)."""
        if self.buf or self.t.buffered():
            return True
        r, _w, _x = select.select([self.t.sock], [], [], seconds)
        return bool(r)

    def closed(self, timeout=5):
        self.t.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.t.recv()
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.t.sock.close()
        except OSError:
            pass


def login(d, user="alice", tls=False):
    sock = socket.create_connection(("127.0.0.1", d.odmrs_port if tls else d.odmr_port),
                                    timeout=20)
    c = Conn(TlsRecords(sock) if tls else Plain(sock))
    assert c.reply()[0] == 220
    c.expect("EHLO customer.example", 250)
    code, lines = c.cmd("AUTH CRAM-MD5")
    assert code == 334
    c.expect(cram_md5_response(user, PASSWORDS[user], lines[0]), 235)
    return c


def atrn(c, domains=""):
    return c.cmd(("ATRN " + domains).rstrip())


# ---------------------------------------------------------------- the scripted customer

DISCONNECT = object()   # a reply that is not sent: the customer hangs up instead


class Txn:
    def __init__(self, mail):
        self.mail = mail          # the MAIL command line, bytes without CRLF
        self.rcpts = []           # (RCPT line without CRLF, reply code)
        self.data = None          # message octets, dot-stuffing undone
        self.wire_data = None     # message octets as received (stuffed, with the final dot)
        self.final = None         # reply code given after the data
        self.bdat = False

    @property
    def accepted(self):
        return [addr_of(line) for line, code in self.rcpts if code // 100 == 2]


def addr_of(line):
    m = re.match(rb"RCPT TO:<([^>]*)>", line, re.I)
    return m.group(1).decode() if m else None


class Customer:
    """The customer's SMTP server after the turnaround, one command at a time.

    Replies are strings (CRLF added) or DISCONNECT; `rcpt` and `final` may be callables:
    rcpt(address, txn) and final(txn). `lockstep` asserts after every command (and after the
    final dot) that odmrd sends nothing more until it is answered."""

    def __init__(self, conn, greeting="220 customer.example ESMTP", ext=BASIC_EXT,
                 ehlo_reply=None, helo_reply="250 customer.example", mail="250 2.1.0 OK",
                 rcpt="250 2.1.5 OK", data="354 go ahead", final="250 2.0.0 queued",
                 quit="221 2.0.0 bye", lockstep=False, lockstep_wait=0.3, on_data_start=None,
                 on_final=None, limit=20000, deadline=120):
        self.c = conn
        self.greeting = greeting
        self.ext = ext
        self.ehlo_reply = ehlo_reply
        self.helo_reply = helo_reply
        self.mail = mail
        self.rcpt = rcpt
        self.data_reply = data
        self.final = final
        self.quit = quit
        self.lockstep = lockstep
        self.lockstep_wait = lockstep_wait
        self.on_data_start = on_data_start
        self.on_final = on_final
        self.limit = limit
        self.deadline = deadline
        self.commands = []        # every command line (not message data), bytes without CRLF
        self.txns = []
        self.batched = []         # commands after which odmrd sent more without waiting
        self.ended = None         # "quit", "eof", "hangup"

    # -- replies
    def _say(self, reply):
        if reply is DISCONNECT:
            self.hangup()
            return False
        self.c.send(reply.encode() + b"\r\n")
        return True

    def hangup(self):
        self.ended = "hangup"
        try:
            self.c.t.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.c.close()

    def _check_lockstep(self, what):
        if self.lockstep and self.c.more_within(self.lockstep_wait):
            self.batched.append(what)

    def ehlo_text(self):
        lines = ["customer.example"] + list(self.ext)
        return "\r\n".join("250%s%s" % ("-" if i < len(lines) - 1 else " ", l)
                           for i, l in enumerate(lines))

    def run(self):
        """Serves until QUIT, EOF or a scripted hang-up. Returns self."""
        if self.greeting is None:
            self.hangup()
            return self
        if not self._say(self.greeting):
            return self
        txn = None
        end = time.time() + self.deadline
        try:
            for _ in range(self.limit):
                assert time.time() < end, "the reversed session took too long"
                line = self.c.readline()[:-2]
                self.commands.append(line)
                self._check_lockstep(line)
                verb = line.split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    reply = self.ehlo_reply if self.ehlo_reply is not None else self.ehlo_text()
                elif verb == b"HELO":
                    reply = self.helo_reply
                elif verb == b"MAIL":
                    txn = Txn(line)
                    self.txns.append(txn)
                    reply = self.mail(txn) if callable(self.mail) else self.mail
                elif verb == b"RCPT":
                    addr = addr_of(line)
                    reply = self.rcpt(addr, txn) if callable(self.rcpt) else self.rcpt
                    if reply is not DISCONNECT:
                        txn.rcpts.append((line, int(reply[:3])))
                elif verb == b"DATA":
                    reply = self.data_reply
                    if not self._say(reply):
                        return self
                    if not reply.startswith("354"):
                        continue
                    if self.on_data_start is not None and self.on_data_start(self, txn):
                        return self
                    self._read_data(txn)
                    self._check_lockstep(b"<final dot>")
                    if self.on_final is not None and self.on_final(self, txn):
                        return self
                    reply = self.final(txn) if callable(self.final) else self.final
                    if reply is not DISCONNECT:
                        txn.final = int(reply[:3])
                elif verb == b"BDAT":
                    parts = line.split()
                    size = int(parts[1])
                    txn.bdat = True
                    txn.data = txn.wire_data = self.c.read_exact(size)
                    reply = self.final(txn) if callable(self.final) else self.final
                    if reply is not DISCONNECT:
                        txn.final = int(reply[:3])
                elif verb == b"RSET":
                    reply = "250 2.0.0 OK"
                elif verb == b"NOOP":
                    reply = "250 2.0.0 OK"
                elif verb == b"QUIT":
                    self._say(self.quit)
                    self.ended = "quit"
                    self.c.closed(timeout=5)
                    return self
                else:
                    reply = "502 5.5.1 unexpected"
                if not self._say(reply):
                    return self
            raise AssertionError("the reversed session did not end after %d commands"
                                 % self.limit)
        except EOFError:
            self.ended = "eof"
        return self

    def _read_data(self, txn):
        wire, body = b"", b""
        while True:
            line = self.c.readline()
            wire += line
            if line == b".\r\n":
                break
            body += line[1:] if line.startswith(b".") else line
        txn.wire_data, txn.data = wire, body

    def delivered(self):
        """Transactions the customer accepted (final 2xx)."""
        return [t for t in self.txns if t.final is not None and t.final // 100 == 2]


# ---------------------------------------------------------------- helpers

def inject(d, rcpts, body=b"Subject: held\r\n\r\nheld mail\r\n", sender="s@sender.example",
           mail_params="", rcpt_params=""):
    """Raw SMTP intake: we stuff the dots ourselves. Returns the new queue id."""
    before = set(d.queue_ids())
    w = Wire(d.smtp_port)
    assert w.reply().code == 220
    w.expect("EHLO sender.example", 250)
    w.expect("MAIL FROM:<%s>%s" % (sender, mail_params), 250)
    for r in rcpts:
        w.expect("RCPT TO:<%s>%s" % (r, rcpt_params), 250)
    w.expect("DATA", 354)
    stuffed = b"".join((b"." + l if l.startswith(b".") else l)
                       for l in body.splitlines(keepends=True))
    w.send(stuffed + b".\r\n")
    assert w.reply().code == 250
    w.expect("QUIT", 221)
    w.close()
    new = [i for i in d.queue_ids() if i not in before]
    assert len(new) == 1, new
    return new[0]


def pushes_done(d):
    return d.log().count("event=odmr.push_done")


def wait_push_done(d, count, timeout=30):
    """Waits until `count` pushes have ended (leases released, outcomes on disk)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pushes_done(d) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("push %d did not end; log tail:\n%s" % (count, d.log()[-3000:]))


def rcpt_states(d, qid):
    """{address: {state, attempts, last_reply, notify, orcpt}} from odmrctl queue show."""
    out = d.queue_show(qid)
    states = {}
    for m in re.finditer(r"\[\d+\] <([^>]*)>\n\s+domain=\S+ state=(\S+) attempts=(\d+) "
                         r"last_attempt=\S+\n\s+notify=(\S*) orcpt=(\S*)\n\s+last_reply=(.*)",
                         out):
        states[m.group(1)] = {"state": m.group(2), "attempts": int(m.group(3)),
                              "notify": m.group(4), "orcpt": m.group(5),
                              "last_reply": m.group(6)}
    assert states, out
    return states


def push(d, user="alice", domains="", tls=False, **kw):
    """Logs in, ATRN, serves the reversed session with a Customer(**kw); waits for the end."""
    before = pushes_done(d)
    c = login(d, user, tls=tls)
    code, lines = atrn(c, domains)
    assert code == 250, (code, lines)
    cust = Customer(c, **kw).run()
    c.close()
    wait_push_done(d, before + 1)
    return cust


def mail_params(txn):
    return txn.mail.split(b">", 1)[1].split()


# ---------------------------------------------------------------- delivery and envelope

def test_byte_exact_delivery_dot_stuffing_and_removal(prov):
    body = (b"Subject: dots\r\nX-Test: 1\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
            b"middle . dot\r\n. space\r\nlast line\r\n")
    qid = inject(prov, ["u@example.org", "v@example.org"], body)
    stored = prov.queue_body(qid)
    assert stored.endswith(body)
    cust = push(prov)
    assert cust.ended == "quit"
    assert len(cust.txns) == 1
    t = cust.txns[0]
    assert t.mail.startswith(b"MAIL FROM:<s@sender.example>")
    assert t.data == stored, "the customer gets exactly the stored octets"
    # On the wire every line starting with '.' got one more (RFC 5321 4.5.2).
    assert b"\r\n..leading dot\r\n...two dots\r\n..\r\nmiddle . dot\r\n.. space\r\n" in t.wire_data
    assert t.wire_data.endswith(b"last line\r\n.\r\n")
    assert sorted(t.accepted) == ["u@example.org", "v@example.org"]
    assert mail_params(t) == [b"SIZE=%d" % len(stored)]
    assert cust.commands[0] == b"EHLO mx.test.example"
    assert cust.commands[-1] == b"QUIT"
    assert prov.queue_ids() == []
    assert "event=push.removed" in prov.log()


def test_8bitmime_and_smtputf8_parameters(prov):
    body8 = "Subject: caf\u00e9\r\n\r\nna\u00efve 8-bit body\r\n".encode()
    q8 = inject(prov, ["u@example.org"], body8, mail_params=" BODY=8BITMIME")
    qu = inject(prov, ["u@example.org"], body8, sender="j\u00fcrgen@sender.example",
                mail_params=" BODY=8BITMIME SMTPUTF8")
    cust = push(prov, ext=BASIC_EXT + ("SMTPUTF8",))
    assert len(cust.delivered()) == 2
    t8, tu = cust.txns
    assert mail_params(t8) == [b"SIZE=%d" % len(t8.data), b"BODY=8BITMIME"]
    assert tu.mail.startswith("MAIL FROM:<j\u00fcrgen@sender.example>".encode())
    assert mail_params(tu) == [b"SIZE=%d" % len(tu.data), b"BODY=8BITMIME", b"SMTPUTF8"]
    assert t8.data.endswith(body8) and tu.data.endswith(body8)
    assert prov.queue_ids() == []
    del q8, qu


def test_no_size_parameter_when_not_advertised(prov):
    inject(prov, ["u@example.org"])
    cust = push(prov, ext=("8BITMIME",))
    assert mail_params(cust.txns[0]) == []


def test_8bitmime_message_to_a_customer_without_it_fails_cleanly(prov):
    qid = inject(prov, ["u@example.org"], "Subject: x\r\n\r\n\u00e9\r\n".encode(),
                 mail_params=" BODY=8BITMIME")
    cust = push(prov, ext=("SIZE 1000000",))
    assert cust.txns == []
    assert qid not in prov.queue_ids()   # failed, its notice committed: nothing left
    [n] = for_original(prov, qid)
    r = n.recipient("u@example.org")
    assert r["Status"] == "5.6.3" and "8BITMIME" in r["Diagnostic-Code"], r
    assert "Remote-MTA" not in r, r   # odmrd's own refusal: the customer never answered


DSN_MAIL = " RET=HDRS ENVID=env-42"
DSN_RCPT = " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@example.org"


def test_dsn_parameters_only_when_advertised(prov):
    inject(prov, ["u@example.org"], mail_params=DSN_MAIL, rcpt_params=DSN_RCPT)
    cust = push(prov, ext=BASIC_EXT + ("DSN",))
    t = cust.txns[0]
    assert mail_params(t)[1:] == [b"RET=HDRS", b"ENVID=env-42"]
    assert t.rcpts[0][0] == b"RCPT TO:<u@example.org> NOTIFY=SUCCESS,FAILURE " \
                            b"ORCPT=rfc822;u@example.org"
    assert prov.queue_ids() == []


def test_dsn_parameters_absent_without_dsn(prov):
    inject(prov, ["u@example.org"], mail_params=DSN_MAIL, rcpt_params=DSN_RCPT)
    cust = push(prov, ext=BASIC_EXT)
    t = cust.txns[0]
    assert mail_params(t) == [b"SIZE=%d" % len(t.data)]
    assert t.rcpts[0][0] == b"RCPT TO:<u@example.org>"
    for line in cust.commands:
        for word in (b"RET=", b"ENVID=", b"NOTIFY=", b"ORCPT="):
            assert word not in line.upper(), line


# ---------------------------------------------------------------- the compat profile

def test_compat_lockstep_no_starttls_no_bdat(prov):
    inject(prov, ["u@example.org", "v@example.org"])
    inject(prov, ["w@example.net"])
    cust = push(prov, lockstep=True,
                ext=BASIC_EXT + ("PIPELINING", "CHUNKING", "BINARYMIME", "STARTTLS", "DSN"))
    assert cust.ended == "quit"
    assert cust.batched == [], "odmrd sent more before our reply: %r" % cust.batched
    verbs = [l.split(b" ", 1)[0].upper().split(b":")[0] for l in cust.commands]
    assert verbs == [b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"DATA", b"MAIL", b"RCPT", b"DATA",
                     b"QUIT"], cust.commands
    assert b"STARTTLS" not in verbs and b"BDAT" not in verbs
    assert "profile=compat" in prov.log()
    assert prov.queue_ids() == []


def test_all_rcpts_refused_gets_rset_not_data(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, rcpt="550 5.1.1 no such user")
    verbs = [l.split(b" ", 1)[0].upper() for l in cust.commands]
    assert b"DATA" not in verbs and b"RSET" in verbs, cust.commands
    assert qid not in prov.queue_ids()
    [n] = for_original(prov, qid)
    assert n.recipient("u@example.org")["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"


# ---------------------------------------------------------------- isolation between users

def test_atrn_for_another_users_domain_is_450_and_nothing_sent(prov):
    qid = inject(prov, ["v@bob.example"])
    c = login(prov, "alice")
    code, lines = atrn(c, "bob.example")
    assert code == 450, lines
    code, lines = atrn(c, "example.org,bob.example")
    assert code == 450, lines
    # Still the ODMR session, nothing turned around: alice has no mail of her own.
    assert atrn(c, "")[0] == 453
    c.expect("QUIT", 221)
    assert prov.queue_ids("bob.example") == [qid]
    assert rcpt_states(prov, qid)["v@bob.example"]["attempts"] == 0


def test_shared_message_is_split_between_users(prov):
    body = b"Subject: both\r\n\r\nfor alice and bob\r\n"
    qid = inject(prov, ["a1@example.org", "b1@bob.example", "a2@example.net", "b2@bob.example"],
                 body)
    alice = push(prov, "alice")
    assert len(alice.txns) == 1
    assert sorted(alice.txns[0].accepted) == ["a1@example.org", "a2@example.net"]
    for line in alice.commands:
        assert b"bob.example" not in line, line
    # bob's part is still queued for bob, untouched.
    assert prov.queue_ids("bob.example") == [qid]
    assert prov.queue_ids("example.org") == []
    st = rcpt_states(prov, qid)
    assert st["a1@example.org"]["state"] == "done"
    assert st["b1@bob.example"]["state"] == "pending" and st["b1@bob.example"]["attempts"] == 0
    bob = push(prov, "bob")
    assert sorted(bob.txns[0].accepted) == ["b1@bob.example", "b2@bob.example"]
    assert bob.txns[0].data.endswith(body)
    for line in bob.commands:
        assert b"example.org" not in line and b"example.net" not in line, line
    assert prov.queue_ids() == []


def test_atrn_subset_of_own_domains(prov):
    inject(prov, ["u@example.org", "v@example.net"])
    cust = push(prov, domains="example.net")
    assert cust.txns[0].accepted == ["v@example.net"]
    assert len(prov.queue_ids("example.org")) == 1
    cust = push(prov, domains="example.org")
    assert cust.txns[0].accepted == ["u@example.org"]
    assert prov.queue_ids() == []


# ---------------------------------------------------------------- outcomes per recipient

def test_rcpt_450_stays_queued_with_attempt_and_reply(prov):
    qid = inject(prov, ["u@example.org", "v@example.org"])
    cust = push(prov, rcpt=lambda a, t: "450 4.2.1 mailbox busy" if a == "u@example.org"
                else "250 2.1.5 OK")
    assert cust.txns[0].final == 250
    st = rcpt_states(prov, qid)
    assert st["u@example.org"]["state"] == "pending"
    assert st["u@example.org"]["attempts"] == 1
    assert st["u@example.org"]["last_reply"] == "450 4.2.1 mailbox busy", st
    assert st["v@example.org"]["state"] == "done"
    assert prov.queue_ids("example.org") == [qid]
    # The next ATRN retries only the deferred one.
    cust = push(prov)
    assert cust.txns[0].accepted == ["u@example.org"]
    assert prov.queue_ids() == []


def test_rcpt_550_gets_a_notice_and_is_bounced(prov):
    qid = inject(prov, ["u@example.org", "v@example.org"])
    cust = push(prov, rcpt=lambda a, t: "550 5.1.1 user unknown" if a.startswith("u@")
                else "450 4.2.1 later")
    assert cust.ended == "quit"
    st = rcpt_states(prov, qid)
    assert st["u@example.org"]["state"] == "bounced", st
    assert st["u@example.org"]["last_reply"] == "550 5.1.1 user unknown", st
    assert st["u@example.org"]["attempts"] == 1, st
    assert st["v@example.org"]["state"] == "pending", st
    [n] = for_original(prov, qid)   # a failed recipient is never dropped silently
    assert [r["Final-Recipient"] for r in n.per_recipient] == ["rfc822; u@example.org"]
    # A bounced recipient is not offered again.
    before = pushes_done(prov)
    c = login(prov)
    code, _ = atrn(c)
    assert code == 250
    cust = Customer(c).run()
    assert [t.accepted for t in cust.txns] == [["v@example.org"]]
    wait_push_done(prov, before + 1)
    assert qid not in prov.queue_ids()
    assert len(for_original(prov, qid)) == 1


def test_452_rest_in_a_further_transaction(prov):
    rcpts = ["r%d@example.org" % i for i in range(5)]
    qid = inject(prov, rcpts)
    calls = []

    def rcpt(addr, txn):
        # the third RCPT of the session (the first transaction) gets 452, the rest 250
        calls.append(addr)
        return "452 4.5.3 too many recipients" if len(calls) == 3 else "250 2.1.5 OK"

    cust = push(prov, rcpt=rcpt)
    assert len(cust.txns) == 2, [t.mail for t in cust.txns]
    assert cust.txns[0].accepted == rcpts[:2]
    assert cust.txns[1].accepted == rcpts[2:]
    assert cust.txns[0].data == cust.txns[1].data
    assert all(t.final == 250 for t in cust.txns)
    assert cust.txns[0].rcpts[2][1] == 452 and len(cust.txns[0].rcpts) == 3
    assert prov.queue_ids() == []
    del qid


def test_451_after_final_dot_stays_queued(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, final="451 4.3.0 try later")
    assert cust.ended == "quit"
    st = rcpt_states(prov, qid)["u@example.org"]
    assert st["state"] == "pending" and st["attempts"] == 1 and "try later" in st["last_reply"]
    cust = push(prov)
    assert len(cust.delivered()) == 1
    assert prov.queue_ids() == []


def test_554_after_final_dot_is_failed(prov):
    qid = inject(prov, ["u@example.org", "v@example.org"])
    push(prov, final="554 5.6.0 content rejected")
    assert qid not in prov.queue_ids()
    [n] = for_original(prov, qid)   # one notice listing both
    assert [r["Final-Recipient"] for r in n.per_recipient] == ["rfc822; u@example.org",
                                                               "rfc822; v@example.org"]
    assert all(r["Diagnostic-Code"] == "smtp; 554 5.6.0 content rejected"
               for r in n.per_recipient)


def test_ehlo_refused_helo_fallback(prov):
    inject(prov, ["u@example.org"], mail_params="", body=b"Subject: helo\r\n\r\nx\r\n")
    cust = push(prov, ehlo_reply="500 5.5.1 what is EHLO")
    assert cust.commands[0] == b"EHLO mx.test.example"
    assert cust.commands[1] == b"HELO mx.test.example"
    t = cust.txns[0]
    assert mail_params(t) == [], "no ESMTP parameters after HELO"
    assert cust.ended == "quit"
    assert prov.queue_ids() == []


def test_mail_refused_answers_for_every_recipient(prov):
    qid = inject(prov, ["u@example.org", "v@example.org"])
    push(prov, mail="451 4.3.0 not now")
    st = rcpt_states(prov, qid)
    assert all(s["state"] == "pending" and s["attempts"] == 1 for s in st.values()), st


# ---------------------------------------------------------------- greeting and failures

def lease_is_free_and_next_atrn_delivers(d, expected_ids, user="alice"):
    cust = push(d, user)
    assert cust.ended == "quit"
    got = len(cust.delivered())
    assert got == len(expected_ids), (got, expected_ids)
    assert d.queue_ids() == []
    return cust


def test_eof_instead_of_greeting(prov):
    ids = [inject(prov, ["u@example.org"]), inject(prov, ["v@example.net"])]
    cust = push(prov, greeting=None)
    assert cust.commands == []
    assert sorted(prov.queue_ids()) == sorted(ids)
    for qid in ids:
        assert all(s["attempts"] == 0 for s in rcpt_states(prov, qid).values())
    lease_is_free_and_next_atrn_delivers(prov, ids)


def test_non_2xx_greeting(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, greeting="554 5.3.2 customer.example not accepting mail")
    assert cust.commands in ([b"QUIT"], []), cust.commands
    assert prov.queue_ids() == [qid]
    assert rcpt_states(prov, qid)["u@example.org"]["attempts"] == 0
    lease_is_free_and_next_atrn_delivers(prov, [qid])


def test_disconnect_mid_data(prov):
    body = b"Subject: big\r\n\r\n" + b"".join(b"line %06d of the message\r\n" % i
                                              for i in range(20000))
    qid = inject(prov, ["u@example.org"], body)

    def cut(cust, txn):
        cust.c.read_exact(4096)       # some of the data, then the customer dies
        cust.hangup()
        return True

    cust = push(prov, on_data_start=cut)
    assert cust.ended == "hangup"
    assert prov.queue_ids() == [qid]
    st = rcpt_states(prov, qid)["u@example.org"]
    assert st["state"] == "pending", st
    cust = lease_is_free_and_next_atrn_delivers(prov, [qid])
    assert cust.txns[0].data.endswith(body)


def test_dies_after_final_dot_before_250(prov):
    ids = [inject(prov, ["u@example.org"]), inject(prov, ["v@example.org"])]
    cust = push(prov, final=DISCONNECT)
    assert cust.ended == "hangup"
    assert len(cust.txns) == 1 and cust.txns[0].data is not None
    # Outcome unknown: still queued (a duplicate at worst), the other one untouched.
    assert sorted(prov.queue_ids()) == sorted(ids)
    st = rcpt_states(prov, ids[0])["u@example.org"]
    assert st["state"] == "pending" and st["attempts"] == 1, st
    assert rcpt_states(prov, ids[1])["v@example.org"]["attempts"] == 0
    lease_is_free_and_next_atrn_delivers(prov, ids)


def test_dies_after_rcpt_before_reply(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, rcpt=DISCONNECT)
    assert cust.ended == "hangup"
    assert prov.queue_ids() == [qid]
    assert rcpt_states(prov, qid)["u@example.org"]["state"] == "pending"
    lease_is_free_and_next_atrn_delivers(prov, [qid])


def test_eof_after_ehlo(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, ehlo_reply=DISCONNECT)
    assert cust.commands == [b"EHLO mx.test.example"]
    assert prov.queue_ids() == [qid]
    lease_is_free_and_next_atrn_delivers(prov, [qid])


def test_lease_held_during_push_then_freed(prov):
    inject(prov, ["u@example.org"])
    c = login(prov)
    assert atrn(c)[0] == 250
    c.send(b"220 customer.example ESMTP\r\n")
    assert c.readline() == b"EHLO mx.test.example\r\n"
    other = login(prov)
    assert atrn(other, "example.org")[0] == 451
    before = pushes_done(prov)
    c.close()
    wait_push_done(prov, before + 1)
    assert atrn(other, "example.org")[0] == 250
    cust = Customer(other).run()
    assert len(cust.delivered()) == 1


# ---------------------------------------------------------------- during and after the push

def test_mail_arriving_during_the_push_goes_before_quit(prov):
    inject(prov, ["u@example.org"], b"Subject: first\r\n\r\n1\r\n")
    injected = {}

    def final(txn):
        if not injected:
            injected["id"] = inject(prov, ["late@example.net"], b"Subject: late\r\n\r\n2\r\n")
        return "250 2.0.0 queued"

    cust = push(prov, final=final)
    assert len(cust.delivered()) == 2, [t.mail for t in cust.txns]
    assert cust.txns[1].accepted == ["late@example.net"]
    assert cust.txns[1].data.endswith(b"Subject: late\r\n\r\n2\r\n")
    assert cust.commands[-1] == b"QUIT"
    assert prov.queue_ids() == []


def test_453_after_everything_was_delivered(prov):
    inject(prov, ["u@example.org"])
    push(prov)
    c = login(prov)
    code, lines = atrn(c)
    assert code == 453, lines
    assert atrn(c, "example.net")[0] == 453
    c.expect("QUIT", 221)


def test_many_messages_in_arrival_order(prov):
    ids = [inject(prov, ["u@example.org"], b"Subject: n%d\r\n\r\nmessage %d\r\n" % (i, i))
           for i in range(12)]
    cust = push(prov)
    assert len(cust.delivered()) == 12
    for i, t in enumerate(cust.txns):
        assert t.data.endswith(b"message %d\r\n" % i)
    assert prov.queue_ids() == []
    del ids


# ---------------------------------------------------------------- the fast profile

FAST_EXT = BASIC_EXT + ("PIPELINING", "CHUNKING")


def test_fast_profile_pipelines_and_uses_bdat(prov):
    bodies = [b"Subject: f%d\r\n\r\n.dot line %d\r\n" % (i, i) for i in range(4)]
    for b in bodies:
        inject(prov, ["x@fast.example", "y@fast.example"], b)
    stored = {}
    for qid in prov.queue_ids("fast.example"):
        stored[qid] = prov.queue_body(qid)
    cust = push(prov, "fast", ext=FAST_EXT, lockstep=True, lockstep_wait=0.3)
    assert "profile=fast" in prov.log()
    verbs = [l.split(b" ", 1)[0].upper() for l in cust.commands]
    assert b"BDAT" in verbs and b"DATA" not in verbs, cust.commands
    assert cust.batched, "with PIPELINING the fast profile sends commands without waiting"
    assert all(t.bdat for t in cust.txns)
    assert sorted(t.data for t in cust.delivered()) == sorted(stored.values())
    for t in cust.txns:
        assert re.match(rb"BDAT \d+ LAST", [l for l in cust.commands if l.startswith(b"BDAT")][0])
    assert prov.queue_ids() == []


def test_fast_profile_without_pipelining_advertised_is_lockstep(prov):
    inject(prov, ["x@fast.example"])
    cust = push(prov, "fast", ext=BASIC_EXT, lockstep=True)
    assert cust.batched == []
    verbs = [l.split(b" ", 1)[0].upper() for l in cust.commands]
    assert b"DATA" in verbs and b"BDAT" not in verbs
    assert prov.queue_ids() == []


def open_message_files(d):
    """How many of odmrd's descriptors are message files (spool/msg/<id>)."""
    msg_dir = os.path.join(d.spool, "msg") + "/"
    fd_dir = "/proc/%d/fd" % d.proc.pid
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            count += os.readlink(os.path.join(fd_dir, fd)).startswith(msg_dir)
        except OSError:
            pass   # closed meanwhile
    return count


def wait_journal_empty(d, timeout=10):
    """The checkpoint opens recent message files to sync them: wait until it has retired
    every segment, so that only the push holds message files open."""
    wal = os.path.join(d.spool, "wal")
    deadline = time.time() + timeout
    while os.path.isdir(wal) and os.listdir(wal) and time.time() < deadline:
        time.sleep(0.05)
    assert not (os.path.isdir(wal) and os.listdir(wal)), os.listdir(wal)


@pytest.mark.parametrize("pool", [1, 3])
def test_open_files_beyond_one_per_push_come_from_the_shared_pool(make_odmrd, pool):
    """docs/push.md "Open files": a fast push opens messages ahead and keeps up to 128 in
    flight, each an open file; odmrd's descriptor budget counts one per ODMR session, the rest
    come from [odmr] push_open_files. With a pool of N, at most N + 1 message files are open
    while a slow customer is served; every message still goes out, in order, byte-exact."""
    d = make_odmrd(users=USERS, extra={"odmr.push_open_files": str(pool)})
    bodies = [b"Subject: p%d\r\n\r\nmessage %d\r\n" % (i, i) for i in range(40)]
    stored = {}
    for b in bodies:
        qid = inject(d, ["x@fast.example"], b)
        stored[qid] = d.queue_body(qid)
    wait_journal_empty(d)
    seen = []

    def final(txn):
        time.sleep(0.02)   # time for odmrd to open ahead, as far as the pool lets it
        seen.append(open_message_files(d))
        return "250 2.0.0 queued"

    cust = push(d, "fast", ext=FAST_EXT, final=final)
    assert [t.data for t in cust.delivered()] == [stored[q] for q in sorted(stored)]
    assert len(seen) == 40
    assert max(seen) <= pool + 1, seen
    assert max(seen) >= 1, seen
    assert d.queue_ids() == []


def test_a_push_holding_the_pool_does_not_hold_up_another(make_odmrd):
    """docs/push.md "Open files": one fast push stalls with its own file and the whole pool
    (2) open; a second push still runs to its end meanwhile, on its own file alone (one
    message at a time), and the first one ends normally once its customer answers."""
    d = make_odmrd(users={**USERS, **FAST2}, extra={"odmr.push_open_files": "2"})
    stored = {"fast": {}, "fast2": {}}
    for user, domain in (("fast", "fast.example"), ("fast2", "fast2.example")):
        for i in range(10):
            qid = inject(d, ["x@" + domain], b"Subject: %s %d\r\n\r\nbody %d\r\n"
                         % (user.encode(), i, i))
            stored[user][qid] = d.queue_body(qid)
    wait_journal_empty(d)
    release, first_final, outcome = threading.Event(), threading.Event(), {}

    def stall_once(txn):
        if not first_final.is_set():
            first_final.set()
            release.wait(60)
        return "250 2.0.0 queued"

    def first_push():
        c = login(d, "fast")
        try:
            outcome["atrn"] = atrn(c)[0]
            outcome["cust"] = Customer(c, ext=FAST_EXT, final=stall_once).run()
        finally:
            c.close()

    before = pushes_done(d)
    t = threading.Thread(target=first_push)
    t.start()
    try:
        assert first_final.wait(30)
        deadline = time.time() + 10
        while open_message_files(d) < 3 and time.time() < deadline:
            time.sleep(0.02)
        assert open_message_files(d) == 3   # its own file and the pool's two
        seen = []

        def final(txn):
            seen.append(open_message_files(d))
            return "250 2.0.0 queued"

        second = push(d, "fast2", ext=FAST_EXT, final=final)
        assert not release.is_set()
        assert [t.data for t in second.delivered()] == [stored["fast2"][q]
                                                        for q in sorted(stored["fast2"])]
        assert max(seen) == 4, seen         # the stalled push's three and its own one
    finally:
        release.set()
        t.join(60)
    wait_push_done(d, before + 2)
    assert outcome["atrn"] == 250
    assert [t.data for t in outcome["cust"].delivered()] == [stored["fast"][q]
                                                             for q in sorted(stored["fast"])]
    assert d.queue_ids() == []


# ---------------------------------------------------------------- implicit TLS

def test_implicit_tls_one_line_per_record(prov):
    body = b"Subject: tls\r\n\r\n" + b"".join(b".line %d\r\n" % i for i in range(50))
    qid = inject(prov, ["u@example.org", "v@example.org"], body)
    stored = prov.queue_body(qid)
    before = pushes_done(prov)
    c = login(prov, tls=True)
    assert atrn(c)[0] == 250
    c.t.records.clear()
    cust = Customer(c).run()
    c.close()
    wait_push_done(prov, before + 1)
    assert cust.ended == "quit"
    assert cust.txns[0].data == stored
    records = c.t.records
    assert len(records) >= len(stored.splitlines()) + 6
    multi = [r for r in records if r.count(b"\r\n") != 1 or not r.endswith(b"\r\n")]
    assert multi == [], "TLS records with other than exactly one line: %r" % multi[:5]
    assert b"".join(records) == c.rx[-len(b"".join(records)):]
    assert prov.queue_ids() == []


def test_implicit_tls_fast_profile_control(prov):
    """Control for the record observation above: the fast profile with PIPELINING writes
    several lines at once, and the test does see records holding more than one line."""
    for i in range(3):
        inject(prov, ["x@fast.example"], b"Subject: f%d\r\n\r\nbody\r\n" % i)
    before = pushes_done(prov)
    c = login(prov, "fast", tls=True)
    assert atrn(c)[0] == 250
    c.t.records.clear()
    cust = Customer(c, ext=FAST_EXT).run()
    c.close()
    wait_push_done(prov, before + 1)
    assert len(cust.delivered()) == 3
    assert any(r.count(b"\r\n") > 1 for r in c.t.records)
    assert prov.queue_ids() == []


# ---------------------------------------------------------------- more reply shapes

def test_message_for_two_atrn_domains_is_one_transaction(prov):
    qid = inject(prov, ["u@example.org", "v@example.net"])
    cust = push(prov)
    assert len(cust.txns) == 1
    assert sorted(cust.txns[0].accepted) == ["u@example.org", "v@example.net"]
    assert prov.queue_ids() == []
    del qid


def test_multiline_replies_and_bare_lf(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, rcpt="250-2.1.5 first line\r\n250 2.1.5 OK",
                final="250-2.0.0 queued\n250 2.0.0 as 1234")
    assert cust.ended == "quit"
    assert prov.queue_ids() == []
    del qid


def test_452_with_nothing_accepted_counts_as_4xx(prov):
    qid = inject(prov, ["u@example.org", "v@example.org"])
    cust = push(prov, rcpt="452 4.5.3 too many recipients")
    verbs = [l.split(b" ", 1)[0].upper() for l in cust.commands]
    assert b"DATA" not in verbs
    st = rcpt_states(prov, qid)
    assert st["u@example.org"]["state"] == "pending" and st["u@example.org"]["attempts"] == 1
    # v was never sent (no more RCPTs after a 452): untouched
    assert st["v@example.org"]["attempts"] == 0, st
    lease_is_free_and_next_atrn_delivers(prov, [qid])


def test_unsolicited_reply_is_a_protocol_error(prov):
    ids = [inject(prov, ["u@example.org"]), inject(prov, ["v@example.org"])]
    cust = push(prov, mail="250 2.1.0 OK\r\n250 2.0.0 nobody asked")
    assert cust.ended in ("eof", "quit")
    assert sorted(prov.queue_ids()) == sorted(ids)
    lease_is_free_and_next_atrn_delivers(prov, ids)


def test_421_to_rcpt_keeps_everything(prov):
    ids = [inject(prov, ["u@example.org"]), inject(prov, ["v@example.org"])]
    push(prov, rcpt="421 4.3.2 shutting down")
    assert sorted(prov.queue_ids()) == sorted(ids)
    lease_is_free_and_next_atrn_delivers(prov, ids)


def test_sigterm_during_the_push_loses_nothing(prov):
    ids = [inject(prov, ["u@example.org"], b"Subject: %d\r\n\r\nx\r\n" % i) for i in range(3)]
    c = login(prov)
    assert atrn(c)[0] == 250

    def final(txn):
        if len(prov_stopper) == 0:
            prov_stopper.append(threading.Thread(target=prov.stop))
            prov_stopper[0].start()
            time.sleep(0.5)
        return "250 2.0.0 queued"

    prov_stopper = []
    cust = Customer(c, final=final).run()
    c.close()
    prov_stopper[0].join(30)
    delivered = len(cust.delivered())
    assert delivered >= 1
    assert cust.ended == "quit", "a shutdown ends the push with QUIT after the transaction"
    prov.start()
    left = prov.queue_ids()
    assert len(left) == 3 - delivered, (left, delivered)
    lease_is_free_and_next_atrn_delivers(prov, left)


def test_odmrd_killed_mid_push_loses_nothing(prov):
    import signal as _signal
    ids = [inject(prov, ["u@example.org"]), inject(prov, ["v@example.org"])]
    c = login(prov)
    assert atrn(c)[0] == 250

    def on_final(cust, txn):
        prov.stop(_signal.SIGKILL)    # the provider dies before our 250 is read
        cust.hangup()
        return True

    cust = Customer(c, on_final=on_final).run()
    assert cust.ended == "hangup" and cust.txns[0].data is not None
    prov.start()
    assert sorted(prov.queue_ids()) == sorted(ids)
    # The flock died with the process: the next ATRN gets 250 and both messages.
    lease_is_free_and_next_atrn_delivers(prov, ids)


def test_smtputf8_message_to_a_customer_without_it_fails_cleanly(prov):
    qid = inject(prov, ["u@example.org"], b"Subject: x\r\n\r\ny\r\n",
                 sender="j\u00fcrgen@sender.example", mail_params=" SMTPUTF8")
    other = inject(prov, ["v@example.org"])
    cust = push(prov, ext=BASIC_EXT)
    assert [t.accepted for t in cust.txns] == [["v@example.org"]]
    assert qid not in prov.queue_ids()
    [n] = for_original(prov, qid)
    assert n.recipient("u@example.org")["Diagnostic-Code"].startswith("smtp; 554 5.6.7")
    assert other not in prov.queue_ids()


def test_ehlo_4xx_ends_without_helo(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, ehlo_reply="421 4.3.2 busy")
    assert b"HELO mx.test.example" not in cust.commands
    assert not any(l.startswith(b"MAIL") for l in cust.commands)
    assert prov.queue_ids() == [qid]
    lease_is_free_and_next_atrn_delivers(prov, [qid])


def test_ehlo_and_helo_refused(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, ehlo_reply="500 5.5.1 no", helo_reply="550 5.7.1 go away")
    assert cust.commands[:2] == [b"EHLO mx.test.example", b"HELO mx.test.example"]
    assert not any(l.startswith(b"MAIL") for l in cust.commands)
    assert prov.queue_ids() == [qid]
    lease_is_free_and_next_atrn_delivers(prov, [qid])


def test_overlong_reply_line_is_a_protocol_error(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, rcpt="250 2.1.5 " + "x" * 600)
    assert cust.ended in ("eof", "quit")
    assert not any(l.startswith(b"DATA") for l in cust.commands)
    assert prov.queue_ids() == [qid]
    st = rcpt_states(prov, qid)["u@example.org"]
    assert st["state"] == "pending", st
    lease_is_free_and_next_atrn_delivers(prov, [qid])


def test_reply_with_mixed_codes_is_a_protocol_error(prov):
    qid = inject(prov, ["u@example.org"])
    cust = push(prov, final="250-2.0.0 ok\r\n550 5.0.0 but no")
    assert prov.queue_ids() == [qid]
    st = rcpt_states(prov, qid)["u@example.org"]
    assert st["state"] == "pending", "unknown outcome after the dot: kept, not failed: %r" % st
    lease_is_free_and_next_atrn_delivers(prov, [qid])
    del cust


# ---------------------------------------------------------------- configured timeouts

FAST_TIMEOUTS = {"odmr.command_timeout": "1s", "odmr.push_greeting_timeout": "1s",
                 "odmr.push_command_timeout": "1s", "odmr.push_data_init_timeout": "1s",
                 "odmr.push_data_block_timeout": "1s", "odmr.push_data_end_timeout": "1s"}


@pytest.fixture
def impatient(make_odmrd):
    return make_odmrd(users=USERS, extra=FAST_TIMEOUTS)


def closed_after(c, low, high):
    """odmrd closes the connection no sooner than `low` and no later than `high` seconds."""
    t0 = time.monotonic()
    assert c.closed(timeout=high + 5)
    took = time.monotonic() - t0
    assert low <= took <= high, took
    return took


def test_odmr_command_timeout_before_the_turnaround(impatient):
    c = login(impatient)
    t0 = time.monotonic()
    code, lines = c.reply()
    assert code == 421 and lines[0].startswith("4.4.2"), (code, lines)
    assert time.monotonic() - t0 < 6
    assert c.closed()


def test_push_greeting_timeout_keeps_the_mail(impatient):
    qid = inject(impatient, ["u@example.org"])
    c = login(impatient)
    assert atrn(c)[0] == 250
    closed_after(c, 0.5, 6)            # we never send our 220
    assert impatient.queue_ids() == [qid]
    assert rcpt_states(impatient, qid)["u@example.org"]["attempts"] == 0
    lease_is_free_and_next_atrn_delivers(impatient, [qid])


def test_push_data_end_timeout_leaves_the_recipient_pending(impatient):
    qid = inject(impatient, ["u@example.org"])
    c = login(impatient)
    assert atrn(c)[0] == 250
    c.send("220 customer.example ready\r\n")
    assert c.readline().upper().startswith(b"EHLO")
    c.send("250 customer.example\r\n")
    for expected, answer in ((b"MAIL", "250 2.1.0 ok"), (b"RCPT", "250 2.1.5 ok"),
                             (b"DATA", "354 go ahead")):
        assert c.readline().upper().startswith(expected)
        c.send(answer + "\r\n")
    while c.readline() != b".\r\n":    # the whole message, then no reply from us
        pass
    closed_after(c, 0.5, 6)
    assert impatient.queue_ids() == [qid]
    state = rcpt_states(impatient, qid)["u@example.org"]
    assert state["attempts"] == 1, state
    lease_is_free_and_next_atrn_delivers(impatient, [qid])


def test_zero_timeout_is_refused(tmp_path):
    conf = tmp_path / "odmrd.conf"
    conf.write_text("[odmr]\npush_data_end_timeout = 0\n")
    odmrd = os.path.join(BIN, "odmrd")
    r = subprocess.run([odmrd, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "odmrd.conf:2:" in r.stderr and "push_data_end_timeout" in r.stderr, r.stderr
