# SPDX-License-Identifier: ISC
"""[metrics] listen (docs/metrics.md): /metrics scraped with prometheus_client's parser (Debian
python3-prometheus-client) after a scripted workload -- N messages in through SMTP, K failed
AUTH exchanges on the ODMR port, one ATRN push of M messages to a sink and one ATRN with no
mail left -- and every family compared whole with what the test did. Off by default; a
non-loopback address is refused by odmrd -t unless allow_remote."""
import os
import re
import signal
import smtplib
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, ROOT, free_port
from test_auth_hardening import connect, cram_login
from test_client import Sink, run_client
from test_push import USERS, wait_push_done

parser = pytest.importorskip("prometheus_client.parser",
                             reason="python3-prometheus-client (scripts/install-deps)")

ODMRD = os.path.join(BIN, "odmrd")


def scrape(d):
    url = "http://127.0.0.1:%d/metrics" % d.metrics_port
    with urllib.request.urlopen(url, timeout=20) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = r.read().decode()
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def samples(families, name):
    """{(sample name, ((label, value), ...)): value} of one family, all of it."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families[name].samples}


def labelled(name, label, values):
    return {(name, ((label, k),)): float(v) for k, v in values.items()}


def metrics_odmrd(make_odmrd, extra=None):
    port = free_port()
    d = make_odmrd(users=USERS, extra={"metrics.listen": "127.0.0.1:%d" % port, **(extra or {})})
    d.metrics_port = port
    return d


def send(d, rcpts):
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=20) as s:
        s.sendmail("s@sender.example", rcpts, b"Subject: m\r\n\r\nbody\r\n")


def failed_auth(d):
    """One failed CRAM-MD5 exchange (a wrong password): 535, then QUIT."""
    w = connect(d)
    assert cram_login(w, "alice", "wrong").code == 535
    w.expect("QUIT", 221)
    w.close()


def sessions_settled(d):
    text = d.log()
    return (text.count("event=session.start") == text.count("event=session.end") and
            text.count("event=odmr.start") == text.count("event=odmr.end"))


def scrape_after(d, since, timeout=15):
    """A scrape whose queue gauges were read after `since` (at most METRICS_QUEUE_MAX_AGE old)."""
    deadline = time.time() + timeout
    while True:
        fams = scrape(d)
        taken = fams["odmrd_queue_scan_timestamp_seconds"].samples[0].value
        if taken >= since or time.time() > deadline:
            assert taken >= since, (taken, since)
            return fams
        time.sleep(0.5)


def test_numbers_match_a_scripted_workload(make_odmrd):
    d = metrics_odmrd(make_odmrd, {"metrics.top_domains": "1"})
    before_first = time.time()
    # N = 5 messages in; the first has two recipients.
    send(d, ["a@example.org", "b@example.org"])
    send(d, ["c@example.org"])
    send(d, ["later@example.org"])
    send(d, ["x@bob.example"])
    send(d, ["y@bob.example"])
    ids = sorted(os.listdir(os.path.join(d.spool, "msg")))     # ids sort by arrival
    assert len(ids) == 5
    d.ctl("queue", "hold", ids[4])
    # K = 3 failed AUTH exchanges.
    for _ in range(3):
        failed_auth(d)
    # One push of M = 3 messages (4 recipients): later@ is deferred by the sink (451).
    sink = Sink(rcpt_replies={"later@example.org": "451 4.3.0 try later"})
    r = run_client(d, sink.target())
    assert r.returncode == 0, r.stderr
    wait_push_done(d, 1)
    assert len(sink.messages) == 2      # later@'s message never got to DATA
    # An ATRN for example.net, which has no mail: 453 (odmr-client's exit 1).
    r = run_client(d, sink.target(), extra=("--domains", "example.net"))
    assert r.returncode == 1, r.stderr
    deadline = time.time() + 10
    while not sessions_settled(d) and time.time() < deadline:
        time.sleep(0.05)
    assert sessions_settled(d), d.log()[-3000:]
    fams = scrape_after(d, time.time())
    log = d.log()

    starts = {role: len(re.findall(r"event=session\.start session=\w+ role=%s " % role, log))
              for role in ("smtp", "lmtp")}
    starts["odmr"] = log.count("event=odmr.start")
    assert starts["smtp"] >= 5 and starts["odmr"] >= 5, starts
    assert samples(fams, "odmrd_sessions") == labelled("odmrd_sessions_total", "service", starts)
    assert samples(fams, "odmrd_sessions_open") == labelled(
        "odmrd_sessions_open", "service", {"smtp": 0, "lmtp": 0, "odmr": 0})
    assert samples(fams, "odmrd_auth_failures") == {("odmrd_auth_failures_total", ()): 3.0}
    assert samples(fams, "odmrd_atrn") == labelled("odmrd_atrn_total", "code",
                                                   {"250": 1, "453": 1})
    assert samples(fams, "odmrd_push_recipients") == labelled(
        "odmrd_push_recipients_total", "class", {"2xx": 3, "4xx": 1, "5xx": 0, "none": 0})
    intake = {("odmrd_intake_replies_total", (("class", c), ("service", s))): 0.0
              for s in ("smtp", "lmtp") for c in ("2xx", "4xx", "5xx")}
    intake[("odmrd_intake_replies_total", (("class", "2xx"), ("service", "smtp")))] = 5.0
    assert samples(fams, "odmrd_intake_replies") == intake
    assert samples(fams, "odmrd_commit_failures") == {("odmrd_commit_failures_total", ()): 0.0}
    check_commit_histogram(samples(fams, "odmrd_commit_duration_seconds"), 5)

    # The queue: later@'s message (example.org) and bob's two, one of them held.
    left = sorted(os.listdir(os.path.join(d.spool, "msg")))
    assert left == [ids[2], ids[3], ids[4]], (left, ids)
    size = {i: os.stat(os.path.join(d.spool, "msg", i)).st_size for i in left}
    assert samples(fams, "odmrd_queue_messages") == labelled(
        "odmrd_queue_messages", "state", {"active": 2, "held": 1})
    assert samples(fams, "odmrd_queue_bytes") == labelled(
        "odmrd_queue_bytes", "state", {"active": size[ids[2]] + size[ids[3]], "held": size[ids[4]]})
    # top_domains = 1: bob.example (2 messages) by name, example.org among the rest.
    assert samples(fams, "odmrd_queue_domain_messages") == labelled(
        "odmrd_queue_domain_messages", "domain", {"bob.example": 2, "_other": 1})
    assert samples(fams, "odmrd_queue_domain_bytes") == labelled(
        "odmrd_queue_domain_bytes", "domain",
        {"bob.example": size[ids[3]] + size[ids[4]], "_other": size[ids[2]]})
    age = fams["odmrd_queue_oldest_message_age_seconds"].samples[0].value
    assert 0 < age <= time.time() - before_first + 1, age
    assert samples(fams, "odmrd_queue_scan_failed") == {("odmrd_queue_scan_failed", ()): 0.0}
    assert fams["odmrd_build_info"].samples[0].labels["version"] == \
        open(os.path.join(ROOT, "VERSION")).read().strip()
    # The commit journal: what the scrape saw is what wal/ held; a second after the last
    # commit the checkpointer has retired every segment.
    segments = samples(fams, "odmrd_journal_segments")[("odmrd_journal_segments", ())]
    assert 0 <= segments <= 2, segments
    deadline = time.time() + 15
    while segments > 0 and time.time() < deadline:
        time.sleep(0.5)
        fams = scrape_after(d, time.time())
        segments = samples(fams, "odmrd_journal_segments")[("odmrd_journal_segments", ())]
    assert samples(fams, "odmrd_journal_segments") == {("odmrd_journal_segments", ()): 0.0}
    assert samples(fams, "odmrd_journal_oldest_segment_age_seconds") == {
        ("odmrd_journal_oldest_segment_age_seconds", ()): 0.0}


def check_commit_histogram(got, count):
    name = "odmrd_commit_duration_seconds"
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in got.items()
                      if k[0] == name + "_bucket"))
    assert buckets[-1] == (float("inf"), count), buckets
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
    assert [b[0] for b in buckets[:-1]] == [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    assert got[(name + "_count", ())] == count
    assert 0 < got[(name + "_sum", ())] < count * 10
    assert len(got) == len(buckets) + 2


def test_paths_other_than_metrics_are_404(make_odmrd):
    d = metrics_odmrd(make_odmrd)
    for path in ("/", "/metrics/", "/other"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen("http://127.0.0.1:%d%s" % (d.metrics_port, path), timeout=10)
        assert e.value.code == 404, path


def listening_ports(pid):
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return sorted(int(re.search(r":(\d+)\s", line).group(1))
                  for line in out.splitlines() if "pid=%d," % pid in line)


def test_off_by_default(make_odmrd):
    d = make_odmrd(users=USERS)
    assert listening_ports(d.proc.pid) == sorted([d.smtp_port, d.lmtp_port, d.odmr_port,
                                                  d.odmrs_port])
    assert "service=metrics" not in d.log()
    out = subprocess.run([ODMRD, "-c", d.conf, "-n"], capture_output=True, text=True).stdout
    assert "[metrics]" not in out


def test_listen_and_top_domains_are_used(make_odmrd):
    d = metrics_odmrd(make_odmrd)
    assert d.metrics_port in listening_ports(d.proc.pid)
    assert "event=listen address=127.0.0.1:%d service=metrics" % d.metrics_port in d.log()


@pytest.mark.parametrize("listen,allow,ok", [
    ("0.0.0.0:9366", None, False),
    ("[::]:9366", None, False),
    ("192.0.2.1:9366", None, False),
    ("0.0.0.0:9366", "yes", True),
    ("[::1]:9366", None, True),
    ("127.0.0.2:9366", None, True),
    ("localhost:9366", None, True),
    ("unix:/tmp/metrics.sock", None, False),
    ("127.0.0.1", None, False),
    ("127.0.0.1:0", None, False),
])
def test_check_refuses_a_remote_listen(make_odmrd, listen, allow, ok):
    d = make_odmrd(users=USERS, start=False,
                   extra={"metrics.listen": listen, "metrics.allow_remote": allow})
    r = subprocess.run([ODMRD, "-c", d.conf, "-t"], capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 78, r.stderr
        assert "[metrics] listen" in r.stderr
        if ":9366" in listen and "[metrics] listen: \"" not in r.stderr:
            assert "is not a loopback address" in r.stderr and "allow_remote" in r.stderr


def test_allow_remote_must_be_yes_or_no(make_odmrd):
    d = make_odmrd(users=USERS, start=False)
    d.extra["metrics.allow_remote"] = "maybe"
    d.write_config()
    r = subprocess.run([ODMRD, "-c", d.conf, "-t"], capture_output=True, text=True)
    assert r.returncode == 78
    assert 'allow_remote: "maybe" is not yes or no' in r.stderr


def test_sighup_with_a_new_listen_needs_a_restart(make_odmrd):
    """A changed [metrics] listen is logged as needing a restart; the old port keeps serving."""
    d = metrics_odmrd(make_odmrd)
    old = d.metrics_port
    d.extra["metrics.listen"] = "127.0.0.1:%d" % free_port()
    d.write_config()
    d.proc.send_signal(signal.SIGHUP)
    assert d.wait_log("event=config.reloaded"), d.log()[-2000:]
    assert "level=warn event=config.restart_needed keys=metrics.listen\n" in d.log()
    d.metrics_port = old
    assert "odmrd_sessions_open" in scrape(d)
