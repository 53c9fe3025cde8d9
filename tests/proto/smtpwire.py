# SPDX-License-Identifier: ISC
"""A byte-exact SMTP client for protocol tests (smtplib hides what we need to see)."""
import re
import socket
import ssl

REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        first = self.lines[0].split(" ", 1)[0] if self.lines else ""
        return first if re.match(r"^\d\.\d{1,3}\.\d{1,3}$", first) else ""

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class Wire:
    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def readline(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; unparsed %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        lines = []
        while True:
            m = REPLY_LINE.match(self.readline())
            assert m, "malformed reply line"
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return Reply(int(m.group(1)), lines)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def expect(self, line, code, enhanced=None):
        r = self.cmd(line)
        assert r.code == code, "%s -> %r, wanted %d" % (line, r, code)
        if enhanced is not None:
            assert r.enhanced == enhanced, "%s -> %r, wanted %s" % (line, r, enhanced)
        return r

    def closed(self, timeout=5):
        """True when the server closed the connection (after any pending bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def starttls(self, context=None):
        ctx = context or ssl._create_unverified_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.test.example")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def greet(port, ehlo="client.example"):
    w = Wire(port)
    r = w.reply()
    assert r.code == 220, r
    if ehlo:
        w.expect("EHLO " + ehlo, 250)
    return w


def transaction(w, sender="<s@sender.example>", rcpts=("<u@example.org>",)):
    w.expect("MAIL FROM:" + sender, 250)
    for r in rcpts:
        w.expect("RCPT TO:" + r, 250)


class TlsBio:
    """TLS over a connected socket through memory BIOs, so a test decides exactly which bytes
    leave and when: a record and the close_notify in one segment, then a FIN (a TLS half-close,
    as Exim ends a reused connection). Replies are read as with Wire."""

    def __init__(self, sock, timeout=10):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        ctx = ssl._create_unverified_context()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="mx.test.example")
        self.buf = b""
        self.eof = False           # the server's close_notify arrived
        self.fin = False           # the server's FIN arrived

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _pump(self):
        """One recv into the incoming BIO; False once the server has closed the socket."""
        chunk = self.sock.recv(65536)
        if not chunk:
            self.fin = True
            self.incoming.write_eof()
            return False
        self.incoming.write(chunk)
        return True

    def handshake(self):
        for _ in range(100):
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._pump():
                    raise EOFError("closed during the TLS handshake")
        raise AssertionError("TLS handshake did not finish")

    def queue(self, data):
        """Encrypts data into the outgoing BIO without sending it yet."""
        self.obj.write(data.encode() if isinstance(data, str) else data)

    def send(self, data):
        self.queue(data)
        self._flush()

    def close_notify_and_fin(self):
        """Sends what is queued together with our close_notify, then shuts the socket down
        for writing: the server sees no more input but can still write to us."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass   # our close_notify is queued; the server's has not come yet
        self._flush()
        self.sock.shutdown(socket.SHUT_WR)

    def readline(self):
        while b"\r\n" not in self.buf:
            try:
                self.buf += self.obj.read(65536)
                continue
            except ssl.SSLZeroReturnError:
                self.eof = True
            except ssl.SSLWantReadError:
                if self._pump():
                    continue
            raise EOFError("connection closed; unparsed %r" % self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    reply = Wire.reply
    cmd = Wire.cmd
    expect = Wire.expect

    def closed_cleanly(self):
        """True when the server sent its close_notify and then closed the socket."""
        for _ in range(100):
            if self.eof and self.fin:
                return True
            try:
                self.buf += self.obj.read(65536)
            except ssl.SSLZeroReturnError:
                self.eof = True
                if not self.fin:
                    self.fin = not self._pump()
            except ssl.SSLWantReadError:
                if not self._pump() and not self.eof:
                    return False
            except ssl.SSLError:
                return False
        return False
