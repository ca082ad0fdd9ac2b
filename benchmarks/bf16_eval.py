"""Does bf16 autocast keep test accuracy within 0.5 points of fp32? Side by side on one dataset, same prompts.

    python benchmarks/bf16_eval.py --dataset sst2 --steps 30

1. zero-shot (no prompt): the test set evaluated under fp32 and under bf16 autocast;
2. a prompt tuned in fp32 (``random`` init, seed 13): its test accuracy evaluated under fp32 and bf16;
3. optionally (``--train``) the same prompt tuned under bf16 autocast, evaluated under bf16.
Prints accuracies, differences in points, prediction agreement and wall times (each timed pass run once; the
machine may be shared, so times are indicative, accuracies are exact).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from workbench.engine.backbones import load_backbone, set_threads
from workbench.config import FewShotConfig, TuneConfig
from workbench.experiments.fewshot import prepare
from workbench.learn.inits import InitContext, make_prompt
from workbench.learn.tuner import evaluate, tune_prompt


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="sst2")
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--train", action="store_true", help="also tune under bf16 autocast")
    a = p.parse_args()
    set_threads()
    bb = load_backbone(a.backbone)
    cfg = FewShotConfig(datasets=[a.dataset], methods=["random"], k=16, seeds=[a.seed])
    prep = prepare(cfg, bb)[0]
    split, test = prep.splits[a.seed], prep.dataset.splits["test"]
    report = {"dataset": a.dataset, "n_test": len(test), "backbone": bb.name}

    def compare(name, prompt):
        f32, t32 = timed(lambda: evaluate(prep.head, test, prompt, 64, "none"))
        b16, t16 = timed(lambda: evaluate(prep.head, test, prompt, 64, "bf16"))
        agree = float((f32["logits"].argmax(1) == b16["logits"].argmax(1)).mean())
        report[name] = {"acc_fp32": f32["acc"], "acc_bf16": b16["acc"], "diff_points": 100 * (b16["acc"] - f32["acc"]),
                        "prediction_agreement": agree, "s_fp32": round(t32, 2), "s_bf16": round(t16, 2)}

    compare("zero-shot", None)
    init, _ = make_prompt("random", InitContext(bb, cfg.prompt, a.seed, prep.fmt, prep.dataset, split))
    tc = TuneConfig(steps=a.steps, lr=a.lr, eval_every=10, patience=0)
    res, t_tune = timed(lambda: tune_prompt(prep.head, init, split.train, split.dev, tc, a.seed, progress=False))
    report["tune_fp32_s"] = round(t_tune, 2)
    compare("tuned prompt (fp32 training)", res.prompt)
    if a.train:
        tc16 = TuneConfig(**{**tc.__dict__, "autocast": "bf16"})
        r16, t16 = timed(lambda: tune_prompt(prep.head, init, split.train, split.dev, tc16, a.seed, progress=False))
        ev = evaluate(prep.head, test, r16.prompt, 64, "bf16")
        report["bf16 training"] = {"tune_s": round(t16, 2), "test_acc_bf16": ev["acc"],
                                   "diff_vs_fp32_points": 100 * (ev["acc"] - report["tuned prompt (fp32 training)"]
                                                                 ["acc_fp32"]),
                                   "prompt_rel_diff": float(np.linalg.norm(r16.prompt - res.prompt) /
                                                            np.linalg.norm(res.prompt))}
    print(json.dumps(report, indent=2))
    ok = all(abs(report[k]["diff_points"]) <= 0.5 for k in ("zero-shot", "tuned prompt (fp32 training)"))
    print(f"bf16 evaluation within 0.5 points of fp32: {ok}")


if __name__ == "__main__":
    main()
