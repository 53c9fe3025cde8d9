# SPDX-License-Identifier: ISC
"""odmrctl queue hold, release, requeue, bounce, delete and list --json (issue 10, part 5), each
against a RUNNING odmrd: it must obey the change at the next ATRN or expiry scan, without a
restart. Outputs are compared whole."""
import json
import os
import pwd
import re
import signal
import subprocess
import time

import pytest

from conftest import BIN
from notices import check_failed_notice, for_original, notice_ids
from test_ctl_safety import snapshot
from test_push import USERS, Customer, atrn, inject, login, push, pushes_done, wait_push_done

EX_USAGE, EX_DATAERR, EX_TEMPFAIL = 64, 65, 75


@pytest.fixture
def prov(make_odmrd):
    return make_odmrd(users=USERS)


def ctl(d, *args, input=None):
    return subprocess.run([os.path.join(BIN, "odmrctl"), "-c", d.conf, *args], input=input,
                          capture_output=True, text=True, timeout=60)


def ok(d, *args, input=None):
    r = ctl(d, *args, input=input)
    assert r.returncode == 0, (args, r.returncode, r.stderr)
    return r.stdout


def pushed_ids(cust):
    """The queue ids of the messages the customer accepted (from our Received: header)."""
    return [re.search(rb"id ([0-9A-Za-z]{16})", t.data).group(1).decode()
            for t in cust.delivered()]


def atrn_code(d, user="alice"):
    c = login(d, user)
    code, _ = atrn(c)
    if code == 250:   # serve it, so the lease goes
        before = pushes_done(d)
        Customer(c).run()
        wait_push_done(d, before + 1)
    c.close()
    return code


def wait_log(d, needle, count=1, timeout=30):
    assert d.wait_log(needle, count, timeout), "no %r in the log:\n%s" % (needle, d.log()[-3000:])


def write_entry(d, domain, qid, text):
    """Writes an index entry by hand (as the spool's owner), odmrd running: a new file renamed
    over the entry, as odmrd itself does (an empty entry is a link to dom/.empty, shared)."""
    path = os.path.join(d.spool, "dom", domain, qid)
    tmp = os.path.join(d.spool, "dom", domain, ".%s.tmp" % qid)
    with open(tmp, "w") as f:
        f.write(text)
    st = os.stat(d.spool)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.rename(tmp, path)


# ---------------------------------------------------------------- hold and release

def test_held_message_is_not_pushed_and_released_one_is(prov):
    a = inject(prov, ["u@example.org"], b"Subject: a\r\n\r\na\r\n")
    b = inject(prov, ["v@example.org"], b"Subject: b\r\n\r\nb\r\n")
    assert ok(prov, "queue", "hold", a) == "held %s\n" % a
    assert ok(prov, "queue", "hold", a) == "held %s (already)\n" % a
    assert os.path.exists(os.path.join(prov.spool, "hold", a))
    assert "held:       yes (odmrctl queue release ID)\n" in prov.queue_show(a)
    cust = push(prov)
    assert pushed_ids(cust) == [b]
    assert prov.queue_ids() == [a]
    assert atrn_code(prov) == 453          # only held mail: "You have no mail"
    assert ok(prov, "queue", "release", a) == "released %s\n" % a
    assert not os.path.exists(os.path.join(prov.spool, "hold", a))
    cust = push(prov)
    assert pushed_ids(cust) == [a]
    assert prov.queue_ids() == []


def test_hold_and_release_by_domain_and_stdin(prov):
    a = inject(prov, ["u@example.org"])
    b = inject(prov, ["v@example.org", "w@bob.example"])
    c = inject(prov, ["x@bob.example"])
    assert ok(prov, "queue", "hold", "--domain", "example.org") == "held %s\nheld %s\n" % (a, b)
    assert atrn_code(prov, "alice") == 453
    cust = push(prov, user="bob")           # b is held for bob.example too
    assert pushed_ids(cust) == [c]
    assert ok(prov, "queue", "release", "-", input="%s\n\n%s\n" % (b, a)) == \
        "released %s\nreleased %s\n" % (b, a)
    cust = push(prov, user="alice")
    assert pushed_ids(cust) == [a, b]
    cust = push(prov, user="bob")
    assert pushed_ids(cust) == [b]
    assert prov.queue_ids() == []


def test_held_message_does_not_expire_and_released_one_does(make_odmrd):
    """max_hold = 2s: the held message outlives several scans; released, it expires at the next
    one (held time counts, as Postfix's postsuper -h/-H)."""
    d = make_odmrd(users=USERS, extra={"queue.max_hold": "2s"})
    qid = inject(d, ["u@example.org"], b"Subject: kept\r\n\r\nx\r\n")
    assert ok(d, "queue", "hold", qid) == "held %s\n" % qid
    wait_log(d, "event=expire.start")
    time.sleep(4.5)                         # >= 3 scans after the message became old
    assert d.queue_ids() == [qid]
    assert "event=expire.rcpt id=%s" % qid not in d.log()
    assert notice_ids(d) == []
    assert ok(d, "queue", "release", qid) == "released %s\n" % qid
    wait_log(d, "event=notice.original_removed session=expire id=%s" % qid)
    d.stop()
    [n] = for_original(d, qid)
    check_failed_notice(n, qid, "s@sender.example", {"u@example.org": {
        "status": "5.4.7", "remote": None, "last_attempt": False,
        "diagnostic": "X-odmrd; held for 2 seconds, the customer's server did not collect it"}},
        subject="kept")


# ---------------------------------------------------------------- requeue

def test_requeued_failed_recipient_is_pushed(prov):
    qid = inject(prov, ["u@example.org", "v@example.org"])
    # A failed recipient (its notice owed): what an odmrd from before notices left behind.
    write_entry(prov, "example.org", qid,
                "ODMRD 1\nrcpt 0 failed 1 1795925358 =550%205.1.1%20no\n"
                "rcpt 1 done 1 1795925358 =250%20ok\nend\n")
    assert atrn_code(prov) == 453           # failed is not listed for ATRN
    assert ok(prov, "queue", "requeue", qid) == "requeued %s (1 recipient)\n" % qid
    assert ok(prov, "queue", "requeue", qid) == \
        "%s: no failed recipient, nothing requeued\n" % qid
    show = prov.queue_show(qid)
    assert re.search(r"<u@example.org>\n\s+domain=example.org state=pending attempts=1", show)
    assert re.search(r"<v@example.org>\n\s+domain=example.org state=done attempts=1", show)
    cust = push(prov)
    assert [t.accepted for t in cust.delivered()] == [["u@example.org"]]
    assert prov.queue_ids() == []


# ---------------------------------------------------------------- bounce

def test_bounce_writes_a_failed_notice_and_the_daemon_forgets_the_message(prov):
    qid = inject(prov, ["u@example.org", "v@example.org"], b"Subject: returned\r\n\r\nx\r\n",
                 mail_params=" ENVID=adm1", rcpt_params=" ORCPT=rfc822;o@example.org")
    assert ok(prov, "queue", "hold", qid) == "held %s\n" % qid
    assert ok(prov, "queue", "bounce", qid) == "bounced %s (2 recipients)\n" % qid
    assert not os.path.exists(os.path.join(prov.spool, "hold", qid))   # no stale mark
    assert atrn_code(prov) == 453
    [n] = for_original(prov, qid)
    assert n.qid in prov.queue_ids()        # held for the admin (sender.example not hosted)
    check_failed_notice(n, qid, "s@sender.example", {
        a: {"status": "5.0.0", "remote": None, "orcpt": "rfc822; o@example.org",
            "diagnostic": "X-odmrd; returned by the administrator", "last_attempt": False}
        for a in ("u@example.org", "v@example.org")}, envid="adm1", subject="returned")
    assert n.human.count("returned by the administrator") == 2
    assert qid not in prov.queue_ids()
    r = ctl(prov, "queue", "bounce", qid)
    assert (r.returncode, r.stdout, r.stderr) == (EX_DATAERR, "",
                                                  "odmrctl: %s: no such message\n" % qid)


# ---------------------------------------------------------------- delete

def test_delete_by_id_domain_age_and_stdin(prov):
    old = inject(prov, ["o@example.org"])
    time.sleep(3)
    a = inject(prov, ["u@example.org"])
    assert ok(prov, "queue", "delete", "--older-than", "2s") == "deleted %s\n" % old
    b = inject(prov, ["v@bob.example"])
    c = inject(prov, ["w@bob.example", "x@example.org"])
    e = inject(prov, ["y@example.net"])
    f = inject(prov, ["z@example.net"])
    assert ok(prov, "queue", "delete", "--domain", "bob.example") == \
        "deleted %s\ndeleted %s\n" % (b, c)
    assert ok(prov, "queue", "delete", "-", input=e + "\n") == "deleted %s\n" % e
    assert ok(prov, "queue", "delete", f) == "deleted %s\n" % f
    r = ctl(prov, "queue", "delete", f, a)  # one gone, the other deleted: exit 65
    assert (r.returncode, r.stdout, r.stderr) == (EX_DATAERR, "deleted %s\n" % a,
                                                  "odmrctl: %s: no such message\n" % f)
    assert prov.queue_ids() == []
    assert atrn_code(prov, "alice") == 453 and atrn_code(prov, "bob") == 453
    assert os.listdir(os.path.join(prov.spool, "dom", "example.org")) == []


def test_delete_of_a_message_being_pushed_is_refused(prov):
    qid = inject(prov, ["u@example.org"])
    c = login(prov)
    code, _ = atrn(c)
    assert code == 250                      # the push holds lock/example.org now
    before = snapshot(prov.spool)
    for cmd in ("hold", "delete", "bounce", "requeue"):
        r = ctl(prov, "queue", cmd, qid)
        assert (r.returncode, r.stdout) == (EX_TEMPFAIL, ""), (cmd, r.stderr)
        assert r.stderr == ("odmrctl: %s: not changed: domain example.org is being delivered "
                            "or expired right now (lock/example.org is held); try again\n" % qid)
    assert snapshot(prov.spool) == before
    n = pushes_done(prov)
    cust = Customer(c).run()
    c.close()
    wait_push_done(prov, n + 1)
    assert pushed_ids(cust) == [qid]


# ---------------------------------------------------------------- the commit journal

def in_journal(d, qid):
    """True when a segment of wal/ holds a record of qid (odmrd checkpoints it within ~1 s)."""
    wal = os.path.join(d.spool, "wal")
    for name in os.listdir(wal):
        with open(os.path.join(wal, name), "rb") as f:
            if b"ODMRJ 1 %s " % qid.encode() in f.read():
                return True
    return False


def inject_into_journal(d, tries=10):
    """A message whose record is still in wal/ when this returns (else a new try)."""
    for _ in range(tries):
        qid = inject(d, ["u@example.org"], b"Subject: fresh\r\n\r\nfresh\r\n")
        if in_journal(d, qid):
            return qid
    pytest.fail("no commit found in wal/ after %d tries" % tries)


@pytest.mark.parametrize("cmd", ["delete", "bounce"])
def test_removal_right_after_the_commit_waits_for_the_checkpoint(make_odmrd, cmd):
    """Removed while its record is in the journal, a message would come back when odmrd
    replays the journal after a crash: odmrctl waits for the checkpoint first."""
    d = make_odmrd(users=USERS)
    for _ in range(3):
        qid = inject_into_journal(d)
        out = ok(d, "queue", cmd, qid)
        assert out == ("deleted %s\n" % qid if cmd == "delete"
                       else "bounced %s (1 recipient)\n" % qid)
        assert not in_journal(d, qid)
        d.stop(sig=signal.SIGKILL)
        d.start_fully()
        ids = d.queue_ids()
        assert qid not in ids
        for notice in ids:   # a bounce's notice to the sender stays: one, not more
            ok(d, "queue", "delete", notice)


def test_removal_of_a_message_left_in_a_stopped_odmrds_journal_is_refused(make_odmrd):
    d = make_odmrd(users=USERS)
    for _ in range(10):
        qid = inject(d, ["u@example.org"], b"Subject: fresh\r\n\r\nfresh\r\n")
        d.stop(sig=signal.SIGKILL)
        if in_journal(d, qid):
            break
        d.start_fully()
    else:
        pytest.fail("no commit left in wal/ by a SIGKILL in 10 tries")
    before = snapshot(d.spool)
    for cmd in ("delete", "bounce"):
        r = ctl(d, "queue", cmd, qid)
        assert (r.returncode, r.stdout) == (EX_TEMPFAIL, ""), (cmd, r.stderr)
        assert r.stderr == ("odmrctl: %s: not changed: its record is still in odmrd's commit "
                            "journal (wal/) and no checkpoint took it within 5 s; is odmrd "
                            "running? (its start replays the journal); try again\n" % qid)
    assert snapshot(d.spool) == before
    d.start_fully()                 # the replay and its checkpoint let go of the record
    assert ok(d, "queue", "delete", qid) == "deleted %s\n" % qid
    assert d.queue_ids() == []


# ---------------------------------------------------------------- usage errors

@pytest.mark.parametrize("args", [
    ["queue", "hold", "--bogus"],
    ["queue", "hold", "--domian", "example.org"],
    ["queue", "delete", "--domain"],
    ["queue", "delete", "--domain", "--older-than", "1s"],
    ["queue", "delete", "-x"],
    ["queue", "requeue", "--domain", "example.org"],
    ["queue", "bounce", "--older-than", "1s"],
    ["queue", "release", "--domain", "example.org", "--domain", "example.net"],
    ["queue", "list", "--frobnicate"],
    ["queue", "list", "--example.org"],
    ["queue", "delete", "--older-than", "soon"],
    ["queue", "hold"],
])
def test_unknown_options_are_usage_errors_and_change_nothing(prov, args):
    qid = inject(prov, ["u@example.org"])
    before = snapshot(prov.spool)
    r = ctl(prov, *args)
    assert r.returncode == EX_USAGE, r
    assert r.stdout == ""
    assert snapshot(prov.spool) == before
    assert prov.queue_ids() == [qid]


def test_malformed_id_is_refused_before_anything_changes(prov):
    qid = inject(prov, ["u@example.org"])
    before = snapshot(prov.spool)
    r = ctl(prov, "queue", "delete", qid, "../msg/" + qid)
    assert (r.returncode, r.stdout, r.stderr) == (EX_DATAERR, "",
                                                  "odmrctl: ../msg/%s: not a queue id\n" % qid)
    assert snapshot(prov.spool) == before


# ---------------------------------------------------------------- list --json

def show_field(d, qid, name):
    return re.search(r"^%s:\s+(.*)$" % name, d.queue_show(qid), re.M).group(1)


def test_list_json_is_one_document_compared_whole(prov):
    a = inject(prov, ["u@example.org"], sender='"we\\"i\\\\rd"@sender.example',
               mail_params=" ENVID=j1")
    b = inject(prov, ["v@example.org", "w@bob.example"], sender="",
               rcpt_params=" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;o+2Bx@example.org")
    ok(prov, "queue", "hold", b)

    def arrival(qid):
        return show_field(prov, qid, "arrival").split(" ")[0]

    def size(qid):
        return int(show_field(prov, qid, "size").split(" ")[0])

    def rcpt(address, notify=None, orcpt=None):
        return {"address": address, "domain": address.split("@")[1], "state": "pending",
                "attempts": 0, "last_attempt": None, "last_reply": None, "notify": notify,
                "orcpt": orcpt}

    want = {"messages": [
        {"id": a, "arrival": arrival(a), "sender": '"we\\"i\\\\rd"@sender.example',
         "size": size(a), "held": False, "recipients": [rcpt("u@example.org")]},
        {"id": b, "arrival": arrival(b), "sender": "", "size": size(b), "held": True,
         "recipients": [rcpt(x, "SUCCESS,FAILURE", "rfc822;o+2Bx@example.org")
                        for x in ("v@example.org", "w@bob.example")]},
    ]}
    out = ok(prov, "queue", "list", "--json")
    assert json.loads(out) == want
    assert json.loads(ok(prov, "queue", "list", "--json", "bob.example")) == \
        {"messages": [want["messages"][1]]}
    push(prov)                                      # a goes; b is held
    assert json.loads(ok(prov, "queue", "list", "--json")) == {"messages": [want["messages"][1]]}
    ok(prov, "queue", "delete", b)
    assert ok(prov, "queue", "list", "--json") == '{"messages": []}\n'
