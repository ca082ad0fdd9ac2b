"""A learning-rate grid tuned in one pass: the G members of a grid for one (init, dataset, seed) share every backbone
pass, and each ends exactly as its own :func:`~workbench.learn.tuner.tune_prompt` run would.

Each training step draws the batch that a single run with the same seed draws (:func:`~workbench.learn.tuner.
batch_order`), repeats its examples once per member still running, and feeds one backbone pass with a per-example
prompt ``(G*B, L, d)``: member g's rows carry member g's prompt. Rows do not interact in the model, so the gradient of
the summed member losses with respect to member g's prompt is the gradient of member g's loss alone. Every member is
its own :class:`~workbench.learn.tuner.PromptRun` (a leaf tensor with its own optimiser and loss scaler, gradient
clipped by its own norm), so the update is the one a separate run makes, not merely the same in expectation. Dev
evaluation scores all running members in one pass per length chunk (:func:`~workbench.learn.tuner.predict` with a
stack of prompts); selection, patience and early stopping are per member, and a stopped member leaves the batch.

Equal up to floating-point summation order: a batch of G*B rows may take other kernels than a batch of B.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from workbench.config import ConfigError, TuneConfig
from workbench.engine.progress import progress_bar
from workbench.learn.tuner import PromptRun, TuneResult, autocast_ctx, batch_order, metrics, predict


def tune_grid(head, init: torch.Tensor, train, dev, cfg: TuneConfig, seed: int, lrs: list[float], log=None,
              progress: bool = True, desc: str = "grid", grad_hook=None, prompt_fn=None,
              dev_score=None) -> list[TuneResult]:
    """Tune a copy of ``init`` at every learning rate in ``lrs`` together; one :class:`TuneResult` per rate, equal (up
    to floating-point summation order) to ``tune_prompt(head, init, train, dev, cfg with that lr, seed)``.

    Each result's ``wall_s`` is the grid's. ``log(record)`` receives each member's dev evaluations with its ``lr``
    added. ``grad_hook(grad, batch)`` is applied to each member's gradient with the step's (unrepeated) batch, as in
    :func:`tune_prompt`. ``prompt_fn`` and ``dev_score`` are refused: a stateful hook (BayesPrompt's resample draws an
    offset per call) called once per member would not reproduce separate runs; tune those one rate at a time.
    """
    if prompt_fn is not None or dev_score is not None:
        raise TypeError("tune_grid takes no prompt_fn or dev_score hook (called once per member they would not "
                        "reproduce separate runs); use tune_prompt for each learning rate")
    runs = _members(init, cfg, seed, lrs, head.bb.device, log, desc)
    for run, r in zip(runs, score_members(head, dev, runs, cfg)):
        run.start(r)
    labels_all = torch.tensor([ex.label for ex in train])
    bar = progress_bar(range(1, cfg.steps + 1), desc=desc, nested=True, enabled=progress)
    for step, idx in zip(bar, batch_order(len(train), cfg.batch_size, seed)):
        active = [run for run in runs if not run.stopped]
        if not active:
            break
        train_step(head, active, [train[i] for i in idx], labels_all[idx], step, cfg, grad_hook)
        if active[0].wants_dev(step):  # the same steps for every member: they share cfg but lr
            for run, r in zip(active, score_members(head, dev, active, cfg)):
                run.observe(step, r)
    bar.close()
    return [run.result() for run in runs]


def _members(init, cfg: TuneConfig, seed: int, lrs, device, log, desc) -> list[PromptRun]:
    if not lrs:
        raise ConfigError("tune_grid needs at least one learning rate")
    if cfg.optimizer == "adafactor-relative" and len(lrs) > 1:
        raise ConfigError("a learning-rate grid needs an optimizer that uses tune.lr; 'adafactor-relative' does not")
    torch.manual_seed(seed)
    return [PromptRun(init, dataclasses.replace(cfg, lr=lr, lr_grid=[]), device, f"{desc} lr={lr}",
                      _with_lr(log, lr)) for lr in lrs]


def _with_lr(log, lr: float):
    return None if log is None else (lambda rec: log({**rec, "lr": lr}))


def train_step(head, active: list[PromptRun], examples: list, labels: torch.Tensor, step: int, cfg: TuneConfig,
                grad_hook) -> None:
    """One backbone pass for every running member over ``examples`` repeated once per member; one update each."""
    device, B, G = head.bb.device, len(examples), len(active)
    prompts = torch.stack([run.prompt for run in active]).repeat_interleave(B, 0)
    with autocast_ctx(device, cfg.autocast):
        logits, _ = head.forward(head.batch(examples * G), prompts)
    y = labels.to(device)
    losses = [run.loss(lg, y, step) for run, lg in zip(active, logits.float().reshape(G, B, -1))]
    sum(run.scaled(loss) for run, loss in zip(active, losses)).backward()
    batch = head.batch(examples) if grad_hook is not None else None
    for run, loss in zip(active, losses):
        run.update(step, loss, grad_hook, batch)


def score_members(head, examples, runs: list[PromptRun], cfg: TuneConfig) -> list[dict]:
    """Dev accuracy, macro-F1 and loss of every member's current prompt, from one stacked evaluation pass."""
    stack = torch.stack([run.prompt.detach() for run in runs])
    logits = predict(head, examples, stack, cfg.eval_batch_size, cfg.eval_precision)["logits"]
    labels = np.array([ex.label for ex in examples])
    return [metrics(lg, labels, head.n_classes) for lg in logits]


def select_member(results: list[TuneResult], lrs: list[float], key: str = "acc") -> int:
    """The member a grid keeps: best dev score ``key`` ("acc" or "f1", see ``tune.select_metric``), then lower dev
    loss, then earlier best step, then smaller lr."""
    return min(range(len(results)), key=lambda g: (-results[g].dev[key], results[g].dev["loss"],
                                                   results[g].best_step, lrs[g]))
