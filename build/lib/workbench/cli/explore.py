"""``workbench explore``: the explorer's figures as self-contained HTML (and the nearest-words CSV)."""
from __future__ import annotations

import sys
from pathlib import Path

from workbench.cli.common import add_config_options, config_from_args
from workbench.config import ExploreConfig
from workbench.viz import explore

FLAGS = {"--runs": "runs", "--dataset": "dataset", "--projection": "projection", "--neighbours": "neighbours",
         "--n-vocab": "n_vocab", "--method": "method", "--seed": "seed", "--n-examples": "n_examples",
         "--match": "match", "--cluster-dir": "cluster_dir", "--bayes-dir": "bayes_dir", "--out": "out"}


def add_cli(subparsers):
    p = subparsers.add_parser("explore", help="embedding-space figures (HTML) from run directories",
                              description=__doc__.split("\n\n")[0])
    add_config_options(p, ExploreConfig, FLAGS)
    return p


def run_cli(args) -> int:
    cfg = config_from_args(ExploreConfig, args)
    if not cfg.runs:
        raise explore.ExploreError("explore needs at least one run directory: --runs DIR[,DIR...]")
    sel = dict(dataset=cfg.dataset)
    figs = {"token_space": explore.token_space(cfg.runs, **sel, projection=cfg.projection,
                                               n_vocab=cfg.n_vocab, neighbours=cfg.neighbours)}
    if any(r.snapshots for r in explore.load_prompt_runs(cfg.runs, cfg.dataset)):
        figs["trajectories"] = explore.trajectories(cfg.runs, **sel, projection=cfg.projection,
                                                    n_vocab=cfg.n_vocab, neighbours=cfg.neighbours)
        figs["distance_vs_accuracy"] = explore.distance_vs_accuracy(cfg.runs, **sel)
    else:
        print("no snapshots in these runs (tune with --snapshot-every N): trajectories skipped", file=sys.stderr)
    figs["prompt_similarity"] = explore.prompt_similarity(cfg.runs, **sel, match=cfg.match)
    figs["sentence_space"] = explore.sentence_space(cfg.runs[0], cfg.dataset, cfg.method, cfg.seed,
                                                    cfg.n_examples, cfg.projection)
    if cfg.cluster_dir:
        figs["corpus_space"] = explore.corpus_space(cfg.cluster_dir, figs["sentence_space"].layout.meta["dataset"],
                                                    projection=cfg.projection)
    if cfg.bayes_dir:
        figs["particles_space"] = explore.particles_space(cfg.bayes_dir, cfg.dataset, projection=cfg.projection)
    words = explore.nearest_words_table(cfg.runs, **sel, neighbours=cfg.neighbours)
    paths = explore.write_html(figs, cfg.out)
    words.to_csv(Path(cfg.out) / "nearest_words.csv", index=False)
    for name, path in paths.items():
        print(f"{name:<22} {path}")
    print(f"{'nearest_words':<22} {Path(cfg.out) / 'nearest_words.csv'}")
    return 0
