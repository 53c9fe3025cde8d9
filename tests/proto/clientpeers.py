# SPDX-License-Identifier: ISC
"""Scripted peers for odmr-client robustness tests: a provider that speaks raw bytes, scripted per
test, and a recording SMTP/LMTP target that can be slowed, stalled or killed. Everything listens
on loopback, every wait is bounded, every thread is a daemon and is stopped by the test."""
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

from conftest import BIN
from smtpwire import Wire

CLIENT = os.path.join(BIN, "odmr-client")


def wait_for(condition, seconds=10.0, step=0.02):
    """Polls condition() until it is true or the time is up; returns its last value."""
    deadline = time.monotonic() + seconds
    value = condition()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = condition()
    return value


# ---------------------------------------------------------------- odmr-client as a child

class ClientRun:
    """odmr-client started in the background; stderr goes to a file (no pipe to fill).
    Memory: hwm_kb() reads the running client's VmHWM (peak RSS since its exec); after the exit
    maxrss_kb (wait4's ru_maxrss) is only an upper bound: Linux carries the RSS of the forking
    Python process into it."""

    def __init__(self, args, cwd=None):
        self.err = tempfile.NamedTemporaryFile(prefix="odmr-client-", suffix=".log", delete=False)
        self.started = time.monotonic()
        env = dict(os.environ)
        # Under ASan freed memory sits in a quarantine (256 MB by default) and counts in the
        # RSS: keep it small so that the peak RSS measures live memory.
        env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"),
                                                     "quarantine_size_mb=4"]))
        self.proc = subprocess.Popen([CLIENT, *args], stdout=subprocess.DEVNULL, stderr=self.err,
                                     cwd=cwd, env=env)
        self.pid = self.proc.pid
        self.returncode = None
        self.maxrss_kb = None
        self.elapsed = None

    def running(self):
        """Without reaping the child (WNOWAIT): wait() collects it, with its rusage."""
        if self.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def wait(self, timeout=60):
        if self.returncode is not None:
            return self.returncode
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)   # not Popen.kill(): its poll() would reap
                pid, status, usage = os.wait4(self.pid, 0)
                self.record(status, usage)
                raise AssertionError("odmr-client did not end within %ss:\n%s"
                                     % (timeout, self.stderr()))
            time.sleep(0.01)
        self.record(status, usage)
        return self.returncode

    def record(self, status, usage):
        self.elapsed = time.monotonic() - self.started
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        self.maxrss_kb = usage.ru_maxrss

    def hwm_kb(self):
        """VmHWM of the live client in KiB, or None once it has exited."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def kill(self, sig):
        os.kill(self.pid, sig)

    def stderr(self):
        with open(self.err.name, "r", errors="replace") as f:
            return f.read()

    def close(self):
        if self.returncode is None:
            if self.running():
                os.kill(self.pid, signal.SIGKILL)
            self.wait(10)
        self.err.close()
        os.unlink(self.err.name)


def password_file(directory, secret="secret"):
    path = os.path.join(directory, "password")
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
    return path


def client_args(port, target, pwfile, user="u", scale="0.05", tls="none", extra=()):
    return ["--server", "127.0.0.1:%d" % port, "--user", user, "--password-file", pwfile,
            "--deliver", target, "--tls", tls, "--helo", "customer.example",
            "--timeout", scale, "-v", *extra]


# ---------------------------------------------------------------- the scripted provider

class Peer(Wire):
    """The provider's end of one connection: raw bytes out, lines in; remembers every line the
    client sent (to prove what was never sent)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.sock.settimeout(20)
        self.heard = []

    def readline(self):
        line = super().readline()
        self.heard.append(line)
        return line

    def expect_line(self, prefix):
        line = self.readline()
        assert line.upper().startswith(prefix), "wanted %r, got %r" % (prefix, line)
        return line

    def send_quietly(self, data):
        """send() that stops at the client's hang-up (a flood stops when the client gives up)."""
        try:
            self.send(data)
            return True
        except OSError:
            return False


GREETING = b"220 fake.provider ESMTP\r\n"
EHLO_REPLY = b"250-fake.provider\r\n250-AUTH CRAM-MD5\r\n250 ATRN\r\n"


def authenticate(p, ehlo_reply=EHLO_REPLY):
    """Greeting, EHLO, AUTH CRAM-MD5 (any response is accepted)."""
    p.send(GREETING)
    p.expect_line(b"EHLO")
    p.send(ehlo_reply)
    p.expect_line(b"AUTH CRAM-MD5")
    p.send(b"334 PDEyMzQ1QGZha2U+\r\n")
    p.readline()
    p.send(b"235 2.7.0 ok\r\n")


def turn_around(p):
    """ATRN -> 250; the client's 220 and its EHLO reply. Returns the EHLO reply."""
    p.expect_line(b"ATRN")
    p.send(b"250 2.0.0 turning around\r\n")
    assert p.reply().code == 220
    r = p.cmd("EHLO fake.provider")
    assert r.code == 250, r
    return r


class ScriptedProvider:
    """Accepts one connection and runs script(peer) in a thread. Any exception the script
    raises is kept for the test; OSError/EOFError after the client hung up are expected in
    most hostile scripts, so scripts catch what they expect themselves."""

    def __init__(self, script):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.error = None
        self.peer = None
        self.client = None                      # the ClientRun, once the test has started it
        self.client_started = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.listener.accept()
            self.peer = Peer(conn)
            self.peer.provider = self
            self.script(self.peer)
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.error = e
        finally:
            self.done.set()

    def started(self, client):
        self.client = client
        self.client_started.set()

    def the_client(self):
        """For scripts: the ClientRun connected to us."""
        assert self.client_started.wait(30)
        return self.client

    def finish(self, timeout=30):
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "provider script still running"
        if self.peer is not None:
            self.peer.close()
        self.listener.close()
        if self.error is not None:
            raise self.error


# ---------------------------------------------------------------- the recording target

class RecordingSink:
    """An SMTP (or LMTP) target on loopback that records each message it accepted.
    size: the SIZE it advertises; data_delay: seconds before the reply to the final dot;
    stall_from: the connection number (1 = the probe before ATRN) from which it accepts but
    never answers; stall_at_dot: answers everything but the final dot; die_after: after
    accepting that many messages it closes its listener and every connection (the target
    goes down); hangup_after_rcpt: closes the connection once it has answered the first RCPT
    (it keeps listening); rcpt_replies / data_replies: address -> reply line for that
    recipient; go_ahead: its reply to DATA (a broken target says "250" there)."""

    def __init__(self, lmtp=False, size=10000000, data_delay=0.0, stall_from=None,
                 stall_at_dot=False, die_after=None, rcpt_replies=None, data_replies=None,
                 hangup_after_rcpt=False, go_ahead="354 go"):
        self.lmtp = lmtp
        self.size = size
        self.data_delay = data_delay
        self.stall_from = stall_from
        self.stall_at_dot = stall_at_dot
        self.die_after = die_after
        self.rcpt_replies = rcpt_replies or {}
        self.data_replies = data_replies or {}
        self.hangup_after_rcpt = hangup_after_rcpt
        self.go_ahead = go_ahead
        self.hung_up = False
        self.messages = []          # (sender, [rcpts], data) of every accepted message
        self.received = []          # every complete message seen, accepted or not
        self.connections = 0
        self.lock = threading.Lock()
        self.conns = []
        self.stopped = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def target(self):
        return "%s:127.0.0.1:%d" % ("lmtp" if self.lmtp else "smtp", self.port)

    def accept_loop(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
                self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn, number), daemon=True).start()

    def stop(self):
        """The target goes down: no more connections, the open ones are closed."""
        self.stopped.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()

    def serve(self, conn, number):
        conn.settimeout(60)
        f = conn.makefile("rb")

        def reply(line):
            conn.sendall(line.encode() + b"\r\n")

        try:
            if self.stall_from is not None and number >= self.stall_from:
                self.stopped.wait(120)
                return
            reply("220 sink.example %s" % ("LMTP" if self.lmtp else "ESMTP"))
            sender, rcpts = None, []
            while not self.stopped.is_set():
                line = f.readline()
                if not line:
                    return
                cmd = line.rstrip(b"\r\n").decode()
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "LHLO"):
                    reply("250-sink.example\r\n250-8BITMIME\r\n250-PIPELINING\r\n"
                          "250 SIZE %d" % self.size)
                elif verb == "MAIL":
                    sender, rcpts = cmd[len("MAIL FROM:"):].split(" ")[0].strip("<>"), []
                    reply("250 2.1.0 ok")
                elif verb == "RCPT":
                    addr = cmd[len("RCPT TO:"):].split(" ")[0].strip("<>")
                    r = self.rcpt_replies.get(addr, "250 2.1.5 ok")
                    if r.startswith("2"):
                        rcpts.append(addr)
                    reply(r)
                    if self.hangup_after_rcpt and not self.hung_up:
                        self.hung_up = True
                        return
                elif verb == "DATA" and not rcpts:
                    reply("503 5.5.1 need MAIL and RCPT first")
                elif verb == "DATA" and not self.go_ahead.startswith("354"):
                    reply(self.go_ahead)
                elif verb == "DATA":
                    reply(self.go_ahead)
                    data = self.read_data(f)
                    if data is None:
                        return
                    self.received.append((sender, list(rcpts), data))
                    if self.stall_at_dot:
                        self.stopped.wait(120)
                        return
                    if self.data_delay:
                        time.sleep(self.data_delay)
                    results = [self.data_replies.get(a, "250 2.0.0 delivered") for a in rcpts]
                    results = results if self.lmtp else results[:1]
                    with self.lock:
                        if all(r.startswith("2") for r in results):
                            self.messages.append((sender, list(rcpts), data))
                        count = len(self.messages)
                    for r in results:
                        reply(r)
                    if self.die_after is not None and count >= self.die_after:
                        self.stop()
                        return
                elif verb == "RSET":
                    sender, rcpts = None, []
                    reply("250 2.0.0 ok")
                elif verb == "QUIT":
                    reply("221 2.0.0 bye")
                    return
                else:
                    reply("502 5.5.1 no")
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    @staticmethod
    def read_data(f):
        lines = []
        while True:
            line = f.readline()
            if not line:
                return None   # cut off inside DATA: nothing accepted
            if line == b".\r\n":
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)
