"""The few-shot harness: datasets x methods x seeds -> rows, a summary, and one run directory.

A method is ``zero-shot``, ``linear-probe``, or the name of a registered init (prompt tuning from that init).
Everything that can be checked is checked before any training: methods, datasets, k-shot splits for every seed,
prompt length against the model's positions, and the output directory.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workbench.config import ConfigError, FewShotConfig, from_dict, to_dict
from workbench.engine.backbones import Backbone, load_backbone, set_threads
from workbench.engine.data import load_dataset
from workbench.engine.heads import make_head
from workbench.engine.progress import progress_bar
from workbench.engine.runs import (
    RunDir,
    check_out_dir,
    environment,
    save_prompt,
    save_snapshots,
)
from workbench.engine.splits import kshot_split, subsample
from workbench.engine.templates import resolve_format
from workbench.experiments.baselines import linear_probe
from workbench.experiments.executors import FAILED, Executor, WorkerJob, failures, job_token
from workbench.learn.inits import INITS, InitContext, downstream_grad_hook, make_prompt, saved_prompt
from workbench.learn.selection import curve_auc, stratified_folds, tune_selected
from workbench.learn.tuner import evaluate, metrics, predict

BASELINES = ("zero-shot", "linear-probe")
META_FIELDS = ("budget", "best_step", "selected_step", "stopped_early", "meta_val_improved", "meta_warning",
               "decontaminated_against", "cache_key")


def known_methods() -> list[str]:
    return list(BASELINES) + sorted(INITS)


def check_methods(methods: list[str]):
    unknown = [m for m in methods if m not in BASELINES and m not in INITS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; registered: {known_methods()}")


@dataclass
class Prepared:
    """A dataset ready to run: its data, format, head and k-shot splits."""

    dataset: object
    fmt: object
    head: object
    splits: dict


def prepare(cfg: FewShotConfig, backbone: Backbone) -> list[Prepared]:
    if "file" in cfg.methods:  # a missing or mis-shaped saved prompt is refused before any row runs
        saved_prompt(backbone, cfg.prompt)
    out = []
    for name in cfg.datasets:
        ds = load_dataset(name)
        fmt = resolve_format(ds.name, ds.task, ds.labels, backbone.family, cfg.task)
        head = make_head(backbone, fmt, cfg.task, cfg.prompt, cfg.tune.max_length)
        if any(m in INITS for m in cfg.methods):
            head.check_prompt_length(cfg.prompt.length)
        splits = {seed: kshot_split(ds, cfg.k, seed) for seed in cfg.seeds}
        if cfg.test_limit is not None:  # a quick look: the same seeded test subsample for every seed and method
            test = subsample(ds.splits["test"], cfg.test_limit)
            for sp in splits.values():
                sp.test = test
        if cfg.tune.selection == "cv" and any(m in INITS for m in cfg.methods):  # refused before any training
            for seed, sp in splits.items():
                stratified_folds(sp.train + sp.dev, cfg.tune.cv_folds, seed, f"in {ds.name} k={cfg.k} seed {seed}")
        out.append(Prepared(ds, fmt, head, splits))
    return out


def plan(cfg: FewShotConfig) -> list[tuple]:
    """The rows of the grid in run order: (dataset, k, method, seed)."""
    return [(name, cfg.k, method, seed) for name in cfg.datasets for seed in cfg.seeds for method in cfg.methods]


def run_fewshot(cfg: FewShotConfig, backbone: Backbone | None = None, progress: bool = True,
                executor: Executor | None = None) -> dict:
    """Run the grid and write ``cfg.out``; return the results dict (also in ``results.json``). ``executor``: where
    the rows run (default here, in order; ``ray``: Ray workers, which write the prompts below ``cfg.out``'s parent)."""
    executor = executor or Executor()
    check_methods(cfg.methods)
    check_out_dir(cfg.out, cfg.overwrite)
    executor.check()
    set_threads()
    backbone = backbone or load_backbone(cfg.backbone)
    prepared = prepare(cfg, backbone)  # every dataset and split checked before any row runs
    t_start = time.perf_counter()
    keys, failed = plan(cfg), []
    with RunDir(cfg.out, cfg.overwrite) as run:
        run.write_json("config.json", to_dict(cfg))
        bar = progress_bar(total=len(keys), desc="fewshot", enabled=progress, unit="row")
        rows: list[dict] = []

        def on_row(row: dict, records=()):
            for rec in records:
                run.log(rec)
            rows.append(row)
            run.log({"event": "row", **row})
            bar.update(1)

        by_name, zs_tests = dict(zip(cfg.datasets, prepared)), {}
        if executor.kind == "local":
            for key in keys:
                bar.set_postfix_str(f"{key[0]} {key[2]} seed={key[3]}")
                on_row(fewshot_row(cfg, by_name[key[0]], key, backbone, run, progress, zs_tests))
        else:
            described, failed = executor.run(FewShotJob(cfg, str(run.path)), keys, on_row, run.path / FAILED, bar)
            backbone = described or backbone
            order = {(by_name[d].dataset.name, k, m, s): i for i, (d, k, m, s) in enumerate(keys)}
            rows.sort(key=lambda r: order[r["dataset"], r["k"], r["method"], r["seed"]])  # as local writes them
        bar.close()
        results = {
            "rows": rows,
            "summary": summarise(rows),
            "failed": [list(f["key"]) for f in failed],
            "environment": environment(backbone.device),
            "backbone": backbone.describe(),
            "data": {p.dataset.name: {**p.dataset.describe(), "file_hashes": p.dataset.file_hashes(),
                                      "format": p.fmt.as_dict(),
                                      "splits": {s: sp.as_dict() for s, sp in p.splits.items()}} for p in prepared},
            "wall_s": round(time.perf_counter() - t_start, 2),
            "executor": executor.describe(),
            "config": to_dict(cfg),
        }
        run.write_json("results.json", results)
    if failed:  # the finished rows are written; the command still fails, naming the rows that did not
        raise failures(failed, len(keys), run.final / FAILED, "run them again (--methods, --seeds)")
    results["out"] = str(run.final)
    return results


def fewshot_row(cfg: FewShotConfig, prep: Prepared, key: tuple, backbone, run, progress: bool, zs_tests: dict) -> dict:
    """One row: a baseline or prompt tuning from an init, on ``prep``'s split of seed ``key[3]``. ``zs_tests``
    caches each dataset's unprompted test pass (seed-independent, shared by the baselines)."""
    name, k, method, seed = key
    ds, split, t0 = prep.dataset, prep.splits[seed], time.perf_counter()
    base = {"dataset": ds.name, "method": method, "seed": seed, "k": k, "n_train": len(split.train),
            "n_dev": len(split.dev), "n_test": len(split.test)}
    if method in BASELINES:
        if name not in zs_tests:
            zs_tests[name] = evaluate(prep.head, split.test, None, cfg.tune.eval_batch_size,
                                      cfg.tune.eval_precision, features=True, progress=progress,
                                      desc=f"{ds.name} test (no prompt)")
        row = _baseline(method, prep.head, split, zs_tests[name], cfg, seed)
    else:
        row = _prompt_tuning(method, prep, split, seed, cfg, backbone, run, progress)
    return {**base, **row, "wall_s": round(time.perf_counter() - t0, 3)}


class _Records:
    """What a Ray worker's row writes: prompts below the run's (shared) directory, metric records kept to send back."""

    def __init__(self, path: str):
        self.path, self.records = Path(path), []

    def log(self, record: dict):
        self.records.append({"time": round(time.time(), 3), **record})


class FewShotJob(WorkerJob):
    """The rows of one ``fewshot`` grid for Ray workers; a worker prepares each dataset once for the rows it runs."""

    def __init__(self, cfg: FewShotConfig, path: str):
        self.config, self.path = to_dict(cfg), path
        super().__init__(self.config["backbone"], job_token(self.config, path))

    def _reset(self):
        super()._reset()
        self._cfg, self._prepared, self._zs_tests = from_dict(FewShotConfig, self.config), {}, {}

    def run_key(self, key: tuple, backbone) -> tuple[dict, list]:
        cfg, name = self._cfg, key[0]
        if name not in self._prepared:
            self._prepared[name] = prepare(dataclasses.replace(cfg, datasets=[name]), backbone)[0]
        sink = _Records(self.path)
        return fewshot_row(cfg, self._prepared[name], key, backbone, sink, False, self._zs_tests), sink.records


def _baseline(method, head, split, zs_test, cfg, seed) -> dict:
    ev = lambda xs: evaluate(head, xs, None, cfg.tune.eval_batch_size, cfg.tune.eval_precision, features=True)
    dev = ev(split.dev)
    if method == "zero-shot":
        return {"dev_acc": dev["acc"], "dev_f1": dev["f1"], "dev_loss": dev["loss"], "test_acc": zs_test["acc"],
                "test_f1": zs_test["f1"], "best_step": 0, "steps_run": 0}
    tr = ev(split.train)
    lp = linear_probe(tr["features"], [e.label for e in split.train], dev["features"], [e.label for e in split.dev],
                      zs_test["features"], [e.label for e in split.test], head.n_classes, seed)
    return {"dev_acc": lp["dev"]["acc"], "dev_f1": lp["dev"]["f1"], "dev_loss": lp["dev"]["loss"],
            "test_acc": lp["test"]["acc"], "test_f1": lp["test"]["f1"], "best_step": 0, "steps_run": 0,
            "probe_C": lp["C"]}


def _prompt_tuning(method, prep, split, seed, cfg, backbone, run, progress, targets=None) -> dict:
    """One prompt-tuning row. ``targets``: every target dataset of the run (default ``cfg.datasets``), against which
    the meta inits shared by all targets are decontaminated (``meta.shared``)."""
    ds, head = prep.dataset, prep.head
    ctx = InitContext(backbone=backbone, cfg=cfg.prompt, seed=seed, fmt=prep.fmt, dataset=ds, split=split,
                      extras={"config": cfg, "applies_grad_hook": True, "progress": progress,
                              "targets": list(targets or cfg.datasets)})
    init, prov = make_prompt(method, ctx)
    log = lambda rec: run.log({"event": "eval", "dataset": ds.name, "method": method, "seed": seed, **rec})
    kw = {"log": log, "progress": progress, "desc": f"{ds.name} {method} s{seed}",
          "grad_hook": downstream_grad_hook(method, prov, head)}
    res = tune_selected(head, init, split.train, split.dev, cfg.tune, seed, **kw)
    test = _test_scores(head, split.test, res, cfg.tune, progress, ds.name)
    adapter = save_prompt(run.path / "adapters" / ds.name / method / f"seed{seed}", res.prompt, backbone,
                          {"dataset": ds.name, "method": method, "seed": seed, "k": cfg.k, "best_step": res.best_step,
                           "dev_acc": res.dev["acc"], "insert_offset": head.offset, "position": head.position,
                           "provenance": prov})
    if res.snapshots:  # tune.snapshot_every > 0: the prompt's trajectory, next to the adapter
        save_snapshots(adapter, res.snapshots, best_step=res.best_step)
    row = {"dev_acc": res.dev["acc"], "dev_f1": res.dev["f1"], "dev_loss": res.dev["loss"], "test_acc": test[0]["acc"],
           "test_f1": test[0]["f1"], "best_step": res.best_step, "steps_run": res.steps_run,
           "stopped_early": res.stopped_early, "step0_dev_acc": res.step0_dev["acc"], **res.record}
    if "budget" in prov:  # a meta init: its training budget and whether meta-validation ever improved
        row["meta"] = {key: prov.get(key) for key in META_FIELDS}
    if res.points:
        row["curve"] = [{**p, "test_acc": t["acc"], "test_f1": t["f1"]} for p, t in zip(res.points, test[1:])]
        row["init_test_acc"] = row["curve"][0]["test_acc"]
        row["curve_auc"] = curve_auc(row["curve"])
    return row


def _test_scores(head, test, res, cfg, progress: bool, name: str) -> list[dict]:
    """Test scores of the selected prompt and of every learning-curve prompt, from one stacked pass over the distinct
    prompts."""
    prompts = [res.prompt, *res.prompts]
    distinct: list[torch.Tensor] = []
    where = []
    for p in prompts:
        j = next((i for i, q in enumerate(distinct) if q.shape == p.shape and torch.equal(q, p)), None)
        if j is None:
            distinct.append(p)
            j = len(distinct) - 1
        where.append(j)
    logits = predict(head, test, torch.stack(distinct), cfg.eval_batch_size, cfg.eval_precision, progress=progress,
                     desc=f"{name} test")["logits"]
    labels = np.array([ex.label for ex in test])
    scores = [metrics(lg, labels, head.n_classes) for lg in logits]
    return [scores[j] for j in where]


def summarise(rows: list[dict], keys=("test_acc", "test_f1", "dev_acc")) -> list[dict]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of ``keys`` per dataset x method."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    out = []
    for (dataset, method), rs in groups.items():
        entry = {"dataset": dataset, "method": method, "n": len(rs)}
        for key in keys:
            v = np.array([r[key] for r in rs], dtype=float)
            entry[f"{key}_mean"] = float(v.mean())
            entry[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(entry)
    return out


SUMMARY_COLUMNS = (("test_acc", "test acc"), ("test_f1", "test macro-F1"), ("dev_acc", "dev acc"))


def format_summary(summary: list[dict], columns=SUMMARY_COLUMNS) -> str:
    """A plain-text table: ``columns`` ((key, title) pairs; default test accuracy, macro-F1, dev accuracy) as
    mean ± std in % per dataset and method."""
    head = f"{'dataset':<12} {'method':<16} " + " ".join(f"{t:>14}" for _, t in columns) + f" {'n':>3}"
    lines = [head, "-" * len(head)]
    for s in summary:
        cells = " ".join(f"{100 * s[k + '_mean']:5.1f} ± {100 * s[k + '_std']:4.1f}".rjust(14) for k, _ in columns)
        lines.append(f"{s['dataset']:<12} {s['method']:<16} {cells} {s['n']:>3}")
    return "\n".join(lines)
