"""learn.meta_inits."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from workbench.config import (
    BackboneConfig,
    ConfigError,
    MetaConfig,
    PromptConfig,
    TaskConfig,
    from_dict,
    to_dict,
)
from workbench.engine.runs import load_prompt
from workbench.learn.inits import InitContext
from workbench.learn.metatrain import MetaTrainConfig, run_meta_training
from workbench.tasks.labelled import LabelledConfig
from workbench.tasks.pseudo import PseudoConfig


# ----------------------------------------------------------------------------------------------- inits
def cache_root() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench").expanduser() / "meta"


def meta_config_for(init: str, ctx: InitContext) -> MetaTrainConfig:
    """The MetaTrainConfig a meta init trains for ``ctx``'s target, from ``FewShotConfig.meta`` (passed by the
    harness as ``ctx.extras["config"]``; defaults otherwise)."""
    fs = ctx.extras.get("config")
    m: MetaConfig = fs.meta if fs is not None else MetaConfig()
    method, source = {"metapt": (m.metapt_method, "pseudo"), "mpt-maml": ("maml", "labelled"),
                      "mpt-fomaml": ("fomaml", "labelled"), "mpt-reptile": ("reptile", "labelled"),
                      "multitask": ("multitask", m.multitask_source)}[init]
    target = ctx.dataset.name if ctx.dataset is not None else None
    if ctx.dataset is not None and getattr(ctx.dataset, "source", None) and Path(ctx.dataset.source).is_dir():
        target = ctx.dataset.source  # a dataset given by path: decontaminate against that very folder
    bb = ctx.backbone
    return MetaTrainConfig(
        method=method, source=source, target=target,
        backbone=from_dict(BackboneConfig, {**(to_dict(fs.backbone) if fs is not None else {}), "name": bb.name}),
        prompt=PromptConfig(length=ctx.length, init="random", position=ctx.cfg.position,
                            pool_prompt=ctx.cfg.pool_prompt),
        task=fs.task if fs is not None else TaskConfig(),
        pseudo=PseudoConfig(corpus=m.corpus, features=m.features, n_clusters=m.n_clusters, n_way=m.n_way,
                            label=m.label, template=m.template, limit=m.corpus_limit),
        labelled=LabelledConfig(sources=m.sources, datasets=list(m.source_datasets), k=m.source_k),
        support=m.support, query=m.query, max_length=m.max_length, inner_lr=m.inner_lr, inner_steps=m.inner_steps,
        meta_batch=m.meta_batch, meta_steps=m.steps, optimizer=m.optimizer, lr=m.lr, schedule=m.schedule,
        eval_every=max(1, m.steps // 4), checkpoint_every=max(1, m.steps // 4), seed=m.seed)


def _cache_key(cfg: MetaTrainConfig, backbone) -> str:
    ident = {**to_dict(cfg), "out": None, "backbone_weights": backbone.describe().get("weights_sha256"),
             "backbone_path": str(backbone.path)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


_TRAINED: dict[str, tuple] = {}


def meta_init(init: str, ctx: InitContext):
    cfg = meta_config_for(init, ctx)
    key = _cache_key(cfg, ctx.backbone)
    cfg.out = str(cache_root() / f"{init}-{key}")
    fs = ctx.extras.get("config")
    use_cache = fs.meta.cache if fs is not None else True
    if key not in _TRAINED or not use_cache:
        if not (use_cache and (Path(cfg.out) / "results.json").is_file()):
            same = cfg.method != "maml" or ctx.backbone.attn == "eager"
            run_meta_training(cfg, backbone=ctx.backbone if same else None, resume=use_cache,
                              overwrite=not use_cache, progress=ctx.extras.get("progress", True))
        _TRAINED[key] = load_prompt(Path(cfg.out) / "prompt")
    prompt, meta = _TRAINED[key]
    want = (ctx.length, ctx.backbone.hidden_size)
    if tuple(prompt.shape) != want:
        raise ConfigError(f"meta prompt {cfg.out} has shape {tuple(prompt.shape)} but backbone "
                          f"{ctx.backbone.name!r} with prompt.length={ctx.length} needs {want}")
    return prompt, {"meta_run": cfg.out, "method": cfg.method, "source": cfg.source, "target": cfg.target,
                    "cache_key": key}
