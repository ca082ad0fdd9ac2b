"""BayesPrompt's resample mode is ``tune_prompt`` with two hooks (``prompt_fn``, ``dev_score``): the documented
offsets every step, dev scoring with R fixed draws, and the tuner's fp16 scaler and non-finite checks on its path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.config import PromptConfig, TaskConfig, TuneConfig
from workbench.engine.backbones import load_backbone
from workbench.engine.data import load_dataset
from workbench.engine.heads import make_head
from workbench.engine.splits import kshot_split
from workbench.engine.templates import resolve_format
from workbench.experiments.bayes_modes import ensemble_probs, tune_resampled
from workbench.learn import tuner

L, SEED = 3, 13


@pytest.fixture
def setup(tiny, toy_data):
    bb = load_backbone(tiny["bert-mlm"])
    ds = load_dataset("toy")
    head = make_head(bb, resolve_format(ds.name, ds.task, ds.labels, bb.family, TaskConfig()), TaskConfig(),
                     PromptConfig(length=L), 32)
    base = torch.randn(L, bb.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.3
    return head, kshot_split(ds, 4, SEED), base


def _draw_for(head):
    """A stand-in for ``offset_sampler``: a seeded (L, d) offset per call."""
    return lambda gen: 0.05 * torch.randn(L, head.bb.hidden_size, generator=gen)


def _training_prompts(head, monkeypatch) -> list:
    """Record the prompt of every forward pass run with gradients (training steps; evaluation runs without)."""
    fed, real = [], head.forward
    monkeypatch.setattr(head, "forward", lambda batch, p: (
        fed.append(p.detach().clone()) if torch.is_grad_enabled() else None, real(batch, p))[1])
    return fed


def test_resample_feeds_base_plus_a_fresh_documented_draw_each_step(setup, monkeypatch):
    head, split, base0 = setup
    d = _draw_for(head)
    fed = _training_prompts(head, monkeypatch)
    cfg = TuneConfig(steps=5, lr=0.1, batch_size=4, eval_every=2, patience=0, snapshot_every=1)
    res = tune_resampled(head, base0, d, split.train, split.dev, cfg, SEED, R=3, progress=False)
    gen = torch.Generator().manual_seed(SEED + 1)  # one draw per step from a generator seeded seed + 1
    offsets = [d(gen) for _ in range(cfg.steps)]
    bases = [s["prompt"] for s in res.snapshots]  # the learned base before step t is the snapshot of step t - 1
    assert [s["step"] for s in res.snapshots] == list(range(cfg.steps + 1)) and len(fed) == cfg.steps
    assert torch.equal(bases[0], base0)
    for t in range(cfg.steps):
        assert torch.equal(fed[t], bases[t] + offsets[t])
    assert not torch.equal(bases[1], bases[2])  # the base learns
    # dev: each base scored with R fixed draws seeded 10_000 + 97 seed + r, probabilities averaged
    dev_offsets = [d(torch.Generator().manual_seed(10_000 + SEED * 97 + r)) for r in range(3)]
    y = np.array([e.label for e in split.dev])
    for rec in res.history:
        p = ensemble_probs(head, split.dev, bases[rec["step"]], dev_offsets, cfg).mean(0)
        m = tuner.metrics(np.log(np.clip(p, 1e-12, 1)), y, head.n_classes)
        assert (rec["dev_acc"], rec["dev_loss"]) == (m["acc"], m["loss"])
    assert [r["step"] for r in res.history] == [0, 2, 4, 5]
    assert torch.equal(res.prompt, bases[res.best_step])


def test_tune_prompt_hooks_are_honoured(setup):
    head, split, init = setup
    cfg = TuneConfig(steps=4, lr=0.1, batch_size=4, eval_every=2, patience=0)
    plain = tuner.tune_prompt(head, init, split.train, split.dev, cfg, SEED, progress=False)
    steps, scored = [], []

    def score(p):
        scored.append(p)
        return tuner.evaluate(head, split.dev, p, cfg.eval_batch_size, cfg.eval_precision)
    same = tuner.tune_prompt(head, init, split.train, split.dev, cfg, SEED, progress=False,
                             prompt_fn=lambda p, step: (steps.append(step), p)[1], dev_score=score)
    assert steps == [1, 2, 3, 4] and len(scored) == 3  # steps 0, 2, 4
    assert torch.equal(same.prompt, plain.prompt) and same.history == plain.history
    shifted = tuner.tune_prompt(head, init, split.train, split.dev, cfg, SEED, progress=False,
                                prompt_fn=lambda p, step: p + 1.0)
    assert shifted.history[1]["train_loss"] != plain.history[1]["train_loss"]


def test_resample_stops_on_a_non_finite_loss_with_the_step(setup):
    head, split, base0 = setup
    d, calls = _draw_for(head), []

    def bad(gen):
        calls.append(1)
        return d(gen) * (float("nan") if len(calls) == 3 + 3 else 1.0)  # 3 dev draws first, then one per step
    cfg = TuneConfig(steps=5, lr=0.1, batch_size=4, eval_every=2, patience=0)
    with pytest.raises(tuner.TuningError, match="non-finite training loss .* at step 3"):
        tune_resampled(head, base0, bad, split.train, split.dev, cfg, SEED, R=3, progress=False)


def test_resample_goes_through_the_fp16_loss_scaler(setup, monkeypatch):
    """On CUDA with fp16 autocast the tuner scales the loss; a CPU scaler stands in for the CUDA one here."""
    head, split, base0 = setup
    used = []

    class Spy(torch.amp.GradScaler):
        def scale(self, loss):
            used.append("scale")
            return super().scale(loss)

        def unscale_(self, opt):
            used.append("unscale")
            return super().unscale_(opt)

    monkeypatch.setattr(tuner, "grad_scaler", lambda cfg, device: Spy("cpu"))
    cfg = TuneConfig(steps=3, lr=0.1, batch_size=4, eval_every=3, patience=0)
    res = tune_resampled(head, base0, _draw_for(head), split.train, split.dev, cfg, SEED, R=2, progress=False)
    assert used == ["scale", "unscale"] * 3 and res.steps_run == 3
