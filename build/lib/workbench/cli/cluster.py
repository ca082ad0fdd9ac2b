"""``workbench cluster``: embed and cluster an unlabeled corpus into auxiliary tasks (a run directory)."""
from __future__ import annotations

import json
import time

from workbench.cli.common import add_config_options, add_run_options, config_from_args
from workbench.config import ClusterConfig, to_dict
from workbench.engine.backbones import load_backbone, set_threads
from workbench.engine.runs import RunDir, environment, write_json
from workbench.tasks.corpus import cluster_corpus, save_clustering

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
    cfg = config_from_args(ClusterConfig, args)
    set_threads()
    with RunDir(cfg.out, cfg.overwrite) as run:  # refuses an existing --out before any work
        t0 = time.time()
        bb = load_backbone(cfg.backbone)
        texts, docs, _, res = cluster_corpus(
            bb, cfg.corpus, cfg.method, cfg.n_clusters, cfg.seed, cfg.limit, cfg.min_words, cfg.cache_dir,
            not args.quiet, cfg.batch_size, cfg.max_length, **({"drop_empty": True} if cfg.drop_empty else {}))
        write_json(run.path / "config.json", {"command": "cluster", **to_dict(cfg), "environment": environment(bb.device)})
        save_clustering(res, run.path)
        with open(run.path / "assignments.jsonl", "w", encoding="utf-8") as f:
            for i, (t, d, c) in enumerate(zip(texts, docs, res.assignments.tolist())):
                f.write(json.dumps({"index": i, "doc": d, "cluster": c, "text": t}, ensure_ascii=False) + "\n")
        run.log({"event": "done", "n": len(texts), "k": res.k, "wall_s": round(time.time() - t0, 2)})
    print(f"{'id':>3} {'size':>6}  {'keywords':<40} medoid")
    for s in res.summaries:
        kw, med = ", ".join(s["keywords"][:5])[:40], " ".join(s["medoid"]["text"].split())
        print(f"{s['id']:>3} {s['size']:>6}  {kw:<40} {med[:60]}{'...' * (len(med) > 60)}")
    if res.dropped:
        print(f"dropped empty clusters: {res.dropped} (of k={res.params['k_requested']})")
    if res.diagnostics:
        print(f"genre purity {res.diagnostics['genre_purity']:.3f}  NMI {res.diagnostics['genre_nmi']:.3f}")
    print(f"\n{len(texts)} texts, {res.k} clusters -> {run.final}")
    return 0
