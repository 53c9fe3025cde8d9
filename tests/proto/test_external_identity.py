# SPDX-License-Identifier: ISC
"""AUTH EXTERNAL with real client certificates (issue 9, defect 8): the CN is taken whole; a CN
with a NUL inside or a subject with two CNs is no identity."""
import datetime
import os
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from saslclient import b64
from smtpwire import Wire

USERS = {"bob": ("bob-secret", ["bob.example"], [])}


def name(*cns):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")] +
                     [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns])


def certificate(subject, issuer, public_key, signing_key, ca=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(signing_key, hashes.SHA256())


def write_pem(path, cert, key=None):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        with open(path + ".key", "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))


@pytest.fixture
def pki(workdir):
    d = os.path.join(workdir, "pki")
    os.makedirs(d)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("Test client CA")
    write_pem(os.path.join(d, "ca.pem"),
              certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True))
    clients = {"plain": ("bob-mx",), "nul": ("bob-mx\x00.mallory.example",),
               "two": ("bob-mx", "mallory.example")}
    for label, cns in clients.items():
        key = ec.generate_private_key(ec.SECP256R1())
        write_pem(os.path.join(d, label + ".pem"),
                  certificate(name(*cns), ca_name, key.public_key(), ca_key), key)
    return d


@pytest.fixture
def prov(make_odmrd, pki):
    d = make_odmrd(users=USERS, start=False, extra={"tls.ca": os.path.join(pki, "ca.pem")})
    with open(d.users) as f:
        lines = f.read().splitlines()
    with open(d.users, "w") as f:
        for line in lines:
            f.write(line + (" tls-subject=bob-mx" if line.startswith("user bob ") else "") + "\n")
    return d.start()


def external(prov, pki, label):
    """Implicit TLS with the client certificate `label`; returns (EHLO reply, AUTH reply)."""
    ctx = ssl._create_unverified_context()
    cert = os.path.join(pki, label + ".pem")
    ctx.load_cert_chain(cert, cert + ".key")
    w = Wire(prov.odmrs_port)
    w.starttls(ctx)
    assert w.reply().code == 220
    ehlo = w.expect("EHLO customer.example", 250)
    return ehlo, w.cmd("AUTH EXTERNAL " + b64("bob"))


def offers_external(ehlo):
    return any(line.startswith("AUTH ") and "EXTERNAL" in line.split() for line in ehlo.lines)


def test_single_cn_logs_in(prov, pki):
    ehlo, r = external(prov, pki, "plain")
    assert offers_external(ehlo)
    assert r.code == 235, r


@pytest.mark.parametrize("label", ["nul", "two"])
def test_nul_or_second_cn_is_no_identity(prov, pki, label):
    ehlo, r = external(prov, pki, label)
    assert not offers_external(ehlo)
    assert r.code == 535, r
