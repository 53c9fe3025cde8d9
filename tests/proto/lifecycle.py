"""Helpers for tests that start and stop odmrd themselves."""
import time


def stop_when_started(d, timeout=10):
    """SIGTERM once odmrd handles it: it logs event=started after installing its handlers,
    and its ports open before that (a SIGTERM in between ends it by the default action)."""
    deadline = time.time() + timeout
    while "event=started" not in d.log() and time.time() < deadline:
        time.sleep(0.05)
    return d.stop()
