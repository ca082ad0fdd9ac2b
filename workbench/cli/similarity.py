"""``workbench similarity``: task similarity of each target to its sources against a meta init's gain."""
from __future__ import annotations

import pandas as pd

from workbench.cli.common import add_config_options, add_run_options, config_from_args
from workbench.config import SimilarityConfig, to_dict
from workbench.engine.backbones import load_backbone, set_threads
from workbench.engine.runs import RunDir, environment
from workbench.experiments.similarity import SIM_COLUMNS, write_outputs
from workbench.experiments.walkthroughs import similarity_to_sources
from workbench.viz.output import save_figure
from workbench.viz.similarity import similarity_figures

FLAGS = {"--targets": "targets", "--sources": "sources", "--runs": "runs", "--method": "method",
         "--baseline": "baseline", "--backbone": "backbone.name", "--k": "k", "--seeds": "seeds",
         "--n-texts": "n_texts", "--steps": "tune.steps", "--prompt-length": "prompt.length", "--prompts": "prompts",
         "--decontaminate": "decontaminate", "--out": "out"}


def add_cli(subparsers):
    p = subparsers.add_parser("similarity", help="task similarity of targets to their sources vs the meta init's gain",
                              description="Similarity (mean embeddings, tuned per-task prompts) of each target to "
                              "its sources, joined with a meta init's gain from fewshot/benchmark runs.")
    add_config_options(p, SimilarityConfig, FLAGS)
    add_run_options(p)
    return p


def run_cli(args) -> int:
    cfg = config_from_args(SimilarityConfig, args)
    set_threads()
    with RunDir(cfg.out, cfg.overwrite) as run:
        bb = load_backbone(cfg.backbone)
        run.write_json("config.json", {"command": "similarity", **to_dict(cfg), "environment": environment(bb.device)})
        res = similarity_to_sources(bb, cfg, progress=not args.quiet, log=run.log)
        write_outputs(run.path, res["table"], res["info"])
        for name, fig in similarity_figures(res["table"], res["info"]).items():
            save_figure(fig, run.path / f"{name}.html")
    table = res["table"]
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        cols = [c for c in ["target", "source", "n_removed", *SIM_COLUMNS, "gain_mean", "gain_std"] if c in table]
        print(table[cols].round(3).to_string(index=False))
    print(f"\n-> {run.final}")
    return 0
