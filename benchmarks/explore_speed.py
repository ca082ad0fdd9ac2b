"""How long the explorer's token-space map takes: N runs x L slots over a V-row vocabulary sample (MiniLM, CPU).

    python benchmarks/explore_speed.py                      # 10 runs x 20 slots over 10k rows, UMAP and PCA
    python benchmarks/explore_speed.py --runs 4 --vocab 2000

The runs are written with ``runs.save_prompt`` (prompts = frequent-token embeddings plus noise), so only drawing is
timed. "cold" uses an empty cache (UMAP fitted on the vocabulary, numba compilation included); "warm" is the same
call again (coordinates read from the cache; prompts placed by nearest vocabulary rows); "warm, new process" is a
fresh interpreter with the cache filled (what a user sees the next time). Each time includes loading the prompts,
the vocabulary sample, the nearest-token search and building the figure; loading the backbone is timed apart.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def make_runs(root: Path, bb, n_runs: int, slots: int) -> list[Path]:
    import numpy as np
    import torch

    from workbench.viz.explore_data import vocab_sample
    from workbench.engine.runs import save_prompt, write_json
    _, _, rows = vocab_sample(bb, 5000)
    rng = np.random.default_rng(0)
    inits = ["random", "vocab", "labels", "metapt", "supmer"]
    runs = []
    for i in range(n_runs):
        run, init, seed = root / f"run{i}", inits[i % len(inits)], 13 + i // len(inits)
        p = rows[rng.choice(len(rows), slots)] + rng.normal(scale=0.02, size=(slots, rows.shape[1]))
        save_prompt(run / "adapters" / "sst2" / init / f"seed{seed}", torch.tensor(p, dtype=torch.float32), bb,
                    {"dataset": "sst2", "method": init, "seed": seed, "best_step": 0, "dev_acc": 0.5})
        write_json(run / "results.json", {"rows": [{"dataset": "sst2", "method": init, "seed": seed, "test_acc": 0.5}]})
        runs.append(run)
    return runs


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--slots", type=int, default=20)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: time one warm call in a fresh process
    args = ap.parse_args(argv)
    from workbench.viz import explore
    from workbench.engine.backbones import load_backbone, set_threads
    from workbench.config import BackboneConfig
    set_threads()
    if args.child:
        spec = json.loads(args.child)
        (_, t_bb) = timed(lambda: explore.backbone_for(explore.load_prompt_runs(spec["runs"])))
        fig, t = timed(lambda: explore.token_space(spec["runs"], projection="umap", n_vocab=args.vocab,
                                                   cache_dir=spec["cache"]))
        print(json.dumps({"seconds": t, "cache": fig.layout.meta["cache"], "backbone_s": t_bb}))
        return 0
    bb, t_bb = timed(lambda: load_backbone(BackboneConfig(name=args.backbone, device="cpu")))
    with tempfile.TemporaryDirectory() as tmp:
        runs = make_runs(Path(tmp) / "runs", bb, args.runs, args.slots)
        cache = Path(tmp) / "cache"
        kw = dict(n_vocab=args.vocab, cache_dir=cache, backbone=bb)
        results = {}
        for name, proj in (("pca", "pca"), ("umap cold", "umap"), ("umap warm", "umap")):
            fig, t = timed(lambda: explore.token_space(runs, projection=proj, **kw))
            results[name] = {"seconds": round(t, 2), "cache": fig.layout.meta.get("cache"),
                             "fit_s": fig.layout.meta.get("fit_s"), "points": sum(len(d.x) for d in fig.data[1:])}
        child = subprocess.run([sys.executable, __file__, "--vocab", str(args.vocab), "--child",
                                json.dumps({"runs": [str(r) for r in runs], "cache": str(cache)})],
                               capture_output=True, text=True, env={**os.environ})
        line = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else "{}"
        c = json.loads(line) if line.startswith("{") else {"error": child.stderr[-500:]}
        results["umap warm, new process"] = {"seconds": round(c.get("seconds", float("nan")), 2),
                                             "cache": c.get("cache"), "backbone_s": round(c.get("backbone_s", 0), 2)}
    print(f"token space: {args.runs} runs x {args.slots} slots over {args.vocab} vocabulary rows, backbone "
          f"{args.backbone} (load {t_bb:.1f} s, not included), {os.cpu_count()} CPUs, torch threads "
          f"{__import__('torch').get_num_threads()}")
    for name, r in results.items():
        print(f"  {name:<24} {r['seconds']:>7.2f} s   " + ", ".join(f"{k}={v}" for k, v in r.items() if k != "seconds"))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
