"""cli.similarity."""
from __future__ import annotations

import sys

import pandas as pd

from workbench.config import ConfigError, PromptConfig, TuneConfig, to_dict
from workbench.engine.backbones import BackboneError, load_backbone, set_threads
from workbench.engine.data import DataError
from workbench.engine.runs import RunDir, RunError, environment
from workbench.experiments.similarity import (
    SIM_COLUMNS,
    SimilarityConfig,
    SimilarityError,
    _rows_of,
    gains,
    join,
    scatter,
    task_similarity,
    write_outputs,
)
from workbench.tasks.labelled import CONFIGURATIONS, resolve_sources


# ----------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers):
    """Register the ``similarity`` subcommand."""
    p = subparsers.add_parser("similarity", help="task similarity of targets to their sources vs the meta init's gain",
                              description="Similarity (mean embeddings, tuned per-task prompts) of each target to "
                              "each source, joined with the gain of a meta init over a baseline from fewshot runs.")
    p.add_argument("--targets", required=True, help="comma-separated target datasets")
    p.add_argument("--sources", default="leave-one-out", help="leave-one-out | same-type | cross-type | "
                   "pairs->single, or comma-separated datasets")
    p.add_argument("--results", action="append", default=[], help="a fewshot run directory (or its results.json) "
                   "with the meta init and the baseline (repeatable)")
    p.add_argument("--method", help="the meta init's method name in those results (e.g. mpt-fomaml)")
    p.add_argument("--baseline", default="random")
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--seeds", default="13", help="comma-separated seeds of the per-task prompts")
    p.add_argument("--n-texts", type=int, default=256, help="train texts per dataset for the mean embedding")
    p.add_argument("--steps", type=int, default=50, help="tuning steps of each per-task prompt")
    p.add_argument("--prompt-length", type=int, default=20)
    p.add_argument("--no-prompts", action="store_true", help="embedding similarity only (no prompt tuning)")
    p.add_argument("--decontaminate", choices=["test+fewshot", "all"], default="all")
    p.add_argument("--out", required=True, help="output directory (refused if it exists and is not empty)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run_cli(args) -> int:
    try:
        if args.results and not args.method:
            raise ConfigError("--results needs --method (the meta init's name in the results rows)")
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        cfg = SimilarityConfig(k=args.k, seeds=seeds, n_texts=args.n_texts, prompts=not args.no_prompts,
                               decontaminate=args.decontaminate, prompt=PromptConfig(length=args.prompt_length),
                               tune=TuneConfig(steps=args.steps, patience=0))
        explicit = [] if args.sources in CONFIGURATIONS else [s.strip() for s in args.sources.split(",") if s.strip()]
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        set_threads()
        with RunDir(args.out, args.overwrite) as run:
            bb = load_backbone(args.backbone)
            run.write_json("config.json", {"command": "similarity", **{k: v for k, v in vars(args).items()
                                                                         if not k.startswith("_")},
                                           "similarity": to_dict(cfg), "environment": environment(bb.device)})
            tables, info = [], {}
            for t in targets:
                names = resolve_sources(t, args.sources if not explicit else "leave-one-out", explicit)
                table, info[t] = task_similarity(bb, t, names, cfg, progress=not args.quiet)
                tables.append(table)
                run.log({"event": "target", "target": t, "sources": names, "rows": table.to_dict(orient="records")})
            table = pd.concat(tables, ignore_index=True)
            figs = {}
            if args.results:
                rows = [r for res in args.results for r in _rows_of(res)]
                table = join(table, gains(rows, args.method, args.baseline))
                figs = {"similarity_scatter": scatter(table, "embed_cos")}
                if cfg.prompts:
                    figs["similarity_scatter_prompts"] = scatter(table, "update_cos_flat")
            write_outputs(run.path, table, info, figs)
    except (SimilarityError, ConfigError, DataError, BackboneError, RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        cols = [c for c in ["target", "source", "n_removed", *SIM_COLUMNS, "gain_mean", "gain_std"] if c in table]
        print(table[cols].round(3).to_string(index=False))
    print(f"\n-> {run.final}")
    return 0
