# SPDX-License-Identifier: ISC
"""Exim 4.96 as the real front MTA: it relays to odmrd's SMTP intake over STARTTLS and
sends a queue of messages over one reused connection (tests/proto/exim.py). Exim ends such a
connection with the last message's dot and a pipelined QUIT, then its TLS close_notify and
FIN, and only then reads the replies (issue 9, defect 1): odmrd must still answer 250 and
221, or Exim defers the last message and sends it again (a duplicate at the customer).

Between Exim and odmrd a relay (tests/proto/tcprelay.py) hands odmrd what Exim sends back to
back in one piece, as a link with some latency does; on bare loopback odmrd would usually
read the close_notify only after it answered, and the defect would hide."""
import collections
import os
import re

import pytest

from exim import Exim, unusable_reason
from tcprelay import Relay

pytestmark = pytest.mark.skipif(unusable_reason() is not None, reason=unusable_reason() or "")

COUNT = 8


def message(i):
    return ("From: <sender@elsewhere.test>\n"
            "To: <u%d@example.org>\n"
            "Message-ID: <exim-%d@elsewhere.test>\n"
            "Subject: via exim %d\n"
            "\n"
            "body %d\n" % (i, i, i, i)).encode()


def message_ids(d):
    """The Message-ID of every message in odmrd's queue, with how often it is there."""
    ids = collections.Counter()
    for qid in d.queue_ids():
        m = re.search(rb"^Message-ID: <([^>]+)>", d.queue_body(qid), re.M | re.I)
        ids[m.group(1).decode() if m else qid] += 1
    return ids


@pytest.fixture
def relay_to():
    made = []

    def make(port):
        made.append(Relay(port).start())
        return made[-1]

    yield make
    for relay in made:
        relay.stop()


def test_exim_reused_starttls_connection_delivers_every_message_once(make_odmrd, relay_to,
                                                                     workdir):
    d = make_odmrd()
    relay = relay_to(d.smtp_port)
    ex = Exim(os.path.join(workdir, "exim"), relay.port)
    for i in range(COUNT):
        ex.submit("sender@elsewhere.test", ["u%d@example.org" % i], message(i))
    ex.run_queue()
    left = ex.queue_count()
    if left:
        ex.run_queue()   # what Exim does at its next retry: the deferred mail goes again
    log = ex.log()
    expected = {"exim-%d@elsewhere.test" % i: 1 for i in range(COUNT)}
    assert message_ids(d) == expected, log
    assert left == 0 and ex.queue_count() == 0, log
    assert re.findall(r" (==|\*\*) ", log) == [], log
    deliveries = re.findall(r" => u\d+@example\.org R=odmrd T=to_odmrd .* X=TLS1\.\d", log)
    assert len(deliveries) == COUNT, log
    assert relay.connections == 1, log   # all of them over one reused connection
    assert d.stop() == 0, d.log()[-3000:]
