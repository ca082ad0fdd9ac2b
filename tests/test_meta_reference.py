"""Reference tests for the meta-learners: every meta-gradient against the meta-objective written out here.

tests/test_meta.py checks that the batched meta-batch equals the per-task loop, but both go through
``meta.adapt``/``meta.task_losses``, so a wrong formula would pass there. Here the gradient that ``meta.meta_step``
returns (batched and per task) is compared with a reference built from the definitions in meta.py's docstring, one
task and one prompt at a time, with plain autograd on the prompt tensor: the task head's own forward and a
cross-entropy, nothing else from meta.py. Second-order MAML is also checked with torch.func and with central finite
differences. (float32 only: the heads cast their class scores to float32, so ``.double()`` would not buy precision.)
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from workbench import config as C
from workbench.engine import backbones as B
from workbench.engine import data as D
from workbench.engine import heads as H
from workbench.engine import templates as TT
from workbench.learn import meta as M
from workbench.tasks.episodes import Episode

# similarity head, masked-LM head, causal-LM head. (The tiny T5 is left out: its second-order meta-gradient is
# ill-conditioned, ~1e2-1e5 in size, so float32 noise alone moves it by more than any useful tolerance.)
FAMILIES = ("bert", "bert-mlm", "gpt2")
PROMPT_LEN, LR = 4, 0.5
ATOL, RTOL = 1e-5, 1e-4
WORDS = {0: ["terrible", "awful", "bad"], 1: ["great", "wonderful", "good"], 2: ["okay", "fine", "decent"]}


def _cfg(inner_lr, inner_steps, inner_optimizer="sgd", **sections):
    """The learners read ``cfg.meta.inner_lr`` (a MetaTrainConfig); the reference reads the same numbers flat."""
    return SimpleNamespace(inner_lr=inner_lr, inner_steps=inner_steps,
                           meta=SimpleNamespace(inner_lr=inner_lr, inner_steps=inner_steps,
                                                inner_optimizer=inner_optimizer), **sections)


# ----------------------------------------------------------------------------------------------- episodes
def examples(n, offset=0, n_classes=2, pair=False):
    words = [WORDS[i % n_classes][(i + offset) % 3] for i in range(n)]
    return [D.Example(f"the movie was {w} and {['long', 'short', 'old'][(i + offset) % 3]}", i % n_classes,
                      f"it was {w}" if pair else None) for i, w in enumerate(words)]


def make_episodes(bb):
    """Three tasks with different heads (2 classes, a pair task, 3 classes), support sizes 4, 2, 6 and query 4, 5, 3."""
    def head(name, task, labels):
        fmt = TT.resolve_format(name, task, labels, bb.family, C.TaskConfig())
        return H.make_head(bb, fmt, C.TaskConfig(), C.PromptConfig(length=PROMPT_LEN), 32)
    return [Episode(head("toy", "single", ["negative", "positive"]), examples(4), examples(4, 1), "a"),
            Episode(head("toypair", "pair", ["no", "yes"]), examples(2, pair=True), examples(5, 2, pair=True), "b"),
            Episode(head("toy3", "single", ["negative", "positive", "neutral"]), examples(6, n_classes=3),
                      examples(3, 1, n_classes=3), "c")]


@pytest.fixture(scope="module")
def backbones(tiny):
    return {f: B.load_backbone(C.BackboneConfig(name=tiny[f], second_order=True)) for f in FAMILIES}


def setup(backbones, family, seed=0):
    bb = backbones[family]
    P = torch.randn(PROMPT_LEN, bb.hidden_size, generator=torch.Generator().manual_seed(seed)) * 0.5
    return P, make_episodes(bb)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def assert_close(actual, expected, what):
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------------------------- references
def task_loss(ep, exs, prompt, reduction="mean"):
    """Cross-entropy of one task's examples under one prompt (L, d), scored by the task's own head."""
    logits, _ = ep.head.forward(ep.head.batch(exs), prompt)
    return F.cross_entropy(logits.float(), torch.tensor([e.label for e in exs]), reduction=reduction)


def inner_sgd(ep, P, lr, steps, differentiate):
    """P'_t: ``steps`` SGD steps of size ``lr`` on the task's support loss from P (P must require grad);
    with ``differentiate`` the result stays a function of P (second order), else it is detached."""
    p = P
    for _ in range(steps):
        if not differentiate:
            p = p.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(task_loss(ep, ep.support, p), p, create_graph=differentiate)
        p = p - lr * g
    return p if differentiate else p.detach()


def maml_objective(P, eps, cfg):
    """mean_t query_loss_t(P'_t), P'_t a differentiable function of P."""
    return torch.stack([task_loss(ep, ep.query, inner_sgd(ep, P, cfg.inner_lr, cfg.inner_steps, True))
                        for ep in eps]).mean()


def multitask_objective(P, eps, pooled=False):
    """Docstring: the mean loss over each task's support and query examples, averaged over tasks (every meta-gradient
    is "averaged over tasks"). ``pooled=True`` is the other reading: one mean over all the meta-batch's examples."""
    per_task = [task_loss(ep, ep.support + ep.query, P, reduction="none") for ep in eps]
    return torch.cat(per_task).mean() if pooled else torch.stack([t.mean() for t in per_task]).mean()


def ref_maml(P, eps, cfg):
    P = leaf(P)
    loss = maml_objective(P, eps, cfg)
    return loss, torch.autograd.grad(loss, P)[0]


def ref_fomaml(P, eps, cfg):
    adapted = [leaf(inner_sgd(ep, leaf(P), cfg.inner_lr, cfg.inner_steps, False)) for ep in eps]
    losses = [task_loss(ep, ep.query, p) for ep, p in zip(eps, adapted)]
    grads = [torch.autograd.grad(loss, p)[0] for loss, p in zip(losses, adapted)]
    return torch.stack(losses).mean(), torch.stack(grads).mean(0)


def ref_reptile(P, eps, cfg):
    adapted = torch.stack([inner_sgd(ep, leaf(P), cfg.inner_lr, cfg.inner_steps, False) for ep in eps])
    return None, (P - adapted.mean(0)) / (cfg.inner_lr * cfg.inner_steps)  # the loss is not defined by the docs


def ref_multitask(P, eps, cfg):
    P = leaf(P)
    loss = multitask_objective(P, eps)
    return loss, torch.autograd.grad(loss, P)[0]


REFERENCES = {"maml": ref_maml, "fomaml": ref_fomaml, "reptile": ref_reptile, "multitask": ref_multitask}


def check_learner(method, P, eps, cfg, ref_loss, ref_grad):
    """``meta_step(method)``, batched and per task, gives the reference gradient (and loss, when given)."""
    assert ref_grad.abs().max() > 1e-3, "degenerate reference: the comparison would prove nothing"
    for batched in (True, False):
        loss, g, _ = M.meta_step(method, P, eps, cfg, batched=batched)
        assert_close(g, ref_grad, f"{method} gradient (batched={batched}, inner_steps={cfg.inner_steps})")
        if ref_loss is not None:
            assert_close(loss, ref_loss.detach(), f"{method} loss (batched={batched})")


def directional(g, v):
    return float((g * v).sum())


def central_difference(P, eps, cfg, v, h):
    """(J(P + h·v) - J(P - h·v)) / 2h for the MAML meta-objective J."""
    plus, minus = (maml_objective(leaf(P + s * h * v), eps, cfg).item() for s in (1, -1))
    return (plus - minus) / (2 * h)


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("method,steps", [("maml", 1), ("maml", 2), ("fomaml", 1), ("fomaml", 3), ("reptile", 1),
                                          ("reptile", 3), ("multitask", 1)])
@pytest.mark.parametrize("family", FAMILIES)
def test_meta_gradient_matches_reference(backbones, family, method, steps):
    P, eps = setup(backbones, family)
    cfg = _cfg(inner_lr=LR, inner_steps=steps)
    check_learner(method, P, eps, cfg, *REFERENCES[method](P, eps, cfg))


@pytest.mark.parametrize("family", FAMILIES)
def test_maml_matches_torch_func(backbones, family):
    """The same meta-objective with nested torch.func.grad: the second-order term comes from the transforms."""
    P, eps = setup(backbones, family, seed=1)
    cfg = _cfg(inner_lr=LR, inner_steps=2)

    def adapted_query_loss(P, ep):
        for _ in range(cfg.inner_steps):
            P = P - cfg.inner_lr * torch.func.grad(lambda q: task_loss(ep, ep.support, q))(P)
        return task_loss(ep, ep.query, P)

    g = torch.func.grad(lambda P: torch.stack([adapted_query_loss(P, ep) for ep in eps]).mean())(P)
    check_learner("maml", P, eps, cfg, None, g)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_maml_matches_finite_differences(backbones, family, steps):
    """Central differences of the meta-objective along a random unit direction v equal <maml gradient, v>, and
    differ from <fomaml gradient, v> by much more than the tolerance (so the check sees the second-order term)."""
    P, eps = setup(backbones, family, seed=2)
    cfg = _cfg(inner_lr=LR, inner_steps=steps)
    v = torch.randn(P.shape, generator=torch.Generator().manual_seed(3))
    v /= v.norm()
    h, tol = 2e-2, 1e-4  # float32: the error is roundoff (~1e-5 here; truncation ~h^2 is smaller still)
    fd = central_difference(P, eps, cfg, v, h)
    for batched in (True, False):
        assert abs(directional(M.meta_step("maml", P, eps, cfg, batched=batched)[1], v) - fd) < tol
    assert abs(directional(M.meta_step("fomaml", P, eps, cfg)[1], v) - fd) > 5 * tol


@pytest.mark.parametrize("psi", [False, True])
def test_supmer_prompt_gradient_is_one_step_fomaml(backbones, psi):
    """Without mixup SUPMER's prompt gradient is FOMAML's with one inner step P' = P - lr·ψ(g) (supmer.py docstring),
    and ψ is the identity at init (ψ(g, h̄) = g), so with or without ψ it equals the one-step FOMAML reference."""
    P, eps = setup(backbones, "bert", seed=4)
    cfg = _cfg(inner_lr=LR, inner_steps=1, supmer=C.SupmerConfig(psi=psi, mixup=False))
    check_learner("supmer", P, eps, cfg, *ref_fomaml(P, eps, cfg))


def test_multitask_mean_is_per_task_not_pooled(backbones):
    """The two readings of "mean" differ on these tasks (8, 7 and 9 examples): the learner is the per-task one (above)
    and not the pooled mean over all examples, so the reference test does tell them apart."""
    P, eps = setup(backbones, "bert")
    Q = leaf(P)
    (pooled,) = torch.autograd.grad(multitask_objective(Q, eps, pooled=True), Q)
    _, g, _ = M.meta_step("multitask", P, eps, _cfg(inner_lr=LR, inner_steps=1))
    assert (g - pooled).abs().max() > 100 * ATOL


def test_reptile_zero_inner_steps_is_auto_and_negative_is_refused(backbones):
    """meta.inner_steps=0 means auto (reptile: 5 steps, the reference with 5 SGD steps), not (P - P') / 0; a negative
    count is refused, naming the knob."""
    P, eps = setup(backbones, "bert")
    check_learner("reptile", P, eps, _cfg(inner_lr=LR, inner_steps=0), *ref_reptile(P, eps, _cfg(LR, 5)))
    with pytest.raises(C.ConfigError, match="meta.inner_steps"):
        M.meta_step("reptile", P, eps, _cfg(inner_lr=LR, inner_steps=-1))


# ----------------------------------------------------------------------------------------------- the Adam inner loop
ADAM_LR = 0.05


def inner_torch_adam(ep, P, lr, steps):
    """P'_t from ``steps`` steps of torch.optim.Adam (defaults: betas (0.9, 0.999), eps 1e-8, no weight decay) on the
    task's support loss, starting from a fresh optimizer: the first-order reference of the functional inner Adam."""
    p = leaf(P)
    opt = torch.optim.Adam([p], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        task_loss(ep, ep.support, p).backward()
        opt.step()
    return p.detach()


def func_adam_adapted_query_loss(P, ep, lr, steps):
    """The task's query loss after ``steps`` Adam steps written out here for torch.func (differentiable in P)."""
    m = v = torch.zeros_like(P)
    for t in range(1, steps + 1):
        g = torch.func.grad(lambda q: task_loss(ep, ep.support, q))(P)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        P = P - lr * (m / (1 - 0.9 ** t)) / (torch.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return task_loss(ep, ep.query, P)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_inner_adam_follows_torch_adam(backbones, family, batched):
    """meta.adapt with the Adam inner loop gives, for every task of the meta-batch (each with its own moments), the
    prompt that torch.optim.Adam reaches on the same tensor in the same number of steps."""
    P, eps = setup(backbones, family)
    for steps in (1, 4):
        adapted = M.adapt(P, eps, ADAM_LR, steps, create_graph=False, batched=batched, optimizer="adam").detach()
        for t, ep in enumerate(eps):
            assert_close(adapted[t], inner_torch_adam(ep, P, ADAM_LR, steps), f"task {t}, {steps} Adam steps")


@pytest.mark.parametrize("method", ["fomaml", "reptile"])
@pytest.mark.parametrize("family", FAMILIES)
def test_first_order_learners_with_inner_adam_match_reference(backbones, family, method):
    """FOMAML's and Reptile's meta-gradients with the Adam inner loop, against torch.optim.Adam's adapted prompts."""
    P, eps = setup(backbones, family)
    steps = 3
    cfg = _cfg(ADAM_LR, steps, "adam")
    adapted = [leaf(inner_torch_adam(ep, P, ADAM_LR, steps)) for ep in eps]
    if method == "reptile":
        ref = (P - torch.stack(adapted).detach().mean(0)) / (ADAM_LR * steps)
    else:
        ref = torch.stack([torch.autograd.grad(task_loss(ep, ep.query, p), p)[0] for ep, p in zip(eps, adapted)]).mean(0)
    check_learner(method, P, eps, cfg, None, ref)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_maml_with_inner_adam_matches_torch_func(backbones, family, steps):
    """Second-order MAML through the Adam inner loop equals nested torch.func.grad of the objective with Adam written
    out independently. From two steps on it differs from FOMAML's gradient (the second-order term is there); Adam's
    first step is lr * g / (|g| + eps), about lr * sign(g), flat in P, so with one step MAML is nearly FOMAML."""
    P, eps = setup(backbones, family, seed=1)
    cfg = _cfg(ADAM_LR, steps, "adam")
    g = torch.func.grad(lambda P: torch.stack([func_adam_adapted_query_loss(P, ep, ADAM_LR, steps)
                                               for ep in eps]).mean())(P)
    check_learner("maml", P, eps, cfg, None, g)
    gap = (M.meta_step("fomaml", P, eps, cfg)[1] - g).abs().max()
    assert gap > 100 * ATOL if steps > 1 else gap < 1e-2 * g.abs().max()
