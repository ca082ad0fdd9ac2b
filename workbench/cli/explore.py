"""``python -m workbench explore``: write the explorer's figures as self-contained HTML (and the nearest-words CSV).

    python -m workbench explore --runs runs/explore-demo --out runs/explore-demo/figures --projection umap

Views: token_space, trajectories + distance_vs_accuracy (when the runs have snapshots), prompt_similarity,
sentence_space, and corpus_space / particles_space when ``--cluster-dir`` / ``--bayes-dir`` are given.
"""
from __future__ import annotations

import sys
from pathlib import Path

from workbench.cli.common import _csv
from workbench.config import ConfigError
from workbench.engine.backbones import BackboneError
from workbench.engine.data import DataError
from workbench.engine.runs import RunError
from workbench.viz import explore


def add_cli(subparsers):
    p = subparsers.add_parser("explore", help="embedding-space figures (HTML) from run directories",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=_csv, required=True, help="run directories with learned prompts, comma-separated")
    p.add_argument("--out", required=True, help="folder for the HTML files and nearest_words.csv")
    p.add_argument("--dataset", help="only this dataset's prompts")
    p.add_argument("--projection", choices=["umap", "pca"], default="umap")
    p.add_argument("--neighbours", type=int, default=5, help="nearest tokens per prompt vector")
    p.add_argument("--n-vocab", type=int, default=10000, help="frequent tokens in the token map")
    p.add_argument("--method", help="init whose prompt the sentence view uses (default: the first found)")
    p.add_argument("--seed", type=int, help="seed of that prompt (default: the first found)")
    p.add_argument("--n-examples", type=int, default=200, help="test examples in the sentence view")
    p.add_argument("--match", choices=["aligned", "hungarian"], default="aligned", help="slot matching")
    p.add_argument("--cluster-dir", help="a `cluster` run to draw with the target data")
    p.add_argument("--bayes-dir", help="a `bayes` run (or saved distribution) whose particles to draw")
    return p


def run_cli(args) -> int:
    sel = dict(dataset=args.dataset)
    try:
        figs = {"token_space": explore.token_space(args.runs, **sel, projection=args.projection,
                                                   n_vocab=args.n_vocab, neighbours=args.neighbours)}
        if any(r.snapshots for r in explore.load_prompt_runs(args.runs, args.dataset)):
            figs["trajectories"] = explore.trajectories(args.runs, **sel, projection=args.projection,
                                                        n_vocab=args.n_vocab, neighbours=args.neighbours)
            figs["distance_vs_accuracy"] = explore.distance_vs_accuracy(args.runs, **sel)
        else:
            print("no snapshots in these runs (tune with --snapshot-every N): trajectories skipped", file=sys.stderr)
        figs["prompt_similarity"] = explore.prompt_similarity(args.runs, **sel, match=args.match)
        figs["sentence_space"] = explore.sentence_space(args.runs[0], args.dataset, args.method, args.seed,
                                                        args.n_examples, args.projection)
        if args.cluster_dir:
            figs["corpus_space"] = explore.corpus_space(args.cluster_dir, figs["sentence_space"].layout.meta["dataset"],
                                                        projection=args.projection)
        if args.bayes_dir:
            figs["particles_space"] = explore.particles_space(args.bayes_dir, args.dataset, projection=args.projection)
        words = explore.nearest_words_table(args.runs, **sel, neighbours=args.neighbours)
        paths = explore.write_html(figs, args.out)
        words.to_csv(Path(args.out) / "nearest_words.csv", index=False)
    except (explore.ExploreError, ConfigError, DataError, BackboneError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name:<22} {path}")
    print(f"{'nearest_words':<22} {Path(args.out) / 'nearest_words.csv'}")
    return 0
