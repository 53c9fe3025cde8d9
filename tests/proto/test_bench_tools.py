# SPDX-License-Identifier: ISC
"""The benchmarks' own measuring tools (bench/README.md): bench/disklimit.c through bench/limits
(every mode, the --gap-us pause, the commit_us field, argument checks) and bench/intake's
lone-session ceiling arithmetic. Short runs in a temporary directory; the figures are not
judged, only that each field means what it says."""
import importlib.machinery
import importlib.util
import io
import os
import subprocess
import sys
from contextlib import redirect_stdout

import pytest

from conftest import ROOT


def load(name):
    path = os.path.join(ROOT, "bench", name)
    loader = importlib.machinery.SourceFileLoader("bench_" + name, path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(mod)
    return mod


limits = load("limits")


@pytest.mark.parametrize("mode", ["wal", "ring", "files"])
def test_each_mode_reports_its_fields_and_leaves_nothing(tmp_path, mode):
    f = limits.run_fields(mode, str(tmp_path), 1, 0.3, 1024)
    assert f["writers"] == 1 and f["size"] == 1024 and f["gap_us"] == 0
    assert f["records/s"] > 0 and f["syncs/s"] > 0 and f["commit_us"] > 0
    # A lone writer without a gap spends nearly all its time waiting for its commits.
    assert 0.5 <= f["records/s"] * f["commit_us"] / 1e6 <= 1.05
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", ["wal", "ring"])
def test_the_gap_is_slept_after_each_record(tmp_path, mode):
    gap_us = 20000
    f = limits.run_fields(mode, str(tmp_path), 1, 0.5, 1024, gap_us)
    assert f["gap_us"] == gap_us
    # One writer, 20 ms asleep after each record: at most 50 records a second.
    assert 0 < f["records/s"] <= 1e6 / gap_us
    assert 0 < f["commit_us"] < gap_us   # the pause is not counted as the commit's time


def test_commit_after_gap_gives_one_time_per_run(tmp_path):
    out = limits.measure_commit_after_gap(str(tmp_path), 4096, 1000, 2, 0.3)
    assert len(out) == 2 and all(us > 0 for us in out)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", [
    ["bogus", "DIR", "1", "1", "1024"],
    ["wal", "DIR", "1", "1", "1024", "-5"],
    ["ring", "DIR", "1", "1", str(65 << 20)],    # a record larger than the ring
    ["wal", "DIR", "0", "1", "1024"],
])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, args):
    argv = [limits.disklimit()] + [str(tmp_path) if a == "DIR" else a for a in args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stdout == "" and "disklimit: bad arguments" in r.stderr
    assert os.listdir(tmp_path) == []


def test_limits_refuses_a_negative_gap():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "limits"), "--gap-us", "-1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--gap-us must not be negative" in r.stderr


def test_lone_session_ceiling_is_load_time_plus_sync():
    intake = load("intake")
    # load generator 4000 msg/s (250 us) + a 250 us sync: 2000 msg/s.
    results = {(1024, 1): {"sink": [3000, 4000, 5000], "odmrd": [1000, 1500, 1600],
                           "postfix": [500, 600, 700]},
               (1024, 20): {"sink": [], "odmrd": [9000], "postfix": [900]}}
    out = io.StringIO()
    with redirect_stdout(out):
        intake.print_lone_ceiling(results, {1024: [200, 250, 300]})
    lines = out.getvalue().strip().splitlines()
    assert lines[1:] == ["    1024 octets: load alone 4000 msg/s (250 us), sync after it 250 us "
                         "-> ceiling 2000 msg/s; odmrd 75% of it, Postfix 30%; the target 2.5x "
                         "Postfix would be 75% of it"]
