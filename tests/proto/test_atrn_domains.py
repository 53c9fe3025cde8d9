# SPDX-License-Identifier: ISC
"""ATRN without an argument covers every domain of the user, however many (RFC 2645 5.2.1;
issue 9, defect 6: only the first 64 were leased and pushed)."""
import socket

import pytest

from saslclient import cram_md5_response
from test_push import Conn, Customer, Plain, inject, wait_push_done

DOMAINS = ["d%02d.example" % i for i in range(1, 71)]
USERS = {"many": ("many-secret", DOMAINS, [])}


@pytest.fixture
def prov(make_odmrd):
    return make_odmrd(users=USERS)


def login(d):
    sock = socket.create_connection(("127.0.0.1", d.odmr_port), timeout=20)
    c = Conn(Plain(sock))
    assert c.reply()[0] == 220
    c.expect("EHLO customer.example", 250)
    code, lines = c.cmd("AUTH CRAM-MD5")
    assert code == 334
    c.expect(cram_md5_response("many", "many-secret", lines[0]), 235)
    return c


def test_atrn_without_argument_pushes_the_65th_to_70th_domain(prov):
    late = DOMAINS[64:]                       # the 65th to the 70th
    rcpts = ["u@%s" % domain for domain in late]
    inject(prov, rcpts[:3])
    inject(prov, rcpts[3:])
    c = login(prov)
    code, lines = c.cmd("ATRN")
    assert code == 250, (code, lines)
    cust = Customer(c).run()
    assert cust.ended == "quit"
    delivered = sorted(a for t in cust.delivered() for a in t.accepted)
    assert delivered == sorted(rcpts)
    wait_push_done(prov, 1)
    assert "domains=70" in prov.log()
    assert prov.queue_ids() == []

