"""Installability (issue 11): --version/--help, the version in one place."""
import os
import re
import subprocess

from conftest import BIN, ROOT

PROGRAMS = ("odmrd", "odmrctl", "odmr-client")


def version_file():
    with open(os.path.join(ROOT, "VERSION")) as f:
        return f.read().strip()


def run(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30)


def test_version_file_is_one_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", version_file())


def test_version_and_help_exit_0():
    for program in PROGRAMS:
        path = os.path.join(BIN, program)
        for flag in ("--version", "-V"):
            r = run(path, flag)
            assert r.returncode == 0, (program, flag, r.stderr)
            assert r.stdout.splitlines()[0] == "%s (odmrd) %s" % (program, version_file())
        for flag in ("--help", "-h"):
            r = run(path, flag)
            assert r.returncode == 0, (program, flag, r.stderr)
            assert r.stdout.startswith("usage: %s" % program), r.stdout
            assert r.stderr == ""


def test_unknown_option_is_a_usage_error():
    for program in PROGRAMS:
        r = run(os.path.join(BIN, program), "--no-such-option")
        assert r.returncode == 64, (program, r.returncode)
        assert r.stdout == ""
