"""One process per run directory: a second process is refused (naming the holder) or waits; a holder killed with
SIGKILL leaves a stale lock that the next process detects and takes over; a resumed benchmark never writes a row
twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_benchmark import data_dir, suite_dict, write_suite  # noqa: F401  (fixture re-export)
from workbench.engine.lock import RunLock, RunLockedError, lock_path
from workbench.engine.runs import RunDir

HOLDER = """
import sys, time
from workbench.engine.lock import RunLock
lock = RunLock(sys.argv[1]); lock.acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
lock.release()
"""


def hold(target: Path, seconds: float) -> subprocess.Popen:
    """A child process holding ``target``'s lock for ``seconds`` (returns once it holds it)."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(target), str(seconds)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_second_process_is_refused_with_the_holder_named_then_waits(tmp_path):
    target = tmp_path / "run"
    child = hold(target, 1.5)
    try:
        with pytest.raises(RunLockedError, match=rf"{target}.*pid {child.pid} on .* since .*--wait"):
            RunLock(target).acquire()
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"):  # every run directory writer takes the lock
            RunDir(target)
        assert not any(p.name.startswith(".run.partial") for p in tmp_path.iterdir())  # refused before building
        t0 = time.perf_counter()
        with RunLock(target, wait=True, poll=0.05) as lock:
            assert time.perf_counter() - t0 > 0.5 and child.wait(timeout=30) == 0  # it waited for the holder
            assert lock.stale is None  # a clean release is not stale
            assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    finally:
        child.kill()
        child.wait()
    assert not lock_path(target).exists()  # released: nothing left beside the run


def test_stale_lock_of_a_killed_process_is_detected_and_taken_over(tmp_path, capsys):
    target = tmp_path / "run"
    child = hold(target, 60)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert lock_path(target).exists()  # SIGKILL: the holder could not clean up
    with RunLock(target) as lock:
        assert lock.stale["pid"] == child.pid
    err = capsys.readouterr().err
    assert f"pid {child.pid}" in err and "taking it over" in err


def test_two_processes_resuming_one_benchmark_write_each_row_once(tiny, data_dir, tmp_path, capsys):  # noqa: F811
    from workbench.cli.main import main
    from workbench.experiments import benchmark

    suite = write_suite(tmp_path / "suite.json", suite_dict(tiny, methods=["zero-shot", "random"], seeds=[13]))
    out = tmp_path / "bench"
    child = hold(out, 60)  # another process is running (or resuming) this benchmark
    try:
        assert main(["benchmark", "--suite", str(suite), "--out", str(out), "--resume", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"pid {child.pid}" in err and "--wait" in err
        assert not out.exists()  # refused before anything was written
    finally:
        child.send_signal(signal.SIGKILL)  # it dies in the middle: its lock is stale
        child.wait()
    assert main(["benchmark", "--suite", str(suite), "--out", str(out), "--resume", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == len({benchmark.row_key(r) for r in rows}) == 4  # 2 k x 2 methods x 1 seed, once each
    assert main(["benchmark", "--suite", str(suite), "--out", str(out), "--resume", "--quiet"]) == 0
    assert len((out / "rows.jsonl").read_text().splitlines()) == 4
