# SPDX-License-Identifier: ISC
"""odmr-client's config file (-c), certificate pinning (--pin, odmrctl tls pin) and configurable
timeouts, against a real odmrd (docs/client.md)."""
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, ROOT
from test_client import BODY, CLIENT, Sink, cert, password_file, prov, queue_settled  # noqa: F401
from test_odmr import inject

EXAMPLE = os.path.join(ROOT, "contrib", "odmr-client.conf.example")
CTL = os.path.join(BIN, "odmrctl")
UNCOMMENT = object()


def config_from_example(path, overrides):
    """The shipped example with keys set (value), uncommented (UNCOMMENT) or removed (None).
    Every override must name a key the example has, so the example stays complete."""
    lines, seen = [], set()
    for line in open(EXAMPLE).read().splitlines():
        m = re.match(r"^;?([a-z_]+) = ", line)
        key = m.group(1) if m else None
        if key in overrides:
            seen.add(key)
            value = overrides[key]
            if value is UNCOMMENT:
                line = line.lstrip(";")
            elif value is None:
                continue
            else:
                line = "%s = %s" % (key, value)
        lines.append(line)
    assert seen == set(overrides), "not in the example: %s" % (set(overrides) - seen)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def python_pin(cert_path):
    """The pin computed without odmr code: the openssl CLI, as curl's documentation does it."""
    out = subprocess.run("openssl x509 -in '%s' -pubkey -noout | openssl pkey -pubin -outform der "
                         "| openssl dgst -sha256 -binary | base64" % cert_path, shell=True,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert len(out) == 44
    return "sha256:" + out


def other_certificate(d):
    """A self-signed certificate (and key) that has nothing to do with odmrd's."""
    c, k = os.path.join(d, "other-cert.pem"), os.path.join(d, "other-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k,
                    "-out", c, "-subj", "/CN=mx.test.example", "-days", "2",
                    "-addext", "subjectAltName=DNS:mx.test.example"],
                   capture_output=True, check=True)
    return c


def run(args, timeout=60):
    return subprocess.run([CLIENT, *args], capture_output=True, text=True, timeout=timeout)


def client_config(prov, sink, **overrides):
    """A full configuration made from the example: only -c is needed on the command line."""
    keys = {"server": "127.0.0.1:%d" % prov.odmr_port, "tls": "none", "user": "alice",
            "password_file": password_file(prov, "alice-secret"), "deliver": sink.target(),
            "helo": "customer.example", "timeout_factor": "0.05", "verbose": "yes"}
    keys.update(overrides)
    return config_from_example(os.path.join(prov.dir, "client.conf"), keys)


def assert_nothing_asked(prov, before):
    """The provider saw no AUTH and no ATRN: the mail it holds is untouched."""
    log = prov.log()
    assert "event=odmr.auth" not in log and "odmr.turnaround" not in log
    assert prov.queue_ids() == before


# ---------------------------------------------------------------- -c FILE

def test_full_delivery_driven_only_by_the_config_file(prov):
    inject(prov, ["u@example.org", "v@example.net"], body=BODY)
    sink = Sink()
    # every timeout key uncommented with its default: the inline comments parse too
    timeouts = {k: UNCOMMENT for k in ("connect_timeout", "greeting_timeout", "command_timeout",
                                       "atrn_timeout", "data_init_timeout", "data_block_timeout",
                                       "data_end_timeout", "server_command_timeout",
                                       "server_data_timeout")}
    conf = client_config(prov, sink, tls="starttls", pin=python_pin(cert(prov)),
                         tls_name="mx.test.example", domains="example.org,example.net",
                         mech="SCRAM-SHA-256-PLUS", **timeouts)
    r = run(["-c", conf])
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    assert sorted(r for m in sink.messages for r in m[1]) == ["u@example.org", "v@example.net"]
    assert all(m[2].endswith(BODY) for m in sink.messages)
    assert "mech=SCRAM-SHA-256-PLUS " in r.stderr and "client.tls" in r.stderr


def test_flags_override_the_file(prov):
    inject(prov, ["u@example.org"], body=BODY)
    sink = Sink()
    with socket.socket() as s:      # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    conf = client_config(prov, sink, server="127.0.0.1:%d" % dead,
                         deliver="smtp:127.0.0.1:%d" % dead, user="bob")
    # as written, the file cannot work: wrong provider, wrong target, wrong user
    r = run(["-c", conf])
    assert r.returncode == 7, r.stderr
    assert "cannot connect" in r.stderr
    r = run(["--server", "127.0.0.1:%d" % prov.odmr_port, "-c", conf, "--user", "alice",
             "--deliver", sink.target()])
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    assert len(sink.messages) == 1


def test_config_errors_name_file_and_line(prov):
    sink = Sink()
    conf = client_config(prov, sink)
    with open(conf, "a") as f:
        f.write("[provider]\nbogus_key = 1\n")
    lines = open(conf).read().count("\n")
    r = run(["-c", conf])
    assert r.returncode == 64
    assert "%s:%d: unknown key \"bogus_key\" in [provider]" % (conf, lines) in r.stderr, r.stderr
    r = run(["-c", os.path.join(prov.dir, "missing.conf")])
    assert r.returncode == 64 and "missing.conf: No such file or directory" in r.stderr


def test_password_in_the_config_file_is_refused(prov):
    conf = write_config(os.path.join(prov.dir, "pw.conf"),
                        "[provider]\nserver = 127.0.0.1:%d\nuser = alice\npassword = alice-secret\n"
                        % prov.odmr_port)
    r = run(["-c", conf, "--deliver", "smtp:127.0.0.1:25"])
    assert r.returncode == 64
    assert "pw.conf:4: [provider] password: a password is never taken from the config file" \
        in r.stderr
    assert "alice-secret" not in r.stderr
    r = run(["--password", "alice-secret"])
    assert r.returncode == 64 and "alice-secret" not in r.stderr


def test_world_readable_password_file_is_refused(prov):
    inject(prov, ["u@example.org"], body=BODY)
    before = prov.queue_ids()
    sink = Sink()
    loose = os.path.join(prov.dir, "loose.pw")
    with open(loose, "w") as f:
        f.write("alice-secret\n")
    os.chmod(loose, 0o644)
    conf = client_config(prov, sink, password_file=loose)
    sessions = prov.log().count("event=odmr.start")   # the fixture's readiness probes
    r = run(["-c", conf])
    assert r.returncode == 64, r.stderr
    assert "mode 0644" in r.stderr and "chmod 600" in r.stderr
    assert prov.log().count("event=odmr.start") == sessions   # refused before connecting
    assert prov.queue_ids() == before
    os.chmod(loose, 0o640)                      # group-readable: refused as well
    assert run(["-c", conf]).returncode == 64
    os.chmod(loose, 0o400)
    assert run(["-c", conf]).returncode == 0
    assert len(sink.messages) == 1


# ---------------------------------------------------------------- pins

def test_odmrctl_tls_pin_matches_openssl(prov):
    want = python_pin(cert(prov))
    r = subprocess.run([CTL, "-c", prov.conf, "tls", "pin"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want + "\n"        # default: [tls] cert of the config
    other = other_certificate(prov.dir)
    r = subprocess.run([CTL, "-c", prov.conf, "tls", "pin", other], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == python_pin(other) != want
    r = subprocess.run([CTL, "-c", prov.conf, "tls", "pin", os.path.join(prov.dir, "nope.pem")],
                       capture_output=True, text=True)
    assert r.returncode == 66 and "nope.pem" in r.stderr
    r = subprocess.run([CTL, "-c", prov.conf, "tls", "pin", prov.users], capture_output=True,
                       text=True)
    assert r.returncode == 65 and "no PEM certificate" in r.stderr
    r = subprocess.run([CTL, "-c", prov.conf, "tls", "fingerprint"], capture_output=True, text=True)
    assert r.returncode == 64


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_pin_alone_accepts_the_self_signed_certificate(prov, mode):
    inject(prov, ["u@example.org"], body=BODY)
    sink = Sink()
    port = prov.odmr_port if mode == "starttls" else prov.odmrs_port
    # no ca, no tls-name: 127.0.0.1 is not in the certificate, the pin alone decides
    conf = client_config(prov, sink, server="127.0.0.1:%d" % port, tls=mode,
                         pin=python_pin(cert(prov)))
    r = run(["-c", conf])
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []
    assert len(sink.messages) == 1
    # without the pin the self-signed certificate is refused (system store, name check) ...
    inject(prov, ["u@example.org"], body=BODY)
    nopin = client_config(prov, sink, server="127.0.0.1:%d" % port, tls=mode, pin=None)
    r = run(["-c", nopin])
    assert r.returncode == 3, r.stderr
    assert len(prov.queue_ids()) == 1
    # ... and accepted with it again, given as a flag in curl's form
    r = run(["-c", nopin, "--pin", python_pin(cert(prov)).replace("sha256:", "sha256//")])
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []


def test_second_pin_matches(prov):
    inject(prov, ["u@example.org"], body=BODY)
    sink = Sink()
    other = python_pin(other_certificate(prov.dir))
    conf = client_config(prov, sink, tls="starttls", pin="%s, %s" % (other, python_pin(cert(prov))))
    r = run(["-c", conf])
    assert r.returncode == 0, r.stderr


def test_wrong_pin_is_a_tls_failure_and_asks_nothing(prov):
    inject(prov, ["u@example.org"], body=BODY)
    before = prov.queue_ids()
    sink = Sink()
    wrong = python_pin(other_certificate(prov.dir))
    actual = python_pin(cert(prov))
    conf = client_config(prov, sink, tls="starttls", pin=actual)
    r = run(["-c", conf, "--pin", wrong])          # the flag replaces the file's pin
    assert r.returncode == 3, r.stderr
    assert "pin mismatch" in r.stderr
    assert actual in r.stderr and wrong in r.stderr   # what it is, and what was expected
    assert sink.connections == 0 and sink.messages == []
    assert_nothing_asked(prov, before)


def test_pin_and_ca_must_both_hold(prov):
    inject(prov, ["u@example.org"], body=BODY)
    before = prov.queue_ids()
    sink = Sink()
    pin = python_pin(cert(prov))
    other = other_certificate(prov.dir)
    conf = client_config(prov, sink, tls="starttls", pin=pin, ca=other,
                         tls_name="mx.test.example")
    # right pin, wrong CA: refused
    r = run(["-c", conf])
    assert r.returncode == 3, r.stderr
    assert "certificate verification failed" in r.stderr
    assert_nothing_asked(prov, before)
    # right pin, right CA, wrong name: refused (the CA path checks the name)
    r = run(["-c", conf, "--ca", cert(prov), "--tls-name", "other.example"])
    assert r.returncode == 3, r.stderr
    assert_nothing_asked(prov, before)
    # right CA, wrong pin: refused
    r = run(["-c", conf, "--ca", cert(prov), "--pin", python_pin(other)])
    assert r.returncode == 3 and "pin mismatch" in r.stderr, r.stderr
    assert_nothing_asked(prov, before)
    # both right: delivered
    r = run(["-c", conf, "--ca", cert(prov)])
    assert r.returncode == 0, r.stderr
    assert queue_settled(prov) == []


def test_pin_usage_errors(prov):
    sink = Sink()
    conf = client_config(prov, sink)       # tls = none
    r = run(["-c", conf, "--pin", python_pin(cert(prov))])
    assert r.returncode == 64 and "a pin needs TLS" in r.stderr, r.stderr
    r = run(["-c", conf, "--tls", "starttls", "--pin", "sha256:not-a-pin"])
    assert r.returncode == 64 and "--pin: bad pin" in r.stderr, r.stderr


# ---------------------------------------------------------------- timeouts

class Staller:
    """A provider that greets (or not) and then never answers: it reads and keeps quiet."""

    def __init__(self, greet=True):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.greet = greet
        self.received = b""
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conns.append(conn)
        if self.greet:
            conn.sendall(b"220 staller.example ESMTP\r\n")
        while True:
            data = conn.recv(4096)
            if not data:
                return
            self.received += data

    def close(self):
        for c in self.conns:
            c.close()
        self.listener.close()


@pytest.mark.parametrize("greet,key", [(True, "command_timeout"), (False, "greeting_timeout")])
def test_configured_timeout_ends_a_stalled_session(prov, greet, key):
    staller = Staller(greet=greet)
    sink = Sink()
    try:
        conf = client_config(prov, sink, server="127.0.0.1:%d" % staller.port,
                             timeout_factor=None, **{key: "2s"})
        start = time.monotonic()
        r = run(["-c", conf], timeout=30)
        elapsed = time.monotonic() - start
    finally:
        staller.close()
    assert r.returncode == 7, r.stderr
    assert "timeout while waiting for %s" % ("EHLO" if greet else "greeting") in r.stderr
    assert 1.8 <= elapsed < 6, elapsed
    if greet:
        assert staller.received.startswith(b"EHLO customer.example\r\n")


def test_timeout_flag_overrides_the_file_and_factor_scales_it(prov):
    staller = Staller()
    sink = Sink()
    try:
        conf = client_config(prov, sink, server="127.0.0.1:%d" % staller.port,
                             timeout_factor=None, command_timeout="1h")
        start = time.monotonic()
        r = run(["-c", conf, "--command-timeout", "4s", "--timeout", "0.5"], timeout=30)
        elapsed = time.monotonic() - start
    finally:
        staller.close()
    assert r.returncode == 7, r.stderr
    assert 1.8 <= elapsed < 6, elapsed


def test_bad_timeout_values(prov):
    sink = Sink()
    conf = client_config(prov, sink, command_timeout="0s")
    r = run(["-c", conf])
    assert r.returncode == 64 and "command_timeout: bad duration \"0s\"" in r.stderr, r.stderr
    r = run(["-c", client_config(prov, sink), "--data-end-timeout", "soon"])
    assert r.returncode == 64 and "--data-end-timeout: bad duration" in r.stderr


def test_help_lists_the_new_settings():
    r = run(["--help"])
    assert r.returncode == 0
    for word in ("--config FILE", "--pin sha256:BASE64", "--connect-timeout", "--command-timeout",
                 "--greeting-timeout", "--atrn-timeout", "--data-init-timeout",
                 "--data-block-timeout", "--data-end-timeout", "--server-command-timeout",
                 "--server-data-timeout", "--timeout FACTOR"):
        assert word in r.stdout, word
