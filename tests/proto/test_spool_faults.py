# SPDX-License-Identifier: ISC
"""A hostile or failing spool (issue 9, defect 11): a FIFO named like a queue id must not hang
odmrd or odmrctl; a full disk is one error line with the errno per burst, not one per message."""
import os
import pwd
import re
import resource
import signal
import subprocess

import pytest

from conftest import BIN, small_tmpfs_spool
from smtpwire import greet, transaction

FIFO_ID = "0000000000FIFO01"


def spool_with_a_fifo(make_odmrd):
    d = make_odmrd()
    d.stop()
    fifo = os.path.join(d.spool, "msg", FIFO_ID)
    os.mkfifo(fifo, 0o600)
    if d.run_user:
        pw = pwd.getpwnam(d.run_user)
        os.chown(fifo, pw.pw_uid, pw.pw_gid)
    return d, fifo


def test_fifo_in_msg_does_not_hang_odmrctl(make_odmrd):
    d, fifo = spool_with_a_fifo(make_odmrd)
    for args in (["queue", "list"], ["queue", "show", FIFO_ID]):
        try:
            r = subprocess.run([os.path.join(BIN, "odmrctl"), "-c", d.conf, *args],
                               capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("odmrctl %s hangs on a FIFO in msg/" % " ".join(args))
        assert "not a regular file" in r.stderr, r.stderr
    assert os.path.exists(fifo)                         # reported, left for odmrd


def test_fifo_in_msg_does_not_hang_odmrd(make_odmrd):
    d, fifo = spool_with_a_fifo(make_odmrd)
    d.start_fully()                                         # the old code hung in recovery
    assert re.search(r"level=error event=queue\.corrupt file=msg/%s reason=\"not a regular "
                     r"file\" moved=corrupt/%s" % (FIFO_ID, FIFO_ID), d.log()), d.log()
    assert not os.path.exists(fifo)
    assert os.listdir(os.path.join(d.spool, "msg")) == []
    w = greet(d.smtp_port)
    transaction(w)


def send_big(w, size):
    transaction(w)
    w.expect("DATA", 354)
    w.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (size // 1000) + b".\r\n")
    return w.reply()


def send_small(w):
    transaction(w)
    w.expect("DATA", 354)
    w.send(b"Subject: small\r\n\r\nsmall\r\n.\r\n")
    return w.reply()


def storage_errors(d):
    return [l for l in d.log().splitlines() if "event=queue.storage_error" in l]


def check_one_line_per_burst(d, errno_num, errno_text):
    w = greet(d.smtp_port)
    for _ in range(5):
        r = send_big(w, 600000)
        assert r.code == 452 and r.enhanced == "4.3.1", r
    lines = storage_errors(d)
    assert len(lines) == 1, lines                       # five refusals, one line
    assert "level=error" in lines[0]
    assert "errno=%d" % errno_num in lines[0] and 'error="%s"' % errno_text in lines[0]
    assert send_small(w).code == 250                    # the burst ends
    assert d.wait_log("event=queue.storage_recovered refused=5")
    assert send_big(w, 600000).code == 452             # a new burst: one new line
    assert len(storage_errors(d)) == 2


def test_file_size_limit_is_logged_once_per_burst(make_odmrd):
    """Without root: RLIMIT_FSIZE (SIGXFSZ ignored) makes every big message fail with EFBIG."""
    d = make_odmrd(start=False)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))

    d.preexec = limit
    d.start()
    check_one_line_per_burst(d, 27, "File too large")


def test_disk_full_is_logged_once_per_burst(make_odmrd):
    with small_tmpfs_spool(make_odmrd(start=False)) as d:
        check_one_line_per_burst(d, 28, "No space left on device")
