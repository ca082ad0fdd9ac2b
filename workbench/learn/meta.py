"""Meta-learners over the prompt tensor: MAML, first-order MAML, Reptile and multi-task training.

The fast weight is the prompt ``P`` (L, d), never a copy of the model. A meta-batch of T tasks is adapted together:
the T task prompts form one ``(T, L, d)`` tensor, every example carries its own task's prompt, and one backbone pass
(:func:`workbench.joint.joint_forward`) scores all tasks. Because task t's loss depends only on its own slice, the
gradient of the summed loss with respect to the stacked prompts is each task's own gradient. ``batched=False``
computes the same quantities with one pass per task; tests check that both give the same meta-gradient.

Meta-gradients (returned as the gradient for ``P``, averaged over tasks):

The inner loop (:func:`adapt`) runs ``inner_steps`` steps of the inner optimizer on each task's support set:
``sgd`` (``P' = P - a * grad_support(P)``) or ``adam`` (Adam with bias-corrected moments, betas (0.9, 0.999), eps
1e-8, no weight decay, moments starting at zero for every task: the deployment tuner's update, written functionally on
the prompt tensor so that second-order MAML differentiates through it). ``meta.inner_steps=0`` means "auto":
:func:`inner_steps_for` resolves it, the one place that does, to 5 for ``reptile`` (with one step Reptile is joint
training on the support sets; MPT used 10) and 1 otherwise.

- ``maml``: d/dP of the query loss at ``P'`` (``inner_steps`` inner steps), through the inner updates (second order;
  the backbone must be loaded with ``second_order=True``, i.e. eager attention).
- ``fomaml``: the query-loss gradient at ``P'``, applied to ``P`` unchanged (the inner steps are not differentiated).
- ``reptile``: ``P - P'`` after ``inner_steps`` inner steps on the support set, divided by ``inner_lr * inner_steps``
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
from workbench.learn.data_parallel import Shards


@dataclass
class MetaLearner:
    """A meta-learner: ``fn(P, episodes, cfg, batched=True, state=None) -> (loss, grad_for_P)`` or
    ``(loss, grad_for_P, logs: dict)``.

    Stateful learners (SUPMER's gradient transform and curriculum EMA) also give ``init_state(P, cfg, backbone) ->
    dict`` (built deterministically, so a resumed run can rebuild it before loading a checkpoint) and optionally
    ``finalize(state, out_dir)`` (save their extra artefacts beside the learned prompt). The meta-training loop
    checkpoints every entry of ``state``: modules and optimizers through ``state_dict()``, tensors as tensors,
    everything else as JSON.

    Data-parallel (:mod:`workbench.learn.data_parallel`): a stateless learner is given this process's shard of the
    meta-batch; a stateful one is given the whole meta-batch and ``shards=`` (its state couples the tasks), scores
    ``shards.split(episodes)`` and all-reduces what its state update needs. Either way it returns means over the
    tasks it scored, which the loop averages over the processes.
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


INNER_OPTIMIZERS = ("sgd", "adam")
AUTO_INNER_STEPS = {"reptile": 5}  # meta.inner_steps=0 ("auto"): this many for these learners, 1 for the others
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
_SQRT_GUARD = 1e-16  # sqrt(v + 1e-16): finite second-order terms where a gradient entry is exactly 0


def inner_steps_for(method: str, cfg) -> int:
    """The inner steps ``method`` runs under ``cfg``: ``meta.inner_steps``, or for 0 ("auto") 5 for reptile and 1
    for the other learners. The one place that resolves the knob (learners, meta-validation, results.json)."""
    n = cfg.meta.inner_steps
    if not isinstance(n, int) or n < 0:
        raise ConfigError(f"meta.inner_steps must be an integer >= 0 (0 = auto), got {n!r}")
    return n or AUTO_INNER_STEPS.get(method, 1)


def inner_optimizer_of(cfg) -> str:
    """``meta.inner_optimizer`` (sgd when a config predates the knob)."""
    name = getattr(cfg.meta, "inner_optimizer", "sgd")
    if name not in INNER_OPTIMIZERS:
        raise ConfigError(f"meta.inner_optimizer must be one of {list(INNER_OPTIMIZERS)}, got {name!r}")
    return name


def adam_update(p, g, lr, moments, t):
    """One functional Adam step (bias-corrected, no weight decay) on tensors: returns (p', (m, v)). ``moments`` is
    None at t=1 (zero state); ``g`` may carry a graph (second order)."""
    (b1, b2), (m, v) = ADAM_BETAS, moments or (torch.zeros_like(g), torch.zeros_like(g))
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * m_hat / (torch.sqrt(v_hat + _SQRT_GUARD) + ADAM_EPS), (m, v)


def adapt(P, episodes, inner_lr, inner_steps, create_graph, batched=True, cache=None, optimizer="sgd"):
    """Inner loop: ``inner_steps`` steps of ``optimizer`` (sgd | adam) per task on its support set; returns the
    adapted prompts (T, L, d). Adam's moments are per task (per slice of the stacked prompts) and start at zero."""
    T = len(episodes)
    prompts = P.unsqueeze(0).expand(T, *P.shape)
    moments = None
    for t in range(1, inner_steps + 1):
        if not prompts.requires_grad:
            prompts = prompts.detach().requires_grad_(True)
        losses = task_losses(episodes, "support", prompts, batched, cache)
        (g,) = torch.autograd.grad(losses.sum(), prompts, create_graph=create_graph)
        if optimizer == "adam":
            prompts, moments = adam_update(prompts, g, inner_lr, moments, t)
        else:
            prompts = prompts - inner_lr * g
    return prompts


def _adapt_for(method, P, episodes, cfg, create_graph, batched, cache):
    """:func:`adapt` with the inner loop ``cfg`` gives ``method``."""
    return adapt(P, episodes, cfg.meta.inner_lr, inner_steps_for(method, cfg), create_graph, batched, cache,
                 inner_optimizer_of(cfg))


def maml(P, episodes, cfg, batched=True, state=None):
    cache = {}
    adapted = _adapt_for("maml", P, episodes, cfg, True, batched, cache)
    st = {}
    loss = task_losses(episodes, "query", adapted, batched, cache, st).mean()
    (g,) = torch.autograd.grad(loss, P)
    return loss.detach(), g, {"acc": st["acc"].mean().item()}


def fomaml(P, episodes, cfg, batched=True, state=None):
    cache = {}
    with torch.enable_grad():
        adapted = _adapt_for("fomaml", P.detach(), episodes, cfg, False, batched, cache).detach().requires_grad_(True)
    st = {}
    loss = task_losses(episodes, "query", adapted, batched, cache, st).mean()
    (g,) = torch.autograd.grad(loss, adapted)
    # d(mean_t L_t)/dP' summed over the task copies of P
    return loss.detach(), g.sum(0), {"acc": st["acc"].mean().item()}


def reptile(P, episodes, cfg, batched=True, state=None):
    adapted = _adapt_for("reptile", P.detach(), episodes, cfg, False, batched, {}).detach()
    st = {}
    with torch.no_grad():
        loss = task_losses(episodes, "support", adapted, batched, stats=st).mean()
    scale = cfg.meta.inner_lr * inner_steps_for("reptile", cfg)
    return loss, (P.detach() - adapted.mean(0)) / scale, {"acc": st["acc"].mean().item()}


def multitask(P, episodes, cfg, batched=True, state=None):
    prompts = P.unsqueeze(0).expand(len(episodes), *P.shape)
    st = {}
    loss = task_losses(episodes, "all", prompts, batched, stats=st).mean()
    (g,) = torch.autograd.grad(loss, P)
    return loss.detach(), g, {"acc": st["acc"].mean().item()}


def evaluate_episodes(P: torch.Tensor, episodes: list[Episode], inner_lr: float, inner_steps: int,
                      batched: bool = True, chunk: int = 8, inner_optimizer: str = "sgd") -> dict:
    """Query loss and accuracy of ``P`` before and after ``inner_steps`` steps of ``inner_optimizer`` on each task's
    support set (meta-validation; no meta-gradient), averaged over ``episodes`` scored ``chunk`` tasks per pass."""
    sums = {"loss_pre": 0.0, "acc_pre": 0.0, "loss_post": 0.0, "acc_post": 0.0}
    P = P.detach()
    for i in range(0, len(episodes), chunk):
        eps = episodes[i:i + chunk]
        cache = {}
        with torch.enable_grad():
            adapted = adapt(P, eps, inner_lr, inner_steps, False, batched, cache, inner_optimizer).detach()
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
INNER_LOOP = ("maml", "fomaml", "reptile")  # learners whose inner loop is :func:`adapt` (meta.inner_optimizer applies)


def meta_step(method: str, P: torch.Tensor, episodes: list[Episode], cfg, batched: bool = True, state=None,
              shards: Shards | None = None):
    """(meta-loss, gradient for P, logs dict) of one meta-batch under ``method``; with ``shards``, of this process's
    shard of it (means over its tasks; the caller averages them over the processes)."""
    if method not in LEARNERS:
        raise ValueError(f"unknown meta-learner {method!r}; registered: {sorted(LEARNERS)}")
    steps = inner_steps_for(method, cfg)  # refuses a negative meta.inner_steps
    inner_optimizer_of(cfg)  # refuses an unknown meta.inner_optimizer
    if method in ADAPTING and not cfg.meta.inner_lr > 0:
        raise ConfigError(f"meta-learner {method!r} divides by the inner step size: needs meta.inner_lr > 0, got "
                          f"{cfg.meta.inner_lr} (inner steps {steps})")
    if not P.requires_grad:
        P = P.detach().requires_grad_(True)
    learner, shards = LEARNERS[method], shards or Shards()
    if learner.init_state:  # its state couples the tasks: it shards the meta-batch itself
        out = learner.fn(P, episodes, cfg, batched, state, shards=shards)
    else:
        out = learner.fn(P, shards.split(episodes), cfg, batched, state)
    return (*out, {}) if len(out) == 2 else out
