"""Throughput of one prompt-tuning step beside the machine's measured matmul peak.

    python benchmarks/throughput.py [--backbone minilm] [--batch 32] [--tokens 64] [--prompt 20] [--repeats 10]

FLOP count (stated, not measured): with T = tokens + prompt positions, B the batch, per layer
  forward = 2 * B * T * P_layer            (every dense weight: one multiply-add per weight per token)
          + 4 * B * T^2 * d                (attention scores Q K^T and the weighted sum A V)
where P_layer counts the layer's dense weights (Q, K, V, output, the two FFN matrices). A tuning step is forward
plus backward; with frozen weights the backward pass needs only input gradients, about the forward's FLOPs again,
so step FLOPs = 2 x forward. Embedding lookups, norms, softmax and GELU are not counted (they are memory-bound).

Peak: the best GFLOP/s of fp32 square matmuls (1024..4096) on this machine, measured in the same run.
The last line is ``tuning_step_fraction_of_peak=<x>`` for fp32.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F


from workbench.engine.backbones import load_backbone, set_threads# noqa: E402
from workbench.config import PromptConfig, TaskConfig# noqa: E402
from workbench.engine.heads import make_head# noqa: E402
from workbench.engine.templates import resolve_format# noqa: E402


def matmul_peak(repeats: int = 5) -> float:
    best = 0.0
    for n in (1024, 2048, 3072, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        dt = (time.perf_counter() - t) / repeats
        best = max(best, 2 * n ** 3 / dt / 1e9)
    return best


def layer_weights(model) -> tuple[int, int, int]:
    """(dense weights per layer, number of layers, hidden size) of a BERT-style encoder."""
    cfg = model.config
    d, ff, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    return 4 * d * d + 2 * d * ff, L, d


def step_flops(model, batch: int, tokens: int) -> float:
    p_layer, n_layers, d = layer_weights(model)
    forward = n_layers * (2 * batch * tokens * p_layer + 4 * batch * tokens ** 2 * d)
    return 2 * forward


def time_step(head, batch, prompt_len, dtype, repeats) -> float:
    d = head.bb.hidden_size
    prompt = (torch.randn(prompt_len, d) * 0.05).requires_grad_(True)
    opt = torch.optim.AdamW([prompt], lr=1e-3)
    labels = torch.randint(0, head.n_classes, (batch["input_ids"].shape[0],))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)

    def step():
        with ctx:
            logits, _ = head.forward(batch, prompt)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]  # median


def time_forward(head, batch, prompt_len, dtype, repeats) -> float:
    prompt = torch.randn(prompt_len, head.bb.hidden_size) * 0.05
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)
    times = []
    with torch.inference_mode(), ctx:
        for i in range(repeats + 2):
            t = time.perf_counter()
            head.forward(batch, prompt)
            if i >= 2:
                times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    set_threads()
    bb = load_backbone(args.backbone)
    if bb.family != "encoder":
        raise SystemExit("this benchmark counts FLOPs for BERT-style encoders (the default MiniLM)")
    fmt = resolve_format("bench", "single", ["a", "b"], bb.family, TaskConfig())
    head = make_head(bb, fmt, TaskConfig(), PromptConfig(length=args.prompt), args.tokens)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, bb.embeddings.weight.shape[0], (args.batch, args.tokens), generator=g)
    ids[:, 0], ids[:, -1] = bb.tokenizer.cls_token_id, bb.tokenizer.sep_token_id
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    T = args.tokens + args.prompt
    flops = step_flops(bb.model, args.batch, T)
    peak = matmul_peak()
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
          f"torch_threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"setting: backbone={args.backbone} batch={args.batch} tokens={args.tokens} prompt={args.prompt} (T={T})")
    print(f"matmul_peak_gflops={peak:.1f}")
    print(f"step_gflop={flops / 1e9:.1f} (2 x forward, frozen weights)")
    fraction = None
    for dtype in ("fp32", "bf16"):
        dt = time_step(head, batch, args.prompt, dtype, args.repeats)
        achieved = flops / dt / 1e9
        print(f"{dtype}: step_s={dt:.3f} examples_per_s={args.batch / dt:.1f} achieved_gflops={achieved:.1f} "
              f"fraction_of_fp32_peak={achieved / peak:.2f}")
        if dtype == "fp32":
            fraction = achieved / peak
        fw = time_forward(head, batch, args.prompt, dtype, args.repeats)
        print(f"{dtype}: forward_only_s={fw:.3f} forward_examples_per_s={args.batch / fw:.1f} "
              f"forward_gflops={flops / 2 / fw / 1e9:.1f}")
    print(f"tuning_step_fraction_of_peak={fraction:.2f}")


if __name__ == "__main__":
    main()
