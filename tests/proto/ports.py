# SPDX-License-Identifier: ISC
"""Loopback ports for the servers a test or a bench starts: one set of handed-out ports per
process, shared by conftest, postfix.py and dovecot.py, so that two servers of one run never
get the same port (the kernel may offer a port that was just released again)."""
import socket

_HANDED_OUT = set()


def free_port():
    """A port free now and not handed out before in this process."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh port")
