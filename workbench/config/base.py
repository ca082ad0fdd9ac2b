"""The machinery behind the config dataclasses: help metadata, JSON round trip, ``section.key=value`` overrides,
and the renames that let configs written by earlier versions load.

Overrides use one syntax everywhere (CLI ``--set``, suites, notebooks, tests): ``"tune.lr=0.03"``. Values are parsed
with ``ast.literal_eval`` when possible and checked against the field's type; unknown keys are an error that lists the
known ones; a renamed key names its new name.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import json
from dataclasses import field, fields
from typing import Any

DEFAULT_SEEDS = (13, 21, 42, 87, 100)  # the seeds every command uses unless told otherwise (defined only here)


class WorkbenchError(Exception):
    """Bad input (a file, a line or a parameter at fault): the command line prints the message as one ``error:``
    line with exit code 2, a notebook panel shows it. Every such error derives from this; anything else is a bug."""


class ConfigError(WorkbenchError, ValueError):
    """A configuration value is invalid; the message names the parameter."""


def knob(default, help: str, choices: tuple | None = None):
    """A dataclass field with its help text (and allowed values): the CLI builds its options from these."""
    meta = {"help": help, **({"choices": tuple(choices)} if choices else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls, help: str):
    """A nested config section (a dataclass field holding another config dataclass)."""
    return field(default_factory=cls, metadata={"help": help})


def check_choices(cfg, prefix: str) -> None:
    """Refuse a value outside a field's declared ``choices``, naming ``prefix.field``."""
    for f in fields(cfg):
        allowed = f.metadata.get("choices")
        if allowed is not None and getattr(cfg, f.name) not in allowed:
            raise ConfigError(f"{prefix}.{f.name} must be one of {list(allowed)}, got {getattr(cfg, f.name)!r}")


def check_positive(cfg, prefix: str, names: tuple, minimum=1) -> None:
    for name in names:
        if getattr(cfg, name) < minimum:
            raise ConfigError(f"{prefix}.{name} must be >= {minimum}, got {getattr(cfg, name)}")


# Keys renamed since configs were first written: {config class: {old dotted key: new dotted key}}. from_dict moves
# them (so old run directories and suite files still load); apply_overrides refuses them, naming the new key.
_LOOP = ("steps", "meta_batch", "support", "query", "inner_lr", "inner_steps", "optimizer", "lr", "weight_decay",
         "schedule", "grad_clip", "eval_every", "val_tasks", "checkpoint_every", "seed", "batched", "max_length")
_META_MOVED = {"meta.sources": "labelled.sources", "meta.source_datasets": "labelled.datasets",
               "meta.source_k": "labelled.k", "meta.corpus": "pseudo.corpus", "meta.features": "pseudo.features",
               "meta.n_clusters": "pseudo.n_clusters", "meta.n_way": "pseudo.n_way", "meta.label": "pseudo.label",
               "meta.template": "pseudo.template", "meta.corpus_limit": "pseudo.limit"}
RENAMED: dict[str, dict[str, str]] = {
    "FewShotConfig": dict(_META_MOVED),
    "Suite": dict(_META_MOVED),
    "MetaTrainConfig": {("meta_steps" if k == "steps" else k): f"meta.{k}" for k in _LOOP},
}


def literal(raw):
    """A value written on a command line (``"false"``, ``"6"``, ``"[1, 2]"``) as Python; other values unchanged."""
    if not isinstance(raw, str):
        return raw
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def migrate(cls, data: dict) -> dict:
    """``data`` with the keys that ``RENAMED`` lists for ``cls`` moved to their new places (a copy)."""
    renames = RENAMED.get(cls.__name__)
    if not renames:
        return data
    data = copy.deepcopy(data)
    if hasattr(cls, "migrate_old"):  # moves a class needs beyond renames
        cls.migrate_old(data)
    for old, new in renames.items():
        *parents, last = old.split(".")
        node = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            continue
        value = node.pop(last)
        *nparents, nlast = new.split(".")
        target = data
        for p in nparents:
            target = target.setdefault(p, {})
        target.setdefault(nlast, value)
    return data


def choice(name: str, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {[a for a in allowed]}, got {value!r}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_json(cfg) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected an object, got {type(data).__name__}")
    if not where:
        data = migrate(cls, data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {where + key!r}; known: {sorted(fields)}")
        sub = _dataclass_type(cls, key)
        kwargs[key] = from_dict(sub, value, f"{where}{key}.") if sub is not None else value
    return cls(**kwargs)


def _dataclass_type(cls, name):
    default = next(f for f in dataclasses.fields(cls) if f.name == name)
    if default.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        obj = default.default_factory()
        if dataclasses.is_dataclass(obj):
            return type(obj)
    return None


def apply_overrides(cfg, overrides: list[str]):
    """Return a copy of ``cfg`` with ``"a.b=value"`` overrides applied (validated by the dataclasses again)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if key in RENAMED.get(type(cfg).__name__, {}):
            raise ConfigError(f"{key!r} was renamed to {RENAMED[type(cfg).__name__][key]!r} (one name per knob "
                              f"everywhere); write --set {RENAMED[type(cfg).__name__][key]}={raw}")
        parts = key.split(".")
        node, cls = data, type(cfg)
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config section {p!r} in override {item!r}")
            node, cls = node[p], _dataclass_type(cls, p)
        last = parts[-1]
        if last not in node:
            raise ConfigError(f"unknown config key {key!r} in override {item!r}; known here: {sorted(node)}")
        node[last] = _coerce(raw, node[last], key, _annotation(cls, last))
    return from_dict(type(cfg), data)


def _annotation(cls, name: str) -> str:
    """The field's type annotation as written (a string under ``from __future__ import annotations``)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None) if cls is not None else None
    return str(f.type) if f is not None else ""


def _coerce(raw: str, current: Any, key: str, annotation: str = ""):
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if current is None and annotation.startswith("list") and isinstance(value, (str, tuple)):
        current = []  # an unset list field (default None): parse the value as a list
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false", "1", "0"):
            return str(value).lower() in ("true", "1")
        raise ConfigError(f"{key} expects true/false, got {raw!r}")
    if isinstance(current, float) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(current, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(current, list) and isinstance(value, tuple):
        return list(value)
    if not isinstance(value, type(current)):
        raise ConfigError(f"{key} expects {type(current).__name__}, got {raw!r}")
    return value
