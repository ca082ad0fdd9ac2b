"""One method of one benchmark against one method of another, paired by (dataset, k, seed): the effect of a change
that a suite cannot hold in one grid (a task-design variant run under the same protocol, say).

    python benchmarks/compare_rows.py --a runs/quality-unlabelled-variants/rows.jsonl:metapt \
        --b benchmarks/results/quality-unlabelled-2026-12-02.rows.jsonl:metapt [--metric test_acc]

Per cell and pooled over the cells (per seed, the mean over the cells both runs have), the paired statistics of
``workbench.engine.stats.paired_diffs`` (mean difference a − b, paired SD, t-test p, MDE, bootstrap interval). Before
that it shows how far apart the two runs are without the change: a method both ran (``--check``, default ``random``)
compared with itself (thread counts and bf16 evaluation can move a row by a point).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from workbench.engine.stats import paired_diffs


def load(spec: str) -> tuple[str, dict, dict]:
    path, _, method = spec.rpartition(":")
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    by = lambda m: {(r["dataset"], int(r["k"]), int(r["seed"])): r for r in rows if r["method"] == m}
    return method, by(method), by


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, metavar="ROWS.jsonl:METHOD")
    ap.add_argument("--b", required=True, metavar="ROWS.jsonl:METHOD")
    ap.add_argument("--metric", default="test_acc")
    ap.add_argument("--datasets", default="", help="only these datasets (comma-separated; default every shared one)")
    ap.add_argument("--check", default="random", help="a method both runs ran under the same protocol ('' = none)")
    args = ap.parse_args(argv)
    ma, a, by_a = load(args.a)
    mb, b, by_b = load(args.b)
    if args.check:  # the same method in both runs: how far apart the runs are without the change
        ca, cb = by_a(args.check), by_b(args.check)
        common = sorted(set(ca) & set(cb))
        if not common:
            sys.exit(f"error: {args.check!r} has no (dataset, k, seed) in both runs: cannot check the protocol")
        same = paired_diffs([100 * (ca[key][args.metric] - cb[key][args.metric]) for key in common])
        print(f"{args.check} in both runs ({len(common)} rows): identical in "
              f"{sum(ca[key][args.metric] == cb[key][args.metric] for key in common)}, mean a − b "
              f"{same['diff_mean']:+.2f} points, SD {same['paired_sd']:.2f} (run-to-run numerical noise)")
    keys = sorted(set(a) & set(b))
    if args.datasets:
        keys = [key for key in keys if key[0] in args.datasets.split(",")]
    if not keys:
        sys.exit("error: no (dataset, k, seed) in both runs")
    cells = sorted({(d, k) for d, k, _ in keys})
    seeds = sorted({s for *_, s in keys if all((d, k, s) in a and (d, k, s) in b for d, k in cells)})
    diff = lambda key: 100 * (a[key][args.metric] - b[key][args.metric])
    print(f"{ma} (a) − {mb} (b), {args.metric} in points, paired by seed")
    print(f"{'cell':<16} {'n':>3} {'a':>6} {'b':>6} {'a − b':>7} {'SD':>5} {'MDE':>5} {'p':>7}")
    for d, k in cells:
        ss = [s for dd, kk, s in keys if (dd, kk) == (d, k)]
        st = paired_diffs([diff((d, k, s)) for s in ss])
        print(f"{d + ' k=' + str(k):<16} {len(ss):>3} {100 * np.mean([a[d, k, s][args.metric] for s in ss]):6.1f} "
              f"{100 * np.mean([b[d, k, s][args.metric] for s in ss]):6.1f} {st['diff_mean']:+7.1f} "
              f"{st['paired_sd']:5.1f} {st['mde']:5.1f} {st['p_t']:7.2g}")
    pooled = paired_diffs([float(np.mean([diff((d, k, s)) for d, k in cells])) for s in seeds])
    print(f"{'pooled':<16} {len(seeds):>3} {'':>6} {'':>6} {pooled['diff_mean']:+7.1f} {pooled['paired_sd']:5.1f} "
          f"{pooled['mde']:5.1f} {pooled['p_t']:7.2g}  (95% bootstrap {pooled['ci_low']:+.1f} to {pooled['ci_high']:+.1f})")
    print(f"pooled_a_minus_b={pooled['diff_mean']:+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
