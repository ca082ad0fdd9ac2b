"""``workbench explore``: the explorer's figures as HTML sharing one plotly.min.js (and the nearest-words CSV)."""
from __future__ import annotations

import sys

from workbench.cli.common import add_config_options, add_quiet_option, config_from_args
from workbench.config import ExploreConfig
from workbench.viz import explore

FLAGS = {"--runs": "runs", "--dataset": "dataset", "--projection": "projection", "--neighbours": "neighbours",
         "--n-vocab": "n_vocab", "--method": "method", "--seed": "seed", "--n-examples": "n_examples",
         "--match": "match", "--cluster-dir": "cluster_dir", "--bayes-dir": "bayes_dir", "--out": "out",
         "--images": "images"}


def add_cli(subparsers):
    p = subparsers.add_parser("explore", help="embedding-space figures (HTML) from run directories",
                              description=__doc__.split("\n\n")[0])
    add_config_options(p, ExploreConfig, FLAGS)
    add_quiet_option(p, "no progress bars (this command draws none; accepted like on every command)")
    return p


def run_cli(args) -> int:
    cfg = config_from_args(ExploreConfig, args)
    figs = explore.explore_figures(cfg, warn=lambda message: print(message, file=sys.stderr))
    words = explore.nearest_words_table(cfg.runs, dataset=cfg.dataset, neighbours=cfg.neighbours)
    for name, path in explore.write_explore(figs, words, cfg.out, cfg.images).items():
        print(f"{name:<22} {path}")
    return 0
