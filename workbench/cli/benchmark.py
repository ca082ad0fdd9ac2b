"""``workbench benchmark``: a declared, resumable grid (inits x datasets x k x seeds) with paired statistics."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from workbench.cli.common import add_executor_options, add_quiet_option, add_tracker_option, executor_from_args
from workbench.config import ConfigError
from workbench.experiments.benchmark import ROWS, load_suite, run_benchmark


def add_cli(sub):
    p = sub.add_parser("benchmark", help="run a benchmark suite (methods x datasets x k x seeds), resumable",
                       description="Run a declared benchmark grid into one directory; --resume continues it.")
    p.add_argument("--suite", "--config", dest="suite", required=True, metavar="JSON",
                   help="suite file, e.g. benchmarks/suites/smoke.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite field, e.g. --set tune.steps=10 or --set seeds=[13,21] (repeatable)")
    p.add_argument("--out", help="benchmark directory (default runs/bench-<suite name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted benchmark in --out")
    p.add_argument("--wait", action="store_true",
                   help="if another process is writing --out, wait for it instead of stopping with an error")
    add_quiet_option(p, "no progress bar")
    add_executor_options(p)
    add_tracker_option(p)
    return p


def suite_with_overrides(path: str, overrides: list[str]):
    """The suite file's JSON with ``key=value`` overrides applied (validated when the suite is resolved)."""
    if not overrides:
        return path
    load_suite(path)  # the file itself must be valid (names the file and line otherwise)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        *parents, last = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def run_cli(args) -> int:
    suite = suite_with_overrides(args.suite, args.overrides)
    name = load_suite(args.suite)["name"]
    out = args.out or f"runs/bench-{name}"
    executor = executor_from_args(args)
    cmd = ("workbench benchmark --suite " + args.suite + "".join(f" --set {o}" for o in args.overrides) +
           (f" --out {args.out}" if args.out else "") + (" --resume" if args.resume else "") +
           (f" --executor {args.executor}" if args.executor != "local" else ""))
    try:
        res = run_benchmark(suite, out, resume=args.resume, progress=not args.quiet, command=cmd, wait=args.wait,
                            executor=executor)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rows are kept in {out}/{ROWS}; continue with "
              f"workbench benchmark --suite {args.suite} --out {out} --resume" +
              (f" --executor {args.executor}" if args.executor != "local" else ""), file=sys.stderr)
        return 130
    print((Path(res["out"]) / "leaderboard.md").read_text(encoding="utf-8"))
    print(f"benchmark directory: {res['out']}")
    return 0
