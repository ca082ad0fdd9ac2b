"""What every subcommand shares: options generated from config dataclass fields (type, help and choices come from
the field), ``--config`` and ``--set`` on every command, one parser for lists, seeds and run directories, and one
error convention (exit code 2 with a single ``error:`` line naming the culprit)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing

from workbench.config import ConfigError, apply_overrides, from_dict, migrate, to_dict
from workbench.config.recipes import SCALES, apply_values, config_keys, load_recipe, merge_into
from workbench.engine.tracking import TRACKER_EXTRA, TRACKERS
from workbench.experiments.executors import EXECUTORS, RAY_EXTRA, Executor


def csv(s: str) -> list[str]:
    """Comma-separated names (datasets, methods, run directories)."""
    return [x.strip() for x in s.split(",") if x.strip()]


def ints(s: str) -> list[int]:
    """Comma-separated integers (seeds, k values)."""
    try:
        return [int(x) for x in csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def field_of(cls, key: str) -> tuple[dataclasses.Field, type]:
    """The dataclass field at dotted ``key`` of ``cls`` and the class that declares it."""
    *parents, last = key.split(".")
    for part in parents:
        cls = type(next(f for f in dataclasses.fields(cls) if f.name == part).default_factory())
    return next(f for f in dataclasses.fields(cls) if f.name == last), cls


def _parser_for(f: dataclasses.Field, owner) -> dict:
    hint = typing.get_type_hints(owner)[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the X
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    base = hint
    if typing.get_origin(base) is list:
        return {"type": ints if typing.get_args(base) == (int,) else csv}
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": base if base in (int, float) else str}


def add_config_options(p: argparse.ArgumentParser, cls, flags: dict) -> None:
    """``--flag`` options for the config fields named in ``flags`` (option name or tuple of names -> dotted key),
    then ``--config`` and ``--set``. Unset options leave the config alone."""
    group = p.add_argument_group(f"{cls.__name__} fields (every field: --set key=value)")
    for names, key in flags.items():
        f, owner = field_of(cls, key)
        names = (names,) if isinstance(names, str) else names
        kind = _parser_for(f, owner)
        if "choices" in f.metadata:
            kind["choices"] = [c for c in f.metadata["choices"] if c is not None]
        elif "action" not in kind:
            kind["metavar"] = key.split(".")[-1].upper()
        group.add_argument(*names, dest=f"cfg:{key}", default=None, help=f"{f.metadata.get('help', '')} [{key}]",
                           **kind)
    p.add_argument("--config", metavar="JSON", help="start from this config (e.g. an earlier run's config.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config field, e.g. --set tune.lr=0.03 (repeatable)")


def add_run_options(p: argparse.ArgumentParser, resume: bool = False) -> None:
    """The options of a command that writes one run directory."""
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    if resume:
        p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
        p.add_argument("--wait", action="store_true",
                       help="if another process is writing --out, wait for it instead of stopping with an error")
    add_quiet_option(p)
    add_tracker_option(p)


def add_quiet_option(p: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    """``--quiet``, on every subcommand that does work (bars show only on a terminal or in a notebook anyway)."""
    p.add_argument("--quiet", action="store_true", help=help)


def add_tracker_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracker", choices=TRACKERS, default="none",
                   help=f"mirror metrics.jsonl live to an experiment tracker: tensorboard writes <run>/tensorboard/ "
                        f"({TRACKER_EXTRA}); default none")


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """Where the rows of a grid run: ``--executor local|ray`` and Ray's address and resources per row."""
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help=f"where the rows run: local (this process, in order) or ray (Ray workers; {RAY_EXTRA})")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="ray: auto joins the cluster started with `ray start`, HOST:PORT a given one; "
                        "default: start one on this machine")
    p.add_argument("--cpus-per-run", type=float, default=1.0, metavar="N",
                   help="ray: CPUs (and torch threads) per row (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=0.0, metavar="N",
                   help="ray: GPUs per row, fractional to share a GPU (default 0)")


def executor_from_args(args) -> Executor:
    return Executor(args.executor, args.ray_address, args.cpus_per_run, args.gpus_per_run)


def add_recipe_options(p: argparse.ArgumentParser, command: str) -> None:
    """``--recipe NAME`` and ``--scale`` on a command that recipes configure (``command``: its name in recipes)."""
    p.add_argument("--recipe", metavar="NAME", help="start from a paper's settings (`workbench recipes` lists them); "
                   "--config, the named options and --set override its values")
    p.add_argument("--scale", choices=SCALES, default="paper",
                   help="the recipe's scale: paper (its values, default) or smoke (sized for a CPU)")
    p.set_defaults(recipe_command=command)


def read_json_arg(path: str, option: str = "--config") -> dict:
    """A JSON file named on the command line; a missing file or bad JSON is one error line naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as e:
        raise ConfigError(f"{option} {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{option} {path}:{e.lineno}: not valid JSON ({e.msg})") from None


def recipe_start(cls, args):
    """(config, record): the defaults of ``cls`` with ``--recipe``'s values for this command at ``--scale`` applied,
    and what the run records of the recipe (None without ``--recipe``)."""
    if not getattr(args, "recipe", None):
        if getattr(args, "scale", "paper") != "paper":
            raise ConfigError("--scale needs --recipe")
        return cls(), None
    recipe = load_recipe(args.recipe)
    values = recipe.values(args.recipe_command, args.scale, config_keys(cls).__contains__)
    try:
        return apply_values(cls(), values), recipe.record(args.scale)
    except ConfigError as e:
        raise ConfigError(f"recipe {args.recipe} ({args.scale}): {e}") from None


def config_from_args(cls, args):
    """The config of a command: the defaults, then ``--recipe``, then ``--config`` (old keys migrated; the keys it
    holds replace the recipe's), then the options given, then ``--set`` overrides; validated by the dataclasses."""
    cfg, record = recipe_start(cls, args)
    data = to_dict(cfg)
    if getattr(args, "config", None):
        given = read_json_arg(args.config)
        if not isinstance(given, dict):
            raise ConfigError(f"--config {args.config}: expected an object, got {type(given).__name__}")
        merge_into(data, migrate(cls, given))
    if record:
        data["recipe"] = record
    for dest, value in vars(args).items():
        if dest.startswith("cfg:") and value is not None:
            *parents, last = dest[4:].split(".")
            node = data
            for part in parents:
                node = node[part]
            node[last] = value
    if getattr(args, "overwrite", False) and "overwrite" in data:
        data["overwrite"] = True
    return apply_overrides(from_dict(cls, data), getattr(args, "overrides", None) or [])
