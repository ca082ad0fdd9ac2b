"""The few-shot tuning loop: only the prompt learns; the best-on-dev prompt is kept; test is never looked at here.

Selection: dev accuracy, ties broken by lower dev loss, then by the earlier step. Step 0 (the init itself) is a
candidate too. Early stopping ends the run after ``patience`` dev evaluations without improvement.

Snapshots (``tune.snapshot_every`` N > 0): the prompt at step 0, every N steps and at the last step run, each with
its dev accuracy (a snapshot step that is not a dev-evaluation step gets its own dev pass, which is not logged and
plays no part in selection), for the trajectory views of ``workbench.explore``.

Learning rate (:func:`lr_factor`): ``tune.lr`` times a factor of the step's 0-based index s = step - 1: s / W during a
warm-up of W = ``tune.warmup_steps`` steps (so the first update has rate 0), then 1 (``schedule=constant``) or
(steps - s) / (steps - W) (``linear``: reaching 0 at ``tune.steps``), as transformers'
``get_constant_schedule_with_warmup`` and ``get_linear_schedule_with_warmup``. The defaults (constant, no warm-up)
keep ``tune.lr`` throughout. Optimizer ``adafactor-relative`` sets its own step size (see :func:`make_optimizer`) and
takes no schedule.

One run's state (parameter, optimiser, loss scaler, selection, snapshots) is a :class:`PromptRun`;
:func:`tune_prompt` drives one, :func:`workbench.learn.grid.tune_grid` drives several through shared backbone passes.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from workbench.config import ConfigError, TuneConfig, WorkbenchError
from workbench.engine.progress import progress_bar


class TuningError(WorkbenchError, RuntimeError):
    """Tuning cannot go on (for example a non-finite loss); the message names the step."""


def autocast_ctx(device: torch.device, mode: str):
    if mode == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


SELECT_KEYS = {"acc": "acc", "macro_f1": "f1"}  # tune.select_metric -> its key in a metrics() dict


def select_key(cfg: TuneConfig) -> str:
    """The key of :func:`metrics`'s dict that ``tune.select_metric`` names ("acc" or "f1")."""
    return SELECT_KEYS[cfg.select_metric]


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
    """Class logits (and pooled features) for ``examples``, batched by length; returned in the input order.

    ``prompt`` is None, one prompt ``(L, d)``, or a stack ``(G, L, d)``: G prompts each scored on every example, one
    backbone pass per length chunk for all G (the chunk's examples repeated G times, so no padding is added), and
    logits ``(G, N, C)`` (features ``(G, N, d)``).
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text_a) + len(examples[i].text_b or ""))
    stacked = prompt is not None and prompt.dim() == 3
    G = prompt.shape[0] if stacked else 1
    p = None if prompt is None else prompt.to(head.bb.device)
    logits = np.zeros((G, len(examples), head.n_classes), dtype=np.float32)
    feats = None
    for s in progress_bar(range(0, len(order), batch_size), desc=desc, nested=True, enabled=progress):
        idx = order[s:s + batch_size]
        with autocast_ctx(head.bb.device, autocast):
            lg, ft = head.forward(head.batch([examples[i] for i in idx] * G),
                                  p.repeat_interleave(len(idx), 0) if stacked else p)
        logits[:, idx] = lg.float().cpu().numpy().reshape(G, len(idx), -1)
        if features:
            ft = ft.float().cpu().numpy().reshape(G, len(idx), -1)
            feats = np.zeros((G, len(examples), ft.shape[-1]), dtype=np.float32) if feats is None else feats
            feats[:, idx] = ft
    out = {"logits": logits if stacked else logits[0]}
    if features:
        out["features"] = feats if stacked else feats[0]
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
    budget_best: dict = field(default_factory=dict)  # tune.budgets: budget -> the best {step, dev, prompt} within it


def adafactor(params, **kw):
    """transformers' Adafactor (``kw``: its arguments), for the tuner and the meta-training loop."""
    # lazy: transformers.optimization imports the trainer and peft (1.7 s at start-up), for an optimiser few runs use
    from transformers.optimization import Adafactor
    return Adafactor(params, **kw)


def make_optimizer(params, cfg: TuneConfig):
    """AdamW, Adafactor at ``tune.lr`` (no relative step, no parameter scaling), or ``adafactor-relative``:
    Adafactor's own step size min(1e-2, 1/sqrt(t)) x max(1e-3, RMS(prompt)) (``lr=None, relative_step=True,
    scale_parameter=True, warmup_init=False``; its warm-up variant, 1e-6 t, would barely move a prompt in a few-shot
    run of a few hundred steps)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    relative = cfg.optimizer == "adafactor-relative"
    return adafactor(params, lr=None if relative else cfg.lr, weight_decay=cfg.weight_decay, relative_step=relative,
                     scale_parameter=relative, warmup_init=False, clip_threshold=1.0)


def lr_factor(cfg: TuneConfig, step: int) -> float:
    """The multiple of ``tune.lr`` that training step ``step`` (1, 2, ...) uses (see the module docstring)."""
    s, w = step - 1, cfg.warmup_steps
    if s < w:
        return s / w
    return 1.0 if cfg.schedule == "constant" else max(0.0, (cfg.steps - s) / (cfg.steps - w))


def grad_scaler(cfg: TuneConfig, device: torch.device):
    """A loss scaler for fp16 autocast on CUDA (fp16 gradients underflow without one); None otherwise."""
    return torch.amp.GradScaler("cuda") if cfg.autocast == "fp16" and device.type == "cuda" else None


def batch_order(n: int, batch_size: int, seed: int):
    """Index lists of the training batches, endlessly: shuffled epochs from a generator seeded ``seed``; a batch
    never repeats an example."""
    gen = torch.Generator().manual_seed(seed)
    queue: list[int] = []
    while True:
        if len(queue) < batch_size:
            queue += torch.randperm(n, generator=gen).tolist()
        idx, queue = queue[:batch_size], queue[batch_size:]
        yield idx


def check_single_lr(cfg: TuneConfig) -> None:
    """Refuse what only the harness's selection (learn.selection.tune_selected) honours: a grid, cross-validation."""
    if cfg.lr_grid:
        raise ConfigError(f"tune.lr_grid ({cfg.lr_grid}) is honoured by the fewshot harness only (fewshot and "
                          f"benchmark, through learn.selection.tune_selected); this caller tunes one learning rate: set tune.lr and leave tune.lr_grid empty")
    if cfg.selection != "dev":
        raise ConfigError(f"tune.selection={cfg.selection!r} is honoured by the fewshot harness only "
                          f"(fewshot and benchmark, through learn.selection.tune_selected); this caller selects on dev: leave tune.selection 'dev'")


class PromptRun:
    """One prompt being tuned: its parameter, optimiser and loss scaler, the best-on-dev prompt, patience, the dev
    history and the snapshots. The caller feeds it losses (:meth:`scaled`, :meth:`update`) and dev scores
    (:meth:`start`, :meth:`observe` when :meth:`wants_dev`)."""

    def __init__(self, init: torch.Tensor, cfg: TuneConfig, device: torch.device, desc: str, log=None):
        self.t0 = time.perf_counter()
        self.cfg, self.desc, self.log = cfg, desc, log
        self.prompt = init.detach().clone().float().to(device).requires_grad_(True)
        self.opt = make_optimizer([self.prompt], cfg)
        self.scaler = grad_scaler(cfg, device)
        self.history: list[dict] = []
        self.snapshots: list[dict] = []
        self.running: list[float] = []
        self.since, self.steps_run, self.stopped = 0, 0, False
        self.first = self.best = None  # set by start()
        self.key = select_key(cfg)  # the dev score that selects and early-stops (tune.select_metric)
        self.budget_best: dict[int, dict] = {}  # tune.budgets: the best evaluation at a step <= each budget

    def start(self, r: dict) -> None:
        """Step 0: the init's dev scores."""
        self.first = r
        self._record(0, r, None)
        self.best = _best(0, r, self.prompt, self.key)
        self.budget_best = {b: self.best for b in self.cfg.budgets}
        if self.cfg.snapshot_every:
            self.snapshots.append(_snapshot(0, self.prompt, r))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), labels)
        if not torch.isfinite(loss):
            raise TuningError(f"non-finite training loss ({loss.item()}) at step {step} ({self.desc}); "
                              f"lower tune.lr (now {self.cfg.lr}) or use tune.autocast='none'")
        return loss

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate (scaled for fp16); clears the previous gradient."""
        self.opt.zero_grad(set_to_none=True)
        return self.scaler.scale(loss) if self.scaler else loss

    def update(self, step: int, loss: torch.Tensor, grad_hook=None, batch=None) -> None:
        """After the backward pass: unscale, ``grad_hook(grad, batch)``, clip, set the step's rate, step."""
        cfg = self.cfg
        if self.scaler:
            self.scaler.unscale_(self.opt)
        if grad_hook is not None:
            self.prompt.grad = grad_hook(self.prompt.grad, batch)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([self.prompt], cfg.grad_clip)
        if cfg.optimizer != "adafactor-relative":
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, step)
        self._step(step)
        if not torch.isfinite(self.prompt).all():
            raise TuningError(f"non-finite prompt after the optimiser step at step {step} ({self.desc}); lower tune.lr "
                              f"(now {cfg.lr}) or use tune.autocast='none'")
        self.steps_run = step
        self.running.append(loss.item())

    def _step(self, step: int) -> None:
        try:
            if self.scaler:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
        except RuntimeError as e:  # e.g. Adam's step size overflowing float32 at an absurd learning rate
            if "overflow" not in str(e):
                raise
            raise TuningError(f"non-finite update: the optimiser step overflowed at step {step} ({self.desc}): {e}; "
                              f"lower tune.lr (now {self.cfg.lr})") from None

    def eval_due(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0 or step == self.cfg.steps

    def wants_dev(self, step: int) -> bool:
        """Whether step ``step`` needs dev scores: a dev evaluation or a snapshot."""
        snap = self.cfg.snapshot_every
        return self.eval_due(step) or bool(snap and (step % snap == 0 or step == self.cfg.steps))

    def observe(self, step: int, r: dict) -> None:
        """Dev scores after step ``step``: log and select (at evaluation steps), snapshot, early stop."""
        stop_now = False
        if self.eval_due(step):
            self._record(step, r, float(np.mean(self.running)))
            self.running = []
            if (r[self.key], -r["loss"]) > self.best["key"]:
                self.best, self.since = _best(step, r, self.prompt, self.key), 0
            else:
                self.since += 1
            self.budget_best.update({b: self.best for b in self.cfg.budgets if step <= b})
            stop_now = bool(self.cfg.patience and self.since >= self.cfg.patience)
        snap = self.cfg.snapshot_every
        if snap and (step % snap == 0 or step == self.cfg.steps or stop_now):
            self.snapshots.append(_snapshot(step, self.prompt, r))
        self.stopped = stop_now

    def _record(self, step: int, r: dict, train_loss) -> None:
        rec = {"step": step, "dev_acc": r["acc"], "dev_f1": r["f1"], "dev_loss": r["loss"], "train_loss": train_loss}
        self.history.append(rec)
        if self.log:
            self.log(rec)

    def result(self) -> TuneResult:
        best = self.best
        if not math.isfinite(best["dev"]["loss"]):
            raise TuningError(f"non-finite dev loss for every evaluated prompt ({self.desc})")
        return TuneResult(prompt=best["prompt"], best_step=best["step"], dev=best["dev"], step0_dev=_m(self.first),
                          steps_run=self.steps_run, stopped_early=self.stopped, wall_s=time.perf_counter() - self.t0,
                          history=self.history, snapshots=self.snapshots, budget_best=self.budget_best)


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
    check_single_lr(cfg)
    device = head.bb.device
    torch.manual_seed(seed)
    run = PromptRun(init, cfg, device, desc, log)
    labels_all = torch.tensor([ex.label for ex in train])
    prompt_fn = prompt_fn or (lambda p, step: p)
    dev_score = dev_score or (lambda p: evaluate(head, dev, p, cfg.eval_batch_size, cfg.eval_precision))
    run.start(dev_score(run.prompt.detach()))
    bar = progress_bar(range(1, cfg.steps + 1), desc=desc, nested=True, enabled=progress)
    for step, idx in zip(bar, batch_order(len(train), cfg.batch_size, seed)):
        batch = head.batch([train[i] for i in idx])
        with autocast_ctx(device, cfg.autocast):
            logits, _ = head.forward(batch, prompt_fn(run.prompt, step))
        loss = run.loss(logits, labels_all[idx].to(device), step)
        run.scaled(loss).backward()
        run.update(step, loss, grad_hook, batch)
        if run.wants_dev(step):
            run.observe(step, dev_score(run.prompt.detach()))
            bar.set_postfix(dev=f"{run.history[-1]['dev_acc']:.3f}", best=f"{run.best['dev']['acc']:.3f}")
        if run.stopped:
            break
    bar.close()
    return run.result()


def _best(step: int, r: dict, prompt: torch.Tensor, key: str = "acc") -> dict:
    return {"key": (r[key], -r["loss"]), "step": step, "dev": _m(r), "prompt": prompt.detach().cpu().clone()}


def _snapshot(step: int, prompt: torch.Tensor, r: dict) -> dict:
    return {"step": step, "prompt": prompt.detach().float().cpu().clone(), "dev_acc": r["acc"], "dev_loss": r["loss"]}


def _m(r: dict) -> dict:
    return {"acc": r["acc"], "f1": r["f1"], "loss": r["loss"]}
