# SPDX-License-Identifier: ISC
"""odmrd -t as root checks what [server] user will be able to use after the switch (issue 11):
the users file it re-reads on SIGHUP, the spool's directory, the spool's subdirectories."""
import os
import pwd
import subprocess

import pytest

from conftest import BIN

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="odmrd switches accounts only as root")


def make_config(workdir):
    conf = os.path.join(workdir, "odmrd.conf")
    with open(conf, "w") as f:
        f.write("[server]\nuser = nobody\nusers = users\nspool = spool\n")
    r = subprocess.run([os.path.join(BIN, "odmrctl"), "-c", conf, "user", "add", "alice",
                        "example.org"], input="pw\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return conf


def check(conf):
    return subprocess.run([os.path.join(BIN, "odmrd"), "-c", conf, "-t"], capture_output=True,
                          text=True, timeout=30)


def chown_nobody(path):
    """path and, for a directory, everything below it (os.walk of a file yields nothing)."""
    nobody = pwd.getpwnam("nobody")
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), nobody.pw_uid, nobody.pw_gid)


def test_users_file_the_account_cannot_read(workdir):
    conf = make_config(workdir)           # made by root, mode 0600
    r = check(conf)
    assert r.returncode == 78
    assert "[server] user nobody cannot use users file %s/users: Permission denied" % workdir \
        in r.stderr, r.stderr
    chown_nobody(os.path.join(workdir, "users"))
    r = check(conf)
    assert r.returncode == 0, r.stderr


def test_spool_made_by_root(workdir):
    conf = make_config(workdir)
    chown_nobody(os.path.join(workdir, "users"))
    for sub in ("msg", "tmp"):                  # as root restoring a backup, or an old odmrctl
        os.makedirs(os.path.join(workdir, "spool", sub), mode=0o700)
    r = check(conf)
    assert r.returncode == 78
    assert "[server] user nobody does not own spool directory %s/spool/" % workdir in r.stderr
    assert "(chown -R nobody %s/spool)" % workdir in r.stderr, r.stderr
    chown_nobody(os.path.join(workdir, "spool"))
    assert check(conf).returncode == 0


def test_spool_parent_the_account_cannot_search(workdir):
    conf = make_config(workdir)
    chown_nobody(os.path.join(workdir, "users"))
    private = os.path.join(workdir, "private")
    os.mkdir(private, 0o700)
    with open(conf, "a") as f:
        f.write("spool = private/spool\n")
    r = check(conf)
    assert r.returncode == 78
    assert "cannot use spool's directory %s: Permission denied" % private in r.stderr, r.stderr
