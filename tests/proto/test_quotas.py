# SPDX-License-Identifier: ISC
"""Quotas and the disk guard (issue 10, part 4): [queue] domain_max_messages and
domain_max_bytes answer 452 4.2.2 at RCPT for a hosted domain at its quota, min_free answers
452 4.3.1 at MAIL (and RCPT) when the spool's filesystem is short of space; each at its exact
boundary. odmrctl queue summary, compared whole."""
import os
import pwd
import re
import time

import pytest

from conftest import small_tmpfs_spool
from smtpwire import Wire
from test_push import USERS, atrn, inject, login, push

QUOTA_TEXT = "Mailbox full: the queue for %s is at its quota"


def session(d):
    w = Wire(d.smtp_port)
    assert w.reply().code == 220
    w.expect("EHLO sender.example", 250)
    return w


def reply_of(w, line):
    r = w.cmd(line)
    return (r.code, r.text)


def msg_size(d, qid):
    return os.stat(os.path.join(d.spool, "msg", qid)).st_size


def restart_with(d, **extra):
    d.stop()
    d.extra.update(extra)
    d.write_config()
    d.start_fully()


# ---------------------------------------------------------------- messages

def test_domain_max_messages_nth_accepted_next_refused(make_odmrd):
    d = make_odmrd(users=USERS, extra={"queue.domain_max_messages": "2"})
    first = inject(d, ["a@example.org"])
    inject(d, ["b@example.org", "c@bob.example"])            # the 2nd: accepted
    w = session(d)
    w.expect("MAIL FROM:<s@sender.example>", 250)
    assert reply_of(w, "RCPT TO:<c@example.org>") == (452, "4.2.2 " + QUOTA_TEXT % "example.org")
    assert reply_of(w, "RCPT TO:<d@example.net>") == (250, "2.1.5 Recipient OK")   # per domain
    assert reply_of(w, "RCPT TO:<e@bob.example>") == (250, "2.1.5 Recipient OK")
    w.expect("QUIT", 221)
    assert re.search(r"event=rcpt\.refused session=\S+ peer=127\.0\.0\.1 domain=example\.org "
                     r"reason=quota messages=2 bytes=0 size=0 domain_max_messages=2 "
                     r"domain_max_bytes=0\n", d.log()), d.log()
    # odmrctl's delete frees the quota at once, in the running odmrd
    d.ctl("queue", "delete", first)
    inject(d, ["f@example.org"])
    w = session(d)
    w.expect("MAIL FROM:<s@sender.example>", 250)
    assert reply_of(w, "RCPT TO:<g@example.org>")[0] == 452
    w.expect("QUIT", 221)
    # delivered mail frees it too
    push(d, user="alice")
    inject(d, ["h@example.org"])


# ---------------------------------------------------------------- bytes

def test_domain_max_bytes_boundary_and_declared_size(make_odmrd):
    d = make_odmrd(users=USERS)
    body = b"Subject: sized\r\n\r\n" + b"x" * 998 + b"\r\n"
    one = inject(d, ["a@example.org"], body)
    size = msg_size(d, one)
    restart_with(d, **{"queue.domain_max_bytes": str(2 * size)})
    two = inject(d, ["b@example.org"], body)                 # size < 2*size: accepted
    assert msg_size(d, two) == size                          # same shape, same size
    w = session(d)
    w.expect("MAIL FROM:<s@sender.example>", 250)
    assert reply_of(w, "RCPT TO:<c@example.org>") == (452, "4.2.2 " + QUOTA_TEXT % "example.org")
    w.expect("QUIT", 221)
    d.ctl("queue", "delete", one)                            # now `size` of 2*size held
    w = session(d)
    w.expect("MAIL FROM:<s@sender.example> SIZE=%d" % size, 250)   # exactly fills it
    assert reply_of(w, "RCPT TO:<c@example.org>") == (250, "2.1.5 Recipient OK")
    w.expect("RSET", 250)
    w.expect("MAIL FROM:<s@sender.example> SIZE=%d" % (size + 1), 250)   # one octet over
    assert reply_of(w, "RCPT TO:<c@example.org>") == (452, "4.2.2 " + QUOTA_TEXT % "example.org")
    assert reply_of(w, "RCPT TO:<c@bob.example>") == (250, "2.1.5 Recipient OK")
    w.expect("QUIT", 221)
    assert ("reason=quota messages=1 bytes=%d size=%d domain_max_messages=0 "
            "domain_max_bytes=%d\n" % (size, size + 1, 2 * size)) in d.log()


# ---------------------------------------------------------------- free space

def test_min_free_above_the_free_space_refuses_mail(make_odmrd):
    d = make_odmrd(users=USERS, extra={"queue.min_free": "1000000G"})
    w = session(d)
    assert reply_of(w, "MAIL FROM:<s@sender.example>") == (452, "4.3.1 Insufficient system storage")
    assert reply_of(w, "RCPT TO:<a@example.org>")[0] == 503
    w.expect("QUIT", 221)
    assert re.search(r"level=warn event=intake\.low_space session=\S+ free=\d+ "
                     r"min_free=1073741824000000 size=0 refused=1\n", d.log()), d.log()
    assert d.queue_ids() == []


def test_min_free_on_a_small_tmpfs_exact_boundary(make_odmrd):
    d = make_odmrd(users=USERS, extra={"queue.min_free": "600k"}, start=False)
    with small_tmpfs_spool(d, size="1M"):
        d.wait_log("event=started")
        st = os.statvfs(d.spool)
        free = st.f_bavail * st.f_frsize
        room = free - 600 * 1024
        assert room > 0
        w = session(d)
        w.expect("MAIL FROM:<s@sender.example> SIZE=%d" % room, 250)       # leaves min_free
        w.expect("RSET", 250)
        assert reply_of(w, "MAIL FROM:<s@sender.example> SIZE=%d" % (room + 1)) == \
            (452, "4.3.1 Insufficient system storage")
        w.expect("QUIT", 221)
        # a 500 KiB message fits the disk; after it, less than min_free is free
        inject(d, ["a@example.org"], b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 500)
        w = session(d)
        assert reply_of(w, "MAIL FROM:<s@sender.example>") == \
            (452, "4.3.1 Insufficient system storage")
        w.expect("QUIT", 221)
        assert "event=intake.low_space" in d.log()


# ---------------------------------------------------------------- summary

def test_summary_per_domain_and_last_atrn(make_odmrd):
    d = make_odmrd(users=USERS)
    a = inject(d, ["a@example.org"])
    b = inject(d, ["b@example.org", "c@bob.example"])
    before = time.time()
    c = login(d, "bob")
    assert atrn(c, "")[0] == 250                              # bob polls (and we hang up)
    c.close()
    d.settle()
    out = d.ctl("queue", "summary").stdout
    sa, sb = msg_size(d, a), msg_size(d, b)
    lines = out.split("\n")
    want = [
        "%-32s  %8s  %12s  %6s" % ("DOMAIN", "MESSAGES", "BYTES", "OLDEST"),
        "%-32s  %8d  %12d  %6s" % ("bob.example", 1, sb, "@AGE@"),
        "%-32s  %8d  %12d  %6s" % ("example.net", 0, 0, "-"),
        "%-32s  %8d  %12d  %6s" % ("example.org", 2, sa + sb, "@AGE@"),
        "%-32s  %8d  %12d  %6s" % ("fast.example", 0, 0, "-"),
        "",
        "%-24s  %-20s  %s" % ("USER", "LAST ATRN", "AGO"),
        "%-24s  %-20s  %s" % ("alice", "never", "-"),
        "%-24s  %-20s  %s" % ("bob", "T" * 20, "@AGE@"),
        "%-24s  %-20s  %s" % ("fast", "never", "-"),
        "",
    ]
    assert len(lines) == len(want), out
    for got, pattern in zip(lines, want):
        pattern = re.sub(r"(\\ )*@AGE@", r"\\ *\\d{1,2}s", re.escape(pattern))
        pattern = pattern.replace("T" * 20, r"(\S{20})")   # the time, 20 characters
        m = re.fullmatch(pattern, got)
        assert m, (got, pattern)
        if m.groups():
            when = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            assert before - 2 <= when <= time.time() + 1
    record = os.stat(os.path.join(d.spool, "atrn", "u-bob"))
    assert record.st_uid == os.stat(d.spool).st_uid           # odmrd's account, not root
    assert not os.path.exists(os.path.join(d.spool, "atrn", "u-alice"))
