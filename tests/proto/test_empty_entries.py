# SPDX-License-Identifier: ISC
"""Empty index entries as hard links to one empty file, dom/.empty (docs/queue.md "Empty
entries"): the daemon's commits link instead of allocating an inode per entry. What must hold:
every empty entry shares the read-only, empty dom/.empty; an outcome replaces the link by a file
of its own without touching dom/.empty; a dom/.empty that someone wrote into is replaced before
the next link (and logged); a restart neither warns about dom/.empty nor loses a message."""
import os
import stat

from test_push import USERS, inject, push, rcpt_states


def entry(d, domain, qid):
    return os.path.join(d.spool, "dom", domain, qid)


def marker(d):
    return os.path.join(d.spool, "dom", ".empty")


def test_empty_entries_are_links_to_one_read_only_empty_file(make_odmrd):
    d = make_odmrd(users=USERS)
    a = inject(d, ["u@example.org", "v@example.net"])
    b = inject(d, ["w@example.org"])
    m = os.stat(marker(d))
    assert stat.S_ISREG(m.st_mode) and m.st_size == 0
    assert stat.S_IMODE(m.st_mode) == 0o400
    spool = os.stat(d.spool)
    assert (m.st_uid, m.st_gid) == (spool.st_uid, spool.st_gid), "owned by the daemon's user"
    entries = [entry(d, "example.org", a), entry(d, "example.net", a), entry(d, "example.org", b)]
    for path in entries:
        st = os.stat(path)
        assert (st.st_dev, st.st_ino, st.st_size) == (m.st_dev, m.st_ino, 0), path
    assert os.stat(marker(d)).st_nlink == 1 + len(entries)


def test_an_outcome_replaces_the_link_and_leaves_the_shared_file_empty(make_odmrd):
    d = make_odmrd(users=USERS)
    kept = inject(d, ["k@example.org"])
    qid = inject(d, ["u@example.org", "v@example.org"])
    push(d, rcpt=lambda addr, txn: "450 4.2.1 try later" if addr[0] in "uk"
         else "250 2.1.5 OK")
    states = rcpt_states(d, qid)
    assert (states["u@example.org"]["state"], states["v@example.org"]["state"]) == \
        ("pending", "done")
    st, m = os.stat(entry(d, "example.org", qid)), os.stat(marker(d))
    assert st.st_ino != m.st_ino and st.st_size > 0, "the outcome is a file of its own"
    assert m.st_size == 0
    assert open(marker(d), "rb").read() == b""
    assert rcpt_states(d, kept)["k@example.org"]["attempts"] == 1


def test_a_written_shared_file_is_replaced_before_the_next_link(make_odmrd):
    d = make_odmrd(users=USERS)
    first = inject(d, ["u@example.org"])
    os.chmod(marker(d), 0o600)            # as root would: a hand edit in place
    with open(marker(d), "w") as f:
        f.write("ODMRD 2\nrcpt 0 done 1 1795925358 - =250%20ok\nend\n")
    second = inject(d, ["v@example.org"])
    assert d.wait_log("event=queue.empty_entry_written", timeout=5), d.log()[-2000:]
    m = os.stat(marker(d))
    assert m.st_size == 0 and stat.S_IMODE(m.st_mode) == 0o400
    assert os.stat(entry(d, "example.org", second)).st_ino == m.st_ino
    assert os.stat(entry(d, "example.org", first)).st_ino != m.st_ino, "the written one"
    assert rcpt_states(d, second)["v@example.org"]["state"] == "pending"


def test_restart_keeps_messages_and_does_not_warn_about_the_shared_file(make_odmrd):
    d = make_odmrd(users=USERS)
    ids = sorted(inject(d, ["u%d@example.org" % i]) for i in range(3))
    d.stop()
    d.start()
    assert "dom/.empty" not in d.log(), d.log()[-2000:]
    assert sorted(d.queue_ids()) == ids
    m = os.stat(marker(d))
    for qid in ids:
        assert os.stat(entry(d, "example.org", qid)).st_size == 0
    assert m.st_size == 0
    cust = push(d)
    assert len(cust.delivered()) == 3
    assert d.queue_ids() == []
