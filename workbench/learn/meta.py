"""Meta-learners over the prompt tensor: MAML, first-order MAML, Reptile and multi-task training.

The fast weight is the prompt ``P`` (L, d), never a copy of the model. A meta-batch of T tasks is adapted together:
the T task prompts form one ``(T, L, d)`` tensor, every example carries its own task's prompt, and one backbone pass
(:func:`workbench.joint.joint_forward`) scores all tasks. Because task t's loss depends only on its own slice, the
gradient of the summed loss with respect to the stacked prompts is each task's own gradient. ``batched=False``
computes the same quantities with one pass per task; tests check that both give the same meta-gradient.

Meta-gradients (returned as the gradient for ``P``, averaged over tasks):

- ``maml``: d/dP of the query loss at ``P' = P - a * grad_support(P)`` (``inner_steps`` steps), through the inner
  updates (second order; the backbone must be loaded with ``second_order=True``, i.e. eager attention).
- ``fomaml``: the query-loss gradient at ``P'``, applied to ``P`` unchanged (the inner steps are not differentiated).
- ``reptile``: ``P - P'`` after ``inner_steps`` SGD steps on the support set, divided by ``inner_lr * inner_steps``
  so that its scale matches a gradient (the query set is not used).
- ``multitask``: the plain gradient of the mean loss over each task's support and query examples at ``P`` (the
  PPT-style joint-training baseline on the same tasks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from workbench.config import ConfigError
from workbench.engine.joint import joint_forward
from workbench.tasks.episodes import Episode


@dataclass
class MetaLearner:
    """A meta-learner: ``fn(P, episodes, cfg, batched=True, state=None) -> (loss, grad_for_P)`` or
    ``(loss, grad_for_P, logs: dict)``.

    Stateful learners (SUPMER's gradient transform and curriculum EMA) also give ``init_state(P, cfg, backbone) ->
    dict`` (built deterministically, so a resumed run can rebuild it before loading a checkpoint) and optionally
    ``finalize(state, out_dir)`` (save their extra artefacts beside the learned prompt). The meta-training loop
    checkpoints every entry of ``state``: modules and optimizers through ``state_dict()``, tensors as tensors,
    everything else as JSON.
    """

    name: str
    fn: Callable
    description: str
    init_state: Callable | None = None
    finalize: Callable | None = None


LEARNERS: dict[str, MetaLearner] = {}


def register_learner(name: str, description: str, init_state: Callable | None = None,
                     finalize: Callable | None = None):
    def deco(fn):
        if name in LEARNERS:
            raise ValueError(f"meta-learner {name!r} is already registered")
        LEARNERS[name] = MetaLearner(name, fn, description, init_state, finalize)
        return fn
    return deco


def list_learners() -> list[tuple[str, str]]:
    return [(m.name, m.description) for m in LEARNERS.values()]


def task_losses(episodes, which, prompts, batched=True, cache=None, stats: dict | None = None) -> torch.Tensor:
    """Mean cross-entropy of each task (T,) on its ``which`` examples, task t scored with ``prompts[t]``.
    ``stats``, when given, receives ``acc``: each task's accuracy (T,) on those examples."""
    data = [cache[(i, which)] if cache is not None and (i, which) in cache else ep.batch(which)
            for i, ep in enumerate(episodes)]
    if cache is not None:
        cache.update({(i, which): d for i, d in enumerate(data)})
    items = [(ep.head, b, prompts[i]) for i, (ep, (b, _)) in enumerate(zip(episodes, data))]
    outs = joint_forward(items) if batched and len(items) > 1 else [h.forward(b, p) for h, b, p in items]
    if stats is not None:
        stats["acc"] = torch.stack([(lg.detach().argmax(-1) == y).float().mean()
                                    for (lg, _), (_, y) in zip(outs, data)])
    return torch.stack([F.cross_entropy(lg.float(), y) for (lg, _), (_, y) in zip(outs, data)])


def adapt(P, episodes, inner_lr, inner_steps, create_graph, batched=True, cache=None):
    """Inner loop: ``inner_steps`` SGD steps per task on its support set; returns the adapted prompts (T, L, d)."""
    T = len(episodes)
    prompts = P.unsqueeze(0).expand(T, *P.shape)
    for _ in range(inner_steps):
        if not prompts.requires_grad:
            prompts = prompts.detach().requires_grad_(True)
        losses = task_losses(episodes, "support", prompts, batched, cache)
        (g,) = torch.autograd.grad(losses.sum(), prompts, create_graph=create_graph)
        prompts = prompts - inner_lr * g
    return prompts


def maml(P, episodes, cfg, batched=True, state=None):
    cache = {}
    adapted = adapt(P, episodes, cfg.meta.inner_lr, cfg.meta.inner_steps, create_graph=True, batched=batched, cache=cache)
    st = {}
    loss = task_losses(episodes, "query", adapted, batched, cache, st).mean()
    (g,) = torch.autograd.grad(loss, P)
    return loss.detach(), g, {"acc": st["acc"].mean().item()}


def fomaml(P, episodes, cfg, batched=True, state=None):
    cache = {}
    with torch.enable_grad():
        adapted = adapt(P.detach(), episodes, cfg.meta.inner_lr, cfg.meta.inner_steps, create_graph=False, batched=batched,
                        cache=cache).detach().requires_grad_(True)
    st = {}
    loss = task_losses(episodes, "query", adapted, batched, cache, st).mean()
    (g,) = torch.autograd.grad(loss, adapted)
    # d(mean_t L_t)/dP' summed over the task copies of P
    return loss.detach(), g.sum(0), {"acc": st["acc"].mean().item()}


def reptile(P, episodes, cfg, batched=True, state=None):
    adapted = adapt(P.detach(), episodes, cfg.meta.inner_lr, cfg.meta.inner_steps, create_graph=False, batched=batched,
                    cache={}).detach()
    st = {}
    with torch.no_grad():
        loss = task_losses(episodes, "support", adapted, batched, stats=st).mean()
    return loss, (P.detach() - adapted.mean(0)) / (cfg.meta.inner_lr * cfg.meta.inner_steps), {"acc": st["acc"].mean().item()}


def multitask(P, episodes, cfg, batched=True, state=None):
    prompts = P.unsqueeze(0).expand(len(episodes), *P.shape)
    st = {}
    loss = task_losses(episodes, "all", prompts, batched, stats=st).mean()
    (g,) = torch.autograd.grad(loss, P)
    return loss.detach(), g, {"acc": st["acc"].mean().item()}


def evaluate_episodes(P: torch.Tensor, episodes: list[Episode], inner_lr: float, inner_steps: int,
                      batched: bool = True, chunk: int = 8) -> dict:
    """Query loss and accuracy of ``P`` before and after ``inner_steps`` SGD steps on each task's support set
    (meta-validation; no meta-gradient), averaged over ``episodes`` scored ``chunk`` tasks per backbone pass."""
    sums = {"loss_pre": 0.0, "acc_pre": 0.0, "loss_post": 0.0, "acc_post": 0.0}
    P = P.detach()
    for i in range(0, len(episodes), chunk):
        eps = episodes[i:i + chunk]
        cache = {}
        with torch.enable_grad():
            adapted = adapt(P, eps, inner_lr, inner_steps, create_graph=False, batched=batched, cache=cache).detach()
        with torch.no_grad():
            for tag, prompts in (("pre", P.unsqueeze(0).expand(len(eps), *P.shape)), ("post", adapted)):
                st = {}
                sums[f"loss_{tag}"] += task_losses(eps, "query", prompts, batched, cache, st).sum().item()
                sums[f"acc_{tag}"] += st["acc"].sum().item()
    return {k: v / max(len(episodes), 1) for k, v in sums.items()}


def meta_gradient(method: str, P: torch.Tensor, episodes: list[Episode], cfg, batched: bool = True, state=None):
    """(meta-loss, gradient for P) of one meta-batch under ``method`` (logs, if the learner returns any, dropped)."""
    loss, g, _ = meta_step(method, P, episodes, cfg, batched, state)
    return loss, g


ADAPTING = ("reptile",)  # learners whose gradient is undefined without an inner step ((P - P') / (lr * steps))


def meta_step(method: str, P: torch.Tensor, episodes: list[Episode], cfg, batched: bool = True, state=None):
    """(meta-loss, gradient for P, logs dict) of one meta-batch under ``method``."""
    if method not in LEARNERS:
        raise ValueError(f"unknown meta-learner {method!r}; registered: {sorted(LEARNERS)}")
    if method in ADAPTING and not (cfg.meta.inner_steps >= 1 and cfg.meta.inner_lr > 0):
        raise ConfigError(f"meta-learner {method!r} divides by the inner steps: needs meta.inner_steps >= 1 and "
                          f"meta.inner_lr > 0, got {cfg.meta.inner_steps} and {cfg.meta.inner_lr}")
    if not P.requires_grad:
        P = P.detach().requires_grad_(True)
    out = LEARNERS[method].fn(P, episodes, cfg, batched, state)
    return (*out, {}) if len(out) == 2 else out
