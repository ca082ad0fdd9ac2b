"""Task similarity for MPT: how alike is a target to each of its sources, and does that predict the meta init's gain?

For a target dataset and each source dataset (after the sources are decontaminated against the target):

- ``embed_cos``: cosine of the two datasets' **mean sentence embeddings**: the mean of the L2-normalised, mean-pooled
  features of the frozen backbone (:func:`workbench.corpus.embed_texts`) over a seeded sample of ``n_texts`` train
  texts (a pair is embedded as ``text_a + " " + text_b``).
- **per-task tuned prompts**: for each seed, every task (target and sources) tunes a prompt with
  :func:`workbench.tuner.tune_prompt` on its own k-shot split (best on its dev split), all from the **same** init
  (``init`` at that seed, e.g. ``random``: identical for every task). Compared four ways:
  ``prompt_cos_flat`` = cosine of the flattened (L*d) prompts; ``prompt_cos_slots`` = cosine of the prompts' means
  over the L slots (a (d,) vector: insensitive to which slot moved); ``update_cos_flat`` / ``update_cos_slots`` =
  the same on the updates ``P_task - P_init``. The shared init dominates the raw cosines when tuning moves the prompt
  little; the update cosines measure only what each task taught (NaN when a task kept its init: best step 0).
  Values are means over seeds.

:func:`gains` turns harness result rows into the gain of a meta init over a baseline per target (paired per-seed
differences of test accuracy: mean, sample std, the differences), :func:`join` attaches each target's gain to its
(target, source) similarity rows and :func:`write_outputs` saves the table (CSV + JSON). The figures (similarity
against gain) are drawn by :mod:`workbench.viz.similarity`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.config import (
    SimilarityConfig,
    WorkbenchError,
    from_dict,
    to_dict,
)
from workbench.engine.data import load_dataset
from workbench.engine.heads import make_head
from workbench.engine.progress import progress_bar
from workbench.engine.runs import RunError, atomic_write, read_json, read_run, write_json
from workbench.engine.splits import decontaminate, kshot_split, texts_of
from workbench.engine.templates import resolve_format
from workbench.learn.inits import InitContext, make_prompt
from workbench.learn.tuner import tune_prompt
from workbench.tasks.corpus import embed_texts
from workbench.tasks.labelled import family_of

PROMPT_COLUMNS = ("prompt_cos_flat", "prompt_cos_slots", "update_cos_flat", "update_cos_slots")
SIM_COLUMNS = ("embed_cos",) + PROMPT_COLUMNS


class SimilarityError(WorkbenchError, ValueError):
    """Bad input for a similarity analysis (a target among its sources, no paired seeds, ...); names the culprit."""


def config_from_dict(d: dict) -> SimilarityConfig:
    return from_dict(SimilarityConfig, d)


# ----------------------------------------------------------------------------------------------- pieces
def cosine(a, b) -> float:
    """Cosine of two arrays/tensors, flattened; NaN when either has zero norm."""
    a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64).ravel()
    b = np.asarray(b.detach().cpu() if hasattr(b, "detach") else b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise SimilarityError(f"cannot compare shapes {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def prompt_cosines(p_target, p_source, p_init) -> dict:
    """The four prompt cosines of the module docstring for two (L, d) prompts tuned from ``p_init``."""
    t, s, i = (np.asarray(p.detach().cpu() if hasattr(p, "detach") else p, dtype=np.float64)
               for p in (p_target, p_source, p_init))
    if t.ndim != 2 or t.shape != s.shape or t.shape != i.shape:
        raise SimilarityError(f"prompts must be (L, d) of one shape, got {t.shape}, {s.shape} and init {i.shape}")
    return {"prompt_cos_flat": cosine(t, s), "prompt_cos_slots": cosine(t.mean(0), s.mean(0)),
            "update_cos_flat": cosine(t - i, s - i), "update_cos_slots": cosine((t - i).mean(0), (s - i).mean(0))}


def example_text(e) -> str:
    return e.text_a if e.text_b is None else f"{e.text_a} {e.text_b}"


def sample_texts(ds, n: int, seed: int) -> list[str]:
    """``n`` train texts of ``ds`` drawn with ``random.Random(seed)`` (all of them when there are fewer)."""
    train = ds.splits["train"]
    idx = sorted(random.Random(seed).sample(range(len(train)), min(n, len(train))))
    return [example_text(train[i]) for i in idx]


def mean_embedding(backbone, texts: list[str], max_length: int = 128, cache_dir=None, progress=False) -> np.ndarray:
    """Mean of the L2-normalised sentence features of ``texts`` ((d,) float64, not re-normalised)."""
    if not texts:
        raise SimilarityError("no texts to embed")
    return embed_texts(backbone, texts, max_length=max_length, cache_dir=cache_dir, progress=progress).astype(
        np.float64).mean(0)


def decontaminate_sources(target, sources, k: int, seeds, against: str = "test+fewshot"):
    """Sources with every train example whose normalised text occurs in the target removed (``data.decontaminate``).

    ``against="test+fewshot"``: the target's test split and its k-shot train + dev splits for ``seeds``; ``"all"``:
    every target split. A source with the target's name is refused (leakage). Returns ``(sources, records)``, one
    record per source: source, n_train_before, n_removed, n_train_after, n_target_texts."""
    if bad := [s.name for s in sources if s.name == target.name or s.name.lower() in family_of(target.name)]:
        raise SimilarityError(f"target {target.name!r} is among its own sources {bad} (same dataset or family: "
                              "leakage)")
    if against == "all":
        pool = [e for split in target.splits.values() for e in split]
    else:
        pool = list(target.splits["test"])
        for seed in seeds:
            sp = kshot_split(target, k, seed)
            pool += sp.train + sp.dev
    target_texts = texts_of(pool)
    out, records = [], []
    for s in sources:
        kept, n_removed = decontaminate(s.splits["train"], target_texts)
        if not kept:
            raise SimilarityError(f"source {s.name!r}: all {n_removed} train examples occur in target {target.name!r}")
        out.append(dataclasses.replace(s, splits={**s.splits, "train": kept}))
        records.append({"source": s.name, "n_train_before": len(s.splits["train"]), "n_removed": n_removed,
                        "n_train_after": len(kept), "n_target_texts": len(set(target_texts))})
    return out, records


def tune_task_prompt(backbone, ds, cfg: SimilarityConfig, seed: int, progress: bool = False) -> dict:
    """Tune one prompt for ``ds`` on its k-shot split at ``seed`` from ``cfg.init``; returns prompt, init, best_step,
    dev_acc."""
    fmt = resolve_format(ds.name, ds.task, ds.labels, backbone.family, cfg.task)
    head = make_head(backbone, fmt, cfg.task, cfg.prompt, cfg.tune.max_length)
    head.check_prompt_length(cfg.prompt.length)
    split = kshot_split(ds, cfg.k, seed)
    init, _ = make_prompt(cfg.init, InitContext(backbone=backbone, cfg=cfg.prompt, seed=seed, fmt=fmt, dataset=ds,
                                                split=split))
    res = tune_prompt(head, init, split.train, split.dev, cfg.tune, seed, progress=progress,
                      desc=f"{ds.name} prompt s{seed}")
    return {"prompt": res.prompt, "init": init, "best_step": res.best_step, "dev_acc": res.dev["acc"]}


def _load(d):
    return load_dataset(d) if isinstance(d, (str, Path)) else d


# ----------------------------------------------------------------------------------------------- the table
def task_similarity(backbone, target, sources, cfg: SimilarityConfig | None = None, cache_dir=None,
                    progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Similarity of ``target`` to each of ``sources`` (Dataset objects or names). Returns ``(table, info)``: one
    row per source with target, source, n_removed, n_source_train, embed_cos and (with ``cfg.prompts``) the prompt
    cosines (means over seeds); ``info`` has the config, the decontamination records and per-seed details."""
    cfg = cfg or SimilarityConfig()
    target, sources = _load(target), [_load(s) for s in sources]
    if not sources:
        raise SimilarityError("no source datasets given")
    sources, records = decontaminate_sources(target, sources, cfg.k, cfg.seeds, cfg.decontaminate)
    emb = lambda ds: mean_embedding(backbone, sample_texts(ds, cfg.n_texts, cfg.seeds[0]), cfg.embed_max_length,
                                    cache_dir, False)
    e_target = emb(target)
    rows = [{"target": target.name, "source": s.name, "n_removed": r["n_removed"], "n_source_train": r["n_train_after"],
             "embed_cos": cosine(e_target, emb(s))} for s, r in zip(sources, records)]
    per_seed: list[dict] = []
    if cfg.prompts:
        bar = progress_bar(total=len(cfg.seeds) * (1 + len(sources)), desc="task prompts", enabled=progress)
        for seed in cfg.seeds:
            t = tune_task_prompt(backbone, target, cfg, seed)
            bar.update(1)
            for row, s in zip(rows, sources):
                p = tune_task_prompt(backbone, s, cfg, seed)
                bar.update(1)
                if not np.allclose(p["init"].numpy(), t["init"].numpy()):
                    raise SimilarityError(f"init {cfg.init!r} differs between {target.name!r} and {s.name!r} at seed "
                                          f"{seed}: prompt cosines need one shared init (use e.g. 'random')")
                per_seed.append({"seed": seed, "source": s.name, "target_best_step": t["best_step"],
                                 "source_best_step": p["best_step"], "target_dev_acc": t["dev_acc"],
                                 "source_dev_acc": p["dev_acc"], **prompt_cosines(t["prompt"], p["prompt"], t["init"])})
        bar.close()
        for row in rows:
            mine = [r for r in per_seed if r["source"] == row["source"]]
            for col in PROMPT_COLUMNS:
                vals = [r[col] for r in mine if not math.isnan(r[col])]
                row[col] = float(np.mean(vals)) if vals else float("nan")
            row["n_seeds"] = len(mine)
    info = {"config": to_dict(cfg), "target": target.name, "decontamination": records, "per_seed": per_seed,
            "backbone": getattr(backbone, "name", None)}
    return pd.DataFrame(rows), info


# ----------------------------------------------------------------------------------------------- gains
def _rows_of(results) -> list[dict]:
    """Rows from a results dict, a list of rows, a results.json file or a run directory."""
    if isinstance(results, (str, Path)):
        p, hint = Path(results), "expected a fewshot run directory or its results.json"
        try:
            results = read_run(p, hint).results if p.is_dir() else read_json(p, hint)
        except RunError as e:
            raise SimilarityError(str(e)) from None
    rows = results.get("rows") if isinstance(results, dict) else results
    if not isinstance(rows, list):
        raise SimilarityError("results must be a results dict with 'rows', a list of rows, or a path to results.json")
    return rows


def gains(results, methods, baseline: str = "random", metric: str = "test_acc") -> pd.DataFrame:
    """Gain of each of ``methods`` over ``baseline`` per dataset: paired per-seed differences of ``metric``.

    Only seeds with both a method row and a baseline row count. Columns: target, method, baseline, n, gain_mean,
    gain_std (sample std; 0 for one seed), diffs and seeds (lists, in seed order), method_mean, baseline_mean."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    rows, table = _rows_of(results), {}
    for r in rows:
        key = (r.get("dataset"), r.get("method"), r.get("seed"))
        if key in table:
            raise SimilarityError(f"two rows for dataset={key[0]!r} method={key[1]!r} seed={key[2]!r}")
        if metric not in r:
            raise SimilarityError(f"row {key} has no {metric!r}")
        table[key] = float(r[metric])
    out = []
    for ds in dict.fromkeys(k[0] for k in table):
        base = {s: v for (d, m, s), v in table.items() if d == ds and m == baseline}
        for method in methods:
            mine = {s: v for (d, m, s), v in table.items() if d == ds and m == method}
            seeds = sorted(set(mine) & set(base))
            if not seeds:
                continue
            diffs = [mine[s] - base[s] for s in seeds]
            out.append({"target": ds, "method": method, "baseline": baseline, "n": len(seeds),
                        "gain_mean": float(np.mean(diffs)),
                        "gain_std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0,
                        "diffs": diffs, "seeds": seeds, "method_mean": float(np.mean([mine[s] for s in seeds])),
                        "baseline_mean": float(np.mean([base[s] for s in seeds]))})
    if not out:
        found = sorted({(k[0], k[1]) for k in table})
        raise SimilarityError(f"no dataset has seeds with both {methods} and {baseline!r} rows; found {found}")
    return pd.DataFrame(out)


def join(similarity: pd.DataFrame, gain: pd.DataFrame) -> pd.DataFrame:
    """Each (target, source) similarity row with its target's gain row(s) (one per method); inner join on target."""
    missing = sorted(set(similarity["target"]) - set(gain["target"]))
    out = similarity.merge(gain, on="target", how="inner")
    if out.empty:
        raise SimilarityError(f"no gain for the targets {missing} (gains cover {sorted(set(gain['target']))})")
    return out


# ----------------------------------------------------------------------------------------------- files
def write_outputs(out_dir, table: pd.DataFrame, info: dict | None = None, figures: dict | None = None) -> Path:
    """Write ``similarity.csv`` and ``similarity.json`` (rows + info) into ``out_dir``. Figures are drawn and saved
    by the viz layer (:func:`workbench.viz.similarity.similarity_figures`, :func:`workbench.viz.output.save_figure`);
    ``figures`` is refused (it is kept in the signature so that an old call fails with this explanation)."""
    if figures:
        raise SimilarityError(f"write_outputs(figures={sorted(figures)}): figures are no longer written here; save "
                              "them with workbench.viz.output.save_figure (see workbench.viz.similarity)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "similarity.csv", table.to_csv(index=False))
    rows = json.loads(table.to_json(orient="records"))  # NaN -> null
    write_json(out / "similarity.json", {"rows": rows, "info": info or {}})
    return out
