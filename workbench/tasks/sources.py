"""Automatic choice of MPT's labelled source datasets (``labelled.sources = "auto"``): MPT's own task-similarity
analysis turned into a default.

Candidates are every labelled dataset on the data path except the target and its family (the ``leave-one-out``
pool), each already decontaminated against the target. Each candidate is scored on the data its MPT tasks would
be: the union of its seeded k-shot draws ``kshot_split(ds, labelled.k, seed)`` over ``labelled.seeds``, train and
dev parts (2k per class per seed, balanced, so chance is 1/C; one seed alone, 64 texts for a binary set, is too few
for the test below to see a 60%-accurate task), in its own target-independent format (the one
:class:`LabelledSource` gives it):

- **learnability**: (a) the bare model's accuracy (no prompt) and (b) a linear probe's accuracy: standardised
  logistic regression on the pooled features the head returns, its C chosen by an inner 3-fold search over
  ``C_GRID`` (the linear-probe baseline's grid), scored by outer stratified 5-fold cross-validated predictions (nested,
  so choosing C does not inflate the score). Each accuracy is tested against chance with a one-sided binomial test;
  a candidate is *learnable* when either rejects chance at ``labelled.auto_alpha / 2`` (Bonferroni over the two
  tests, so a candidate at chance on both is kept with probability <= ``auto_alpha``). Measured on MiniLM: the
  sentence-pair sets score at chance for the bare model, whose anchors for them are "Yes"/"No"/"Maybe".
- **similarity to the target**: cosine between the mean of the L2-normalised pooled features of the candidate's
  sample and that of the target's k-shot **train** parts for ``labelled.seeds`` (never the target's test split,
  never its dev parts). Without a target the learnable candidates are ranked by their best margin over chance.

The learnable candidates are ranked by similarity and the first ``labelled.auto_top`` kept. Every candidate gets a
record (dataset, similarity, bare_acc, probe_acc, chance, their p-values, kept, reason) that the source's
``describe()`` carries as ``selection`` (and so the meta-run's ``results.json``). Scores are cached in memory per
(backbone, dataset, format, examples, k, seed).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workbench.config import ConfigError, LabelledConfig, PromptConfig, TaskConfig
from workbench.engine.data import DataError, Dataset
from workbench.engine.heads import make_head
from workbench.engine.splits import kshot_split
from workbench.engine.templates import resolve_format

PROBE_FOLDS = 5
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # the linear probe's C values (also the linear-probe baseline's)
BATCH = 32
_CACHE: dict = {}


def source_format(ds: Dataset, backbone, task_cfg: TaskConfig):
    """The target-independent format a source dataset is scored (and meta-trained) in: its preset or the generic
    one, with only the scoring settings of ``task_cfg`` (temperature, length_norm)."""
    return resolve_format(ds.name, ds.task, ds.labels, backbone.family, TaskConfig(
        temperature=task_cfg.temperature, length_norm=task_cfg.length_norm))


def _forward(head, examples) -> tuple[np.ndarray, np.ndarray]:
    logits, feats = [], []
    with torch.inference_mode():
        for s in range(0, len(examples), BATCH):
            lg, ft = head.forward(head.batch(examples[s:s + BATCH]), None)
            logits.append(lg.float().cpu().numpy())
            feats.append(ft.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(feats)


def _cached_pass(ds: Dataset, examples, backbone, task_cfg, prompt_cfg, max_length) -> tuple[np.ndarray, np.ndarray]:
    fmt = source_format(ds, backbone, task_cfg)
    key = (getattr(backbone, "name", ""), id(backbone.model), ds.name, ds.task, tuple(ds.labels), fmt.template,
           tuple(fmt.label_texts), task_cfg.temperature, task_cfg.length_norm, prompt_cfg.position,
           prompt_cfg.pool_prompt, max_length, hash(tuple(examples)), len(examples))
    if key not in _CACHE:
        _CACHE[key] = _forward(make_head(backbone, fmt, task_cfg, prompt_cfg, max_length), list(examples))
    return _CACHE[key]


def probe_accuracy(feats: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Nested cross-validated accuracy of a standardised logistic regression on ``feats`` (C from an inner 3-fold
    search over C_GRID; outer stratified folds, seeded)."""
    folds = min(PROBE_FOLDS, int(np.bincount(labels).min()))
    if folds < 2:
        return float("nan")
    inner = GridSearchCV(LogisticRegression(max_iter=2000), {"C": list(C_GRID)}, cv=3, scoring="accuracy")
    model = make_pipeline(StandardScaler(), inner)
    pred = cross_val_predict(model, feats, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return float((pred == labels).mean())


def _p_above_chance(acc: float, n: int, chance: float) -> float:
    if not np.isfinite(acc):
        return 1.0
    return float(binomtest(round(acc * n), n, chance, alternative="greater").pvalue)


def fewshot_sample(ds: Dataset, k: int, seeds, parts=("train", "dev")) -> list:
    """The union (first occurrence kept, in order) of the ``parts`` of ``ds``'s k-shot draws for ``seeds``."""
    out = {}
    for seed in seeds:
        sp = kshot_split(ds, k, seed)
        out.update(dict.fromkeys(e for part in parts for e in getattr(sp, part)))
    return list(out)


def score_candidate(ds: Dataset, backbone, k: int, seeds, task_cfg: TaskConfig, prompt_cfg: PromptConfig,
                    max_length: int) -> dict:
    """Learnability of ``ds`` on its k-shot draws for ``seeds`` (train + dev parts) and its mean feature vector."""
    exs = fewshot_sample(ds, k, seeds)
    seed = seeds[0]
    logits, feats = _cached_pass(ds, exs, backbone, task_cfg, prompt_cfg, max_length)
    y = np.array([e.label for e in exs])
    n, chance = len(y), 1.0 / len(ds.labels)
    bare = float((logits.argmax(1) == y).mean())
    probe = probe_accuracy(feats, y, seed)
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return {"n": n, "chance": chance, "bare_acc": bare, "bare_p": _p_above_chance(bare, n, chance),
            "probe_acc": probe, "probe_p": _p_above_chance(probe, n, chance), "embedding": unit.mean(0)}


def target_embedding(target: Dataset, backbone, k: int, seeds, task_cfg, prompt_cfg, max_length) -> np.ndarray:
    """Mean L2-normalised pooled feature of the target's k-shot **train** parts for ``seeds``: its test split and
    its dev parts are never scored."""
    train = fewshot_sample(target, k, seeds, parts=("train",))
    _, feats = _cached_pass(target, train, backbone, task_cfg, prompt_cfg, max_length)
    return (feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)).mean(0)


def _cos(a, b) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def _r(x, digits=4):
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def select_sources(candidates: list[Dataset], target: Dataset | None, backbone, lc: LabelledConfig,
                   task_cfg: TaskConfig, prompt_cfg: PromptConfig, max_length: int) -> tuple[list[str], dict]:
    """Choose sources among ``candidates`` (already decontaminated against the target) as the module docstring
    says. Returns ``(kept names in rank order, info)``; ``info["selection"]`` has one record per candidate (kept
    first, each group in rank order). Refuses (ConfigError) when no candidate is learnable."""
    t0 = time.perf_counter()
    seeds = list(lc.seeds) or [0]
    level = lc.auto_alpha / 2
    temb = target_embedding(target, backbone, lc.k, seeds, task_cfg, prompt_cfg, max_length) if target else None
    records, learnable = [], []
    for ds in candidates:
        rec = {"dataset": ds.name, "similarity": None, "bare_acc": None, "probe_acc": None,
               "chance": _r(1.0 / len(ds.labels)), "bare_p": None, "probe_p": None, "n": 0, "kept": False}
        try:
            s = score_candidate(ds, backbone, lc.k, seeds, task_cfg, prompt_cfg, max_length)
        except DataError as e:
            rec["reason"] = f"dropped: too few examples for a {lc.k}-shot draw after decontamination ({e})"
            records.append(rec)
            continue
        rec.update(n=s["n"], bare_acc=_r(s["bare_acc"]), probe_acc=_r(s["probe_acc"]),
                   bare_p=float(f"{s['bare_p']:.3g}"), probe_p=float(f"{s['probe_p']:.3g}"))
        if temb is not None:
            rec["similarity"] = _r(_cos(s["embedding"], temb))
        tests = (f"bare {s['bare_acc']:.3f} (p={s['bare_p']:.3g}), probe {s['probe_acc']:.3f} "
                 f"(p={s['probe_p']:.3g}) vs chance {s['chance']:.3f}")
        if min(s["bare_p"], s["probe_p"]) < level:
            rec["reason"] = f"learnable: {tests}"
            learnable.append((rec, max(s["bare_acc"], s["probe_acc"]) - s["chance"]))
        else:
            rec["reason"] = f"dropped: not learnable: {tests}; neither p < auto_alpha/2 = {level:g}"
        records.append(rec)
    if not learnable:
        table = "; ".join(f"{r['dataset']}: {r['reason']}" for r in records)
        raise ConfigError(f"labelled.sources=auto: no candidate source beats chance ({table}); set labelled.datasets "
                          "or another labelled.sources")
    by = "similarity" if temb is not None else "margin over chance (no target)"
    def order(rm):
        value = rm[0]["similarity"] if temb is not None else rm[1]
        return (-(value if value is not None else -np.inf), rm[0]["dataset"])
    learnable.sort(key=order)
    for rank, (rec, _) in enumerate(learnable, 1):
        rec["rank"] = rank
        rec["kept"] = rank <= lc.auto_top
        where = f"{by} rank {rank} of {len(learnable)} learnable"
        rec["reason"] = (f"kept: {where}; " if rec["kept"] else
                         f"dropped: {where} > labelled.auto_top={lc.auto_top}; ") + rec["reason"]
    ordered = [r for r, _ in learnable] + [r for r in records if "rank" not in r]
    kept = [r["dataset"] for r, _ in learnable if r["kept"]]
    info = {"selection": ordered, "auto": {"top": lc.auto_top, "alpha": lc.auto_alpha, "seeds": seeds, "k": lc.k,
                                           "ranked_by": by, "n_candidates": len(candidates),
                                           "n_learnable": len(learnable),
                                           "wall_s": round(time.perf_counter() - t0, 2)}}
    return kept, info
