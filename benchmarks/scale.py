"""A benchmark suite through Ray workers against the local executor, side by side on this machine.

    python benchmarks/scale.py [--suite benchmarks/suites/smoke.json] [--threads-local 2] [--set K=V ...]

Runs the suite twice, each in a fresh subprocess writing a fresh directory (and a fresh meta-init cache, so neither
reuses the other's training): ``--executor local`` with ``--threads-local`` torch threads, then ``--executor ray``
with a local Ray cluster started by the command on all of this machine's CPUs (one worker per CPU), one row per
worker, one torch thread each. Prints each path's wall time
and rows per second, the largest difference of test accuracy between the two paths' rows (threads change float
summation order, so small differences are possible), and the scaling efficiency (speed-up / workers, against the
local run). The last line is ``ray_over_local=<local wall seconds / ray wall seconds>``. On an otherwise idle machine, this is the figure issue #14 asks for (target >= 1.3 on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(suite: str, out: Path, cache: Path, executor: list[str], threads: int, sets: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WORKBENCH_CACHE": str(cache),
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "workbench", "benchmark", "--suite", suite, "--out", str(out), "--quiet", *executor]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def rows(out: Path) -> dict:
    data = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    return {(r["dataset"], r["k"], r["method"], r["seed"]): r for r in data}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default=str(ROOT / "benchmarks" / "suites" / "smoke.json"))
    ap.add_argument("--threads-local", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="a suite override for both runs")
    a = ap.parse_args(argv)
    a.workers = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        tmp = Path(tmp)
        local = run(a.suite, tmp / "local", tmp / "cache-local", [], a.threads_local, a.sets)
        ray = run(a.suite, tmp / "ray", tmp / "cache-ray",
                  ["--executor", "ray", "--cpus-per-run", "1"], 1, a.sets)
        lr, rr = rows(tmp / "local"), rows(tmp / "ray")
    if set(lr) != set(rr):
        raise SystemExit(f"the two paths ran different rows: {sorted(set(lr) ^ set(rr))[:5]}")
    diff = max(abs(lr[k]["test_acc"] - rr[k]["test_acc"]) for k in lr)
    n = len(lr)
    print(f"machine: cpus={os.cpu_count()} suite={a.suite} rows={n} overrides={a.sets}")
    print(f"local ({a.threads_local} threads): {local:.1f} s wall, {n / local:.3f} rows/s")
    print(f"ray ({a.workers} workers x 1 thread): {ray:.1f} s wall, {n / ray:.3f} rows/s")
    print(f"max |test_acc local - ray| over rows: {100 * diff:.2f} points")
    print(f"scaling efficiency (speed-up / workers): {local / ray / a.workers:.2f}")
    print(f"ray_over_local={local / ray:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
