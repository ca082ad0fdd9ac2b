"""Evaluating SUPMER: domain generalisation (tune on one sentiment domain, test on the others), the ψ gate and λ
curriculum over meta-training (:func:`curriculum_figure`) (the ablation table: :func:`workbench.experiments.walkthroughs.supmer_ablation_table`).

:func:`domain_generalisation` draws k-shot train/dev splits (per seed) from the *source* dataset (SST-2 by default),
tunes a prompt from each init (``supmer+psi`` tunes with the learned ψ applied frozen to every gradient), picks the
best-on-dev step, and evaluates that one prompt on the source's own test set (in-domain) and on each *target*'s test
set (MR, MPQA and Yelp-5 collapsed to two classes by default). Every dataset is scored with the source's head
(template and label words), since the prompt was tuned under it; targets must have the source's label set. With no
targets it is a plain few-shot comparison (in-domain test accuracy and the train-dev gap, e.g. of ψ), on any
dataset.

Yelp-5 to two classes (:func:`collapse_yelp`): 1-2 stars -> negative, 4-5 stars -> positive, 3 stars dropped.

Decontamination: the source's training pool (where the k-shot splits come from) loses every example whose normalised
text occurs in any target's test set; the counts per target are returned (``overlap``), together with the raw
overlap of the source's test set with each target test set (SST-2 and MR share Rotten Tomatoes sentences: the
in-domain and MR numbers are then not independent, and the table says how many are shared).

Returned: ``{"table": pandas.DataFrame (init x test set, "mean ± std" in %), "rows": per (init, seed, test set),
"overlap": ..., "config": ...}``; the mean ± std is over seeds (sample std, ddof=1; 0 for one seed).
"""
from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd

from workbench.config import ConfigError, PromptConfig, TaskConfig, TuneConfig
from workbench.engine.data import Dataset, load_dataset
from workbench.engine.heads import make_head
from workbench.engine.progress import progress_bar
from workbench.engine.runs import load_prompt, save_prompt
from workbench.engine.splits import decontaminate, kshot_split, normalize_text, subsample, texts_of
from workbench.engine.templates import resolve_format
from workbench.learn.inits import InitContext, make_prompt, warn_position
from workbench.learn.tuner import evaluate, tune_prompt
from workbench.methods.psi import load_psi
from workbench.methods.supmer import grad_hook_for


def collapse_yelp(ds: Dataset) -> Dataset:
    """A 5-class star-rating dataset as binary sentiment: labels 0-1 -> negative, 3-4 -> positive, 2 dropped."""
    if len(ds.labels) != 5:
        raise ConfigError(f"collapse_yelp needs a 5-class dataset, {ds.name!r} has {len(ds.labels)} labels")
    m = {0: 0, 1: 0, 3: 1, 4: 1}
    splits = {s: [replace(e, label=m[e.label]) for e in exs if e.label in m] for s, exs in ds.splits.items()}
    meta = {**ds.meta, "collapsed": "1-2 stars negative, 4-5 positive, 3 dropped"}
    return Dataset(f"{ds.name}-2class", ds.task, ["negative", "positive"], splits, ds.source, ds.files, meta)


def _load(name: str, n_labels: int | None = None) -> Dataset:
    """A dataset; as a target (``n_labels`` = the source's class count) Yelp-5 is collapsed for a binary source and
    the class count must match the source's."""
    ds = load_dataset(name)
    if n_labels == 2 and len(ds.labels) == 5 and "yelp" in ds.name.lower():
        ds = collapse_yelp(ds)
    if n_labels is not None and len(ds.labels) != n_labels:
        raise ConfigError(f"target {name!r} has labels {ds.labels} but the source has {n_labels} classes; domain "
                          "generalisation needs targets with the source's label set (e.g. binary sentiment)")
    return ds


def domain_generalisation(backbone, methods=("random", "supmer", "supmer+psi"), source: str = "sst2",
                          targets=("mr", "mpqa", "yelp5"), k: int = 16, seeds=(13, 21, 42),
                          tune: TuneConfig | None = None, prompt: PromptConfig | None = None,
                          task: TaskConfig | None = None, test_limit: int | None = None, meta_run: str | None = None,
                          extras: dict | None = None, progress: bool = True, run=None) -> dict:
    """Tune on ``source`` with each init in ``methods``, test on ``source`` and ``targets`` (see the module doc).

    ``meta_run``: a ``meta-train --method supmer`` run directory whose prompt (and ψ) the inits ``supmer`` /
    ``supmer+psi`` use instead of the cached meta-training; ``extras`` goes to the inits' ``InitContext.extras``;
    ``test_limit`` caps each test set (seeded subsample, the same for every init); ``run`` (a ``runs.RunDir``) gets
    one metrics record per (init, seed, test set) and each tuned prompt as a PEFT adapter."""
    tune, prompt, task = tune or TuneConfig(), prompt or PromptConfig(), task or TaskConfig()
    src = _load(source)
    tgts = {name: _load(name, len(src.labels)) for name in targets}
    overlap, pool = {}, src.splits["train"]
    for name, ds in tgts.items():
        tnorm = {normalize_text(t) for t in texts_of(ds.splits["test"])} - {""}
        _, n_train = decontaminate(src.splits["train"], tnorm)
        _, n_test = decontaminate(src.splits["test"], tnorm)
        pool, _ = decontaminate(pool, tnorm)
        overlap[ds.name] = {"source_train_in_target_test": n_train, "source_test_in_target_test": n_test}
    overlap["source_train_removed"] = len(src.splits["train"]) - len(pool)
    clean = Dataset(src.name, src.task, src.labels, {**src.splits, "train": pool}, src.source, src.files, src.meta)
    fmt = resolve_format(src.name, src.task, src.labels, backbone.family, task)
    head = make_head(backbone, fmt, task, prompt, tune.max_length)
    head.check_prompt_length(prompt.length)
    tests = {f"{src.name} (in-domain)": subsample(src.splits["test"], test_limit)}
    tests.update({ds.name: subsample(ds.splits["test"], test_limit) for ds in tgts.values()})
    rows, t_all = [], time.perf_counter()
    bar = progress_bar(total=len(seeds) * len(methods), desc="domain generalisation", enabled=progress)
    for seed in seeds:
        split = kshot_split(clean, k, seed)
        for method in methods:
            t0 = time.perf_counter()
            if meta_run is not None and method in ("supmer", "supmer+psi"):
                init, saved = load_prompt(f"{meta_run}/prompt")
                warn_position(saved["position"], prompt.position, f"{meta_run}/prompt")
                prov = {"init": method, "meta_run": str(meta_run)}
                if method == "supmer+psi":
                    load_psi(f"{meta_run}/psi", tuple(init.shape), backbone)
                    prov["psi"] = f"{meta_run}/psi"
            else:
                ctx = InitContext(backbone=backbone, cfg=prompt, seed=seed, fmt=fmt, dataset=clean, split=split,
                                  extras={**(extras or {}), "applies_grad_hook": True})
                init, prov = make_prompt(method, ctx)
            res = tune_prompt(head, init, split.train, split.dev, tune, seed, progress=False,
                              desc=f"{method} s{seed}", grad_hook=grad_hook_for(prov, head))
            train_acc = evaluate(head, split.train, res.prompt, tune.eval_batch_size)["acc"]
            for test_name, exs in tests.items():
                r = evaluate(head, exs, res.prompt, tune.eval_batch_size, tune.eval_precision)
                rows.append({"method": method, "seed": seed, "test": test_name, "acc": r["acc"], "f1": r["f1"],
                             "n_test": len(exs), "dev_acc": res.dev["acc"], "train_acc": train_acc,
                             "best_step": res.best_step, "wall_s": round(time.perf_counter() - t0, 2)})
                if run is not None:
                    run.log({"event": "row", **rows[-1]})
            if run is not None:
                save_prompt(run.path / "adapters" / src.name / method / f"seed{seed}", res.prompt, backbone,
                            {"dataset": src.name, "method": method, "seed": seed, "k": k, "best_step": res.best_step,
                             "insert_offset": head.offset, "position": head.position, "provenance": prov})
            bar.update(1)
    bar.close()
    df = pd.DataFrame(rows)
    agg = df.groupby(["method", "test"], sort=False)["acc"].agg(["mean", lambda v: v.std(ddof=1) if len(v) > 1
                                                                   else 0.0, "count"])
    agg.columns = ["mean", "std", "n"]
    table = agg.apply(lambda r: f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}", axis=1).unstack("test")
    table = table.reindex(index=list(methods), columns=list(tests))
    gap = df.drop_duplicates(["method", "seed"]).assign(gap=lambda d: d["train_acc"] - d["dev_acc"])
    table["train-dev gap"] = gap.groupby("method")["gap"].mean().reindex(list(methods)).map(lambda v: f"{100 * v:.1f}")
    return {"table": table, "rows": rows, "overlap": overlap, "wall_s": round(time.perf_counter() - t_all, 2),
            "config": {"methods": list(methods), "source": source, "targets": list(targets), "k": k,
                       "seeds": list(seeds), "test_limit": test_limit, "meta_run": meta_run,
                       "tune": tune.__dict__, "prompt": prompt.__dict__, "format": fmt.as_dict()}}
