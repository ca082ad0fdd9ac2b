"""Throughput of one prompt-tuning step beside the machine's measured matmul peak.

    python benchmarks/throughput.py [--backbone minilm] [--batch 32] [--tokens 64] [--prompt 20] [--repeats 10]

FLOP count (stated, not measured): with T = tokens + prompt positions, B the batch, per layer
  forward = 2 * B * T * P_layer            (every dense weight: one multiply-add per weight per token)
          + 4 * B * T^2 * d                (attention scores Q K^T and the weighted sum A V)
where P_layer counts the layer's dense weights (Q, K, V, output, the two FFN matrices). A tuning step is forward
plus backward; with frozen weights the backward pass needs only input gradients, about the forward's FLOPs again,
so step FLOPs = 2 x forward. Embedding lookups, norms, softmax and GELU are not counted (they are memory-bound).

Peak: the best GFLOP/s of square matmuls (1024..4096) on the backbone's device, measured in the same run, in fp32 and
in bf16. ``--peak-tflops`` adds the device's nominal bf16 dense peak (e.g. 989 for an H100/H200 SXM) so that the bf16
step is also reported as MFU against it. On CUDA every timed region ends with ``torch.cuda.synchronize()``.
The last lines are ``bf16_step_tflops=<x>``, ``bf16_mfu=<x>`` (with ``--peak-tflops``) and
``tuning_step_fraction_of_peak=<x>`` for fp32.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

from workbench.config import BackboneConfig, PromptConfig, TaskConfig
from workbench.engine.backbones import load_backbone, set_threads
from workbench.engine.heads import make_head
from workbench.engine.templates import resolve_format


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype=torch.float32, repeats: int = 5) -> float:
    """Best GFLOP/s of square ``dtype`` matmuls on ``device``."""
    best = 0.0
    for n in (1024, 2048, 3072, 4096):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        dt = (time.perf_counter() - t) / repeats
        best = max(best, 2 * n ** 3 / dt / 1e9)
    return best


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


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
    d, device = head.bb.hidden_size, head.bb.device
    prompt = (torch.randn(prompt_len, d, device=device) * 0.05).requires_grad_(True)
    opt = torch.optim.AdamW([prompt], lr=1e-3)
    labels = torch.randint(0, head.n_classes, (batch["input_ids"].shape[0],)).to(device)
    ctx = autocast(device, dtype)

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
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]  # median


def time_forward(head, batch, prompt_len, dtype, repeats) -> float:
    device = head.bb.device
    prompt = torch.randn(prompt_len, head.bb.hidden_size, device=device) * 0.05
    times = []
    with torch.inference_mode(), autocast(device, dtype):
        for i in range(repeats + 2):
            sync(device)
            t = time.perf_counter()
            head.forward(batch, prompt)
            sync(device)
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
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's nominal bf16 dense peak in TFLOP/s, for MFU (e.g. 989 for H100/H200 SXM)")
    args = ap.parse_args()
    set_threads()
    bb = load_backbone(BackboneConfig(name=args.backbone, device=args.device))
    if bb.family != "encoder":
        raise SystemExit("this benchmark counts FLOPs for BERT-style encoders (the default MiniLM)")
    fmt = resolve_format("bench", "single", ["a", "b"], bb.family, TaskConfig())
    head = make_head(bb, fmt, TaskConfig(), PromptConfig(length=args.prompt), args.tokens)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, bb.embeddings.weight.shape[0], (args.batch, args.tokens), generator=g)
    ids[:, 0], ids[:, -1] = bb.tokenizer.cls_token_id, bb.tokenizer.sep_token_id
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    batch = {k: v.to(bb.device) for k, v in batch.items()}
    T = args.tokens + args.prompt
    flops = step_flops(bb.model, args.batch, T)
    peak = {"fp32": matmul_peak(bb.device), "bf16": matmul_peak(bb.device, torch.bfloat16)}
    gpu = torch.cuda.get_device_name(bb.device) if bb.device.type == "cuda" else None
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
          f"torch_threads={torch.get_num_threads()} torch={torch.__version__} device={bb.device} {gpu or ''}")
    print(f"setting: backbone={args.backbone} batch={args.batch} tokens={args.tokens} prompt={args.prompt} (T={T})")
    print(f"matmul_peak_gflops={peak['fp32']:.1f} bf16_matmul_peak_gflops={peak['bf16']:.1f}")
    print(f"step_gflop={flops / 1e9:.1f} (2 x forward, frozen weights)")
    achieved = {}
    for dtype in ("fp32", "bf16"):
        dt = time_step(head, batch, args.prompt, dtype, args.repeats)
        achieved[dtype] = flops / dt / 1e9
        print(f"{dtype}: step_s={dt:.4f} examples_per_s={args.batch / dt:.1f} achieved_gflops={achieved[dtype]:.1f} "
              f"fraction_of_{dtype}_matmul_peak={achieved[dtype] / peak[dtype]:.2f}")
        fw = time_forward(head, batch, args.prompt, dtype, args.repeats)
        print(f"{dtype}: forward_only_s={fw:.4f} forward_examples_per_s={args.batch / fw:.1f} "
              f"forward_gflops={flops / 2 / fw / 1e9:.1f}")
    print(f"bf16_step_tflops={achieved['bf16'] / 1e3:.3f}")
    if args.peak_tflops:
        print(f"bf16_mfu={achieved['bf16'] / 1e3 / args.peak_tflops:.4f}")
    print(f"tuning_step_fraction_of_peak={achieved['fp32'] / peak['fp32']:.2f}")


if __name__ == "__main__":
    main()
