# SPDX-License-Identifier: ISC
"""Installability (issue 11): --version/--help, the version in one place."""
import os
import pwd
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


# ---- make install, FHS defaults, the configuration example ----

EXAMPLE = os.path.join(ROOT, "contrib", "odmrd.conf.example")


def config_keys():
    """(section, key) of every key in src/lib/config.c's table."""
    with open(os.path.join(ROOT, "src", "lib", "config.c")) as f:
        return re.findall(r'\{"(\w+)", "(\w+)", VALUE_', f.read())


def example_keys():
    keys, section = [], None
    with open(EXAMPLE) as f:
        for line in f:
            m = re.match(r"\[(\w+)\]", line)
            if m:
                section = m.group(1)
            m = re.match(r";(\w+) = ", line)
            if m:
                keys.append((section, m.group(1)))
    return keys


def test_example_shows_every_key_once():
    assert sorted(example_keys()) == sorted(config_keys())


def test_example_with_every_key_set_is_valid(workdir):
    """Every commented default, uncommented, is accepted (paths moved into workdir)."""
    users = os.path.join(workdir, "users")
    conf = os.path.join(workdir, "odmrd.conf")
    with open(EXAMPLE) as f:
        text = re.sub(r"^;(\w+ = )", r"\1", f.read(), flags=re.M)
    text = re.sub(r"^users = .*$", "users = " + users, text, flags=re.M)
    text = re.sub(r"^spool = .*$", "spool = " + os.path.join(workdir, "spool"), text, flags=re.M)
    text = re.sub(r"^user = .*$", "user = nobody", text, flags=re.M)   # odmrd -t checks it
    with open(conf, "w") as f:
        f.write(text)
    r = subprocess.run([os.path.join(BIN, "odmrctl"), "-c", conf, "user", "add", "alice",
                        "example.org"], input="pw\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    nobody = pwd.getpwnam("nobody")
    os.chown(users, nobody.pw_uid, nobody.pw_gid)
    r = run(os.path.join(BIN, "odmrd"), "-c", conf, "-t")
    assert r.returncode == 0, r.stderr


def tree(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            out.append((os.path.relpath(path, root), oct(mode & 0o7777)))
    return dict(out)


def test_make_install_tree_and_fhs_defaults(workdir):
    dest = os.path.join(workdir, "dest")
    r = subprocess.run(["make", "-s", "-j2", "install", "DESTDIR=" + dest], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    files = tree(dest)
    print("\n".join("%s %s" % (mode, path) for path, mode in sorted(files.items())))
    expected = {
        "usr/local/sbin/odmrd": "0o755", "usr/local/sbin/odmrctl": "0o755",
        "usr/local/bin/odmr-client": "0o755",
        "usr/local/share/doc/odmrd/LICENSE": "0o644",
        "usr/local/share/doc/odmrd/README.md": "0o644",
        "usr/local/share/doc/odmrd/examples/odmrd.conf.example": "0o644",
        "usr/local/lib/systemd/system/odmr-client.service": "0o644",
        "usr/local/lib/systemd/system/odmrd.service": "0o644",
        "etc/odmrd/odmrd.conf": "0o644", "etc/odmrd/tls": "0o700",
        "var/spool/odmrd": "0o700",
        "usr/local/share/man/man8/odmrd.8": "0o644",
        "usr/local/share/man/man8/odmrctl.8": "0o644",
        "usr/local/share/man/man1/odmr-client.1": "0o644",
        "usr/local/share/man/man5/odmrd.conf.5": "0o644",
    }
    for path, mode in expected.items():
        assert files.get(path) == mode, (path, files.get(path))
    sbin = os.path.join(dest, "usr", "local", "sbin")
    unit = open(os.path.join(dest, "usr/local/lib/systemd/system/odmr-client.service")).read()
    assert "ExecStart=/usr/local/bin/odmr-client " in unit
    unit = open(os.path.join(dest, "usr/local/lib/systemd/system/odmrd.service")).read()
    assert "ExecStart=/usr/local/sbin/odmrd -c /etc/odmrd/odmrd.conf\n" in unit
    # The installed programs use FHS paths, wherever the configuration file is.
    r = run(os.path.join(sbin, "odmrd"), "-h")
    assert "(default: /etc/odmrd/odmrd.conf)" in r.stdout
    r = run(os.path.join(sbin, "odmrd"), "-t", "-c", os.path.join(dest, "etc/odmrd/odmrd.conf"))
    if not os.path.exists("/etc/odmrd/users"):
        assert r.returncode == 78 and "/etc/odmrd/users:" in r.stderr, r.stderr
    # The in-tree build keeps ./run next to the configuration file.
    r = run(os.path.join(BIN, "odmrd"), "-t", "-c", os.path.join(dest, "etc/odmrd/odmrd.conf"))
    assert os.path.join(dest, "etc/odmrd/run/users") in r.stderr, r.stderr


# ---- man pages ----

MAN_PAGES = ("odmrd.8", "odmrctl.8", "odmr-client.1", "odmrd.conf.5")


def test_man_pages_are_clean():
    for page in MAN_PAGES:
        path = os.path.join(ROOT, "man", page)
        r = subprocess.run(["groff", "-wall", "-man", "-z", path], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)
        r = subprocess.run(["man", "--warnings", "-l", path], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, MANWIDTH="80", MAN_KEEP_STDERR="1"))
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)
        name, section = page.rsplit(".", 1)
        th = open(path).readline().split('"')
        assert th[0] == ".TH %s %s " % (name.upper(), section), th
        assert th[3] == "odmrd %s" % version_file(), (page, th[3])


def test_odmrd_conf_5_documents_every_key():
    with open(os.path.join(ROOT, "man", "odmrd.conf.5")) as f:
        text = f.read().replace("\\\n", "")
    for section, key in config_keys():
        assert '.SH "SECTION [%s]"' % section in text, section
        assert re.search(r"^\.BR? .*\b%s\b" % key, text, re.M), (section, key)


# ---- odmrd -n: what differs from the defaults ----

def test_odmrd_n_prints_only_changed_settings_as_ini(workdir):
    conf = os.path.join(workdir, "odmrd.conf")
    with open(conf, "w") as f:
        f.write("[server]\nuser = nobody\nspool = queue\nlog_level = info\n"
                "[intake]\nmax_message_size = 100M\ncommand_timeout = 600\nmax_errors = 20\n"
                "[odmr]\nlisten = 0.0.0.0:366 [::1]:366\n[queue]\nmax_hold = 36h\n")
    r = run(os.path.join(BIN, "odmrd"), "-c", conf, "-n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "[server]\nspool = %s/queue\nuser = nobody\n"
        "[intake]\nmax_message_size = 100M\ncommand_timeout = 10m\n"
        "[odmr]\nlisten = 0.0.0.0:366 [::1]:366\n"
        "[queue]\nmax_hold = 36h\n" % os.path.realpath(workdir)), r.stdout
    again = os.path.join(workdir, "again.conf")
    with open(again, "w") as f:
        f.write(r.stdout)
    assert run(os.path.join(BIN, "odmrd"), "-c", again, "-n").stdout == r.stdout
    assert run(os.path.join(BIN, "odmrd"), "--changed").stdout == ""


def test_example_shows_the_real_defaults(workdir):
    """Every commented value of the example, uncommented, is the default (odmrd -n prints
    nothing for it), except the keys whose example is not a default: those with no default
    (user, postmaster, tls_listen, ca, the bounce relay and postmaster), the metrics listener
    (off by default), the host name, and the installed paths (this is the in-tree build)."""
    conf = os.path.join(workdir, "odmrd.conf")
    with open(EXAMPLE) as f:
        text = re.sub(r"^;(\w+ = )", r"\1", f.read(), flags=re.M)
    with open(conf, "w") as f:
        f.write(text)
    r = run(os.path.join(BIN, "odmrd"), "-c", conf, "-n")
    assert r.returncode == 0, r.stderr
    shown, section = set(), None
    for line in r.stdout.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        else:
            shown.add("%s.%s" % (section, line.split(" = ")[0]))
    not_defaults = {"server.hostname", "server.user", "server.postmaster", "odmr.tls_listen", "tls.ca",
                    "bounce.relay", "bounce.postmaster", "metrics.listen",
                    "server.spool", "server.users", "tls.cert", "tls.key"}
    assert shown <= not_defaults, r.stdout


def test_every_source_file_names_its_licence():
    """Issue 11: the ISC licence (LICENSE) and a one-line SPDX header near the top of every
    source file (C, Python, shell, the Makefile)."""
    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert f.readline().startswith("ISC License"), "LICENSE is not the ISC licence"
    listed = subprocess.run(["git", "ls-files", "src", "tests", "fuzz", "scripts", "bench",
                             "Makefile", ".ci/run"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    missing = []
    for path in listed:
        if path.startswith("fuzz/corpus/") or path.endswith(".md"):
            continue
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            head = f.read(300)
        if not any("SPDX-License-Identifier: ISC" in line for line in head.split("\n")[:3]):
            missing.append(path)
    assert missing == [], missing
