"""Meta-training of a soft prompt over a task source, with checkpoints and exact resume; the meta inits; the CLI.

:func:`run_meta_training` samples ``meta_batch`` episodes per step from a source (``workbench.tasks``), asks the
meta-learner (``workbench.meta``) for the meta-gradient of the prompt ``P`` (one batched backbone pass per meta-batch
by default), and applies it with the outer optimizer. Every ``eval_every`` steps (and at step 0 and the last) it
scores fixed meta-validation episodes (held-out source tasks) before and after inner adaptation. Selection and early
stopping use the query accuracy after adaptation (ties: lower loss): ``meta.select=best`` (default) writes the best
validated prompt, step 0 included, ``last`` the last one; ``meta.patience`` > 0 stops after that many validations
without a better one. ``results.json`` records the ``budget`` (planned steps, steps run, meta-batch, task visits,
resolved inner steps and inner optimizer), ``best_step``, ``selected_step``, ``stopped_early`` and
``meta_val_improved``; when meta-validation never beats step 0 it says so in ``warning`` and warns. The run directory
gets ``config.json``, ``metrics.jsonl``, ``results.json``, the prompt as a PEFT adapter in ``prompt/`` and the last
checkpoint in ``checkpoints/``.

Work happens in ``<out>.partial`` (checkpoints every ``checkpoint_every`` steps: P, optimizer state, numpy and torch
RNG states, the learner's ``state``, the best-on-meta-validation prompt and the early-stopping count; tensors in
safetensors, the rest JSON), renamed to ``<out>`` when training ends,
so a finished run is never half-written and an interrupted one resumes (``resume=True``) to the same final prompt as
an uninterrupted run. Resuming under a different configuration is refused, naming the differing keys.

The inits ``metapt`` (pseudo-tasks), ``mpt-maml``, ``mpt-fomaml``, ``mpt-reptile`` (labelled sources) and
``multitask`` train such a prompt for the harness's target (knobs: ``FewShotConfig.meta``) or load it from the cache
``$WORKBENCH_CACHE/meta/<hash>`` (default ``~/.cache/workbench/meta``), keyed by the full meta config + target +
backbone, so one meta init serves every seed.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from workbench.config import (
    BackboneConfig,
    ConfigError,
    MetaTrainConfig,
    WorkbenchError,
    from_dict,
    to_dict,
)
from workbench.engine.backbones import load_backbone, set_threads
from workbench.engine.lock import RunLock
from workbench.engine.progress import progress_bar
from workbench.engine.runs import (
    RunError,
    check_out_dir,
    environment,
    save_prompt,
    write_json,
)
from workbench.learn.checkpoints import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from workbench.engine import tracking
from workbench.learn.data_parallel import Shards, from_env
from workbench.learn.inits import InitContext, make_prompt
from workbench.learn.meta import (
    LEARNERS,
    evaluate_episodes,
    inner_optimizer_of,
    inner_steps_for,
    meta_step,
)
from workbench.learn.tuner import TuningError, adafactor
from workbench.tasks.episodes import SOURCES, make_source
from workbench.tasks.labelled import resolve_sources

IGNORED_ON_RESUME = ("meta.checkpoint_every", "out")  # keys that may differ between a checkpoint and its resumption


def _optimizer(P, cfg: MetaTrainConfig):
    if cfg.meta.optimizer == "adafactor":
        return adafactor([P], lr=cfg.meta.lr, weight_decay=cfg.meta.weight_decay, relative_step=False, scale_parameter=False,
                         warmup_init=False, clip_threshold=1.0)
    cls = torch.optim.Adam if cfg.meta.optimizer == "adam" else torch.optim.AdamW
    return cls([P], lr=cfg.meta.lr, weight_decay=cfg.meta.weight_decay)


def _lr(cfg: MetaTrainConfig, step: int) -> float:
    return cfg.meta.lr if cfg.meta.schedule == "constant" else cfg.meta.lr * max(0.0, 1 - step / cfg.meta.steps)


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        if f"{prefix}{k}" in IGNORED_ON_RESUME:
            continue
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(f"{prefix}{k}")
    return keys


# ----------------------------------------------------------------------------------------------- the loop
def meta_backbone(cfg: MetaTrainConfig):
    """The backbone of ``cfg`` as meta-training needs it (``maml`` differentiates through the inner step: second
    order, eager attention); load it once to serve several runs (and the downstream tuning after them)."""
    set_threads()
    bcfg = cfg.backbone
    if cfg.method == "maml" and not bcfg.second_order:
        bcfg = from_dict(BackboneConfig, {**to_dict(bcfg), "second_order": True, "attn": "eager"})
    return load_backbone(bcfg)


def _open_work(cfg: MetaTrainConfig, config: dict, resume: bool, overwrite: bool):
    """(out, work directory, checkpoint to resume from or None), after refusing what the directories forbid."""
    out = Path(cfg.out)
    work = out.with_name(out.name + ".partial")
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
    return out, work, ckpt


def _check(cfg: MetaTrainConfig) -> None:
    if cfg.method not in LEARNERS:
        raise ConfigError(f"unknown meta-learner {cfg.method!r}; registered: {sorted(LEARNERS)}")
    if cfg.source not in SOURCES:
        raise ConfigError(f"unknown task source {cfg.source!r}; registered: {sorted(SOURCES)}")
    inner_steps_for(cfg.method, cfg)
    inner_optimizer_of(cfg)


def _trim_metrics(metrics: Path, start: int, done: bool) -> None:
    """Drop the records written after the checkpoint we resume from (and, when that checkpoint ends the run, its last
    validation, which is redone)."""
    if not metrics.exists():
        return
    recs = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    keep = [r for r in recs if start and r["step"] <= start and not (done and r["event"] == "val" and r["step"] == start)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")


# ----------------------------------------------------------------------------------------------- selection
def new_selection() -> dict:
    """The loop's record of meta-validation: the best step, its query accuracy and loss after adaptation, its
    prompt, the validations since it, whether the run stopped early (checkpointed with the run)."""
    return {"best_step": None, "best_acc": None, "best_loss": None, "best_P": None, "best_modules": {}, "bad": 0,
            "stopped": False}


def update_selection(sel: dict, step: int, val: dict, P: torch.Tensor, patience: int, state: dict | None = None) -> None:
    """Fold the meta-validation ``val`` of ``step`` into ``sel``: better = higher query accuracy after inner
    adaptation, ties broken by lower query loss; ``patience`` validations without a better one stop the run. The
    learner's modules in ``state`` (SUPMER's ψ) are kept with the best prompt, so both come from one step."""
    acc, loss = val["acc_post"], val["loss_post"]
    first = sel["best_step"] is None
    if first or acc > sel["best_acc"] + 1e-9 or (abs(acc - sel["best_acc"]) <= 1e-9 and loss < sel["best_loss"]):
        sel.update(best_step=step, best_acc=acc, best_loss=loss, best_P=P.detach().clone(), bad=0,
                   best_modules={name: {k: v.detach().clone() for k, v in m.state_dict().items()}
                                 for name, m in (state or {}).items() if isinstance(m, torch.nn.Module)})
    else:
        sel["bad"] += 1
        sel["stopped"] = patience > 0 and sel["bad"] >= patience


def selection_report(cfg: MetaTrainConfig, sel: dict, steps_run: int) -> dict:
    """The results.json fields of the budget and the meta-validation selection (a warning when it never improved)."""
    improved = bool(sel["best_step"])
    budget = {"steps": cfg.meta.steps, "steps_run": steps_run, "meta_batch": cfg.meta.meta_batch,
              "task_visits": steps_run * cfg.meta.meta_batch, "inner_steps": inner_steps_for(cfg.method, cfg),
              "inner_optimizer": inner_optimizer_of(cfg)}
    warning = None if improved else (
        f"meta-validation (query accuracy after inner adaptation, {cfg.meta.val_tasks} held-out episodes) never "
        f"improved on step 0 in {steps_run} meta-steps: the prompt written is "
        + ("the step-0 prompt (meta.select=best)" if cfg.meta.select == "best" else
           "the last one (meta.select=last), no better than step 0 on meta-validation"))
    return {"budget": budget, "select": cfg.meta.select, "best_step": sel["best_step"],
            "best_val": {"acc_post": sel["best_acc"], "loss_post": sel["best_loss"]},
            "selected_step": sel["best_step"] if cfg.meta.select == "best" else steps_run,
            "stopped_early": bool(sel["stopped"]), "meta_val_improved": improved, "warning": warning}


# ----------------------------------------------------------------------------------------------- the loop
def _meta_update(cfg, P, opt, state, episodes, step, shards: Shards):
    """One outer step on P from the meta-batch ``episodes`` (this process scores its shard of them; loss, gradient
    and logs are averaged over every process's tasks); returns the train record of metrics.jsonl."""
    for g in opt.param_groups:
        g["lr"] = _lr(cfg, step)
    loss, grad, logs = meta_step(cfg.method, P, episodes, cfg, cfg.meta.batched, state, shards)
    n, total = len(shards.split(episodes)), len(episodes)
    loss, grad = shards.mean(torch.as_tensor(loss, device=P.device), n, total), shards.mean(grad, n, total)
    logs = shards.mean_dict(logs, n, total, P.device)
    if not (torch.isfinite(torch.as_tensor(loss)).all() and torch.isfinite(grad).all()):
        raise TuningError(f"meta-step {step + 1} of {cfg.method!r}: the loss or meta-gradient is not finite "
                          f"(loss {float(loss)}); lower meta.lr / meta.inner_lr, or check the tasks {[e.name for e in episodes]}")
    opt.zero_grad(set_to_none=True)
    P.grad = grad.detach().to(P.dtype)
    gnorm = torch.nn.utils.clip_grad_norm_([P], cfg.meta.grad_clip).item() if cfg.meta.grad_clip > 0 else \
        P.grad.norm().item()
    opt.step()
    return {"event": "train", "step": step + 1, "loss": float(loss), "grad_norm": gnorm, "lr": _lr(cfg, step),
            **{k: v for k, v in logs.items() if isinstance(v, (int, float, str, bool))},
            "tasks": [e.name for e in episodes]}


def run_meta_training(cfg: MetaTrainConfig, backbone=None, resume: bool = False, overwrite: bool = False,
                      progress: bool = True, stop_after: int | None = None, wait: bool = False,
                      shards: Shards | None = None) -> dict:
    """Meta-train a prompt; return the results dict (also in ``<out>/results.json``). ``stop_after`` ends the run
    after that many steps as if interrupted (the work directory stays, for ``resume``; used by tests). One process
    per run: another process holding ``cfg.out`` is an error (or, ``wait``, waited for; a cached meta init that
    another benchmark is training is waited for and then reused). Under torchrun (``shards``, default from the
    environment) every process trains on its shard of each meta-batch; rank 0 locks, writes and reports, and the
    others read the checkpoint it resumes from (a shared file system); SUPMER all-reduces what couples its tasks."""
    _check(cfg)
    shards = shards or from_env()
    shards.check_batch(cfg.meta.meta_batch, cfg.meta.val_tasks)
    with ExitStack() as stack:
        def prepare():
            stack.enter_context(RunLock(cfg.out, wait=wait))
            return _prepare(cfg, resume, overwrite)

        setup = _on_leader(shards, prepare)
        if "results" in setup:
            return setup["results"]
        return _train(cfg, backbone, setup, progress and shards.leader, stop_after, shards)


def _on_leader(shards: Shards, fn) -> dict:
    """``fn()`` on rank 0, its result on every rank; a refusal on rank 0 (a run or configuration error) is raised on
    every rank, so no process waits for a run that will not start."""
    if not shards.active:
        return fn()
    payload = None
    try:
        if shards.leader:
            payload = {"ok": fn()}
    except WorkbenchError as e:
        payload = {"error": f"{type(e).__name__}: {e}"}
        shards.broadcast(payload)
        raise
    payload = shards.broadcast(payload)
    if "error" in payload:
        raise RunError(f"rank 0 refused the run: {payload['error']}")
    return payload["ok"]


def _prepare(cfg: MetaTrainConfig, resume: bool, overwrite: bool) -> dict:
    """Rank 0's checks of the run directory: {"results"} of a finished run being resumed, or {"out", "work",
    "ckpt"} (the checkpoint to resume from, or None)."""
    if resume and (Path(cfg.out) / "results.json").is_file():  # finished already: nothing to do
        return {"results": json.loads((Path(cfg.out) / "results.json").read_text(encoding="utf-8"))}
    out, work, ckpt = _open_work(cfg, to_dict(cfg), resume, overwrite)
    return {"out": str(out), "work": str(work), "ckpt": str(ckpt) if ckpt else None}


def _train(cfg: MetaTrainConfig, backbone, setup: dict, progress: bool, stop_after: int | None,
           shards: Shards) -> dict:
    config = to_dict(cfg)
    out, work, ckpt = Path(setup["out"]), Path(setup["work"]), Path(setup["ckpt"]) if setup["ckpt"] else None
    if cfg.source == "labelled":  # refuse leakage / empty configurations before loading anything
        resolve_sources(cfg.target, cfg.labelled.sources, cfg.labelled.datasets)
    set_threads()
    backbone = backbone or meta_backbone(cfg)
    if cfg.method == "maml" and backbone.attn != "eager":
        raise ConfigError("method 'maml' differentiates through the inner step: load the backbone with "
                          "backbone.second_order=true (eager attention)")
    t0 = time.perf_counter()
    source = make_source(cfg.source, cfg, backbone, target=cfg.target)
    torch.manual_seed(cfg.meta.seed)
    init, prov = make_prompt(cfg.prompt.init, InitContext(backbone, cfg.prompt, cfg.meta.seed,
                                                          extras={"config": cfg}))  # task-names: its sources
    P = torch.nn.Parameter(init.to(backbone.device))
    opt = _optimizer(P, cfg)
    learner = LEARNERS[cfg.method]
    state = learner.init_state(P, cfg, backbone) if learner.init_state else {}
    has_split = "split" in inspect.signature(source.sample).parameters
    val = source.sample(np.random.default_rng([cfg.meta.seed, 1]), cfg.meta.val_tasks,
                        **({"split": "val"} if has_split else {}))
    rng = np.random.default_rng([cfg.meta.seed, 0])
    sel = new_selection()
    start = load_checkpoint(ckpt, P, opt, rng, state, sel) if ckpt else 0
    metrics = work / "metrics.jsonl"
    if shards.leader:
        work.mkdir(parents=True, exist_ok=True)
        write_json(work / "config.json", config)
        _trim_metrics(metrics, start, start == cfg.meta.steps or sel["stopped"])

    def log(rec):
        if shards.leader:
            rec = {"time": round(time.time(), 3), **rec}
            with open(metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            tracking.track(work, rec)

    def validate(step):
        mine = shards.split(val)
        r = evaluate_episodes(P, mine, cfg.meta.inner_lr, inner_steps_for(cfg.method, cfg), cfg.meta.batched,
                              chunk=max(cfg.meta.meta_batch, 1), inner_optimizer=inner_optimizer_of(cfg))
        r = shards.mean_dict(r, len(mine), len(val), P.device)
        log({"event": "val", "step": step, **r})
        return r

    last_val = None
    if start == 0:
        last_val = validate(0)
        update_selection(sel, 0, last_val, P, cfg.meta.patience, state)
    bar = progress_bar(total=cfg.meta.steps, initial=start, desc=f"meta-train {cfg.method}", enabled=progress)
    step = start
    while step < cfg.meta.steps and not sel["stopped"]:
        if stop_after is not None and step - start >= stop_after:
            bar.close()
            return {"interrupted_at": step, "work": str(work)}
        rec = _meta_update(cfg, P, opt, state, source.sample(rng, cfg.meta.meta_batch), step, shards)
        step += 1
        log(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        if step % cfg.meta.eval_interval == 0 or step == cfg.meta.steps:
            last_val = validate(step)
            update_selection(sel, step, last_val, P, cfg.meta.patience, state)
        if shards.leader and (step % cfg.meta.checkpoint_interval == 0 or step == cfg.meta.steps or sel["stopped"]):
            save_checkpoint(work, step, P, opt, rng, state, sel)
    bar.close()
    if last_val is None:
        last_val = validate(step)
    report = selection_report(cfg, sel, step)
    if report["warning"] and shards.leader:
        warnings.warn(f"{cfg.out}: {report['warning']}", stacklevel=3)
    results = {"method": cfg.method, "source": source.describe(), "steps": step, "final_val": last_val, **report,
               "learner": learner.description, "init_provenance": prov, "wall_s": round(time.perf_counter() - t0, 2),
               "resumed_from": ckpt.name if ckpt else None, "backbone": backbone.describe(),
               "environment": environment(backbone.device), "data_parallel": shards.describe(), "config": config}
    if not shards.leader:
        return {**results, "out": str(out)}
    chosen = sel["best_P"].to(P.device) if cfg.meta.select == "best" else P.detach()
    save_prompt(work / "prompt", chosen, backbone, {"method": cfg.method, "source": cfg.source, "target": cfg.target,
                                                    "steps": step, "selected_step": report["selected_step"],
                                                    "insert_offset": val[0].head.offset if val else None,
                                                    "position": cfg.prompt.position})
    if learner.finalize:
        if cfg.meta.select == "best":  # the learner's modules from the selected step, with its prompt
            for name, sd in sel.get("best_modules", {}).items():
                state[name].load_state_dict(sd)
        learner.finalize(state, work)
    write_json(work / "results.json", results)
    if out.exists():
        shutil.rmtree(out)
    tracking.close(work)
    os.replace(work, out)
    results["out"] = str(out)
    return results
