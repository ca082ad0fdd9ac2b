"""The work behind the notebooks, shared with the commands they walk through: a notebook builds a config from its
``parameters`` cell, calls one of these, and displays what comes back.

- :func:`cluster_run`: ``workbench cluster`` (notebook 01): embed and cluster a corpus into a run directory.
- :func:`meta_backbone`, :func:`meta_train_targets`: ``workbench meta-train`` once per target (notebook 02), each
  run's sources decontaminated against its own target.
- :func:`fewshot_from_meta`: ``workbench fewshot --methods file,... --init-path <meta run>/prompt`` per target;
  :func:`compare_inits`: the summary and the paired per-seed gains of one init over baselines.
- :func:`similarity_sources`, :func:`similarity_to_sources`: ``workbench similarity`` (notebook 02).
- :func:`supmer_variants`, :func:`supmer_in_domain`, :func:`supmer_ablation_table`: SUPMER and its ablations
  (``supmer.psi=false``, ``supmer.mixup=false``), one ``meta-train`` run each, and their table (notebook 02b).
- :func:`domain_gen_run`: ``workbench supmer-dg`` (notebook 02b): the domain-generalisation run directory.

Figures are never drawn here (the experiments layer); the notebooks and the CLI draw them with ``workbench.viz``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.config import (
    ClusterConfig,
    ConfigError,
    DomainGenConfig,
    FewShotConfig,
    MetaTrainConfig,
    SimilarityConfig,
    to_dict,
)
from workbench.engine.backbones import load_backbone, set_threads
from workbench.engine.runs import RunDir, environment, read_run, write_json
from workbench.experiments.domain_gen import domain_generalisation
from workbench.experiments.fewshot import run_fewshot, summarise
from workbench.experiments.similarity import _rows_of, gains, join, task_similarity
from workbench.learn.metatrain import meta_backbone, run_meta_training  # noqa: F401  (meta_backbone: notebook 02)
from workbench.tasks.corpus import Clustering, brown_genres, cluster_corpus, save_clustering
from workbench.tasks.labelled import CONFIGURATIONS, resolve_sources


# ----------------------------------------------------------------------------------------------- cluster
@dataclass
class ClusterRun:
    """A finished ``cluster`` run: its directory, the clustered texts with their doc ids and features, the
    clustering, Brown genres per text ("" where unknown; empty for other corpora), the backbone and the time."""

    out: Path
    texts: list[str]
    docs: list
    features: np.ndarray
    clustering: Clustering
    genres: list[str] = field(default_factory=list)
    backbone: object = None
    wall_s: float = 0.0


def cluster_run(cfg: ClusterConfig, backbone=None, progress: bool = True) -> ClusterRun:
    """``workbench cluster``: embed ``cfg.corpus`` (cached), cluster it and write ``cfg.out`` (refused when it exists
    and is not empty, unless ``cfg.overwrite``): ``config.json``, ``clusters.json`` + ``clusters.safetensors``,
    ``assignments.jsonl`` (index, doc, cluster, text per line) and ``metrics.jsonl``. The directory is built aside
    and moved into place at the end, so a failed run leaves nothing behind."""
    set_threads()
    with RunDir(cfg.out, cfg.overwrite) as run:  # refuses an existing out before any work
        t0 = time.time()
        bb = backbone or load_backbone(cfg.backbone)
        texts, docs, feats, res = cluster_corpus(
            bb, cfg.corpus, cfg.method, cfg.n_clusters, cfg.seed, cfg.limit, cfg.min_words, cfg.cache_dir, progress,
            cfg.batch_size, cfg.max_length, **({"drop_empty": True} if cfg.drop_empty else {}))
        write_json(run.path / "config.json", {"command": "cluster", **to_dict(cfg), "environment": environment(bb.device)})
        save_clustering(res, run.path)
        with open(run.path / "assignments.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"index": i, "doc": d, "cluster": c, "text": t}, ensure_ascii=False) + "\n"
                         for i, (t, d, c) in enumerate(zip(texts, docs, res.assignments.tolist())))
        wall = round(time.time() - t0, 2)
        run.log({"event": "done", "n": len(texts), "n_clusters": res.k, "wall_s": wall})
    genres = brown_genres(docs) if Path(str(cfg.corpus)).stem == "brown" else []
    return ClusterRun(run.final, texts, docs, feats, res, genres, bb, wall)


# ----------------------------------------------------------------------------------------------- meta-training
def meta_train_targets(cfg: MetaTrainConfig, targets, out_root, backbone=None, overwrite: bool = False,
                       progress: bool = True) -> dict[str, dict]:
    """``workbench meta-train`` once per target: ``cfg`` with ``target`` set and ``out = <out_root>/<target>`` (a
    source is decontaminated against its target, and leave-one-out depends on it). Returns target -> the run's
    results dict (with ``out``)."""
    if not targets:
        raise ConfigError("meta_train_targets needs at least one target dataset")
    backbone = backbone or meta_backbone(cfg)
    return {t: run_meta_training(replace(cfg, target=t, out=str(Path(out_root) / t)), backbone=backbone,
                                 overwrite=overwrite, progress=progress) for t in targets}


def fewshot_from_meta(cfg: FewShotConfig, meta_runs: dict, out_root, backbone=None, label: str | None = None,
                      progress: bool = True) -> dict[str, dict]:
    """``workbench fewshot`` per target of ``meta_runs`` (target -> meta-train run directory or results dict):
    ``cfg`` with ``datasets=[target]``, ``prompt.init_path = <run>/prompt`` (the ``file`` init is the meta-trained
    prompt) and ``out = <out_root>/<target>``. With ``label``, rows of the ``file`` init are renamed to it in the
    returned results (``results.json`` keeps ``file``). Returns target -> the harness's results dict."""
    backbone = backbone or load_backbone(cfg.backbone)
    out = {}
    for target, run in meta_runs.items():
        run_dir = run["out"] if isinstance(run, dict) else run
        tcfg = replace(cfg, datasets=[target], out=str(Path(out_root) / target),
                       prompt=replace(cfg.prompt, init_path=str(Path(run_dir) / "prompt")))
        res = run_fewshot(tcfg, backbone=backbone, progress=progress)
        if label:
            res = {**res, "rows": [{**r, "method": label if r["method"] == "file" else r["method"]}
                                   for r in res["rows"]]}
        out[target] = res
    return out


def compare_inits(rows: list[dict], method: str, baselines=("random", "vocab")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, gains)`` of harness rows: per dataset x method the test accuracy (mean ± std over seeds, in % as
    ``test acc (%)``) and the mean dev accuracy of the starting prompt (``step-0 dev acc (%)``, prompt methods);
    and the gain of ``method`` over each of ``baselines`` present: paired per-seed differences of test accuracy
    (``gain (points)``: mean ± std and each seed's difference)."""
    summary = pd.DataFrame(summarise(rows))
    summary["test acc (%)"] = [f"{100 * m:.1f} ± {100 * s:.1f}"
                               for m, s in zip(summary["test_acc_mean"], summary["test_acc_std"])]
    step0 = {}
    for r in rows:
        if r.get("step0_dev_acc") is not None:
            step0.setdefault((r["dataset"], r["method"]), []).append(r["step0_dev_acc"])
    summary["step-0 dev acc (%)"] = [100 * float(np.mean(step0[key])) if key in step0 else float("nan")
                                     for key in zip(summary["dataset"], summary["method"])]
    present = {r["method"] for r in rows}
    table = pd.concat([gains(rows, method, baseline=b) for b in baselines if b in present], ignore_index=True)
    table["gain (points)"] = [f"{100 * m:+.1f} ± {100 * s:.1f}  (" + ", ".join(f"{100 * d:+.1f}" for d in ds) + ")"
                              for m, s, ds in zip(table["gain_mean"], table["gain_std"], table["diffs"])]
    return summary, table


# ----------------------------------------------------------------------------------------------- similarity
def similarity_sources(target: str, sources: str = "leave-one-out", datasets=None) -> list[str]:
    """The source datasets of ``target``: ``datasets`` when given, else ``sources``: a named configuration
    (leave-one-out, same-type, cross-type, pairs->single) or comma-separated dataset names. Refuses the target (or
    its family) among its own sources."""
    explicit = list(datasets or []) or ([] if sources in CONFIGURATIONS else
                                        [s.strip() for s in sources.split(",") if s.strip()])
    return resolve_sources(target, "leave-one-out" if explicit else sources, explicit)


def similarity_to_sources(backbone, cfg: SimilarityConfig, rows=None, datasets=None, progress: bool = True,
                          log=None) -> dict:
    """``workbench similarity``: the similarity of each of ``cfg.targets`` to its sources (:func:`similarity_sources`
    of ``cfg.sources`` or ``datasets``), and, given result ``rows`` (else read from ``cfg.runs``), each target's
    gain of ``cfg.method`` over ``cfg.baseline`` joined to its rows. Returns ``{"table", "info" (target -> details),
    "sources" (target -> names)}``; ``log(record)`` gets one record per target. Write it with
    :func:`workbench.experiments.similarity.write_outputs`; draw it with
    ``workbench.viz.similarity.similarity_figures(res["table"], res["info"])``."""
    if not cfg.targets:
        raise ConfigError("similarity needs targets (the target datasets)")
    if rows is None and cfg.runs:
        rows = [r for res in cfg.runs for r in _rows_of(res)]
    if rows and not cfg.method:
        raise ConfigError("similarity.method names the init whose gain the rows give (e.g. the meta init)")
    tables, info, names = [], {}, {}
    for t in cfg.targets:
        names[t] = similarity_sources(t, cfg.sources, datasets)
        table, info[t] = task_similarity(backbone, t, names[t], cfg, progress=progress)
        tables.append(table)
        if log:
            log({"event": "target", "target": t, "sources": names[t], "rows": table.to_dict(orient="records")})
    table = pd.concat(tables, ignore_index=True)
    if rows:
        table = join(table, gains(rows, cfg.method, cfg.baseline))
    return {"table": table, "info": info, "sources": names}


# ----------------------------------------------------------------------------------------------- SUPMER
SUPMER_VARIANTS = {"full": {}, "no-psi": {"psi": False}, "no-mixup": {"mixup": False}}  # supmer section overrides


def supmer_variants(cfg: MetaTrainConfig, ablations=("no-psi", "no-mixup"), out_root=None, backbone=None,
                    overwrite: bool = False, progress: bool = True) -> dict[str, dict]:
    """Full SUPMER (``cfg``) and each of ``ablations`` (names of :data:`SUPMER_VARIANTS`: ``no-psi`` =
    ``supmer.psi=false``, ``no-mixup`` = ``supmer.mixup=false``), one ``workbench meta-train`` run each, into
    ``<out_root>/meta-<name>`` (default: beside ``cfg.out``). Returns name -> the run's results dict."""
    if unknown := [a for a in ablations if a not in SUPMER_VARIANTS]:
        raise ConfigError(f"unknown SUPMER ablation(s) {unknown}; known: {sorted(set(SUPMER_VARIANTS) - {'full'})}")
    root = Path(out_root) if out_root is not None else Path(cfg.out).parent
    backbone = backbone or meta_backbone(cfg)
    runs = {}
    for name in ["full", *dict.fromkeys(a for a in ablations if a != "full")]:
        vcfg = replace(cfg, supmer=replace(cfg.supmer, **SUPMER_VARIANTS[name]), out=str(root / f"meta-{name}"))
        runs[name] = run_meta_training(vcfg, backbone=backbone, overwrite=overwrite, progress=progress)
    return runs


def _supmer_option(config: dict, key: str) -> bool:
    """``supmer.<key>`` of a run's config (older runs: ``source_options["supmer.<key>"]``, default true)."""
    if "supmer" in config:
        return bool(config["supmer"][key])
    return str(config.get("source_options", {}).get(f"supmer.{key}", True)).lower() != "false"


def supmer_ablation_table(runs: dict, dg: dict | None = None) -> pd.DataFrame:
    """One row per meta-training run (name -> run directory or results dict): its ``supmer.psi`` / ``supmer.mixup``,
    task types, final meta-validation query accuracy before/after the inner step, steps, and (``dg``: name ->
    :func:`~workbench.experiments.domain_gen.domain_generalisation` result) the downstream test accuracies. Runs
    written before the ``supmer`` section (``source_options["supmer.psi"]``) are read too."""
    rows = []
    for name, run in runs.items():
        res = run if isinstance(run, dict) and "config" in run else \
            read_run(run["out"] if isinstance(run, dict) else run, "expected a meta-training run directory").results
        v = res["final_val"]
        row = {"run": name, "psi": _supmer_option(res["config"], "psi"), "mixup": _supmer_option(res["config"], "mixup"),
               "types": ",".join(res["source"].get("types", [])),
               "meta-val acc pre": round(100 * v["acc_pre"], 1), "meta-val acc post": round(100 * v["acc_post"], 1),
               "steps": res["steps"]}
        if dg and name in dg:
            row.update({f"test: {c}": dg[name]["table"].iloc[0][c] for c in dg[name]["table"].columns})
        rows.append(row)
    return pd.DataFrame(rows)


def supmer_in_domain(cfg: DomainGenConfig, runs: dict, backbone=None, progress: bool = False) -> dict:
    """Each meta-training run's prompt (name -> run directory or results dict) tuned on ``cfg.source`` with the
    ``supmer`` init and tested on the source and on ``cfg.targets`` exactly as :func:`domain_gen_run` tests its
    ``supmer`` row (the same source pool, decontaminated against every target test set, hence the same k-shot splits;
    the same test subsamples; no run directory): name -> the
    :func:`~workbench.experiments.domain_gen.domain_generalisation` result, for :func:`supmer_ablation_table`."""
    bb = backbone or load_backbone(cfg.backbone)
    return {name: domain_generalisation(bb, ["supmer"], cfg.source, cfg.targets, cfg.k, cfg.seeds, cfg.tune,
                                        cfg.prompt, test_limit=cfg.test_limit, progress=progress,
                                        meta_run=run["out"] if isinstance(run, dict) else run)
            for name, run in runs.items()}


def domain_gen_run(cfg: DomainGenConfig, backbone=None, progress: bool = True) -> dict:
    """``workbench supmer-dg``: :func:`~workbench.experiments.domain_gen.domain_generalisation` under ``cfg``, written
    to ``cfg.out`` (``config.json``, ``results.json``, ``table.csv``, ``metrics.jsonl``, the tuned prompts under
    ``adapters/``). Returns its result (``table``: init x test set, mean ± std in %) with ``out``."""
    with RunDir(cfg.out, cfg.overwrite) as run:
        set_threads()
        bb = backbone or load_backbone(cfg.backbone)
        res = domain_generalisation(bb, cfg.methods, cfg.source, cfg.targets, cfg.k, cfg.seeds, cfg.tune, cfg.prompt,
                                    test_limit=cfg.test_limit, meta_run=cfg.meta_run, progress=progress, run=run)
        run.write_json("config.json", {"command": "supmer-dg", **to_dict(cfg)})
        run.write_json("results.json", {**{k: v for k, v in res.items() if k != "table"},
                                        "table": res["table"].to_dict(), "environment": environment(bb.device),
                                        "backbone": bb.describe()})
        res["table"].to_csv(run.path / "table.csv")
    return {**res, "out": str(run.final)}
