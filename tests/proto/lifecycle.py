# SPDX-License-Identifier: ISC
"""Helpers for tests that start and stop odmrd themselves."""
import time


def stop_when_started(d, timeout=10):
    """SIGTERM once odmrd handles it: it logs event=started after installing its handlers,
    and its ports open before that (a SIGTERM in between ends it by the default action)."""
    deadline = time.time() + timeout
    while "event=started" not in d.log() and time.time() < deadline:
        time.sleep(0.05)
    return d.stop()


def wait_log(d, text, count=1, timeout=10):
    """Until odmrd's log holds text count times (bounded)."""
    deadline = time.time() + timeout
    while d.log().count(text) < count:
        assert time.time() < deadline, "no %r (x%d) in the log:\n%s" % (text, count, d.log())
        time.sleep(0.05)
