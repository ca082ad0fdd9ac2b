"""``python -m workbench bayes``: BayesPrompt modes against baselines, datasets x seeds, accuracy and ECE.

Per dataset and seed (one k-shot split), after fitting the distribution once (:func:`workbench.bayes.build_distribution`):

- ``bayes-init``: one sampled prompt initialises ordinary prompt tuning (``tuner.tune_prompt``), best-on-dev.
- ``bayes-resample`` (the original's behaviour, on a frozen backbone): the prompt at every training step is
  ``base + offset_scale * (sample - centre)``, a fresh particle draw each step (one per batch, as the original
  effectively does), where ``centre`` is the particles' mean. **What is learned** is the base prompt ``base``
  (initialised at one sampled prompt); the particle offsets are resampled noise, never learned. Dev selection scores
  each evaluated base with R fixed draws, probabilities averaged (so selection is deterministic). At test, as the
  original, one fresh draw per test batch (seeded: the result is reproducible but stochastic in the draw).
- ``bayes-ensemble``: the same trained base; at test R draws, softmax probabilities averaged.

Baselines (``--baselines``): ``zero-shot`` (no prompt), and prompt tuning from any registered init (``random``,
``vocab``...). Every method reports test accuracy, macro-F1, NLL and ECE (15 bins, :func:`workbench.bayes.ece`).
Selection is always on dev, never test. The run directory holds config.json, metrics.jsonl, results.json (rows;
summary with mean ± std of acc and ECE per dataset x method; the density setting), PEFT adapters for tuned prompts
(``adapters/<ds>/<method>/seed<s>``; for resample/ensemble the learned base), the distributions
(``distributions/<ds>/seed<s>``), test probabilities (``predictions/<ds>/seed<s>/<method>.safetensors``), and
``report.md``: each mode minus each baseline in accuracy and ECE, paired over seeds (:mod:`workbench.bayes_report`;
also under ``comparisons`` in results.json).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import save_file

from workbench.config import (
    BackboneConfig,
    ConfigError,
    FewShotConfig,
    PromptConfig,
    TaskConfig,
    TuneConfig,
    to_dict,
)
from workbench.engine.backbones import load_backbone, set_threads
from workbench.engine.progress import progress_bar
from workbench.engine.runs import (
    RunDir,
    atomic_write,
    check_out_dir,
    environment,
    save_prompt,
)
from workbench.engine.splits import subsample
from workbench.experiments.bayes_report import compare, protocol_line, report
from workbench.experiments.fewshot import check_methods, prepare
from workbench.experiments.fewshot import format_summary as harness_format
from workbench.experiments.fewshot import summarise as _summarise
from workbench.learn.inits import InitContext, make_prompt
from workbench.learn.tuner import (
    TuneResult,
    evaluate,
    metrics,
    predict,
    tune_prompt,
)
from workbench.methods.bayes import (
    BayesConfig,
    BayesError,
    build_distribution,
    ece,
    softmax,
)

MODES = ("init", "resample", "ensemble")


@dataclass
class BayesRunConfig:
    datasets: list[str] = field(default_factory=lambda: ["sst2"])
    k: int = 16
    seeds: list[int] = field(default_factory=lambda: [13, 21, 42, 87, 100])
    modes: list[str] = field(default_factory=lambda: list(MODES))
    baselines: list[str] = field(default_factory=lambda: ["zero-shot", "random", "vocab"])
    ensemble_size: int = 8  # R: prompts drawn at test (ensemble) and for dev selection of the resampled base
    test_limit: int = 0  # 0 = full test split; else a seeded subset of this size (splits.subsample; smoke runs)
    out: str = "runs/bayes"
    overwrite: bool = False
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    bayes: BayesConfig = field(default_factory=BayesConfig)
    recipe: dict = field(default_factory=dict)  # the recipe the run started from (--recipe): name, scale, sha256

    def __post_init__(self):
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"modes must be a non-empty subset of {list(MODES)}, got {self.modes}")
        if self.ensemble_size < 1 or self.test_limit < 0 or self.k < 1 or not self.seeds or not self.datasets:
            raise ConfigError("need ensemble_size >= 1, test_limit >= 0, k >= 1, and at least one seed and dataset")

    def fewshot(self) -> FewShotConfig:
        base = [b for b in self.baselines if b != "zero-shot"]
        return FewShotConfig(datasets=self.datasets, methods=base + ["bayes"], k=self.k, seeds=self.seeds, out=self.out,
                             overwrite=self.overwrite, backbone=self.backbone, prompt=self.prompt, task=self.task,
                             tune=self.tune, bayes=self.bayes)


def scores(logits_or_probs: np.ndarray, labels: np.ndarray, n_classes: int, probs: bool = False) -> dict:
    p = logits_or_probs if probs else softmax(logits_or_probs)
    m = metrics(np.log(np.clip(p, 1e-12, 1)), labels, n_classes)
    e, _ = ece(p, labels)
    return {"acc": m["acc"], "f1": m["f1"], "nll": m["loss"], "ece": e}


def offset_sampler(dist, length: int, scale: float, subset: int):
    centre = dist.centre(length)
    return lambda gen: scale * (dist.sample_prompt(length, gen, subset) - centre)


def ensemble_probs(head, examples, base, offsets: list, cfg: TuneConfig) -> np.ndarray:
    """(R, N, C) softmax probabilities of ``base + offset_r`` for each fixed offset."""
    return np.stack([softmax(predict(head, examples, base + o, cfg.eval_batch_size, cfg.eval_precision)["logits"])
                     for o in offsets])


def resample_probs(head, examples, base, draw, gen, cfg: TuneConfig) -> np.ndarray:
    """(N, C): one fresh draw per batch of ``eval_batch_size`` examples (the original's stochastic evaluation)."""
    out = []
    for s in range(0, len(examples), cfg.eval_batch_size):
        chunk = examples[s:s + cfg.eval_batch_size]
        out.append(softmax(predict(head, chunk, base + draw(gen), cfg.eval_batch_size, cfg.eval_precision)["logits"]))
    return np.concatenate(out) if out else np.zeros((0, head.n_classes))


def tune_resampled(head, base_init, draw, train, dev, cfg: TuneConfig, seed: int, R: int, log=None,
                   progress: bool = True, desc: str = "resample") -> TuneResult:
    """Learn ``base`` with a fresh particle offset every step; select on dev with R fixed draws (probs averaged).

    :func:`tune_prompt` with two hooks: step t feeds ``base + draw(gen)`` (``gen`` seeded ``seed + 1``, one draw per
    step), and a base is scored on dev through the offsets ``draw(Generator(10_000 + 97 seed + r))``, r < R."""
    gen = torch.Generator().manual_seed(seed + 1)
    dev_offsets = [draw(torch.Generator().manual_seed(10_000 + seed * 97 + r)) for r in range(R)]
    dev_y = np.array([e.label for e in dev])

    def dev_score(base):
        p = ensemble_probs(head, dev, base.cpu(), dev_offsets, cfg).mean(0)
        return metrics(np.log(np.clip(p, 1e-12, 1)), dev_y, head.n_classes)

    return tune_prompt(head, base_init, train, dev, cfg, seed, log, progress, desc,
                       prompt_fn=lambda base, step: base + draw(gen).to(base.device), dev_score=dev_score)


def _save_probs(run, ds, seed, method, probs, labels, members=None):
    d = run.path / "predictions" / ds / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    t = {"probs": torch.tensor(probs, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.long)}
    if members is not None:
        t["members"] = torch.tensor(members, dtype=torch.float32)
    save_file(t, str(d / f"{method}.safetensors"))


def run_bayes(cfg: BayesRunConfig, backbone=None, progress: bool = True) -> dict:
    """Run datasets x seeds x (baselines + modes); write ``cfg.out``; return the results dict."""

    fcfg = cfg.fewshot()
    check_methods(fcfg.methods)
    check_out_dir(cfg.out, cfg.overwrite)
    set_threads()
    backbone = backbone or load_backbone(cfg.backbone)
    prepared = prepare(fcfg, backbone)
    for prep in prepared:  # the density's bad inputs are refused before any training
        n = min(len(sp.train) for sp in prep.splits.values())
        k = cfg.bayes.components or prep.head.n_classes
        if cfg.bayes.density_data == "kshot" and n < k:
            raise BayesError(f"the GMM needs at least as many examples as components: {n} k-shot train example(s) "
                             f"of {prep.dataset.name!r} for bayes.components={k}; use more shots (k) or fewer components")
        if cfg.bayes.pca_dim > min(n, backbone.hidden_size) and cfg.bayes.density_data == "kshot":
            raise BayesError(f"bayes.pca_dim={cfg.bayes.pca_dim} exceeds min(examples, feature dimension) = "
                             f"min({n}, {backbone.hidden_size}) for {prep.dataset.name!r}")
    rows, dists, zs_cache, t_start = [], {}, {}, time.perf_counter()
    L, tc, R = cfg.prompt.length, cfg.tune, cfg.ensemble_size
    with RunDir(cfg.out, cfg.overwrite) as run:
        run.write_json("config.json", to_dict(cfg))
        bar = progress_bar(total=len(prepared) * len(cfg.seeds) * (len(cfg.baselines) + len(cfg.modes)), desc="bayes",
                           enabled=progress, unit="row")
        for prep in prepared:
            ds, head = prep.dataset, prep.head
            for seed in cfg.seeds:
                split = prep.splits[seed]
                test = subsample(split.test, cfg.test_limit or None)
                y = np.array([e.label for e in test])
                base_row = {"dataset": ds.name, "seed": seed, "k": cfg.k, "n_train": len(split.train),
                            "n_dev": len(split.dev), "n_test": len(test), "density_data": cfg.bayes.density_data}
                log = lambda method: (lambda rec: run.log({"event": "eval", "dataset": ds.name, "method": method,
                                                           "seed": seed, **rec}))

                def emit(method, probs, extra, members=None):
                    row = {**base_row, "method": method, **{f"test_{k}": v for k, v in
                                                            scores(probs, y, head.n_classes, probs=True).items()}, **extra}
                    rows.append(row)
                    run.log({"event": "row", **row})
                    _save_probs(run, ds.name, seed, method, probs, y, members)
                    bar.update(1)

                def tuned(method, res, prov):
                    save_prompt(run.path / "adapters" / ds.name / method / f"seed{seed}", res.prompt, backbone,
                                {"dataset": ds.name, "method": method, "seed": seed, "k": cfg.k, "best_step": res.best_step,
                                 "dev_acc": res.dev["acc"], "insert_offset": head.offset, "position": head.position,
                                 "provenance": prov})
                    return {"dev_acc": res.dev["acc"], "best_step": res.best_step, "steps_run": res.steps_run,
                            "wall_s": round(res.wall_s, 2)}

                for method in cfg.baselines:
                    t0 = time.perf_counter()
                    if method == "zero-shot":
                        dev = evaluate(head, split.dev, None, tc.eval_batch_size, tc.eval_precision)
                        if ds.name not in zs_cache:  # the unprompted test pass does not depend on the seed
                            zs_cache[ds.name] = softmax(predict(head, test, None, tc.eval_batch_size, tc.eval_precision)["logits"])
                        p = zs_cache[ds.name]
                        emit(method, p, {"dev_acc": dev["acc"], "wall_s": round(time.perf_counter() - t0, 2)})
                        continue
                    ctx = InitContext(backbone=backbone, cfg=cfg.prompt, seed=seed, fmt=prep.fmt, dataset=ds, split=split)
                    init, prov = make_prompt(method, ctx)
                    res = tune_prompt(head, init, split.train, split.dev, tc, seed, log=log(method), progress=progress,
                                      desc=f"{ds.name} {method} s{seed}")
                    p = softmax(predict(head, test, res.prompt, tc.eval_batch_size, tc.eval_precision)["logits"])
                    emit(method, p, tuned(method, res, prov))

                t0 = time.perf_counter()
                dist = build_distribution(head, split, cfg.bayes, seed, ds, progress=progress)
                dist.save(run.path / "distributions" / ds.name / f"seed{seed}")
                hist = dist.info["svgd"]["history"]
                for h in hist:
                    run.log({"event": "svgd", "dataset": ds.name, "seed": seed, **h})
                dists[f"{ds.name}/seed{seed}"] = {k: dist.info[k] for k in ("components", "n_particles", "fitted_dim",
                                                                           "regularisation", "density_data", "n_unlabeled")}
                dists[f"{ds.name}/seed{seed}"].update(svgd_first=hist[0] if hist else None, svgd_last=hist[-1] if hist else None,
                                                    fit_s=round(time.perf_counter() - t0, 2))
                gen0 = torch.Generator().manual_seed(seed)
                sampled = dist.sample_prompt(L, gen0, cfg.bayes.subset)
                prov = {"init": "bayes", "distribution": f"distributions/{ds.name}/seed{seed}"}
                if "init" in cfg.modes:
                    res = tune_prompt(head, sampled, split.train, split.dev, tc, seed, log=log("bayes-init"),
                                      progress=progress, desc=f"{ds.name} bayes-init s{seed}")
                    p = softmax(predict(head, test, res.prompt, tc.eval_batch_size, tc.eval_precision)["logits"])
                    emit("bayes-init", p, tuned("bayes-init", res, prov))
                if {"resample", "ensemble"} & set(cfg.modes):
                    draw = offset_sampler(dist, L, cfg.bayes.offset_scale, cfg.bayes.subset)
                    res = tune_resampled(head, sampled, draw, split.train, split.dev, tc, seed, R,
                                         log=log("bayes-resample"), progress=progress, desc=f"{ds.name} resample s{seed}")
                    extra = tuned("bayes-resample", res, {**prov, "learned": "base prompt; particle offsets resampled"})
                    if "resample" in cfg.modes:
                        p = resample_probs(head, test, res.prompt, draw, torch.Generator().manual_seed(seed + 7), tc)
                        emit("bayes-resample", p, extra)
                    if "ensemble" in cfg.modes:
                        offs = [draw(torch.Generator().manual_seed(20_000 + seed * 97 + r)) for r in range(R)]
                        members = ensemble_probs(head, test, res.prompt, offs, tc)
                        emit("bayes-ensemble", members.mean(0), {**extra, "ensemble_size": R}, members)
        bar.close()
        results = {"rows": rows, "summary": summarise(rows), "comparisons": compare(rows), "distributions": dists,
                   "density_setting": cfg.bayes.density_data, "environment": environment(backbone.device),
                   "backbone": backbone.describe(), "wall_s": round(time.perf_counter() - t_start, 2),
                   "data": {p.dataset.name: {**p.dataset.describe(), "file_hashes": p.dataset.file_hashes(),
                                             "format": p.fmt.as_dict()} for p in prepared},
                   "config": to_dict(cfg)}
        run.write_json("results.json", results)
        atomic_write(run.path / "report.md", report(rows, protocol=["Run:", protocol_line(run.final, results)],
                                                    comps=results["comparisons"]))
    results["out"] = str(run.final)
    return results


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample std (ddof=1; 0 for one seed) of test acc, ECE, F1, NLL and dev acc per dataset x method."""
    density = {(r["dataset"], r["method"]): r["density_data"] for r in rows}
    out = _summarise(rows, ("test_acc", "test_ece", "test_f1", "test_nll", "dev_acc"))
    return [{**e, "density_data": density[(e["dataset"], e["method"])]} for e in out]


def format_summary(summary: list[dict]) -> str:
    """Test accuracy, test expected calibration error and dev accuracy (mean ± std, %) per dataset and mode."""
    return harness_format(summary, (("test_acc", "test acc %"), ("test_ece", "test ECE %"), ("dev_acc", "dev acc %")))
