"""Meta-training of a soft prompt over a task source, with checkpoints and exact resume; the meta inits; the CLI.

:func:`run_meta_training` samples ``meta_batch`` episodes per step from a source (``workbench.tasks``), asks the
meta-learner (``workbench.meta``) for the meta-gradient of the prompt ``P`` (one batched backbone pass per meta-batch
by default), and applies it with the outer optimizer. Every ``eval_every`` steps it scores fixed meta-validation
episodes before and after inner adaptation. The run directory gets ``config.json``, ``metrics.jsonl``,
``results.json``, the learned prompt as a PEFT adapter in ``prompt/`` and the last checkpoint in ``checkpoints/``.

Work happens in ``<out>.partial`` (checkpoints every ``checkpoint_every`` steps: P, optimizer state, numpy and torch
RNG states, the learner's ``state``; tensors in safetensors, the rest JSON), renamed to ``<out>`` when training ends,
so a finished run is never half-written and an interrupted one resumes (``resume=True``) to the same final prompt as
an uninterrupted run. Resuming under a different configuration is refused, naming the differing keys.

The inits ``metapt`` (pseudo-tasks), ``mpt-maml``, ``mpt-fomaml``, ``mpt-reptile`` (labelled sources) and
``multitask`` train such a prompt for the harness's target (knobs: ``FewShotConfig.meta``) or load it from the cache
``$WORKBENCH_CACHE/meta/<hash>`` (default ``~/.cache/workbench/meta``), keyed by the full meta config + target +
backbone, so one meta init serves every seed.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import (BackboneConfig, ConfigError, MetaConfig, PromptConfig, TaskConfig, apply_overrides, from_dict,
                     to_dict)
from .inits import InitContext, make_prompt, register_init
from .meta import LEARNERS, evaluate_episodes, meta_step
from .runs import RunError, check_out_dir, environment, save_prompt, write_json
from .tasks import SOURCES, LabelledConfig, PseudoConfig, make_source

IGNORED_ON_RESUME = ("checkpoint_every", "out")  # keys that may differ between a checkpoint and its resumption


@dataclass
class MetaTrainConfig:
    method: str = "fomaml"  # a registered meta-learner: maml | fomaml | reptile | multitask | ...
    source: str = "pseudo"  # a registered task source: pseudo | labelled | ...
    target: str | None = None  # downstream dataset: decontamination, leave-one-out, the pseudo-task format
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)  # length, position; init = the starting point of P
    task: TaskConfig = field(default_factory=TaskConfig)  # temperature / length_norm; template of the target
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    labelled: LabelledConfig = field(default_factory=LabelledConfig)
    source_options: dict = field(default_factory=dict)  # free-form options for other registered sources
    support: int = 2  # support examples per class (per cluster for pseudo-tasks)
    query: int = 2  # query examples per class
    max_length: int = 48  # tokens per text
    inner_lr: float = 0.1
    inner_steps: int = 1
    meta_batch: int = 4
    meta_steps: int = 100
    optimizer: str = "adamw"  # adam | adamw | adafactor
    lr: float = 3e-2
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | linear (to 0 at the last step)
    grad_clip: float = 1.0  # max norm of the meta-gradient; 0 = off
    eval_every: int = 25  # meta-validation interval (steps); step 0 and the last step are always evaluated
    val_tasks: int = 8  # fixed meta-validation episodes
    checkpoint_every: int = 25
    seed: int = 0
    batched: bool = True  # one backbone pass per meta-batch (False: one per task; same math)
    out: str = "runs/meta"

    def __post_init__(self):
        for name in ("support", "query", "max_length", "meta_batch", "meta_steps", "eval_every", "val_tasks",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_steps < 0 or self.inner_lr <= 0 or self.lr <= 0:
            raise ConfigError(f"need inner_steps >= 0, inner_lr > 0 and lr > 0; got {self.inner_steps}, "
                              f"{self.inner_lr}, {self.lr}")
        if self.optimizer not in ("adam", "adamw", "adafactor"):
            raise ConfigError(f"optimizer must be adam | adamw | adafactor, got {self.optimizer!r}")
        if self.schedule not in ("constant", "linear"):
            raise ConfigError(f"schedule must be constant | linear, got {self.schedule!r}")


def _optimizer(P, cfg: MetaTrainConfig):
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor
        return Adafactor([P], lr=cfg.lr, weight_decay=cfg.weight_decay, relative_step=False, scale_parameter=False,
                         warmup_init=False, clip_threshold=1.0)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls([P], lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr(cfg: MetaTrainConfig, step: int) -> float:
    return cfg.lr if cfg.schedule == "constant" else cfg.lr * max(0.0, 1 - step / cfg.meta_steps)


# ----------------------------------------------------------------------------------------------- checkpoints
def _pack(obj, key: str, tensors: dict):
    """JSON-able form of nested state; tensors go to ``tensors`` under their path."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return {"__state_dict__": _pack(obj.state_dict(), key, tensors)}
    if isinstance(obj, dict):
        return {"__items__": [[_pack(k, f"{key}.k{i}", tensors), _pack(v, f"{key}.{i}", tensors)]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise RunError(f"cannot checkpoint a {type(obj).__name__} ({key}); learner state must be tensors, modules, "
                   "optimizers or JSON values")


def _unpack(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__state_dict__" in obj:
            return _unpack(obj["__state_dict__"], tensors)
        if "__items__" in obj:
            return {_unpack(k, tensors): _unpack(v, tensors) for k, v in obj["__items__"]}
        if "__list__" in obj:
            out = [_unpack(v, tensors) for v in obj["__list__"]]
            return tuple(out) if obj["tuple"] else out
    return obj


def save_checkpoint(work: Path, step: int, P, opt, rng, state) -> Path:
    from safetensors.torch import save_file
    tensors: dict = {}
    blob = {"step": step, "P": _pack(P.data, "P", tensors), "optimizer": _pack(opt.state_dict(), "opt", tensors),
            "numpy_rng": rng.bit_generator.state, "torch_rng": _pack(torch.get_rng_state(), "torch_rng", tensors),
            "state": _pack(dict(state or {}), "state", tensors)}
    final = work / "checkpoints" / f"step-{step:06d}"
    tmp = work / "checkpoints" / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": "pt"})
    write_json(tmp / "state.json", blob)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in (work / "checkpoints").glob("step-*"):  # keep only the newest
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(work: Path) -> Path | None:
    found = sorted((work / "checkpoints").glob("step-*")) if (work / "checkpoints").is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path, P, opt, rng, state) -> int:
    from safetensors.torch import load_file
    tensors = load_file(str(path / "state.safetensors"))
    blob = json.loads((path / "state.json").read_text(encoding="utf-8"))
    with torch.no_grad():
        P.copy_(_unpack(blob["P"], tensors))
    opt.load_state_dict(_unpack(blob["optimizer"], tensors))
    rng.bit_generator.state = blob["numpy_rng"]
    torch.set_rng_state(_unpack(blob["torch_rng"], tensors))
    for key, value in _unpack(blob["state"], tensors).items():
        cur = (state or {}).get(key)
        if hasattr(cur, "load_state_dict"):
            cur.load_state_dict(value)
        elif isinstance(cur, torch.Tensor):
            with torch.no_grad():
                cur.copy_(value)
        else:
            state[key] = value
    return int(blob["step"])


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        if k in IGNORED_ON_RESUME and not prefix:
            continue
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(f"{prefix}{k}")
    return keys


# ----------------------------------------------------------------------------------------------- the loop
def run_meta_training(cfg: MetaTrainConfig, backbone=None, resume: bool = False, overwrite: bool = False,
                      progress: bool = True, stop_after: int | None = None) -> dict:
    """Meta-train a prompt; return the results dict (also in ``<out>/results.json``). ``stop_after`` ends the run
    after that many steps as if interrupted (the work directory stays, for ``resume``; used by tests)."""
    from tqdm.auto import tqdm
    from .backbones import load_backbone, set_threads
    if cfg.method not in LEARNERS:
        raise ConfigError(f"unknown meta-learner {cfg.method!r}; registered: {sorted(LEARNERS)}")
    if cfg.source not in SOURCES:
        raise ConfigError(f"unknown task source {cfg.source!r}; registered: {sorted(SOURCES)}")
    out = Path(cfg.out)
    work = out.with_name(out.name + ".partial")
    config = to_dict(cfg)
    if resume and (out / "results.json").is_file():  # finished already: nothing to do
        return json.loads((out / "results.json").read_text(encoding="utf-8"))
    check_out_dir(out, overwrite)
    if work.exists() and not resume:
        if not overwrite:
            raise RunError(f"an interrupted run is in {work}: pass --resume to continue it or --overwrite to restart")
        shutil.rmtree(work)
    ckpt = latest_checkpoint(work) if resume and work.exists() else None
    if resume and work.exists() and (work / "config.json").is_file():
        old = json.loads((work / "config.json").read_text(encoding="utf-8"))
        if diff := _diff(old, config):
            raise ConfigError(f"cannot resume {work}: its configuration differs in {diff} "
                              "(use the same settings, or --overwrite to start again)")
    if cfg.source == "labelled":  # refuse leakage / empty configurations before loading anything
        from .tasks import resolve_sources
        resolve_sources(cfg.target, cfg.labelled.sources, cfg.labelled.datasets)
    set_threads()
    if backbone is None:
        bcfg = cfg.backbone
        if cfg.method == "maml" and not bcfg.second_order:
            bcfg = from_dict(BackboneConfig, {**to_dict(bcfg), "second_order": True, "attn": "eager"})
        backbone = load_backbone(bcfg)
    if cfg.method == "maml" and backbone.attn != "eager":
        raise ConfigError("method 'maml' differentiates through the inner step: load the backbone with "
                          "backbone.second_order=true (eager attention)")
    t0 = time.perf_counter()
    source = make_source(cfg.source, cfg, backbone, target=cfg.target)
    torch.manual_seed(cfg.seed)
    init, prov = make_prompt(cfg.prompt.init, InitContext(backbone, cfg.prompt, cfg.seed))
    P = torch.nn.Parameter(init.to(backbone.device))
    opt = _optimizer(P, cfg)
    learner = LEARNERS[cfg.method]
    state = learner.init_state(P, cfg, backbone) if learner.init_state else {}
    val_rng = np.random.default_rng([cfg.seed, 1])
    has_split = "split" in inspect.signature(source.sample).parameters
    val = source.sample(val_rng, cfg.val_tasks, **({"split": "val"} if has_split else {}))
    rng = np.random.default_rng([cfg.seed, 0])
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "config.json", config)
    start = load_checkpoint(ckpt, P, opt, rng, state) if ckpt else 0
    metrics = work / "metrics.jsonl"
    if metrics.exists():  # drop records written after the checkpoint we resume from
        keep = [l for l in metrics.read_text(encoding="utf-8").splitlines() if start and json.loads(l)["step"] <= start
                and not (start == cfg.meta_steps and json.loads(l)["event"] == "val" and json.loads(l)["step"] == start)]
        metrics.write_text("".join(l + "\n" for l in keep), encoding="utf-8")

    def log(rec):
        with open(metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **rec}) + "\n")

    def validate(step):
        r = evaluate_episodes(P, val, cfg.inner_lr, cfg.inner_steps, cfg.batched, chunk=max(cfg.meta_batch, 1))
        log({"event": "val", "step": step, **r})
        return r

    last_val = validate(0) if start == 0 else None
    bar = tqdm(total=cfg.meta_steps, initial=start, desc=f"meta-train {cfg.method}", disable=not progress)
    step = start
    while step < cfg.meta_steps:
        if stop_after is not None and step - start >= stop_after:
            bar.close()
            return {"interrupted_at": step, "work": str(work)}
        episodes = source.sample(rng, cfg.meta_batch)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        loss, grad, logs = meta_step(cfg.method, P, episodes, cfg, cfg.batched, state)
        opt.zero_grad(set_to_none=True)
        P.grad = grad.detach().to(P.dtype)
        gnorm = torch.nn.utils.clip_grad_norm_([P], cfg.grad_clip).item() if cfg.grad_clip > 0 else \
            P.grad.norm().item()
        opt.step()
        step += 1
        log({"event": "train", "step": step, "loss": float(loss), "grad_norm": gnorm, "lr": _lr(cfg, step - 1),
             **{k: v for k, v in logs.items() if isinstance(v, (int, float, str, bool))},
             "tasks": [e.name for e in episodes]})
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.3f}")
        if step % cfg.eval_every == 0 or step == cfg.meta_steps:
            last_val = validate(step)
        if step % cfg.checkpoint_every == 0 or step == cfg.meta_steps:
            save_checkpoint(work, step, P, opt, rng, state)
    bar.close()
    if last_val is None:
        last_val = validate(step)
    results = {"method": cfg.method, "source": source.describe(), "steps": step, "final_val": last_val,
               "learner": learner.description, "init_provenance": prov, "wall_s": round(time.perf_counter() - t0, 2),
               "resumed_from": ckpt.name if ckpt else None, "backbone": backbone.describe(),
               "environment": environment(backbone.device), "config": config}
    save_prompt(work / "prompt", P.detach(), backbone, {"method": cfg.method, "source": cfg.source,
                                                        "target": cfg.target, "steps": step,
                                                        "insert_offset": val[0].head.offset if val else None})
    if learner.finalize:
        learner.finalize(state, work)
    write_json(work / "results.json", results)
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    results["out"] = str(out)
    return results


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
    from .runs import load_prompt
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


for _name, _desc in [("metapt", "MetaPT: meta-trained on pseudo-tasks from a clustered unlabeled corpus (meta.*)"),
                     ("mpt-maml", "MPT: second-order MAML over labelled source tasks (meta.sources)"),
                     ("mpt-fomaml", "MPT: first-order MAML over labelled source tasks (meta.sources)"),
                     ("mpt-reptile", "MPT: Reptile over labelled source tasks (meta.sources)"),
                     ("multitask", "multi-task (PPT-style) prompt trained jointly on the MPT source tasks")]:
    register_init(_name, _desc)(lambda ctx, _n=_name: meta_init(_n, ctx))


# ----------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers):
    p = subparsers.add_parser("meta-train", help="meta-train a soft prompt (MetaPT pseudo-tasks, MPT sources)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--method", help=f"meta-learner (registered: {', '.join(sorted(LEARNERS))})")
    p.add_argument("--source", help="task source: pseudo | labelled | another registered source")
    p.add_argument("--target", help="downstream dataset (decontamination, leave-one-out, pseudo-task format)")
    p.add_argument("--sources", help="labelled: leave-one-out | same-type | cross-type | pairs->single, or a "
                   "comma-separated list of datasets")
    p.add_argument("--backbone", help="minilm (default), a Hugging Face name, or a local path")
    p.add_argument("--steps", type=int, help="meta-steps")
    p.add_argument("--meta-batch", type=int)
    p.add_argument("--config", help="a config.json (e.g. of an earlier run) to start from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any MetaTrainConfig field, e.g. --set pseudo.features=lda (repeatable)")
    p.add_argument("--opt", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for a third-party source (goes to source_options)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in <out>.partial")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run (or interrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run_cli(args) -> int:
    from .backbones import BackboneError
    from .corpus import ClusterError
    from .data import DataError
    try:
        cfg = MetaTrainConfig()
        if args.config:
            with open(args.config, encoding="utf-8") as fh:
                cfg = from_dict(MetaTrainConfig, json.load(fh))
        sets = [f"out={args.out}"]
        for flag, key in (("method", "method"), ("source", "source"), ("target", "target"),
                          ("backbone", "backbone.name"), ("steps", "meta_steps"), ("meta_batch", "meta_batch")):
            if getattr(args, flag) is not None:
                sets.append(f"{key}={getattr(args, flag)}")
        if args.sources:
            from .tasks import CONFIGURATIONS
            sets.append(f"labelled.sources={args.sources}" if args.sources in CONFIGURATIONS
                        else f"labelled.datasets={args.sources}")
        cfg = apply_overrides(cfg, sets + args.overrides)
        for item in args.options:
            if "=" not in item:
                raise ConfigError(f"--opt {item!r} must look like key=value")
            k, v = item.split("=", 1)
            cfg.source_options[k] = v
        res = run_meta_training(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    except (ConfigError, DataError, BackboneError, RunError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = res["final_val"]
    print(f"meta-validation after {res['steps']} steps: query acc {100 * v['acc_pre']:.1f}% before / "
          f"{100 * v['acc_post']:.1f}% after inner adaptation (loss {v['loss_pre']:.3f} / {v['loss_post']:.3f})")
    print(f"run directory: {res.get('out', args.out)}  ({res['wall_s']:.0f} s)")
    return 0
