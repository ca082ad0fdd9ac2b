"""The one factory for meta-learned inits: build the meta-training config a meta init needs for its target, train
it once (or find it in the cache), load the prompt.

Every meta init (``metapt``, ``mpt-maml``, ``mpt-fomaml``, ``mpt-reptile``, ``multitask``, ``supmer``,
``supmer+psi``) trains a :class:`~workbench.config.MetaTrainConfig` made from the caller's
:class:`~workbench.config.FewShotConfig` sections (``meta``, ``pseudo``, ``labelled``, ``selfsup``, ``supmer``: the
same keys as ``meta-train``) with the method and source its name implies. Runs are cached in
``$WORKBENCH_CACHE/meta/<init>-<hash>`` (default ``~/.cache/workbench/meta``), keyed by the full config + target +
backbone weights (the sections neither its source nor its learner reads left out), so one meta init serves every
seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from workbench.config import ConfigError, FewShotConfig, MetaTrainConfig, PromptConfig, to_dict
from workbench.engine.runs import load_prompt
from workbench.learn.inits import InitContext, names_prompt
from workbench.learn.metatrain import run_meta_training
from workbench.tasks.episodes import make_source
from workbench.tasks.labelled import resolve_sources

_TRAINED: dict[str, tuple] = {}
_SOURCE_NAMES: dict[str, list[str]] = {}  # cache key -> the labelled sources ``auto`` selected (task-names)
META_INITS = ("metapt", "mpt-maml", "mpt-fomaml", "mpt-reptile", "multitask", "supmer", "supmer+psi")


def cache_root() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench").expanduser() / "meta"


def training_of(init: str) -> str | None:
    """The meta-training a meta init's prompt comes from, as its cache directory names it (``supmer+psi`` shares
    ``supmer``'s); None for an init that has none."""
    return init.replace("+psi", "") if init in META_INITS else None


def method_and_source(init: str, fs: FewShotConfig) -> tuple[str, str]:
    """The meta-learner and task source a meta init trains with."""
    table = {"metapt": (fs.meta.metapt_method, "pseudo"), "mpt-maml": ("maml", "labelled"),
             "mpt-fomaml": ("fomaml", "labelled"), "mpt-reptile": ("reptile", "labelled"),
             "multitask": ("multitask", fs.meta.multitask_source), "supmer": ("supmer", "selfsup"),
             "supmer+psi": ("supmer", "selfsup")}
    if init not in table:
        raise ConfigError(f"{init!r} is not a meta init; meta inits: {sorted(table)}")
    return table[init]


def meta_config_for(init: str, ctx: InitContext) -> MetaTrainConfig:
    """The MetaTrainConfig that meta init ``init`` trains for ``ctx``'s target, from the caller's FewShotConfig
    (``ctx.extras["config"]``; defaults otherwise)."""
    fs = ctx.extras.get("config") or FewShotConfig()
    method, source = method_and_source(init, fs)
    target = ctx.dataset.name if ctx.dataset is not None else None
    if ctx.dataset is not None and getattr(ctx.dataset, "source", None) and Path(ctx.dataset.source).is_dir():
        target = ctx.dataset.source  # a dataset given by path: decontaminate against that very folder
    pseudo, selfsup = fs.pseudo, fs.selfsup
    targets = sorted(set(ctx.extras.get("targets") or ([target] if target else [])))  # the run's, as named
    if fs.meta.shared and target_free(source, fs) and targets:  # one training for all targets, none of their texts
        target = None
        if source == "pseudo":
            pseudo = dataclasses.replace(pseudo, exclude=sorted(set(pseudo.exclude) | set(targets)))
        else:
            selfsup = dataclasses.replace(selfsup, exclude=sorted(set(selfsup.exclude) | set(targets)))
    return MetaTrainConfig(
        method=method, source=source, target=target,
        backbone=dataclasses.replace(fs.backbone, name=ctx.backbone.name),
        prompt=PromptConfig(length=ctx.length, init="random", position=ctx.cfg.position,
                            pool_prompt=ctx.cfg.pool_prompt),
        task=fs.task, meta=fs.meta, pseudo=pseudo, labelled=fs.labelled, selfsup=selfsup, supmer=fs.supmer)


def target_free(source: str, fs: FewShotConfig) -> bool:
    """Whether a meta init's tasks do not depend on the target (only its decontamination does): SUPMER's
    self-supervised tasks, and MetaPT's pseudo-tasks unless they take the target's format or (labels within
    clusters) its label space."""
    own_labels = fs.pseudo.tasks == "clusters-as-classes"
    return source == "selfsup" or (source == "pseudo" and fs.pseudo.template != "target" and own_labels)


def decontaminated_against(cfg: MetaTrainConfig) -> list[str]:
    """The datasets whose train and test texts a meta-training run never uses: its target, and the exclusions of
    its corpus source."""
    extra = {"selfsup": cfg.selfsup.exclude, "pseudo": cfg.pseudo.exclude}.get(cfg.source, [])
    return sorted(set(extra) | ({cfg.target} if cfg.target else set()))


SOURCE_SECTIONS = {"pseudo": "pseudo", "labelled": "labelled", "selfsup": "selfsup"}  # the section each source reads
LEARNER_SECTIONS = {"supmer": "supmer"}  # learners that read a section of their own


def cache_ident(cfg: MetaTrainConfig) -> dict:
    """What a meta-training run depends on: its config without the run directory and without the sections that
    neither its task source nor its learner reads (MetaPT's run does not change when ``selfsup.*`` does). A
    third-party source keeps every section: what it reads is not known here."""
    ident = {**to_dict(cfg), "out": None}
    if cfg.source in SOURCE_SECTIONS:
        for section in SOURCE_SECTIONS.values():
            if section != SOURCE_SECTIONS[cfg.source]:
                ident.pop(section)
        for learner, section in LEARNER_SECTIONS.items():
            if cfg.method != learner:
                ident.pop(section)
    return ident


def cache_key(cfg: MetaTrainConfig, backbone) -> str:
    ident = {**cache_ident(cfg), "backbone_weights": backbone.describe().get("weights_sha256"),
             "backbone_path": str(backbone.path)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def trained_prompt(init: str, ctx: InitContext):
    """Train (or load from the cache) the prompt of meta init ``init`` for ``ctx``; returns (prompt (L, d),
    provenance, run directory)."""
    cfg = meta_config_for(init, ctx)
    key = cache_key(cfg, ctx.backbone)
    out = cache_root() / f"{training_of(init)}-{key}"
    cfg.out = str(out)
    use_cache = cfg.meta.cache
    if key not in _TRAINED or not use_cache:
        if not (use_cache and (out / "results.json").is_file()):
            same = cfg.method != "maml" or ctx.backbone.attn == "eager"
            run_meta_training(cfg, backbone=ctx.backbone if same else None, resume=use_cache,
                              overwrite=not use_cache, progress=ctx.extras.get("progress", True),
                              wait=True)  # another process training the same cached init: wait, then reuse it
        _TRAINED[key] = load_prompt(out / "prompt")
    prompt, _ = _TRAINED[key]
    want = (ctx.length, ctx.backbone.hidden_size)
    if tuple(prompt.shape) != want:
        raise ConfigError(f"meta prompt {out} has shape {tuple(prompt.shape)} but backbone "
                          f"{ctx.backbone.name!r} with prompt.length={ctx.length} needs {want}")
    prov = {"meta_run": str(out), "method": cfg.method, "source": cfg.source, "target": cfg.target, "cache_key": key,
            "decontaminated_against": decontaminated_against(cfg),
            "meta_steps": cfg.meta.steps, "task_visits": cfg.meta.steps * cfg.meta.meta_batch, **run_report(out)}
    return prompt, prov, out


def run_report(out: Path) -> dict:
    """What a meta-training run's results.json says of its budget and meta-validation selection, for the init's
    provenance: the steps and task visits actually run (``task_visits`` replaces the planned count), inner steps and
    optimizer, the best and selected steps, whether meta-validation ever improved and the warning when it did not.
    Runs written before these fields: ``{}``."""
    path = Path(out) / "results.json"
    res = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if "budget" not in res:
        return {}
    budget = res["budget"]
    return {"meta_steps_run": budget["steps_run"], "task_visits": budget["task_visits"], "budget": budget,
            "best_step": res.get("best_step"), "selected_step": res.get("selected_step"),
            "stopped_early": res.get("stopped_early"), "meta_val_improved": res.get("meta_val_improved"),
            "meta_warning": res.get("warning")}


def meta_init(init: str, ctx: InitContext):
    """The init function of every meta init except SUPMER's (which adds its ψ): the trained prompt, provenance."""
    prompt, prov, _ = trained_prompt(init, ctx)
    return prompt, prov


def source_task_names(ctx: InitContext) -> list[str]:
    """The names of the labelled source datasets MPT meta-trains on for ``ctx``'s target: ``labelled.datasets``, or
    the ``labelled.sources`` configuration resolved (``auto``: its learnability and similarity selection, as the
    ``labelled`` task source makes it). The config is ``ctx.extras["config"]``: a MetaTrainConfig (its own target)
    or a FewShotConfig (the target is ``ctx.dataset``)."""
    cfg = ctx.extras.get("config")
    if not isinstance(cfg, MetaTrainConfig):
        cfg = meta_config_for("mpt-fomaml", ctx)
    lc = cfg.labelled
    if lc.datasets or lc.sources != "auto":
        return [Path(str(n)).name for n in resolve_sources(cfg.target, lc.sources, lc.datasets)]
    key = cache_key(dataclasses.replace(cfg, source="labelled", method="fomaml"), ctx.backbone)
    if key not in _SOURCE_NAMES:  # the auto selection scores every candidate: once per config, not once per seed
        _SOURCE_NAMES[key] = list(make_source("labelled", cfg, ctx.backbone, target=cfg.target).info["sources"])
    return _SOURCE_NAMES[key]


def task_names_init(ctx: InitContext):
    """MPT's prompt init: one row per source-task name (:func:`source_task_names`), frequent tokens after them."""
    return names_prompt(ctx, source_task_names(ctx), "task-names",
                        "labelled.datasets, labelled.sources or labelled.auto_top")
