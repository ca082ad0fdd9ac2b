"""``workbench benchmark``: a declared, resumable grid (inits x datasets x k x seeds) with paired statistics."""
from __future__ import annotations

import ast
import dataclasses
import json
import sys
from pathlib import Path

from workbench.cli.common import add_executor_options, add_quiet_option, add_recipe_options, add_tracker_option, \
    executor_from_args, read_json_arg
from workbench.config import ConfigError, FewShotConfig
from workbench.config.recipes import config_keys, load_recipe, merge_into, nested
from workbench.experiments.benchmark import ROWS, Suite, config_sections, load_suite, run_benchmark


def add_cli(sub):
    p = sub.add_parser("benchmark", help="run a benchmark suite (methods x datasets x k x seeds), resumable",
                       description="Run a declared benchmark grid into one directory; --resume continues it.")
    p.add_argument("--suite", "--config", dest="suite", metavar="JSON",
                   help="suite file, e.g. benchmarks/suites/smoke.json (with --recipe: laid over the recipe's suite)")
    add_recipe_options(p, "benchmark")
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
    return apply_suite_overrides(json.loads(Path(path).read_text(encoding="utf-8")), overrides)


def apply_suite_overrides(data: dict, overrides: list[str]) -> dict:
    """``data`` (a suite's JSON) with ``key=value`` overrides applied in place."""
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


def suite_key(key: str) -> bool:
    """Whether ``key`` (dotted) is a suite field or a key of a FewShotConfig section a suite shares."""
    return key in {f.name for f in dataclasses.fields(Suite)} or (
        key.split(".")[0] in config_sections() and key in config_keys(FewShotConfig))


def suite_from_args(args) -> tuple:
    """(the suite: a file path or its data, its name): ``--suite`` alone, or ``--recipe``'s suite with ``--suite``'s
    keys laid over it; then ``--set``."""
    if not args.recipe:
        if args.scale != "paper":
            raise ConfigError("--scale needs --recipe")
        if not args.suite:
            raise ConfigError("benchmark needs --suite FILE or --recipe NAME (workbench recipes lists them)")
        return suite_with_overrides(args.suite, args.overrides), load_suite(args.suite)["name"]
    recipe = load_recipe(args.recipe)
    name = recipe.name + ("" if args.scale == "paper" else f"-{args.scale}")
    data = {"name": name, "description": recipe.description,
            **nested(recipe.values("benchmark", args.scale, suite_key))}
    if args.suite:
        merge_into(data, read_json_arg(args.suite, "--suite"))
    data = apply_suite_overrides(data, args.overrides)
    data["recipe"] = recipe.record(args.scale)
    return data, data.get("name", name)


def run_cli(args) -> int:
    suite, name = suite_from_args(args)
    out = args.out or f"runs/bench-{name}"
    executor = executor_from_args(args)
    source = (f" --recipe {args.recipe} --scale {args.scale}" if args.recipe else "") + \
        (f" --suite {args.suite}" if args.suite else "")
    cmd = ("workbench benchmark" + source + "".join(f" --set {o}" for o in args.overrides) +
           (f" --out {args.out}" if args.out else "") + (" --resume" if args.resume else "") +
           (f" --executor {args.executor}" if args.executor != "local" else ""))
    try:
        res = run_benchmark(suite, out, resume=args.resume, progress=not args.quiet, command=cmd, wait=args.wait,
                            executor=executor)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rows are kept in {out}/{ROWS}; continue with "
              f"workbench benchmark{source} --out {out} --resume" +
              (f" --executor {args.executor}" if args.executor != "local" else ""), file=sys.stderr)
        return 130
    print((Path(res["out"]) / "leaderboard.md").read_text(encoding="utf-8"))
    print(f"benchmark directory: {res['out']}")
    return 0
