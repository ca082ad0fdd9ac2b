"""Checked notebook parameters: every notebook calls :func:`check_parameters` first, in the cell after its
``parameters`` cell, before it loads a model or creates a directory.

A notebook's parameters mirror config fields (same meaning, mostly the same name): :data:`NOTEBOOKS` maps each
parameter to the field it sets (:class:`Knob`: a config class and a dotted field path) or, for the few parameters
that set no field (``interactive``, ``out_dir`` of a notebook writing several runs), to its own type (:class:`Own`).
Types come from the dataclasses' annotations, allowed values from the fields' ``choices`` metadata and, for names of
methods, learners, task sources and task types, from the registries. A wrong value is one :class:`ParameterError`
line naming the parameter and the papermill syntax that works (``-p`` parses a scalar; a list must go as YAML with
``-y``); IPython prints that line instead of a traceback.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Callable

from workbench.config import (
    TASK_TYPES,
    ClusterConfig,
    DomainGenConfig,
    ExploreConfig,
    FewShotConfig,
    MetaTrainConfig,
    SelfSupConfig,
    SimilarityConfig,
    WorkbenchError,
)
from workbench.experiments.bayes_modes import MODES, BayesRunConfig
from workbench.experiments.fewshot import known_methods
from workbench.experiments.walkthroughs import SUPMER_VARIANTS
from workbench.learn.inits import INITS
from workbench.learn.meta import LEARNERS
from workbench.tasks.episodes import SOURCES


class ParameterError(WorkbenchError, ValueError):
    """A notebook parameter of the wrong type or outside its allowed values; shown by IPython as one line."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


@dataclass(frozen=True)
class Knob:
    """The parameter sets ``config``'s field at ``path`` (dotted through sections); ``item``: one element of that
    list field (``dataset`` of a run over ``datasets``)."""

    config: type
    path: str
    item: bool = False


@dataclass(frozen=True)
class Own:
    """A parameter that sets no config field: its type (``bool``, ``list[int]``, ``str | None`` ...) and choices."""

    type: object
    choices: tuple | None = None


# names a list or string field may hold, by (config class, field name): the registries, filled by `import workbench`
NAMES: dict[tuple[type, str], Callable[[], list]] = {
    (FewShotConfig, "methods"): known_methods,
    (DomainGenConfig, "methods"): lambda: sorted(INITS),
    (MetaTrainConfig, "method"): lambda: sorted(LEARNERS),
    (MetaTrainConfig, "source"): lambda: sorted(SOURCES),
    (SelfSupConfig, "types"): lambda: list(TASK_TYPES),
    (BayesRunConfig, "modes"): lambda: list(MODES),
    (BayesRunConfig, "baselines"): lambda: ["zero-shot", *sorted(INITS)],
}

_FEWSHOT = {"backbone": Knob(FewShotConfig, "backbone.name"), "k": Knob(FewShotConfig, "k"),
            "seeds": Knob(FewShotConfig, "seeds"), "prompt_length": Knob(FewShotConfig, "prompt.length"),
            "test_limit": Knob(FewShotConfig, "test_limit"), "overwrite": Knob(FewShotConfig, "overwrite"),
            "interactive": Own(bool)}
NOTEBOOKS: dict[str, dict[str, Knob | Own]] = {
    "00_quickstart": {
        **_FEWSHOT, "dataset": Knob(FewShotConfig, "datasets", item=True), "methods": Knob(FewShotConfig, "methods"),
        "steps": Knob(FewShotConfig, "tune.steps"), "lr": Knob(FewShotConfig, "tune.lr"),
        "max_length": Knob(FewShotConfig, "tune.max_length"), "eval_every": Knob(FewShotConfig, "tune.eval_every"),
        "snapshot_every": Knob(FewShotConfig, "tune.snapshot_every"), "out_dir": Knob(FewShotConfig, "out")},
    "01_clustering": {
        **{p: Knob(ClusterConfig, p) for p in ("corpus", "method", "n_clusters", "limit", "seed", "drop_empty",
                                               "overwrite")},
        "backbone": Knob(ClusterConfig, "backbone.name"), "projection": Knob(ExploreConfig, "projection"),
        "umap_neighbors": Own(int), "n_clusters_sweep": Own(list[int]), "out_dir": Knob(ClusterConfig, "out"),
        "interactive": Own(bool)},
    "02_meta_training": {
        **_FEWSHOT, "method": Knob(MetaTrainConfig, "method"), "source": Knob(MetaTrainConfig, "source"),
        "labelled_sources": Knob(MetaTrainConfig, "labelled.sources"),
        "labelled_datasets": Knob(MetaTrainConfig, "labelled.datasets"), "targets": Knob(FewShotConfig, "datasets"),
        "pseudo_corpus": Knob(MetaTrainConfig, "pseudo.corpus"),
        "pseudo_features": Knob(MetaTrainConfig, "pseudo.features"),
        "pseudo_n_clusters": Knob(MetaTrainConfig, "pseudo.n_clusters"),
        "labelled_k": Knob(MetaTrainConfig, "labelled.k"),
        "meta_steps": Knob(MetaTrainConfig, "meta.steps"), "meta_batch": Knob(MetaTrainConfig, "meta.meta_batch"),
        "meta_eval_every": Knob(MetaTrainConfig, "meta.eval_every"), "tune_steps": Knob(FewShotConfig, "tune.steps"),
        "tune_max_length": Knob(FewShotConfig, "tune.max_length"),
        "tune_eval_every": Knob(FewShotConfig, "tune.eval_every"),
        "tune_snapshot_every": Knob(FewShotConfig, "tune.snapshot_every"), "similarity": Own(bool),
        "similarity_steps": Knob(SimilarityConfig, "tune.steps"), "out_dir": Own(str)},
    "02b_supmer": {
        "backbone": Knob(MetaTrainConfig, "backbone.name"),
        **{f"selfsup_{f}": Knob(MetaTrainConfig, f"selfsup.{f}") for f in ("corpus", "n_clusters", "limit")},
        **{f: Knob(MetaTrainConfig, f"selfsup.{f}") for f in ("n_options", "types", "per_task_support",
                                                              "per_task_query")},
        "prompt_length": Knob(MetaTrainConfig, "prompt.length"),
        **{f"meta_{f}": Knob(MetaTrainConfig, f"meta.{f}") for f in ("max_length", "steps")},
        "meta_batch": Knob(MetaTrainConfig, "meta.meta_batch"),
        "ablations": Own(list[str], tuple(v for v in SUPMER_VARIANTS if v != "full")),
        **{f"dg_{f}": Knob(DomainGenConfig, f) for f in ("source", "targets", "methods")},
        **{f: Knob(DomainGenConfig, f) for f in ("k", "seeds", "test_limit", "overwrite")},
        **{f"tune_{f}": Knob(DomainGenConfig, f"tune.{f}") for f in ("steps", "lr", "eval_every", "max_length")},
        "out_dir": Own(str), "interactive": Own(bool)},
    "03_bayesian_prompts": {
        "dataset": Knob(BayesRunConfig, "datasets", item=True), "backbone": Knob(BayesRunConfig, "backbone.name"),
        "k": Knob(BayesRunConfig, "k"), "seed": Knob(BayesRunConfig, "seeds", item=True),
        "baselines": Knob(BayesRunConfig, "baselines"), "mode": Own(str, (*MODES, "all")),
        **{f: Knob(BayesRunConfig, f"bayes.{f}") for f in ("features", "components", "covariance", "pca_dim",
                                                           "density_data", "n_particles", "iterations", "step_size",
                                                           "record_every")},
        "ensemble_size": Knob(BayesRunConfig, "ensemble_size"), "steps": Knob(BayesRunConfig, "tune.steps"),
        "lr": Knob(BayesRunConfig, "tune.lr"), "prompt_length": Knob(BayesRunConfig, "prompt.length"),
        "max_length": Knob(BayesRunConfig, "tune.max_length"), "test_limit": Knob(BayesRunConfig, "test_limit"),
        "projection": Knob(ExploreConfig, "projection"), "out_dir": Knob(BayesRunConfig, "out"),
        "overwrite": Knob(BayesRunConfig, "overwrite"), "interactive": Own(bool)},
    "04_embedding_space": {
        **{p: Knob(ExploreConfig, p) for p in ("runs", "dataset", "projection", "neighbours", "n_vocab", "method",
                                               "seed", "n_examples", "match", "cluster_dir", "bayes_dir")},
        "out_dir": Knob(ExploreConfig, "out"), "interactive": Own(bool)},
    "05_results": {"bench_dir": Own(str), "out_dir": Own(str), "interactive": Own(bool)},
}


# ----------------------------------------------------------------------------------------------- types
def _field(cls: type, path: str) -> tuple[type, dataclasses.Field, object]:
    """The dataclass holding the last field of ``path``, that field, and its annotation as a type."""
    *sections, name = path.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    return cls, fields[name], typing.get_type_hints(cls)[name]


def _args(tp) -> tuple:
    """The members of a union type (``int | None`` -> (int, NoneType)); a plain type alone."""
    return typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else (tp,)


def _is(value, tp) -> bool:
    """Whether ``value`` has type ``tp`` (bool is not an int; an int is a float; lists check every element)."""
    members = _args(tp)
    if len(members) > 1:
        return any(_is(value, t) for t in members)
    if tp is type(None):
        return value is None
    if typing.get_origin(tp) in (list, tuple) or tp in (list, tuple):
        elem = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not elem or all(_is(v, elem[0]) for v in value))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _name(tp) -> str:
    if len(_args(tp)) > 1:
        return " or ".join(_name(t) for t in _args(tp))
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) in (list, tuple):
        return f"a list of {_name(typing.get_args(tp)[0])}" if typing.get_args(tp) else "a list"
    return getattr(tp, "__name__", str(tp))


def _is_list(tp) -> bool:
    return any(typing.get_origin(t) in (list, tuple) or t in (list, tuple) for t in _args(tp))


# ----------------------------------------------------------------------------------------------- hints
def _yaml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _list_hint(name: str, value) -> str:
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [value]
    return f"with papermill pass lists as YAML: -y '{{{name}: {_yaml(items or ['a', 'b'])}}}'"


def _scalar_hint(name: str, tp, default) -> str:
    """``-p name value`` (papermill parses ints, floats, True/False/None), an example from the field's default."""
    scalar = [t for t in _args(tp) if t is not type(None)]
    example = default if default is not None else f"<{_name(scalar[0]) if scalar else 'value'}>"
    none = f" (None: -p {name} None)" if type(None) in _args(tp) else ""
    return f"with papermill: -p {name} {example}{none}"


# ----------------------------------------------------------------------------------------------- checks
def _spec_of(spec: Knob | Own) -> tuple[object, tuple | None, Callable | None, object]:
    """(type, choices, names, default) of a parameter's spec."""
    if isinstance(spec, Own):
        return spec.type, spec.choices, None, None
    cls, f, tp = _field(spec.config, spec.path)
    names = NAMES.get((cls, f.name))
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    if spec.item:  # one element of a list field
        tp = typing.get_args(_args(tp)[0])[0]
        default = default[0] if default else None
    return tp, f.metadata.get("choices"), names, default


def check_value(name: str, value, spec: Knob | Own) -> None:
    """Raise :class:`ParameterError` when ``value`` does not fit ``spec`` (type, choices, registered names)."""
    tp, choices, names, default = _spec_of(spec)
    if not _is(value, tp):
        if _is_list(tp) and not isinstance(value, (list, tuple)):
            raise ParameterError(f"{name} must be {_name(tp)}, got {value!r}; {_list_hint(name, value)}")
        raise ParameterError(f"{name} must be {_name(tp)}, got {value!r} ({type(value).__name__}); "
                             f"{_scalar_hint(name, tp, default)}")
    items = value if isinstance(value, (list, tuple)) else [value]
    if choices is not None:
        bad = [v for v in items if v not in choices]
        if bad:
            shown = repr(bad[0]) if len(bad) == 1 else repr(bad)
            raise ParameterError(f"{name} must be one of {list(choices)}, got {shown}")
    if names is not None and value is not None:
        known = names()
        bad = [v for v in items if v not in known]
        if bad:
            raise ParameterError(f"{name}: unknown name(s) {bad}; known: {known}")


_DATA = (bool, int, float, str, list, tuple, dict, type(None))
_KERNEL = ("In", "Out")  # IPython's own globals that hold data


def _unknown(spec: dict, values: dict) -> list[str]:
    """Data-valued globals that no parameter declares: papermill injects a misspelled ``-p`` name as a new
    variable (and only warns), so the notebook would silently run with the default of the intended one."""
    return sorted(n for n, v in values.items() if not n.startswith("_") and n not in spec and n not in _KERNEL
                  and isinstance(v, _DATA))


def check_parameters(notebook: str, values: dict) -> None:
    """Check the parameters of ``notebook`` (a key of :data:`NOTEBOOKS`, the file's stem) in ``values`` (the
    notebook's ``globals()``): no unknown (misspelled) parameter, then each one's type, choices and registered
    names. Raises :class:`ParameterError` (one line) at the first wrong one."""
    if notebook not in NOTEBOOKS:
        raise ParameterError(f"no parameter spec for notebook {notebook!r}; known: {sorted(NOTEBOOKS)}")
    unknown = _unknown(NOTEBOOKS[notebook], values)
    if unknown:
        raise ParameterError(f"{notebook}: unknown parameter(s) {unknown} (misspelled?); known: "
                             f"{sorted(NOTEBOOKS[notebook])}")
    for name, spec in NOTEBOOKS[notebook].items():
        if name not in values:
            raise ParameterError(f"{notebook}: parameter {name} is missing (is the parameters cell intact?)")
        check_value(name, values[name], spec)
