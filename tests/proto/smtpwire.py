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
