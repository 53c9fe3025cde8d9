# SPDX-License-Identifier: ISC
"""odmr-client's local targets and daemon mode, end to end: intake -> odmrd -> odmr-client ->
a Maildir or an MDA command (docs/client.md). Fixtures and helpers come from test_client.py."""
import os
import signal
import stat
import subprocess
import time

import pytest

from notices import single_failed_notice
from test_client import BODY, CLIENT, Sink, password_file, prov, run_client  # noqa: F401
from test_odmr import inject

LF_BODY = BODY.replace(b"\r\n", b"\n")


def queue_settles(prov, count, seconds=5):
    """odmrd removes a delivered message after the 250, off the session: give it a moment."""
    deadline = time.time() + seconds
    while len(prov.queue_ids()) != count and time.time() < deadline:
        time.sleep(0.05)
    return prov.queue_ids()


def maildir_files(root):
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) == "new":
            for f in filenames:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    found.setdefault(os.path.dirname(dirpath), []).append(fh.read())
    return found


def test_maildir_byte_exact_with_envelope_headers(prov):
    inject(prov, ["u@example.org", "v@Example.NET"], body=BODY)
    root = os.path.join(prov.dir, "mail")
    r = run_client(prov, "maildir:%s/%%d/%%u/Maildir" % root)
    assert r.returncode == 0, r.stderr
    assert queue_settles(prov, 0) == []
    got = maildir_files(root)
    assert sorted(got) == [root + "/example.net/v/Maildir", root + "/example.org/u/Maildir"]
    u = got[root + "/example.org/u/Maildir"]
    assert len(u) == 1
    head, rest = u[0].split(b"\n", 2)[:2], u[0].split(b"\n", 2)[2]
    assert head == [b"Return-Path: <s@sender.example>", b"Delivered-To: u@example.org"]
    assert rest.endswith(LF_BODY) and b"Received:" in rest and b"\r" not in rest
    assert got[root + "/example.net/v/Maildir"][0].split(b"\n")[1] == b"Delivered-To: v@Example.NET"
    for sub in ("tmp", "new", "cur"):
        st = os.stat(os.path.join(root, "example.org/u/Maildir", sub))
        assert stat.S_IMODE(st.st_mode) == 0o700
        if sub == "tmp":
            assert os.listdir(os.path.join(root, "example.org/u/Maildir", sub)) == []
    assert "outcome=delivered" in r.stderr and "messages=1" in r.stderr


GNU_TIME = ("/usr/bin/time", "-f", "peak_rss_kib=%M")


def peak_rss_kib(run):
    """odmr-client's peak RSS as GNU time reports it (ru_maxrss of the process it forks and
    execs). Not a child forked by Python: ru_maxrss would count Python's pages inherited
    through the fork."""
    last = run.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("peak_rss_kib="), run.stderr[-500:]
    return int(last.split("=", 1)[1])


def test_50_mb_message_streams_with_bounded_memory(prov):
    """A message just under the 50 MB SIZE limit passes through odmr-client to a Maildir byte
    for byte, while odmr-client's peak RSS stays within 8 MiB of a run that delivers a small
    message: the body is streamed (spooled to an unlinked file), never held in memory. Under
    ASan its quarantine would keep every freed read buffer (256 MB by default): 1 MB here, so
    the figure is the program's own."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "quarantine_size_mb=1"]))
    root = os.path.join(prov.dir, "big")
    inject(prov, ["small@example.org"], body=BODY)
    small = run_client(prov, "maildir:%s/%%u" % root, prefix=GNU_TIME, env=env)
    assert small.returncode == 0, small.stderr
    line = b"%s\r\n" % (b"0123456789" * 7 + b"abcdefgh")
    body = b"Subject: big\r\n\r\n" + line * ((48 << 20) // len(line))
    inject(prov, ["big@example.org"], body=body)
    big = run_client(prov, "maildir:%s/%%u" % root, prefix=GNU_TIME, timeout=300, env=env)
    assert big.returncode == 0, big.stderr[-2000:]
    assert queue_settles(prov, 0) == []
    (stored,) = maildir_files(root)[root + "/big"]
    assert len(stored) > len(body) - len(body) // 80 and stored.endswith(body.replace(b"\r\n", b"\n"))
    assert peak_rss_kib(big) < peak_rss_kib(small) + 8 * 1024, (peak_rss_kib(big), peak_rss_kib(small))


def test_maildir_null_sender(prov):
    inject(prov, ["u@example.org"], body=BODY, sender="")
    root = os.path.join(prov.dir, "m2")
    r = run_client(prov, "maildir:%s" % root)
    assert r.returncode == 0, r.stderr
    (msg,) = maildir_files(os.path.dirname(root + "/"))[root]
    assert msg.startswith(b"Return-Path: <>\nDelivered-To: u@example.org\n")


def test_maildir_unwritable_before_atrn(prov):
    inject(prov, ["u@example.org"])
    r = run_client(prov, "maildir:/proc/odmr-none/%u")
    assert r.returncode == 6, r.stderr
    assert len(prov.queue_ids()) == 1


def test_maildir_one_recipient_fails_keeps_message(prov):
    """u's maildir cannot be written (a file where the directory should be): the message went
    to v already, so the provider gets 451 and keeps it for both (duplicate, never a loss)."""
    inject(prov, ["v@example.org", "u@example.org"], body=BODY)
    root = os.path.join(prov.dir, "m3")
    os.makedirs(root)
    with open(os.path.join(root, "u"), "w") as f:
        f.write("not a directory")
    r = run_client(prov, "maildir:%s/%%u" % root)
    assert r.returncode == 0, r.stderr
    assert len(prov.queue_ids()) == 1
    assert "failed" not in prov.queue_show(prov.queue_ids()[0])
    assert len(maildir_files(root)[root + "/v"]) == 1


def test_maildir_dotted_local_part_refused(prov):
    """A quoted local part may hold "/" and ".." (RFC 5321 4.1.2): the maildir target refuses
    it (553 5.1.3), the recipient fails at odmrd, the other recipient is delivered."""
    try:
        inject(prov, ["ok@example.org", '"../x"@example.org'], body=BODY)
    except Exception:
        pytest.skip("intake refuses the local part")
    root = os.path.join(prov.dir, "m4")
    r = run_client(prov, "maildir:%s/%%u" % root)
    assert r.returncode == 0, r.stderr
    assert list(maildir_files(root)) == [root + "/ok"]
    assert "x" not in os.listdir(prov.dir)
    single_failed_notice(prov, '"../x"@example.org', "553 5.1.3", "5.1.3")


# ---------------------------------------------------------------- mda:

def mda_script(prov, name, exit_code=0):
    path = os.path.join(prov.dir, name)
    out = os.path.join(prov.dir, name + ".out")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        f.write("""#!/bin/sh
n=$(ls %(out)s | wc -l)
printf '%%s\\n' "$@" > %(out)s/$n.argv
cat > %(out)s/$n.stdin
exit %(code)d
""" % {"out": out, "code": exit_code})
    os.chmod(path, 0o755)
    return path, out


def mda_runs(out):
    runs = []
    for n in sorted({f.split(".")[0] for f in os.listdir(out)}, key=int):
        with open(os.path.join(out, n + ".argv"), "rb") as a, open(os.path.join(out, n + ".stdin"), "rb") as s:
            runs.append((a.read().decode().split("\n")[:-1], s.read()))
    return runs


def test_mda_argv_and_stdin(prov):
    inject(prov, ["u@example.org", "v@example.org"], body=BODY)
    script, out = mda_script(prov, "mda-ok")
    r = run_client(prov, "mda:%s -i -f %%s -- x%%r %%r" % script)
    assert r.returncode == 0, r.stderr
    assert queue_settles(prov, 0) == []
    runs = mda_runs(out)
    assert [a for a, _ in runs] == [
        ["-i", "-f", "s@sender.example", "--", "xu@example.org", "u@example.org"],
        ["-i", "-f", "s@sender.example", "--", "xv@example.org", "v@example.org"],
    ]
    for _, stdin in runs:
        assert stdin.endswith(LF_BODY) and b"\r" not in stdin


def test_mda_value_with_spaces_is_one_argument(prov):
    inject(prov, ['"a b"@example.org'], body=BODY, sender="s@sender.example")
    script, out = mda_script(prov, "mda-sp")
    r = run_client(prov, "mda:%s %%r" % script)
    assert r.returncode == 0, r.stderr
    assert mda_runs(out)[0][0] == ['"a b"@example.org']


def test_mda_tempfail_keeps_mail_queued(prov):
    inject(prov, ["u@example.org"], body=BODY)
    script, out = mda_script(prov, "mda-75", exit_code=75)
    r = run_client(prov, "mda:%s %%r" % script)
    assert r.returncode == 0, r.stderr
    ids = prov.queue_ids()
    assert len(ids) == 1 and "failed" not in prov.queue_show(ids[0])
    assert "outcome=delivered" in r.stderr and "deferred=1" in r.stderr


def test_mda_failure_fails_recipient(prov):
    inject(prov, ["u@example.org"], body=BODY)
    script, out = mda_script(prov, "mda-1", exit_code=1)
    r = run_client(prov, "mda:%s %%r" % script)
    assert r.returncode == 0, r.stderr
    # the recipient failed permanently: odmrd replaces it by a failed notice
    single_failed_notice(prov, "u@example.org", "554 5.3.0", "5.3.0")
    assert "failed=1" in r.stderr


def test_mda_missing_command_before_atrn(prov):
    inject(prov, ["u@example.org"])
    r = run_client(prov, "mda:/nonexistent/deliver %r")
    assert r.returncode == 6, r.stderr
    assert len(prov.queue_ids()) == 1


def test_mda_relative_command_is_usage_error(prov):
    r = run_client(prov, "mda:sendmail %r")
    assert r.returncode == 64


# ---------------------------------------------------------------- --every

def test_every_polls_and_stops_on_sigterm(prov):
    root = os.path.join(prov.dir, "m5")
    args = [CLIENT, "--server", "127.0.0.1:%d" % prov.odmr_port, "--user", "alice",
            "--password-file", password_file(prov, "alice-secret"), "--deliver",
            "maildir:%s/%%u" % root, "--helo", "customer.example", "--timeout", "0.05",
            "--tls", "none", "--every", "1s"]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        inject(prov, ["u@example.org"], body=BODY)
        while time.time() < deadline and not maildir_files(root):
            time.sleep(0.1)
        inject(prov, ["w@example.org"], body=BODY)
        while time.time() < deadline and len(maildir_files(root)) < 2:
            time.sleep(0.1)
        assert len(maildir_files(root)) == 2
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert err.count("client.session") >= 2 and "client.stop" in err
    assert "outcome=delivered" in err


def test_every_backs_off_on_errors(prov):
    args = [CLIENT, "--server", "127.0.0.1:%d" % prov.odmr_port, "--user", "alice",
            "--password-file", password_file(prov, "wrong"), "--deliver", "maildir:/tmp/x%u",
            "--timeout", "0.05", "--tls", "none", "--every", "1s"]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0
    waits = [float(l.split("seconds=")[1].split()[0]) for l in err.splitlines() if "client.wait" in l]
    assert 2 <= len(waits) <= 3, err
    assert waits[1] > 1.7 * 0.9 and "outcome=auth-failed" in err
