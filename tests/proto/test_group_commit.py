# SPDX-License-Identifier: ISC
"""The commit journal (docs/queue.md "Group commit"): 20 sessions, SIGKILL at random points, and
the message files that no sync covered yet lost as a power failure would lose them: every
message that got a 250 comes back byte-exact from the journal, none partial. A torn journal
tail is detected and never delivered."""
import hashlib
import os
import pwd
import random
import re
import signal
import threading

from smtpwire import Wire
from test_crash import check_found, kill_while_sending, make_body, stored_tags

SESSIONS = 20
ROUNDS = 10
RECORD = re.compile(rb"ODMRJ 1 ([0-9A-Za-z]+) ([0-9]+)\n")


def wal_dir(d):
    return os.path.join(d.spool, "wal")


def segment_records(path):
    """[(id, start, end)] of the complete records of a segment (start: the header)."""
    data = open(path, "rb").read()
    out, off = [], 0
    while True:
        m = RECORD.match(data, off)
        if not m:
            return out
        end = m.end() + int(m.group(2))
        if end > len(data):
            return out
        out.append((m.group(1).decode(), off, end))
        off = end


def lose_unsynced_files(d):
    """What a power failure may do to the message files of unretired segments: gone, cut short
    or empty (their rename and octets were never synced). Returns how many were damaged."""
    damaged = 0
    if not os.path.isdir(wal_dir(d)):
        return 0
    for name in sorted(os.listdir(wal_dir(d))):
        for qid, _, _ in segment_records(os.path.join(wal_dir(d), name)):
            path = os.path.join(d.spool, "msg", qid)
            if not os.path.exists(path) or random.random() < 0.3:
                continue
            if random.random() < 0.5:
                os.unlink(path)
            else:
                os.truncate(path, random.randrange(0, os.path.getsize(path)))
            damaged += 1
    return damaged


def message_octets(path):
    """The stored message of a queue file, after checking the file as odmrd does: the trailer's
    length and SHA-256 (docs/queue.md "Message file"). Reading the files directly keeps a check
    of thousands of messages fast (odmrctl queue cat is one process per message)."""
    data = open(path, "rb").read()
    head, trailer = data[:-96], data[-96:]
    m = re.fullmatch(rb"ODMRQ-END (\d{20}) ([0-9a-f]{64})\n", trailer)
    assert m, "bad trailer in %s" % path
    assert hashlib.sha256(head).hexdigest() == m.group(2).decode(), "checksum of %s" % path
    assert head.startswith(b"ODMRQ 1\n")
    octets = head[head.index(b"\n\n") + 2:]
    assert len(octets) == int(m.group(1))
    return octets


def stored_tags_from_files(d):
    found = {}
    msg = os.path.join(d.spool, "msg")
    for qid in os.listdir(msg):
        body = message_octets(os.path.join(msg, qid))
        m = re.search(rb"X-Tag: (\S+)\r\n", body)
        assert m, "a queued message without its tag: partial? %r" % body[:200]
        found.setdefault(m.group(1).decode(), []).append(body)
    return found


def check_queue(d, acknowledged, attempted):
    found = stored_tags_from_files(d)
    assert len(d.queue_ids()) == sum(len(v) for v in found.values())   # odmrctl agrees
    check_found(found, acknowledged, attempted)


def test_sigkill_during_20_session_intake_with_lost_files(make_odmrd):
    d = make_odmrd()
    acknowledged, attempted = {}, {}
    damaged = 0
    for round_no in range(ROUNDS):
        kill_while_sending(d, "g%d" % round_no, SESSIONS, (0.2, 0.8), acknowledged, attempted)
        damaged += lose_unsynced_files(d)
        d.start_fully()
        assert os.listdir(wal_dir(d)) == [], "the replay leaves no segment behind"
    assert len(acknowledged) > 100, "too few messages acknowledged to mean anything"
    check_queue(d, acknowledged, attempted)
    d.stop()
    log = d.log()
    replayed = sum(int(n) for n in re.findall(r"journal_replayed=(\d+)", log))
    assert replayed >= damaged, (replayed, damaged)


def send_one(port, tag, size=3000):
    body = make_body(tag, size)
    w = Wire(port, timeout=10)
    assert w.reply().code == 220
    w.expect("EHLO torn.example", 250)
    w.expect("MAIL FROM:<s@sender.example>", 250)
    w.expect("RCPT TO:<%s@example.org>" % tag, 250)
    w.expect("DATA", 354)
    w.send(body + b".\r\n")
    assert w.reply().code == 250
    return body


def test_torn_journal_tail_is_never_delivered(make_odmrd):
    d = make_odmrd()
    bodies = {("t%d" % i): send_one(d.smtp_port, "t%d" % i) for i in range(6)}
    d.stop()
    assert os.listdir(wal_dir(d)) == [], "a clean stop retires every segment"
    files = {}
    for qid in sorted(os.listdir(os.path.join(d.spool, "msg"))):
        files[qid] = open(os.path.join(d.spool, "msg", qid), "rb").read()
    assert len(files) == 6
    ids = sorted(files)
    owner = pwd.getpwnam(d.run_user) if d.run_user else None
    for attempt in range(6):
        # The segment a crash left: every record whole but the last, cut at a random octet.
        segment = b"".join(b"ODMRJ 1 %s %d\n" % (qid.encode(), len(files[qid])) + files[qid]
                           for qid in ids)
        last_start = len(segment) - len(files[ids[-1]]) - len(b"ODMRJ 1 %s %d\n" % (
            ids[-1].encode(), len(files[ids[-1]])))
        cut = random.randrange(last_start, len(segment))
        path = os.path.join(wal_dir(d), "%020d" % (attempt + 1))
        with open(path, "wb") as f:
            f.write(segment[:cut])
        if owner:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        for qid in ids:   # the unsynced files are gone, the last one's too
            p = os.path.join(d.spool, "msg", qid)
            if os.path.exists(p):
                os.unlink(p)
        d.start_fully()
        present = sorted(os.listdir(os.path.join(d.spool, "msg")))
        assert present == ids[:-1], (cut - last_start, present)
        for qid in ids[:-1]:
            assert open(os.path.join(d.spool, "msg", qid), "rb").read() == files[qid]
        assert re.search(r"event=queue\.journal_torn segment=%020d offset=%d" % (
            attempt + 1, last_start), d.log()), d.log()[-2000:]
        assert sorted(stored_tags(d)) == sorted(bodies)[:-1]
        d.stop()
        assert os.listdir(wal_dir(d)) == []


def test_zeros_where_a_header_would_start_end_the_segment_cleanly(make_odmrd):
    """docs/queue.md "Start-up replay": a standby segment is zero-filled ahead of its records,
    so after a crash the octets past the last record are zeros: a zero octet where a header
    would start is the clean end of the segment, not a torn record. A whole record written
    beyond such zeros cannot have been synced by a commit (records are appended in order): it
    is never delivered. A segment of zeros only (an unused standby) holds nothing."""
    d = make_odmrd()
    bodies = {("z%d" % i): send_one(d.smtp_port, "z%d" % i) for i in range(3)}
    d.stop()
    msg = os.path.join(d.spool, "msg")
    files = {qid: open(os.path.join(msg, qid), "rb").read() for qid in os.listdir(msg)}
    ids = sorted(files)
    assert len(ids) == 3

    def record(qid):
        return b"ODMRJ 1 %s %d\n" % (qid.encode(), len(files[qid])) + files[qid]

    segments = {1: record(ids[0]) + record(ids[1]) + b"\0" * 8192 + record(ids[2]),
                2: b"\0" * 65536}
    owner = pwd.getpwnam(d.run_user) if d.run_user else None
    for number, data in segments.items():
        path = os.path.join(wal_dir(d), "%020d" % number)
        with open(path, "wb") as f:
            f.write(data)
        if owner:
            os.chown(path, owner.pw_uid, owner.pw_gid)
    for qid in ids:   # the unsynced files are gone
        os.unlink(os.path.join(msg, qid))
    d.start_fully()
    assert sorted(os.listdir(msg)) == ids[:2]
    for qid in ids[:2]:
        assert open(os.path.join(msg, qid), "rb").read() == files[qid]
    assert "event=queue.journal_torn" not in d.log(), d.log()[-2000:]
    counts = re.findall(r"journal_replayed=(\d+) journal_torn=(\d+)", d.log())
    assert counts[-1] == ("2", "0"), d.log()[-2000:]
    assert sorted(stored_tags(d)) == sorted(bodies)[:2]
    d.stop()
    assert os.listdir(wal_dir(d)) == []


def test_large_messages_under_load_commit_by_their_own_file(make_odmrd):
    """docs/queue.md "Large messages under load": a message that outgrew the writer's 64 KiB
    buffer commits by its own file (fsync of the file, then of msg/) while other commits are
    under way, and through the journal when it is alone; small ones always through the
    journal. Either way every message is there byte-exact, also after a SIGKILL."""
    d = make_odmrd()
    bodies = {"alone": send_one(d.smtp_port, "alone", 100000)}
    lock = threading.Lock()

    def session(n):
        for i in range(4):
            tag = "load%d-%d" % (n, i)
            body = send_one(d.smtp_port, tag, 100000 if i % 2 == 0 else 2000)
            with lock:
                bodies[tag] = body

    threads = [threading.Thread(target=session, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(bodies) == 33
    d.stop(sig=signal.SIGKILL)
    commits = re.findall(r"event=queue\.commit id=(\w+) size=(\d+) domains=1 path=(\w+)",
                         d.log())
    assert len(commits) == 33, d.log()[-3000:]
    assert commits[0][2] == "journal", "a lone large message: one sync, through the journal"
    by_file = [int(size) for _, size, path in commits if path == "file"]
    assert by_file, "no large message took its own file under load"
    assert min(by_file) > 65536, "only messages beyond the writer's buffer: %s" % by_file
    assert all(path == "journal" for _, size, path in commits if int(size) < 65536)
    d.start_fully()
    found = stored_tags_from_files(d)
    assert sorted(found) == sorted(bodies)
    for tag, stored in found.items():
        assert len(stored) == 1 and stored[0].endswith(bodies[tag]), tag
    d.stop()
