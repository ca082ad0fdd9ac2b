"""cli.benchmark."""
from __future__ import annotations

import sys
from pathlib import Path

from workbench.config import ConfigError
from workbench.engine.backbones import BackboneError
from workbench.engine.data import DataError
from workbench.engine.runs import RunError
from workbench.experiments.benchmark import ROWS, load_suite, run_benchmark
from workbench.learn.tuner import TuningError


# ----------------------------------------------------------------------------------------------- command line
def add_cli(sub):
    p = sub.add_parser("benchmark", help="run a benchmark suite (methods x datasets x k x seeds), resumable",
                       description="Run a declared benchmark grid into one directory; --resume continues it.")
    p.add_argument("--suite", required=True, help="suite file, e.g. benchmarks/suites/smoke.json")
    p.add_argument("--out", help="benchmark directory (default runs/bench-<suite name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted benchmark in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run_cli(args) -> int:
    out = args.out
    try:
        resolved = load_suite(args.suite)
        out = args.out or f"runs/bench-{resolved['name']}"
        cmd = ("python -m workbench benchmark --suite " + args.suite + (f" --out {args.out}" if args.out else "") +
               (" --resume" if args.resume else ""))
        res = run_benchmark(args.suite, out, resume=args.resume, progress=not args.quiet, command=cmd)
    except (ConfigError, DataError, BackboneError, RunError, TuningError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rows are kept in {out}/{ROWS}; continue with "
              f"python -m workbench benchmark --suite {args.suite} --out {out} --resume", file=sys.stderr)
        return 130
    print((Path(res["out"]) / "leaderboard.md").read_text(encoding="utf-8"))
    print(f"benchmark directory: {res['out']}")
    return 0
