"""The few-shot tuning loop: only the prompt learns; the best-on-dev prompt is kept; test is never looked at here.

Selection: dev accuracy, ties broken by lower dev loss, then by the earlier step. Step 0 (the init itself) is a
candidate too. Early stopping ends the run after ``patience`` dev evaluations without improvement.

Snapshots (``tune.snapshot_every`` N > 0): the prompt at step 0, every N steps and at the last step run, each with
its dev accuracy (a snapshot step that is not a dev-evaluation step gets its own dev pass, which is not logged and
plays no part in selection), for the trajectory views of ``workbench.explore``.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers.optimization import Adafactor

from workbench.config import TuneConfig, WorkbenchError


class TuningError(WorkbenchError, RuntimeError):
    """Tuning cannot go on (for example a non-finite loss); the message names the step."""


def autocast_ctx(device: torch.device, mode: str):
    if mode == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def metrics(logits: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """Accuracy, macro-F1 and mean cross-entropy from class logits."""
    logits = logits.astype(np.float64)
    preds = logits.argmax(1)
    acc = float((preds == labels).mean()) if len(labels) else float("nan")
    f1s = []
    for c in range(n_classes):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    loss = float(-logp[np.arange(len(labels)), labels].mean()) if len(labels) else float("nan")
    return {"acc": acc, "f1": float(np.mean(f1s)), "loss": loss}


@torch.inference_mode()
def predict(head, examples, prompt: torch.Tensor | None, batch_size: int = 64, autocast: str = "none",
            features: bool = False, progress: bool = False, desc: str = "eval") -> dict:
    """Class logits (and pooled features) for ``examples``, batched by length; returned in the input order."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text_a) + len(examples[i].text_b or ""))
    p = None if prompt is None else prompt.to(head.bb.device)
    logits, feats = [None] * len(examples), [None] * len(examples)
    chunks = range(0, len(order), batch_size)
    for s in tqdm(chunks, desc=desc, leave=False, disable=not progress):
        idx = order[s:s + batch_size]
        with autocast_ctx(head.bb.device, autocast):
            lg, ft = head.forward(head.batch([examples[i] for i in idx]), p)
        lg = lg.float().cpu().numpy()
        ft = ft.float().cpu().numpy() if features else None
        for j, i in enumerate(idx):
            logits[i] = lg[j]
            if features:
                feats[i] = ft[j]
    out = {"logits": np.stack(logits) if examples else np.zeros((0, head.n_classes))}
    if features:
        out["features"] = np.stack(feats)
    return out


def evaluate(head, examples, prompt, batch_size=64, autocast="none", features=False, progress=False, desc="eval"):
    out = predict(head, examples, prompt, batch_size, autocast, features, progress, desc)
    labels = np.array([ex.label for ex in examples])
    out.update(metrics(out["logits"], labels, head.n_classes))
    out["n"] = len(examples)
    return out


@dataclass
class TuneResult:
    prompt: torch.Tensor  # the best-on-dev prompt (cpu, float32)
    best_step: int
    dev: dict  # acc, f1, loss of the best prompt on dev
    step0_dev: dict
    steps_run: int
    stopped_early: bool
    wall_s: float
    history: list = field(default_factory=list)  # one dict per dev evaluation
    snapshots: list = field(default_factory=list)  # tune.snapshot_every > 0: {step, prompt (cpu), dev_acc, dev_loss}


def make_optimizer(params, cfg: TuneConfig):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return Adafactor(params, lr=cfg.lr, weight_decay=cfg.weight_decay, relative_step=False, scale_parameter=False,
                     warmup_init=False, clip_threshold=1.0)


def grad_scaler(cfg: TuneConfig, device: torch.device):
    """A loss scaler for fp16 autocast on CUDA (fp16 gradients underflow without one); None otherwise."""
    return torch.amp.GradScaler("cuda") if cfg.autocast == "fp16" and device.type == "cuda" else None


def tune_prompt(head, init: torch.Tensor, train, dev, cfg: TuneConfig, seed: int, log=None, progress: bool = True,
                desc: str = "tune", grad_hook=None, prompt_fn=None, dev_score=None) -> TuneResult:
    """Tune a copy of ``init`` on ``train``; return the best-on-dev prompt.

    ``log(record)`` receives one dict per dev evaluation. ``grad_hook(prompt_grad, batch)`` may rewrite the prompt's
    gradient before each optimiser step (SUPMER's learned gradient transform uses it). ``prompt_fn(prompt, step)``
    returns the prompt that training step ``step`` (1, 2, ...) feeds the model, a function of the learned ``prompt``
    through which the gradient flows back to it (default: the learned prompt itself; BayesPrompt's resample mode adds
    a fresh particle offset). ``dev_score(prompt) -> {"acc", "f1", "loss"}`` scores a learned prompt on dev for
    selection, early stopping and snapshots (default: :func:`evaluate` on ``dev``).
    """
    t0 = time.perf_counter()
    device = head.bb.device
    torch.manual_seed(seed)
    prompt = init.detach().clone().float().to(device).requires_grad_(True)
    opt = make_optimizer([prompt], cfg)
    scaler = grad_scaler(cfg, device)
    gen = torch.Generator().manual_seed(seed)
    labels_all = torch.tensor([ex.label for ex in train])
    queue: list[int] = []
    prompt_fn = prompt_fn or (lambda p, step: p)
    dev_score = dev_score or (lambda p: evaluate(head, dev, p, cfg.eval_batch_size, cfg.eval_precision))

    def dev_eval(step, train_loss):
        r = dev_score(prompt.detach())
        rec = {"step": step, "dev_acc": r["acc"], "dev_f1": r["f1"], "dev_loss": r["loss"], "train_loss": train_loss}
        history.append(rec)
        if log:
            log(rec)
        return r

    history: list[dict] = []
    first = dev_eval(0, None)
    best = {"key": (first["acc"], -first["loss"]), "step": 0, "dev": _m(first), "prompt": prompt.detach().cpu().clone()}
    snap = cfg.snapshot_every
    snapshots = [_snapshot(0, prompt, first)] if snap else []
    since, steps_run, stopped, running = 0, 0, False, []
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, leave=False, disable=not progress)
    for step in bar:
        if len(queue) < cfg.batch_size:  # shuffled epochs; a batch never repeats an example
            queue += torch.randperm(len(train), generator=gen).tolist()
        idx, queue = queue[: cfg.batch_size], queue[cfg.batch_size:]
        batch = head.batch([train[i] for i in idx])
        used = prompt_fn(prompt, step)
        with autocast_ctx(device, cfg.autocast):
            logits, _ = head.forward(batch, used)
        loss = F.cross_entropy(logits.float(), labels_all[idx].to(device))
        if not torch.isfinite(loss):
            raise TuningError(f"non-finite training loss ({loss.item()}) at step {step} ({desc}); "
                              f"lower tune.lr (now {cfg.lr}) or use tune.autocast='none'")
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        if grad_hook is not None:
            prompt.grad = grad_hook(prompt.grad, batch)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([prompt], cfg.grad_clip)
        try:
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        except RuntimeError as e:  # e.g. Adam's step size overflowing float32 at an absurd learning rate
            if "overflow" not in str(e):
                raise
            raise TuningError(f"non-finite update: the optimiser step overflowed at step {step} ({desc}): {e}; lower tune.lr "
                              f"(now {cfg.lr})") from None
        if not torch.isfinite(prompt).all():
            raise TuningError(f"non-finite prompt after the optimiser step at step {step} ({desc}); lower tune.lr "
                              f"(now {cfg.lr}) or use tune.autocast='none'")
        steps_run = step
        running.append(loss.item())
        r, stop_now = None, False
        if step % cfg.eval_every == 0 or step == cfg.steps:
            r = dev_eval(step, float(np.mean(running)))
            running = []
            key = (r["acc"], -r["loss"])
            if key > best["key"]:
                best = {"key": key, "step": step, "dev": _m(r), "prompt": prompt.detach().cpu().clone()}
                since = 0
            else:
                since += 1
            bar.set_postfix(dev=f"{r['acc']:.3f}", best=f"{best['dev']['acc']:.3f}")
            stop_now = bool(cfg.patience and since >= cfg.patience)
        if snap and (step % snap == 0 or step == cfg.steps or stop_now):
            r = r or dev_score(prompt.detach())
            snapshots.append(_snapshot(step, prompt, r))
        if stop_now:
            stopped = True
            break
    if not math.isfinite(best["dev"]["loss"]):
        raise TuningError(f"non-finite dev loss for every evaluated prompt ({desc})")
    return TuneResult(prompt=best["prompt"], best_step=best["step"], dev=best["dev"], step0_dev=_m(first),
                      steps_run=steps_run, stopped_early=stopped, wall_s=time.perf_counter() - t0, history=history,
                      snapshots=snapshots)


def _snapshot(step: int, prompt: torch.Tensor, r: dict) -> dict:
    return {"step": step, "prompt": prompt.detach().float().cpu().clone(), "dev_acc": r["acc"], "dev_loss": r["loss"]}


def _m(r: dict) -> dict:
    return {"acc": r["acc"], "f1": r["f1"], "loss": r["loss"]}
