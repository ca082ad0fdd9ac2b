"""cli.cluster."""
from __future__ import annotations

import json
import sys
import time

from workbench.config import BackboneConfig, ConfigError
from workbench.engine.backbones import BackboneError, load_backbone, set_threads
from workbench.engine.data import DataError
from workbench.engine.runs import RunDir, RunError, environment, write_json
from workbench.tasks.corpus import (
    METHODS,
    ClusterError,
    cluster_corpus,
    save_clustering,
)


def add_cli(subparsers):
    """Register the ``cluster`` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser("cluster", help="cluster an unlabeled corpus into auxiliary tasks (MetaPT)", description=(
        "Embed, cluster and write config.json, clusters.json, clusters.safetensors and assignments.jsonl."))
    for flag, kind, default, text in [
            ("corpus", str, "brown", "corpus name on the data search path, or a .jsonl/.txt file"),
            ("k", int, 16, "number of clusters"), ("seed", int, 0, "clustering (and --limit sampling) seed"),
            ("limit", int, None, "random sample of at most N texts (after --min-words)"),
            ("min-words", int, 4, "drop texts with fewer words"), ("max-length", int, 128, "tokens per text"),
            ("backbone", str, "minilm", "minilm (default), a Hugging Face name, or a local path"),
            ("device", str, "auto", "auto | cpu | cuda"), ("batch-size", int, 64, "texts per forward pass"),
            ("cache-dir", str, None, "embedding cache (default $WORKBENCH_CACHE or ~/.cache/workbench)")]:
        p.add_argument(f"--{flag}", type=kind, default=default, help=text)
    p.add_argument("--method", choices=METHODS, default="kmeans")
    p.add_argument("--out", required=True, help="output directory (refused if it exists and is not empty)")
    for flag, text in [("drop-empty", "drop empty clusters (LDA) instead of failing"), ("quiet", "no progress bars"),
                       ("overwrite", "replace an existing output directory")]:
        p.add_argument(f"--{flag}", action="store_true", help=text)
    return p


def run_cli(args) -> int:
    """Run the ``cluster`` subcommand: write the run directory, print a table of the clusters (id, size, keywords,
    medoid); return the exit code (2 with one ``error:`` line on bad input)."""
    try:
        set_threads()
        with RunDir(args.out, args.overwrite) as run:  # refuses an existing --out before any work
            t0 = time.time()
            bb = load_backbone(BackboneConfig(name=args.backbone, device=args.device))
            texts, docs, _, res = cluster_corpus(
                bb, args.corpus, args.method, args.k, args.seed, args.limit, args.min_words, args.cache_dir,
                not args.quiet, args.batch_size, args.max_length, **({"drop_empty": True} if args.drop_empty else {}))
            write_json(run.path / "config.json", {"command": "cluster", **{a: getattr(args, a) for a in (
                "corpus", "method", "k", "seed", "limit", "min_words", "backbone", "device", "batch_size",
                "max_length", "drop_empty")}, "environment": environment(bb.device)})
            save_clustering(res, run.path)
            with open(run.path / "assignments.jsonl", "w", encoding="utf-8") as f:
                for i, (t, d, c) in enumerate(zip(texts, docs, res.assignments.tolist())):
                    f.write(json.dumps({"index": i, "doc": d, "cluster": c, "text": t}, ensure_ascii=False) + "\n")
            run.log({"event": "done", "n": len(texts), "k": res.k, "wall_s": round(time.time() - t0, 2)})
    except (ClusterError, ConfigError, DataError, BackboneError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
