# SPDX-License-Identifier: ISC
"""A loopback TCP relay that delivers what a client sends back to back in one piece.

On loopback every segment arrives at once, so a server reads a client's last data and the
close_notify sent right after it one at a time; over a real link they often arrive together
(and a busy server reads them together). The relay makes that the rule: toward the server it
waits `window` seconds after the first bytes, then forwards everything the client sent in
the meantime with one send, and a FIN once the client's side ended. Server to client is
forwarded as it comes. Every connection is counted (one = the client reused it).

    relay = Relay(server_port).start()   # listen on relay.port
    ...
    relay.stop()
"""
import select
import socket
import threading
import time


class Relay:
    def __init__(self, server_port, window=0.05, timeout=60):
        self.server_port = server_port
        self.window = window
        self.timeout = timeout
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.stopping = False
        self.threads = []
        self.sockets = []

    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self):
        self.stopping = True
        for s in self.sockets + [self.listener]:
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)

    def _accept_loop(self):
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            server = socket.create_connection(("127.0.0.1", self.server_port), timeout=10)
            self.sockets += [client, server]
            for src, dst, gather in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, gather), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src, dst, gather):
        src.settimeout(self.timeout)
        try:
            ended = False
            while not self.stopping and not ended:
                data = src.recv(65536)
                if not data:
                    break
                if gather:
                    more, ended = self._gather(src)
                    data += more
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _gather(self, src):
        """What else arrives within the window, and whether the input ended meanwhile."""
        time.sleep(self.window)
        more = b""
        while select.select([src], [], [], 0)[0]:
            chunk = src.recv(65536)
            if not chunk:
                return more, True
            more += chunk
        return more, False
