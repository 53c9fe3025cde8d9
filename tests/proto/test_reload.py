# SPDX-License-Identifier: ISC
"""SIGHUP re-reads the configuration file (issue 11): log_level, [server] users and [tls]
cert/key take effect at once; other changes are logged as needing a restart; a file that does
not load is refused and the running configuration stays."""
import os
import signal

from lifecycle import wait_log
from smtpwire import greet


def sighup(d, event="event=users.reloaded"):
    before = d.log().count(event)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, event, before + 1)


def rewrite(d, **changes):
    d.extra.update(changes)
    d.write_config()


def test_log_level_applies_and_other_keys_need_a_restart(make_odmrd):
    d = make_odmrd(extra={"server.log_level": "info"})
    wait_log(d, "event=started")
    greet(d.smtp_port).expect("QUIT", 221)
    assert "level=debug" not in d.log()
    rewrite(d, **{"server.log_level": "debug", "intake.max_errors": "7", "queue.max_hold": "2d"})
    sighup(d)
    log = d.log()
    assert "event=config.reloaded applied=yes restart_needed=2" in log
    assert "level=warn event=config.restart_needed keys=intake.max_errors,queue.max_hold" in log
    greet(d.smtp_port).expect("QUIT", 221)
    wait_log(d, "level=debug")
    assert d.stop() == 0


def test_users_path_applies(make_odmrd):
    d = make_odmrd()
    wait_log(d, "event=started")
    other = os.path.join(d.dir, "other-users")
    os.rename(d.users, other)
    rewrite(d, **{"server.users": other})
    before = d.log().count("event=users.reloaded users=2")
    sighup(d)
    assert d.log().count("event=users.reloaded users=2") == before + 1
    assert "event=config.reloaded applied=yes restart_needed=0" in d.log()
    assert "users.reload_failed" not in d.log()
    assert d.stop() == 0


def test_a_broken_file_is_refused_and_the_old_configuration_stays(make_odmrd):
    d = make_odmrd()
    wait_log(d, "event=started")
    with open(d.conf, "a") as f:
        f.write("[intake]\nno_such_key = 1\n")
    sighup(d)
    log = d.log()
    assert "level=error event=config.reload_failed error=" in log and "no_such_key" in log
    assert "keeping=old" in log and "event=config.reloaded" not in log
    greet(d.smtp_port).expect("QUIT", 221)      # still serving
    assert d.stop() == 0
