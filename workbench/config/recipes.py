"""Recipes: the papers' own settings as presets, one JSON file per recipe in ``workbench/recipes/`` (shipped with the
package).

A recipe file holds ``name``, ``paper``, ``family`` (the Hugging Face ``model_type`` of its backbone: t5, roberta,
gpt2, llama, ...), ``backbone`` (set as ``backbone.name`` in every command), ``description``, ``settings`` (dotted
keys applied to every command of the recipe whose configuration has that key), ``commands`` (command -> dotted keys
of that command only; the commands listed are the ones the recipe is for), ``sources`` (key -> where its value
comes from; ``"command:key"`` names a value one command sets differently), ``unconfirmed`` (keys whose value no
source confirms: a workbench choice, a convention or an UNVERIFIED recollection), ``deviations`` (setting -> why the
recipe cannot or does not follow the paper, e.g. ``"pending knob: ..."``) and ``scales`` (scale -> ``settings`` and
``commands`` laid over the paper's values: ``smoke`` fits a CPU in seconds). Every value of the paper scale has a
source or is unconfirmed (checked by :func:`check_recipe`); scale values are sized for a machine, not sourced.

Precedence on the command line: the config's defaults < the recipe < ``--config`` < named options < ``--set``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.config.base import ConfigError, apply_overrides

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
SCALES = ("paper", "smoke")
KEYS = ("name", "paper", "family", "backbone", "description", "settings", "commands", "sources", "unconfirmed",
        "deviations", "scales")


@dataclass(frozen=True)
class Recipe:
    name: str
    paper: str
    family: str
    backbone: str
    description: str
    settings: dict
    commands: dict
    sources: dict
    unconfirmed: list
    deviations: dict
    scales: dict
    sha256: str

    def record(self, scale: str) -> dict:
        """What a run records of the recipe it started from."""
        return {"name": self.name, "scale": scale, "sha256": self.sha256}

    def source(self, command: str, key: str) -> str | None:
        """Where the value of ``key`` in ``command`` comes from (None: not sourced)."""
        return self.sources.get(f"{command}:{key}", self.sources.get(key))

    def unconfirmed_at(self, command: str, key: str) -> bool:
        return key in self.unconfirmed or f"{command}:{key}" in self.unconfirmed

    def paper_items(self, command: str, accepts: Callable[[str], bool]) -> dict:
        """The paper-scale values of ``command``: backbone, the shared settings it accepts, then its own."""
        return {"backbone.name": self.backbone, **{k: v for k, v in self.settings.items() if accepts(k)},
                **self.commands[command]}

    def values(self, command: str, scale: str, accepts: Callable[[str], bool]) -> dict:
        """Dotted key -> value for ``command`` at ``scale``, in the order they apply (later ones win)."""
        if command not in self.commands:
            raise ConfigError(f"recipe {self.name!r} is not for {command!r}; it is for: {', '.join(self.commands)} "
                              f"(known recipes: {', '.join(recipe_names())})")
        if scale not in SCALES:
            raise ConfigError(f"--scale must be one of {list(SCALES)}, got {scale!r}")
        over = self.scales.get(scale, {}) if scale != "paper" else {}
        return {**self.paper_items(command, accepts), **{k: v for k, v in over.get("settings", {}).items()
                                                         if accepts(k)}, **over.get("commands", {}).get(command, {})}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.json"))


def load_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name is an error that lists the known ones."""
    path = RECIPE_DIR / f"{name}.json"
    if not name or "/" in name or not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(recipe_names())} (workbench recipes)")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    missing = [k for k in KEYS if k not in data]
    unknown = [k for k in data if k not in KEYS]
    if missing or unknown or data["name"] != name:
        raise ConfigError(f"{path}: a recipe has exactly the keys {list(KEYS)} and its file's name "
                          f"(missing {missing}, unknown {unknown}, name {data.get('name')!r})")
    return Recipe(**data, sha256=hashlib.sha256(raw).hexdigest())


def config_keys(cls, prefix: str = "") -> set[str]:
    """Every dotted field key of config dataclass ``cls`` (sections recursed into)."""
    keys = set()
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            keys |= config_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def apply_values(cfg, values: dict):
    """``cfg`` with dotted ``values`` applied through the override machinery (types checked, then validated)."""
    return apply_overrides(cfg, [f"{k}={v!r}" for k, v in values.items()])


def merge_into(base: dict, top: dict) -> dict:
    """``top`` laid over ``base`` in place, recursing where both hold an object; returns ``base``."""
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_into(base[key], value)
        else:
            base[key] = value
    return base


def nested(values: dict) -> dict:
    """Dotted keys as nested objects: ``{"tune.lr": 0.1}`` -> ``{"tune": {"lr": 0.1}}``."""
    out: dict = {}
    for key, value in values.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def check_recipe(recipe: Recipe, accepts: dict[str, Callable[[str], bool]]) -> list[str]:
    """What is wrong with ``recipe`` (empty: nothing): a value without a source that is not listed as unconfirmed,
    an UNVERIFIED source not listed as unconfirmed, a shared setting no command takes, a stale source or
    unconfirmed key, a backbone outside the family. ``accepts``: command -> whether its config has a key."""
    problems = [f"command {c!r} is not one of {sorted(accepts)}" for c in recipe.commands if c not in accepts]
    used = {"backbone"}
    for key in recipe.settings:
        if not any(accepts[c](key) for c in recipe.commands if c in accepts):
            problems.append(f"setting {key!r} applies to none of {list(recipe.commands)}")
    for command in (c for c in recipe.commands if c in accepts):
        for key in recipe.paper_items(command, accepts[command]):
            key = "backbone" if key == "backbone.name" else key
            src = recipe.source(command, key)
            used |= {key, f"{command}:{key}"}
            unconfirmed = recipe.unconfirmed_at(command, key)
            if src is None and not unconfirmed:
                problems.append(f"{command}: {key} has no source and is not listed as unconfirmed")
            if src is not None and "UNVERIFIED" in src and not unconfirmed:
                problems.append(f"{command}: {key}'s source is UNVERIFIED but the key is not listed as unconfirmed")
    problems += [f"source for unused key {k!r}" for k in recipe.sources if k not in used]
    problems += [f"unconfirmed lists unused key {k!r}" for k in recipe.unconfirmed if k not in used]
    if recipe.family.lower() not in recipe.backbone.lower():
        problems.append(f"backbone {recipe.backbone!r} is not of family {recipe.family!r}")
    problems += [f"unknown scale {s!r}" for s in recipe.scales if s not in SCALES]
    return problems
