"""Meta-learners over the prompt: the batched meta-batch (one backbone pass) gives the same meta-gradient as the
per-task loop, for second-order MAML, first-order MAML, Reptile and multi-task, on two head families, with the SGD and
the Adam inner loop; the inner-loop knobs (auto inner steps, inner optimizer) and their refusals."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from workbench.engine.backbones import load_backbone
from workbench.config import BackboneConfig, ConfigError, MetaConfig, MetaTrainConfig, PromptConfig, TaskConfig
from workbench.engine.data import Example
from workbench.engine.heads import make_head
from workbench.tasks.episodes import Episode
from workbench.learn.meta import evaluate_episodes, inner_steps_for, meta_step
from workbench.engine.templates import resolve_format

POS = ["great", "wonderful", "good", "fun", "excellent"]
NEG = ["terrible", "awful", "bad", "boring", "dull"]


def examples(n, offset=0, pair=False, n_classes=2):
    out = []
    for i in range(n):
        c = i % n_classes
        w = (POS if c == 1 else NEG if c == 0 else ["okay", "fine", "decent"])[(i + offset) % 3]
        text = f"the movie was {w} and {['long', 'short', 'old'][i % 3]}"
        out.append(Example(text, c, f"it was {w}" if pair else None))
    return out


def episodes(bb, family):
    heads = []
    for name, task, labels in (("toy", "single", ["negative", "positive"]), ("toypair", "pair", ["no", "yes"]),
                               ("toy3", "single", ["negative", "positive", "neutral"])):
        fmt = resolve_format(name, task, labels, bb.family, TaskConfig())
        heads.append(make_head(bb, fmt, TaskConfig(), PromptConfig(length=4), 32))
    return [Episode(heads[0], examples(4), examples(4, 1), "a"),
            Episode(heads[1], examples(4, pair=True), examples(6, 2, pair=True), "b"),
            Episode(heads[2], examples(6, n_classes=3), examples(3, 1, n_classes=3), "c"),
            Episode(heads[0], examples(2, 2), examples(4, 2), "d")]


@pytest.fixture(scope="module")
def backbones(tiny):
    return {f: load_backbone(BackboneConfig(name=tiny[f], second_order=True)) for f in ("bert", "gpt2")}


@pytest.mark.parametrize("inner", [("sgd", 0.5, 2), ("adam", 0.05, 3)])
@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile", "multitask"])
def test_batched_meta_gradient_equals_per_task_loop(backbones, family, method, inner):
    optimizer, lr, steps = inner
    bb = backbones[family]
    eps = episodes(bb, family)
    P = torch.randn(4, bb.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.5
    cfg = SimpleNamespace(meta=SimpleNamespace(inner_lr=lr, inner_steps=steps, inner_optimizer=optimizer))
    lb, gb, logb = meta_step(method, P, eps, cfg, batched=True)
    ll, gl, logl = meta_step(method, P, eps, cfg, batched=False)
    assert gb.shape == P.shape and gb.abs().sum() > 0
    assert torch.allclose(lb, ll, atol=1e-5) and torch.allclose(gb, gl, atol=1e-5, rtol=1e-4)
    assert logb["acc"] == pytest.approx(logl["acc"])


def test_maml_is_second_order(backbones):
    """With a second-order term the MAML gradient differs from FOMAML's; as the inner step size goes to 0 they
    coincide."""
    bb = backbones["bert"]
    eps = episodes(bb, "bert")
    P = torch.randn(4, bb.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.5
    _, g2, _ = meta_step("maml", P, eps, SimpleNamespace(meta=SimpleNamespace(inner_lr=1.0, inner_steps=1)))
    _, g1, _ = meta_step("fomaml", P, eps, SimpleNamespace(meta=SimpleNamespace(inner_lr=1.0, inner_steps=1)))
    assert not torch.allclose(g1, g2, atol=1e-4)
    _, h2, _ = meta_step("maml", P, eps, SimpleNamespace(meta=SimpleNamespace(inner_lr=1e-6, inner_steps=1)))
    _, h1, _ = meta_step("fomaml", P, eps, SimpleNamespace(meta=SimpleNamespace(inner_lr=1e-6, inner_steps=1)))
    assert torch.allclose(h1, h2, atol=1e-6)


def test_evaluate_episodes_adaptation_lowers_query_loss(backbones):
    bb = backbones["bert"]
    eps = episodes(bb, "bert")[:1]
    eps[0].query = eps[0].support  # the support set as query: one small inner step must lower its loss
    P = torch.randn(4, bb.hidden_size, generator=torch.Generator().manual_seed(2)) * 0.5
    r = evaluate_episodes(P, eps, inner_lr=0.05, inner_steps=1)
    assert r["loss_post"] < r["loss_pre"]
    same = evaluate_episodes(P, eps, inner_lr=0.05, inner_steps=0)
    assert same["loss_post"] == pytest.approx(same["loss_pre"])


def test_inner_steps_auto_and_refusals(backbones):
    """meta.inner_steps=0 is auto: 5 for reptile (>= 5: one step would be joint training), 1 for the others; explicit
    values are kept (old configs with 1 run as before); negative steps and unknown inner optimizers are refused."""
    auto = MetaTrainConfig(method="reptile")
    assert auto.meta.inner_steps == 0 and inner_steps_for("reptile", auto) >= 5
    assert [inner_steps_for(m, auto) for m in ("maml", "fomaml", "multitask", "supmer")] == [1, 1, 1, 1]
    assert inner_steps_for("reptile", MetaTrainConfig(method="reptile", meta=MetaConfig(inner_steps=1))) == 1
    with pytest.raises(ConfigError, match="meta.inner_steps must be >= 0"):
        MetaConfig(inner_steps=-1)
    with pytest.raises(ConfigError, match="meta.inner_optimizer must be one of"):
        MetaConfig(inner_optimizer="rmsprop")
    with pytest.raises(ConfigError, match="meta.patience must be >= 0"):
        MetaConfig(patience=-1)
    with pytest.raises(ConfigError, match="meta.select must be one of"):
        MetaConfig(select="first")
    with pytest.raises(ConfigError, match="meta.inner_optimizer='adam' does not apply to method 'supmer'"):
        MetaTrainConfig(method="supmer", meta=MetaConfig(inner_optimizer="adam"))
    bb = backbones["bert"]
    eps = episodes(bb, "bert")
    P = torch.randn(4, bb.hidden_size, generator=torch.Generator().manual_seed(3)) * 0.5
    for bad, pattern in ((SimpleNamespace(inner_lr=0.1, inner_steps=-2), "meta.inner_steps"),
                         (SimpleNamespace(inner_lr=0.1, inner_steps=1, inner_optimizer="lion"), "meta.inner_optimizer")):
        with pytest.raises(ConfigError, match=pattern):
            meta_step("fomaml", P, eps, SimpleNamespace(meta=bad))
    _, g_auto, _ = meta_step("reptile", P, eps, SimpleNamespace(meta=SimpleNamespace(inner_lr=0.1, inner_steps=0)))
    _, g_five, _ = meta_step("reptile", P, eps, SimpleNamespace(meta=SimpleNamespace(inner_lr=0.1, inner_steps=5)))
    assert torch.equal(g_auto, g_five)
