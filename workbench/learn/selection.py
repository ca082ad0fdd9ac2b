"""Choosing the learning rate and step of a few-shot run, and the learning curve of that choice.

Two selection protocols (``tune.selection``):

- ``dev``: the candidates (every member of ``tune.lr_grid``, or ``tune.lr`` alone, at every dev-evaluation step,
  step 0 included) are scored on the k-per-class dev split; the best dev score wins (``tune.select_metric``: accuracy
  or macro-F1), ties broken by lower dev loss, the earlier step, the smaller learning rate. The winner's prompt is the
  result.
- ``cv``: "true few-shot" selection (Perez et al., 2021). Train and dev are pooled (2k per class) and dealt into
  ``tune.cv_folds`` stratified, seeded folds; for each fold the grid is tuned on the other folds and scored on it (no
  early stopping, so every fold scores every candidate). The candidate with the best mean fold score (ties: lower
  mean loss, earlier step, smaller rate) is then trained once on the whole pool for its number of steps, and that
  prompt is the result. Costs ``cv_folds + 1`` runs of the grid.

Learning curve (``tune.budgets``): the same selection restricted to candidates at steps <= B, for every budget B and
for ``tune.steps``; the curve's first point is the init itself (step 0, budget 0). :func:`curve_auc` is its area.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.config import ConfigError, TuneConfig
from workbench.learn.grid import select_member, train_step, tune_grid
from workbench.learn.tuner import PromptRun, batch_order, select_key


@dataclass
class Selected:
    """One run's selected prompt and its record; ``points`` is the learning curve (``prompts`` aligned with it)."""

    prompt: torch.Tensor
    dev: dict  # dev scores of the selected prompt (cv: the mean over folds)
    best_step: int
    steps_run: int
    stopped_early: bool
    step0_dev: dict
    record: dict  # extra row fields: selection, lr, lr_grid members, cv
    points: list = field(default_factory=list)  # {"budget", "step", "lr", "dev_acc"} for 0, budgets..., tune.steps
    prompts: list = field(default_factory=list)  # the prompt of each point
    snapshots: list = field(default_factory=list)


def curve_budgets(cfg: TuneConfig) -> list[int]:
    """The budgets of the learning curve: ``tune.budgets`` and ``tune.steps``, ascending ([] when budgets are off)."""
    return sorted(set(cfg.budgets) | {cfg.steps}) if cfg.budgets else []


def curve_auc(points: list[dict], key: str = "test_acc") -> float:
    """Area under the learning curve, normalised to the mean height: the trapezoid rule over x = log2(1 + budget)
    from budget 0 to the last, divided by the x range (an accuracy; a flat curve's area is its height)."""
    x = np.log2(1 + np.array([p["budget"] for p in points], dtype=float))
    y = np.array([p[key] for p in points], dtype=float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean()) if len(y) else math.nan
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def grid_lrs(cfg: TuneConfig) -> list[float]:
    return list(cfg.lr_grid) or [cfg.lr]


def tune_selected(head, init: torch.Tensor, train, dev, cfg: TuneConfig, seed: int, desc: str = "tune",
                  **kw) -> Selected:
    """Tune ``init`` and select by ``cfg.selection``; ``kw`` (log, progress, grad_hook) go to
    :func:`~workbench.learn.grid.tune_grid`. The learning-curve points are filled when ``tune.budgets`` is set."""
    if cfg.selection == "cv":
        return _cv(head, init, list(train) + list(dev), cfg, seed, desc, kw)
    lrs = grid_lrs(cfg)
    results = tune_grid(head, init, train, dev, dataclasses.replace(cfg, lr_grid=[]), seed, lrs, desc=desc, **kw)
    key = select_key(cfg)
    g = select_member(results, lrs, key)
    res = results[g]
    record = {"selection": "dev", "select_metric": cfg.select_metric,
              "lr": lrs[g] if cfg.optimizer != "adafactor-relative" else None}
    if cfg.lr_grid:
        record["lr_grid"] = [{"lr": lr, "dev_acc": r.dev["acc"], "dev_f1": r.dev["f1"], "dev_loss": r.dev["loss"],
                              "best_step": r.best_step, "steps_run": r.steps_run} for lr, r in zip(lrs, results)]
    out = Selected(prompt=res.prompt, dev=res.dev, best_step=res.best_step, steps_run=res.steps_run,
                   stopped_early=res.stopped_early, step0_dev=res.step0_dev, record=record, snapshots=res.snapshots)
    if cfg.budgets:
        out.points.append({"budget": 0, "step": 0, "lr": None, "dev_acc": res.step0_dev["acc"]})
        out.prompts.append(init.detach().float().cpu())
        for b in curve_budgets(cfg):
            within = [r.budget_best[b] if b in r.budget_best else _as_best(r) for r in results]
            h = min(range(len(lrs)), key=lambda i: (-within[i]["dev"][key], within[i]["dev"]["loss"],
                                                     within[i]["step"], lrs[i]))
            out.points.append({"budget": b, "step": within[h]["step"], "lr": lrs[h], "dev_acc": within[h]["dev"]["acc"]})
            out.prompts.append(within[h]["prompt"])
    return out


def _as_best(r) -> dict:
    return {"step": r.best_step, "dev": r.dev, "prompt": r.prompt}


def stratified_folds(examples, n_folds: int, seed: int, where: str = "") -> list[list[int]]:
    """Indices of ``examples`` dealt into ``n_folds`` folds, each class shuffled (seeded) and dealt in turn."""
    by_class: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_class.setdefault(ex.label, []).append(i)
    fewest = min(len(v) for v in by_class.values())
    if n_folds > fewest:
        raise ConfigError(f"tune.cv_folds ({n_folds}) is more than the examples per class of train+dev ({fewest}"
                          f"{' ' + where if where else ''}); lower tune.cv_folds or raise k")
    rng = np.random.default_rng([seed, 7])
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    for c in sorted(by_class):
        idx = by_class[c]
        for j, i in enumerate(rng.permutation(idx).tolist()):
            folds[j % n_folds].append(i)
    return [sorted(f) for f in folds]


def _cv(head, init, pool, cfg: TuneConfig, seed: int, desc: str, kw: dict) -> Selected:
    lrs = grid_lrs(cfg)
    folds = stratified_folds(pool, cfg.cv_folds, seed, f"in {desc}")
    fold_cfg = dataclasses.replace(cfg, lr_grid=[], patience=0, budgets=[], snapshot_every=0)
    scores: dict[tuple, list] = {}  # (lr index, step) -> [(acc, f1, loss) per fold]
    for f, held in enumerate(folds):
        held_set = set(held)
        tr = [ex for i, ex in enumerate(pool) if i not in held_set]
        results = tune_grid(head, init, tr, [pool[i] for i in held], fold_cfg, seed, lrs,
                            desc=f"{desc} fold{f + 1}/{len(folds)}", **{**kw, "log": _with_fold(kw.get("log"), f)})
        for g, r in enumerate(results):
            for h in r.history:
                scores.setdefault((g, h["step"]), []).append((h["dev_acc"], h["dev_f1"], h["dev_loss"]))
    mean = {key: dict(zip(("acc", "f1", "loss"), np.mean(v, axis=0).tolist())) for key, v in scores.items()}
    metric = select_key(cfg)
    chosen = {b: _cv_best(mean, lrs, b, metric) for b in (curve_budgets(cfg) or [cfg.steps])}
    chosen[0] = _cv_best(mean, lrs, 0, metric)
    prompts = _fit(head, init, pool, cfg, seed, lrs, set(chosen.values()), kw.get("grad_hook"))
    g, step = chosen[cfg.steps]
    record = {"selection": "cv", "select_metric": cfg.select_metric, "cv_folds": cfg.cv_folds,
              "lr": lrs[g] if cfg.optimizer != "adafactor-relative" else None, "n_pool": len(pool),
              "cv_candidates": [{"lr": lrs[gi], "step": s, "cv_acc": m["acc"], "cv_f1": m["f1"], "cv_loss": m["loss"]}
                                for (gi, s), m in sorted(mean.items())]}
    out = Selected(prompt=prompts[(g, step)], dev=mean[(g, step)], best_step=step, steps_run=step,
                   stopped_early=False, step0_dev=mean[(0, 0)], record=record)
    if cfg.budgets:
        for b in [0, *curve_budgets(cfg)]:
            gb, sb = chosen[b]
            out.points.append({"budget": b, "step": sb, "lr": None if b == 0 else lrs[gb],
                               "dev_acc": mean[(gb, sb)]["acc"]})
            out.prompts.append(prompts[(gb, sb)])
    return out


def _with_fold(log, fold: int):
    return None if log is None else (lambda rec: log({**rec, "fold": fold}))


def _cv_best(mean: dict, lrs: list[float], budget: int, metric: str = "acc") -> tuple[int, int]:
    """The (lr index, step) at a step <= ``budget`` with the best mean fold ``metric`` (ties: lower mean loss,
    earlier step, smaller rate)."""
    keys = [key for key in mean if key[1] <= budget]
    return min(keys, key=lambda key: (-mean[key][metric], mean[key]["loss"], key[1], lrs[key[0]]))


def _fit(head, init, pool, cfg: TuneConfig, seed: int, lrs, wanted: set, grad_hook) -> dict:
    """Train every learning rate in ``wanted`` ((lr index, step) pairs) on the whole pool, one backbone pass per step
    for all, as :func:`tune_grid` would (no dev); the prompt at each wanted step."""
    out = {(g, 0): init.detach().float().cpu().clone() for g, s in wanted if s == 0}
    need = {}
    for g, s in wanted:
        if s > 0:
            need[g] = max(need.get(g, 0), s)
    if not need:
        return out
    torch.manual_seed(seed)
    gs = sorted(need)
    runs = [PromptRun(init, dataclasses.replace(cfg, lr=lrs[g], lr_grid=[]), head.bb.device, f"fit lr={lrs[g]}")
            for g in gs]
    labels_all = torch.tensor([ex.label for ex in pool])
    for step, idx in zip(range(1, max(need.values()) + 1), batch_order(len(pool), cfg.batch_size, seed)):
        active = [(g, run) for g, run in zip(gs, runs) if need[g] >= step]
        train_step(head, [run for _, run in active], [pool[i] for i in idx], labels_all[idx], step, cfg, grad_hook)
        for g, run in active:
            if (g, step) in wanted:
                out[(g, step)] = run.prompt.detach().float().cpu().clone()
    return out
