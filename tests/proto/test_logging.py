# SPDX-License-Identifier: ISC
"""Where odmrd's log lines go (issue 11): the journal's form when stderr is the journal
(JOURNAL_STREAM), syslog(3) with LOG_MAIL ([server] log = syslog), plain stderr otherwise."""
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

import conftest
from conftest import BIN
from lifecycle import stop_when_started
from smtpwire import greet

PRIORITY = {"debug": 7, "info": 6, "warn": 4, "error": 3}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def journal_stream_of(path):
    open(path, "ab").close()
    st = os.stat(path)
    return "%d:%d" % (st.st_dev, st.st_ino)


def some_traffic(d):
    w = greet(d.smtp_port)
    w.expect("EHLO client.example", 250)
    w.expect("RCPT TO:<x@example.org>", 503)      # out of sequence: a logged error
    w.expect("QUIT", 221)


def test_journal_stream_lines_have_priority_and_no_timestamp(make_odmrd, monkeypatch):
    d = make_odmrd(start=False)
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(d.log_path))
    d.start()
    some_traffic(d)
    assert stop_when_started(d) == 0
    lines = d.log().splitlines()
    assert len(lines) > 5
    for line in lines:
        m = re.match(r"<(\d)>level=(\w+) event=\S+", line)
        assert m, line
        assert int(m.group(1)) == PRIORITY[m.group(2)], line
        assert not TIMESTAMP.search(line), line
        assert "odmrd[" not in line, line
    assert any(line.startswith("<6>level=info event=started ") for line in lines)


def test_journal_stream_of_another_file_keeps_the_plain_form(make_odmrd, workdir,
                                                              monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(os.path.join(workdir, "other")))
    d = make_odmrd()
    assert stop_when_started(d) == 0
    for line in d.log().splitlines():
        assert TIMESTAMP.match(line) and " odmrd[" in line, line


def test_startup_error_in_the_journal_is_priority_err(workdir):
    conf = os.path.join(workdir, "bad.conf")
    with open(conf, "w") as f:
        f.write("[server]\nlog = bogus\n")
    err = os.path.join(workdir, "err")
    with open(err, "wb") as f:
        r = subprocess.run([os.path.join(BIN, "odmrd"), "-c", conf], stderr=f, timeout=30,
                           env=dict(os.environ, JOURNAL_STREAM=journal_stream_of(err)))
    assert r.returncode == 78
    text = open(err).read()
    assert text.startswith("<3>odmrd: configuration error: ") and \
        '[server] log: "bogus" is not stderr or syslog' in text, text


def can_unshare():
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not can_unshare(), reason="needs root and unshare(1) for a private /dev/log")
def test_syslog_lines_go_to_dev_log_with_log_mail(make_odmrd, workdir, monkeypatch):
    """odmrd runs in a mount namespace of its own whose /dev/log is our datagram socket."""
    path = os.path.join(workdir, "devlog.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o777)
    sock.settimeout(0.2)
    messages, done = [], threading.Event()

    def drain():    # always: syslog(3) blocks when /dev/log's queue is full
        while not done.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                pass

    reader = threading.Thread(target=drain)
    reader.start()
    d = make_odmrd(extra={"server.log": "syslog"}, start=False)
    odmrd = os.path.join(BIN, "odmrd")
    wrapper = os.path.join(workdir, "odmrd-in-ns")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nexec unshare --mount sh -c \'mount -t tmpfs tmpfs /dev && '
                'ln -s %s /dev/log && exec %s "$@"\' sh "$@"\n' % (path, odmrd))
    os.chmod(wrapper, 0o755)
    os.symlink(wrapper, os.path.join(workdir, "odmrd"))
    try:
        monkeypatch.setattr(conftest, "BIN", workdir)     # Odmrd.start() runs BIN/odmrd
        d.start()
        monkeypatch.undo()
        deadline = time.time() + 10
        while not any("event=started" in m for m in messages) and time.time() < deadline:
            time.sleep(0.05)
        assert d.stop() == 0
    finally:
        done.set()
        reader.join()
        sock.close()
    assert any("event=started" in m for m in messages) and \
        any("event=stopped" in m for m in messages), messages
    for m in messages:
        # <PRI>: LOG_MAIL (2) * 8 + the level's priority; then the time, "odmrd[PID]: "
        got = re.match(r"<(\d+)>.* odmrd\[\d+\]: level=(\w+) event=", m)
        assert got, m
        assert int(got.group(1)) == 2 * 8 + PRIORITY[got.group(2)], m
    assert d.log() == ""          # nothing on stderr
