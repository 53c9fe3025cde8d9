# SPDX-License-Identifier: ISC
"""odmrctl must not break the daemon (issue 9, defects 9 and 10): read-only commands write
nothing, a missing spool is reported and never created, run as root it acts as the spool's
owner, and a password or users file it cannot take whole is refused with nothing changed."""
import hashlib
import os
import pwd
import stat
import subprocess
import time

import pytest

from conftest import BIN
from smtpwire import greet, transaction

EX_DATAERR, EX_NOINPUT, EX_IOERR, EX_CONFIG = 65, 66, 74, 78


def wait_journal_checkpointed(root, timeout=15):
    """odmrd's checkpointer retires a journal segment (wal/NNN) on its own thread within about a
    second of the last commit (docs/queue.md); a snapshot taken before that would see the daemon's
    own change as one made by the command under test. Waits until wal/ holds no segment."""
    wal = os.path.join(root, "wal")
    deadline = time.monotonic() + timeout
    while os.path.isdir(wal) and os.listdir(wal) and time.monotonic() < deadline:
        time.sleep(0.05)


def snapshot(root):
    """Every path under root: type, owner, mode, size, mtime and the sha256 of regular files.
    lstat only: a FIFO is never opened. Taken once the journal is checkpointed."""
    wait_journal_checkpointed(root)
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            seen[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid,
                                                 stat.S_IMODE(st.st_mode), st.st_size,
                                                 st.st_mtime_ns, digest)
    return seen


def ctl(d, *args, input=None):
    return subprocess.run([os.path.join(BIN, "odmrctl"), "-c", d.conf, *args], input=input,
                          capture_output=True, timeout=30)


def queue_one_message(d):
    w = greet(d.smtp_port)
    transaction(w)
    w.expect("DATA", 354)
    w.send("Subject: held\r\n\r\nheld\r\n.\r\n")
    assert w.reply().code == 250
    w.expect("QUIT", 221)
    (qid,) = os.listdir(os.path.join(d.spool, "msg"))
    return qid


def damage_entry(d, qid):
    """Overwrites the index entry in place (its owner stays) with text that does not parse."""
    entry = os.path.join(d.spool, "dom", "example.org", qid)
    with open(entry, "r+b") as f:
        f.truncate(0)
        f.write(b"ODMRD 1\nrcpt 0 exploded\n")   # no "end": a torn entry
    return entry


# ---------------------------------------------------------------- read-only commands

def test_read_only_commands_change_nothing_in_a_damaged_spool(make_odmrd):
    d = make_odmrd()
    qid = queue_one_message(d)
    d.stop()
    damage_entry(d, qid)
    if os.geteuid() == 0:
        # Run as root on a spool owned by the account odmrd runs as (nobody).
        assert os.stat(d.spool).st_uid == pwd.getpwnam("nobody").pw_uid
    before = snapshot(d.spool)
    r = ctl(d, "queue", "show", qid)
    assert snapshot(d.spool) == before
    assert r.returncode == 0, r.stderr
    assert b"state=pending" in r.stdout                # the damaged entry reads as pending
    assert b"corrupt_entry" in r.stderr and b"moved=no" in r.stderr
    for args in (["queue", "list"], ["queue", "list", "--ids"], ["queue", "list", "example.org"],
                 ["queue", "cat", qid], ["user", "list"], ["check-config"]):
        r = ctl(d, *args)
        assert r.returncode == 0, (args, r.stderr)
    assert snapshot(d.spool) == before
    # The repair is odmrd's: it still delivers the message after its own recovery.
    d.start_fully()
    assert d.queue_ids("example.org") == [qid]


def test_read_only_commands_leave_a_corrupt_message_in_place(make_odmrd):
    d = make_odmrd()
    qid = queue_one_message(d)
    d.stop()
    path = os.path.join(d.spool, "msg", qid)
    with open(path, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"0000000000")                       # breaks the trailer's checksum
    before = snapshot(d.spool)
    r = ctl(d, "queue", "show", qid)
    assert snapshot(d.spool) == before
    assert r.returncode == EX_DATAERR
    assert b"failed validation" in r.stderr and b"left in place" in r.stderr
    assert ctl(d, "queue", "list").returncode == 0
    assert snapshot(d.spool) == before
    d.start_fully()                                       # odmrd quarantines it
    assert os.listdir(os.path.join(d.spool, "msg")) == []
    assert qid in os.listdir(os.path.join(d.spool, "corrupt"))


# ---------------------------------------------------------------- a missing spool

@pytest.mark.parametrize("args", [["queue", "list"], ["queue", "list", "--ids"],
                                  ["queue", "show", "0000000000000000"],
                                  ["queue", "delete", "0000000000000000"]])
def test_missing_spool_is_reported_and_not_created(make_odmrd, args):
    # A mistyped spool path: nothing may appear there (nor beside it).
    d = make_odmrd(extra={"server.spool": "spoool"}, start=False)
    typo = os.path.join(d.dir, "spoool")
    before = sorted(os.listdir(d.dir))
    r = ctl(d, *args)
    assert not os.path.exists(typo)
    assert r.returncode == EX_NOINPUT, r
    assert typo.encode() in r.stderr and b"no such spool directory" in r.stderr
    assert r.stderr.count(b"\n") == 1 and r.stderr.startswith(b"odmrctl: ")
    assert not os.path.exists(typo)
    assert sorted(os.listdir(d.dir)) == before


def test_queue_list_before_the_first_start_creates_nothing(make_odmrd):
    """odmrctl before odmrd ever ran: the spool does not exist yet, and must not be made by
    root (0700 root would stop odmrd from starting)."""
    d = make_odmrd(start=False)
    r = ctl(d, "queue", "list")
    assert r.returncode == EX_NOINPUT
    assert not os.path.exists(d.spool)
    d.start_fully()                                    # and odmrd starts normally afterwards
    assert ctl(d, "queue", "list").returncode == 0


def test_empty_directory_is_not_a_spool(make_odmrd):
    d = make_odmrd(start=False)
    os.makedirs(d.spool)
    r = ctl(d, "queue", "list")
    assert r.returncode == EX_NOINPUT and b"not an odmrd spool" in r.stderr
    assert os.listdir(d.spool) == []


# ---------------------------------------------------------------- root acts as the owner

def test_root_acts_as_the_spool_owner(make_odmrd):
    if os.geteuid() != 0:
        pytest.skip("the identity switch is root's")
    d = make_odmrd()
    qid = queue_one_message(d)
    d.stop()
    nobody = pwd.getpwnam("nobody")
    # msg/ readable by root only: root could list it, the spool's owner cannot.
    msg = os.path.join(d.spool, "msg")
    os.chown(msg, 0, 0)
    os.chmod(msg, 0o700)
    r = ctl(d, "queue", "list", "--ids")
    assert r.returncode == EX_IOERR, r
    assert b"Permission denied" in r.stderr and qid.encode() not in r.stdout
    os.chown(msg, nobody.pw_uid, nobody.pw_gid)
    r = ctl(d, "queue", "delete", qid)
    assert r.returncode == 0, r.stderr
    owners = {st[1] for st in snapshot(d.spool).values()}
    assert owners == {nobody.pw_uid}


# ---------------------------------------------------------------- users file

def test_password_with_nul_is_refused(make_odmrd):
    d = make_odmrd(start=False)
    before = open(d.users, "rb").read()
    for args in (["user", "add", "carol", "carol.example"], ["user", "passwd", "alice"]):
        r = ctl(d, *args, input=b"x\0long-secret\n")
        assert open(d.users, "rb").read() == before
        assert r.returncode == EX_DATAERR, (args, r)
        assert b"NUL" in r.stderr
    # A CR inside the line is not cut off silently either.
    r = ctl(d, "user", "add", "carol", "carol.example", input=b"x\rlong-secret\n")
    assert r.returncode == EX_DATAERR and open(d.users, "rb").read() == before
    # The line ending itself (LF or CRLF) is not part of the password.
    assert ctl(d, "user", "add", "carol", "carol.example", input=b"pw\r\n").returncode == 0


@pytest.mark.parametrize("line", [
    b"user carol domains=carol.example\0,kept.example\n",     # NUL: would be cut at the NUL
    b"user carol domains=carol.example bogus=1\n",            # a field odmrd does not know
    b"frobnicate everything\n",
])
def test_unparseable_users_file_is_not_rewritten(make_odmrd, line):
    d = make_odmrd(start=False)
    with open(d.users, "ab") as f:
        f.write(line)
    before = open(d.users, "rb").read()
    for args, stdin in ((["user", "add", "dave", "dave.example"], b"pw\n"),
                        (["user", "del", "bob"], None), (["user", "passwd", "bob"], b"pw\n")):
        r = ctl(d, *args, input=stdin)
        assert open(d.users, "rb").read() == before, args
        assert r.returncode == EX_CONFIG, (args, r)
        assert b"nothing changed" in r.stderr and b":3: " in r.stderr


def test_rewrite_keeps_mode_and_owner(make_odmrd):
    d = make_odmrd(start=False)
    os.chmod(d.users, 0o400)
    owner = os.stat(d.users)
    assert ctl(d, "user", "add", "carol", "carol.example", input=b"pw\n").returncode == 0
    assert ctl(d, "user", "del", "bob").returncode == 0
    st = os.stat(d.users)
    assert stat.S_IMODE(st.st_mode) == 0o400
    assert (st.st_uid, st.st_gid) == (owner.st_uid, owner.st_gid)
    if os.geteuid() == 0:
        assert st.st_uid == pwd.getpwnam("nobody").pw_uid
