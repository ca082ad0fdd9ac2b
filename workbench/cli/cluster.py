"""``workbench cluster``: embed and cluster an unlabeled corpus into auxiliary tasks (a run directory)."""
from __future__ import annotations

from workbench.cli.common import add_config_options, add_run_options, config_from_args
from workbench.config import ClusterConfig
from workbench.experiments.walkthroughs import cluster_run

FLAGS = {"--corpus": "corpus", "--method": "method", "--n-clusters": "n_clusters", "--seed": "seed",
         "--limit": "limit", "--min-words": "min_words", "--max-length": "max_length", "--batch-size": "batch_size",
         "--cache-dir": "cache_dir", "--drop-empty": "drop_empty", "--backbone": "backbone.name",
         "--device": "backbone.device", "--out": "out"}


def add_cli(subparsers):
    p = subparsers.add_parser("cluster", help="cluster an unlabeled corpus into auxiliary tasks (MetaPT)", description=(
        "Embed, cluster and write config.json, clusters.json, clusters.safetensors and assignments.jsonl."))
    add_config_options(p, ClusterConfig, FLAGS)
    add_run_options(p)
    return p


def run_cli(args) -> int:
    """Write the run directory, print a table of the clusters (id, size, keywords, medoid)."""
    run = cluster_run(config_from_args(ClusterConfig, args), progress=not args.quiet)
    res = run.clustering
    print(f"{'id':>3} {'size':>6}  {'keywords':<40} medoid")
    for s in res.summaries:
        kw, med = ", ".join(s["keywords"][:5])[:40], " ".join(s["medoid"]["text"].split())
        print(f"{s['id']:>3} {s['size']:>6}  {kw:<40} {med[:60]}{'...' * (len(med) > 60)}")
    if res.dropped:
        print(f"dropped empty clusters: {res.dropped} (of k={res.params['k_requested']})")
    if res.diagnostics:
        print(f"genre purity {res.diagnostics['genre_purity']:.3f}  NMI {res.diagnostics['genre_nmi']:.3f}")
    print(f"\n{len(run.texts)} texts, {res.k} clusters -> {run.out}")
    return 0
