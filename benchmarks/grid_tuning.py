"""A learning-rate grid tuned in one pass (``learn.grid.tune_grid``) against the same grid run one rate at a time
(``tune_prompt`` per rate), side by side in one process on the same prompt, data and seed.

    python benchmarks/grid_tuning.py [--dataset sst2] [--k 16] [--lrs 0.003,0.01,0.03,0.1] [--steps 30] [--batch 16]
                                     [--eval-every 5] [--repeats 1] [--pass-repeats 6]

Backbone: ``BackboneConfig()`` (the offline MiniLM unless told otherwise), prompt ``PromptConfig()`` (20 slots,
``random`` init), the k-shot split of ``--seed`` from the dataset on the data path; ``tune.patience`` 0 so that every
member runs every step (early stopping would end members at different steps in both paths alike). Each repeat times
both paths (wall and CPU seconds), alternating which goes first; the fastest of each is reported, with how far the
two paths' results differ (they should agree up to float summation order). To show where the time goes, the script
then times one training pass (forward + backward) over G x batch rows against G passes over batch rows (median of
``--pass-repeats``, interleaved): the most that sharing passes can save on this machine. The last line is
``grid_batched_over_sequential=<sequential seconds / batched seconds>``.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.config import FewShotConfig, TuneConfig
from workbench.engine.backbones import load_backbone, set_threads
from workbench.experiments.fewshot import prepare
from workbench.learn.grid import tune_grid
from workbench.learn.inits import InitContext, make_prompt
from workbench.learn.tuner import tune_prompt


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())


def timed(fn):
    """``fn()``, its wall seconds and its CPU seconds (all threads; less sensitive to other jobs on the machine)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def pass_cost(head, examples, init, G: int, repeats: int) -> dict:
    """Median seconds of one forward + backward pass over ``examples`` repeated G times vs G passes over them."""
    device = head.bb.device
    prompts = [init.detach().clone().to(device).requires_grad_(True) for _ in range(G)]
    y = torch.tensor([ex.label for ex in examples], device=device)

    def joint():
        logits, _ = head.forward(head.batch(examples * G), torch.stack(prompts).repeat_interleave(len(examples), 0))
        F.cross_entropy(logits, y.repeat(G)).backward()

    def apart():
        for p in prompts:
            logits, _ = head.forward(head.batch(examples), p)
            F.cross_entropy(logits, y).backward()
    times = {"one pass of G x batch rows": [], "G passes of batch rows": []}
    for r in range(repeats):
        for name, fn in (zip(times, (joint, apart)) if r % 2 == 0 else reversed(list(zip(times, (joint, apart))))):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: sorted(v)[len(v) // 2] for name, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--lrs", default="0.003,0.01,0.03,0.1")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--pass-repeats", type=int, default=6)
    a = ap.parse_args()
    lrs = [float(v) for v in a.lrs.split(",")]
    set_threads()
    cfg = FewShotConfig(datasets=[a.dataset], methods=["random"], k=a.k, seeds=[a.seed])
    bb = load_backbone(cfg.backbone)
    prep = prepare(cfg, bb)[0]
    split = prep.splits[a.seed]
    init, _ = make_prompt("random", InitContext(bb, cfg.prompt, a.seed, prep.fmt, prep.dataset, split))
    tc = TuneConfig(steps=a.steps, batch_size=a.batch, eval_every=a.eval_every, patience=0)
    args = (prep.head, init, split.train, split.dev)
    paths = {"batched": lambda: tune_grid(*args, tc, a.seed, lrs, progress=False),
             "sequential": lambda: [tune_prompt(*args, TuneConfig(**{**tc.__dict__, "lr": lr}), a.seed, progress=False)
                                    for lr in lrs]}
    wall, cpu, results = {name: [] for name in paths}, {name: [] for name in paths}, {}
    for r in range(a.repeats):
        for name in (("batched", "sequential") if r % 2 == 0 else ("sequential", "batched")):
            results[name], dt, dc = timed(paths[name])
            wall[name].append(dt)
            cpu[name].append(dc)
            print(f"repeat {r}: {name} wall {dt:.2f} s, cpu {dc:.2f} s", flush=True)
    best = {name: min(v) for name, v in wall.items()}
    gap = max(float((g.prompt - s.prompt).abs().max()) for g, s in zip(results["batched"], results["sequential"]))
    same_steps = [g.best_step for g in results["batched"]] == [s.best_step for s in results["sequential"]]
    print(f"machine: {cpu_name()} cores={os.cpu_count()} torch_threads={torch.get_num_threads()} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} torch={torch.__version__}")
    print(f"setting: backbone={bb.name} dataset={a.dataset} k={a.k} n_train={len(split.train)} n_dev={len(split.dev)} "
          f"G={len(lrs)} lrs={lrs} steps={a.steps} batch={a.batch} eval_every={a.eval_every} "
          f"prompt_length={cfg.prompt.length} seed={a.seed} repeats={a.repeats}")
    print(f"cpu seconds (fastest): batched={min(cpu['batched']):.2f} sequential={min(cpu['sequential']):.2f} "
          f"ratio={min(cpu['sequential']) / min(cpu['batched']):.2f}")
    print(f"batched_s={best['batched']:.2f} sequential_s={best['sequential']:.2f} "
          f"max_prompt_diff={gap:.2e} same_best_steps={same_steps} "
          f"best_dev_acc={[round(g.dev['acc'], 4) for g in results['batched']]}")
    cost = pass_cost(prep.head, split.train[:a.batch], init, len(lrs), a.pass_repeats)
    print("training pass (median s): " + ", ".join(f"{k}={v:.3f}" for k, v in cost.items()))
    print(f"grid_batched_over_sequential={best['sequential'] / best['batched']:.2f}")


if __name__ == "__main__":
    main()
