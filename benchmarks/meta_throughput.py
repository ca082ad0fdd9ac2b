"""Tasks per second of one meta-step, batched (one backbone pass per meta-batch) vs the per-task loop, same math.

    python benchmarks/meta_throughput.py [--backbone minilm] [--method fomaml] [--sizes 1,4,16] [--repeats 2]

Episodes are labelled MPT tasks (MR, Subj, AG News, CoLA: 2- and 4-way, their own heads) with ``--support`` and
``--query`` examples per class. For each meta-batch size both paths run the same episodes from the same prompt; the
script checks that their meta-gradients agree (allclose) and prints a table, then measures the peak resident memory
(``resource.getrusage`` maxrss) of one second-order MAML step at the largest meta-batch in a fresh subprocess
(eager attention). The last line is ``batched_over_loop_at_<largest>=<ratio>``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time



def build(args, second_order=False):
    from workbench.engine.backbones import load_backbone, set_threads
    from workbench.config import BackboneConfig
    from workbench.learn.metatrain import MetaTrainConfig
    from workbench.tasks.episodes import make_source
    set_threads()
    bb = load_backbone(BackboneConfig(name=args.backbone, second_order=second_order))
    cfg = MetaTrainConfig()
    cfg.meta.support, cfg.meta.query, cfg.meta.max_length = args.support, args.query, args.max_length
    cfg.prompt.length = args.prompt_length
    cfg.labelled.datasets, cfg.labelled.seeds = ["mr", "subj", "agnews", "cola"], [13]
    return bb, make_source("labelled", cfg, bb, target=None)


def step_config():
    """The meta-step settings both paths run: one SGD inner step at lr 0.1."""
    from workbench.learn.metatrain import MetaTrainConfig
    cfg = MetaTrainConfig()
    cfg.meta.inner_lr, cfg.meta.inner_steps = 0.1, 1
    return cfg


def prompt(bb, length):
    import torch
    g = torch.Generator().manual_seed(0)
    return (torch.randn(length, bb.hidden_size, generator=g) * bb.embeddings.weight.std().item()).to(bb.device)


def timed(method, P, eps, cfg, repeats):
    """Fastest wall and CPU seconds of the batched and the loop path, alternating so both see the same load."""
    import torch
    from workbench.learn.meta import meta_gradient
    best = {True: [float("inf"), float("inf")], False: [float("inf"), float("inf")]}
    grads = {}
    for r in range(repeats):
        for batched in ((True, False) if r % 2 == 0 else (False, True)):
            t0, c0 = time.perf_counter(), time.process_time()
            _, grads[batched] = meta_gradient(method, P, eps, cfg, batched=batched)
            if P.is_cuda:  # the step's kernels finish before the clock stops
                torch.cuda.synchronize(P.device)
            best[batched] = [min(best[batched][0], time.perf_counter() - t0),
                             min(best[batched][1], time.process_time() - c0)]
    return best[True], best[False], grads[True], grads[False]


def maml_memory(args) -> dict:
    import numpy as np
    from workbench.learn.meta import meta_gradient
    bb, src = build(args, second_order=True)
    eps = src.sample(np.random.default_rng(0), args.sizes[-1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    meta_gradient("maml", prompt(bb, args.prompt_length), eps, step_config())
    return {"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "before_step_mib": before / 1024,
            "seconds": time.perf_counter() - t0, "tasks": len(eps)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--method", default="fomaml")
    p.add_argument("--sizes", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--repeats", type=int, default=2, help="timed repeats per path (the fastest is kept)")
    p.add_argument("--support", type=int, default=2)
    p.add_argument("--query", type=int, default=2)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--prompt-length", type=int, default=20)
    p.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_only:
        print(json.dumps(maml_memory(args)))
        return 0
    import numpy as np
    import torch
    bb, src = build(args)
    P = prompt(bb, args.prompt_length)
    cfg = step_config()
    print(f"backbone={args.backbone} method={args.method} support={args.support} query={args.query} per class, "
          f"max_length={args.max_length}, prompt={args.prompt_length}, threads={torch.get_num_threads()}, "
          f"cpus={os.cpu_count()}, device={bb.device}")
    print("tasks/s by wall clock (and by process CPU time, less sensitive to other load on the machine)")
    print(f"{'meta-batch':>10} {'examples':>9} {'batched':>9} {'loop':>9} {'ratio':>6} {'batched cpu':>12} "
          f"{'loop cpu':>9} {'ratio cpu':>9} {'max|dg|':>8}")
    ratio = cratio = None
    timed(args.method, P, src.sample(np.random.default_rng(99), 1), cfg, 1)  # warm-up
    for mb in args.sizes:
        eps = src.sample(np.random.default_rng(mb), mb)
        n_ex = sum(len(e.support) + len(e.query) for e in eps)
        (tb, cb), (tl, cl), gb, gl = timed(args.method, P, eps, cfg, args.repeats)
        if not torch.allclose(gb, gl, atol=1e-5, rtol=1e-4):
            raise SystemExit(f"batched and loop meta-gradients differ at meta-batch {mb}")
        ratio, cratio = tl / tb, cl / cb
        print(f"{mb:>10} {n_ex:>9} {mb / tb:>9.2f} {mb / tl:>9.2f} {ratio:>6.2f} {mb / cb:>12.2f} {mb / cl:>9.2f} "
              f"{cratio:>9.2f} {(gb - gl).abs().max().item():>8.1e}")
    cmd = [sys.executable, __file__, "--memory-only", "--backbone", args.backbone, "--sizes", str(args.sizes[-1]),
           "--support", str(args.support), "--query", str(args.query), "--max-length", str(args.max_length),
           "--prompt-length", str(args.prompt_length)]
    mem = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    print(f"second-order MAML, meta-batch {mem['tasks']}: peak RSS {mem['maxrss_mib']:.0f} MiB "
          f"(process before the step {mem['before_step_mib']:.0f} MiB), one step {mem['seconds']:.1f} s")
    print(f"batched_over_loop_cputime_at_{args.sizes[-1]}={cratio:.2f}")
    print(f"batched_over_loop_at_{args.sizes[-1]}={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
