"""The downstream tuner's learning rate: the rate of every step read back from the optimiser against the documented
formula and transformers' schedules, tuned prompts equal to plain PyTorch loops written here (the default, a
warm-up + linear decay, Adafactor with relative steps), and every bad schedule setting refused by name."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup
from transformers.optimization import Adafactor

from workbench.config import ConfigError, FewShotConfig, TuneConfig, apply_overrides
from workbench.learn import tuner

SEED = 13


def _spy_lrs(monkeypatch) -> list:
    """The learning rate in the optimiser's param group at every ``step()`` call of the runs that follow."""
    seen, real = [], tuner.make_optimizer

    def make(params, cfg):
        opt = real(params, cfg)
        step = opt.step
        opt.step = lambda *a, **kw: (seen.append(opt.param_groups[0]["lr"]), step(*a, **kw))[1]
        return opt
    monkeypatch.setattr(tuner, "make_optimizer", make)
    return seen


def _formula(lr, schedule, warmup, steps, s):
    """The rate of the update with 0-based index s (the tuner's module docstring)."""
    if s < warmup:
        return lr * s / warmup
    return lr if schedule == "constant" else lr * (steps - s) / (steps - warmup)


def _transformers_rates(lr, schedule, warmup, steps):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    make = get_constant_schedule_with_warmup if schedule == "constant" else get_linear_schedule_with_warmup
    sched = make(opt, warmup) if schedule == "constant" else make(opt, warmup, steps)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize("schedule,warmup", [("constant", 0), ("constant", 3), ("linear", 0), ("linear", 3)])
def test_the_rate_of_every_step_is_the_formula(tiny_tuning, monkeypatch, schedule, warmup):
    head, split, init = tiny_tuning
    seen = _spy_lrs(monkeypatch)
    cfg = TuneConfig(steps=8, lr=0.1, batch_size=4, eval_every=4, patience=0, schedule=schedule, warmup_steps=warmup)
    tuner.tune_prompt(head, init, split.train, split.dev, cfg, SEED, progress=False)
    want = [_formula(0.1, schedule, warmup, 8, s) for s in range(8)]
    assert seen == pytest.approx(want, rel=1e-12, abs=0)
    assert seen == pytest.approx(_transformers_rates(0.1, schedule, warmup, 8), rel=1e-12, abs=0)
    if (schedule, warmup) == ("constant", 0):
        assert seen == [0.1] * 8  # the default keeps tune.lr exactly


def _plain_loop(head, init, train, cfg: TuneConfig, make_opt, make_sched=None) -> list:
    """The prompt after every step of a hand-written loop: the tuner's batch order, cross-entropy, clipping."""
    p = init.detach().clone().float().requires_grad_(True)
    opt = make_opt([p])
    sched = make_sched(opt) if make_sched else None
    gen, queue, out = torch.Generator().manual_seed(SEED), [], []
    labels = torch.tensor([ex.label for ex in train])
    for _ in range(cfg.steps):
        if len(queue) < cfg.batch_size:
            queue += torch.randperm(len(train), generator=gen).tolist()
        idx, queue = queue[:cfg.batch_size], queue[cfg.batch_size:]
        logits, _ = head.forward(head.batch([train[i] for i in idx]), p)
        loss = F.cross_entropy(logits.float(), labels[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p], cfg.grad_clip)
        opt.step()
        if sched:
            sched.step()
        out.append(p.detach().clone())
    return out


def _trajectory(head, init, split, cfg) -> list:
    res = tuner.tune_prompt(head, init, split.train, split.dev, cfg, SEED, progress=False)
    assert [s["step"] for s in res.snapshots] == list(range(cfg.steps + 1))
    return [s["prompt"] for s in res.snapshots[1:]]


def _equal(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_default_is_plain_adamw_at_a_constant_rate(tiny_tuning):
    head, split, init = tiny_tuning
    cfg = TuneConfig(steps=6, lr=0.1, batch_size=4, eval_every=3, patience=0, snapshot_every=1)
    assert (cfg.schedule, cfg.warmup_steps, cfg.optimizer) == ("constant", 0, "adamw")
    plain = _plain_loop(head, init, split.train, cfg, lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.0))
    assert _equal(_trajectory(head, init, split, cfg), plain)
    explicit = TuneConfig(**{**cfg.__dict__, "schedule": "constant", "warmup_steps": 0})
    assert _equal(_trajectory(head, init, split, explicit), plain)


def test_warmup_and_linear_decay_match_transformers_schedule(tiny_tuning):
    head, split, init = tiny_tuning
    cfg = TuneConfig(steps=6, lr=0.1, batch_size=4, eval_every=3, patience=0, snapshot_every=1, schedule="linear",
                     warmup_steps=2)
    plain = _plain_loop(head, init, split.train, cfg, lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.0),
                        lambda opt: get_linear_schedule_with_warmup(opt, 2, 6))
    got = _trajectory(head, init, split, cfg)
    assert _equal(got, plain)
    assert torch.equal(got[0], init)  # the first update has rate 0


def test_adafactor_relative_is_transformers_relative_step_and_ignores_lr(tiny_tuning, monkeypatch):
    head, split, init = tiny_tuning
    seen = _spy_lrs(monkeypatch)
    cfg = TuneConfig(steps=5, lr=0.1, batch_size=4, eval_every=5, patience=0, snapshot_every=1,
                     optimizer="adafactor-relative")
    plain = _plain_loop(head, init, split.train, cfg, lambda ps: Adafactor(ps, lr=None, relative_step=True,
                                                                           scale_parameter=True, warmup_init=False))
    got = _trajectory(head, init, split, cfg)
    assert _equal(got, plain) and not torch.equal(got[-1], init)
    assert _equal(_trajectory(head, init, split, TuneConfig(**{**cfg.__dict__, "lr": 5.0})), plain)
    assert set(seen) == {None}  # the param group carries no rate: Adafactor computes its own


@pytest.mark.parametrize("override,match", [
    ("tune.warmup_steps=-1", "tune.warmup_steps must be >= 0 and < tune.steps"),
    ("tune.warmup_steps=200", r"tune.warmup_steps must be >= 0 and < tune.steps \(200\), got 200"),
    ("tune.schedule=cosine", "tune.schedule must be one of"),
    ("tune.lr_grid=[0.1,0.1]", "tune.lr_grid lists a learning rate twice"),
    ("tune.lr_grid=[0.1,0]", "tune.lr_grid must list finite learning rates > 0"),
    ("tune.lr_grid=[0.1,1e999]", "tune.lr_grid must list finite learning rates > 0"),
])
def test_bad_schedule_settings_name_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(FewShotConfig(), [override])


@pytest.mark.parametrize("extra", [{"schedule": "linear"}, {"warmup_steps": 2}, {"lr_grid": [0.1, 0.3]}])
def test_adafactor_relative_takes_no_rate_settings(extra):
    with pytest.raises(ConfigError, match="adafactor-relative"):
        TuneConfig(optimizer="adafactor-relative", **extra)


def test_tune_prompt_refuses_a_grid_it_would_ignore(tiny_tuning):
    head, split, init = tiny_tuning
    with pytest.raises(ConfigError, match="tune.lr_grid .* fewshot harness only"):
        tuner.tune_prompt(head, init, split.train, split.dev, TuneConfig(steps=2, lr_grid=[0.1, 0.3]), SEED,
                          progress=False)


def test_tune_prompt_refuses_cross_validation_it_would_ignore(tiny_tuning):
    from workbench.config import ConfigError, TuneConfig
    from workbench.learn.tuner import tune_prompt
    head, split, init = tiny_tuning
    with pytest.raises(ConfigError, match="tune.selection='cv' is honoured by the fewshot harness only"):
        tune_prompt(head, init, split.train, split.dev, TuneConfig(steps=2, selection="cv"), 13, progress=False)
