"""A learning-rate grid tuned in one pass (``learn.grid.tune_grid``) ends as G separate ``tune_prompt`` runs: same best
prompts, best steps, dev histories, early stops and snapshots, with one backbone pass per step for all members; and
the harness's ``tune.lr_grid`` keeps the member that dev selects."""
from __future__ import annotations

import json

import pytest
import torch

from workbench.cli.main import main
from workbench.config import ConfigError, TuneConfig
from workbench.learn import tuner
from workbench.learn.grid import select_member, tune_grid
from workbench.learn.tuner import TuneResult, tune_prompt

SEED = 13
LRS = [0.01, 0.1, 1.0]
# grad_clip 0.05 clips every step: a grid clipping the members' gradients jointly would not match
CFG = {"steps": 12, "batch_size": 4, "eval_every": 2, "patience": 2, "snapshot_every": 3, "grad_clip": 0.05}


def _separate(head, init, split, lrs, **kw) -> list[TuneResult]:
    return [tune_prompt(head, init, split.train, split.dev, TuneConfig(**{**CFG, "lr": lr}), SEED, progress=False,
                        **kw) for lr in lrs]


def _assert_same(grid: list[TuneResult], separate: list[TuneResult]):
    for g, s in zip(grid, separate, strict=True):
        assert torch.allclose(g.prompt, s.prompt, rtol=1e-5, atol=1e-5)
        assert (g.best_step, g.steps_run, g.stopped_early) == (s.best_step, s.steps_run, s.stopped_early)
        assert [h["step"] for h in g.history] == [h["step"] for h in s.history]
        for hg, hs in zip(g.history, s.history):
            assert hg["dev_acc"] == hs["dev_acc"] and hg["dev_f1"] == hs["dev_f1"]
            assert hg["dev_loss"] == pytest.approx(hs["dev_loss"], rel=1e-5, abs=1e-6)
            assert (hg["train_loss"] is None) == (hs["train_loss"] is None)
            assert hg["train_loss"] is None or hg["train_loss"] == pytest.approx(hs["train_loss"], rel=1e-5)
        assert [x["step"] for x in g.snapshots] == [x["step"] for x in s.snapshots]
        assert all(torch.allclose(x["prompt"], y["prompt"], rtol=1e-5, atol=1e-5)
                   for x, y in zip(g.snapshots, s.snapshots))


def _count_passes(head, monkeypatch) -> list:
    """(rows, with gradients?) of every backbone pass."""
    passes, real = [], head.forward
    monkeypatch.setattr(head, "forward", lambda batch, p: (
        passes.append((batch["input_ids"].shape[0], torch.is_grad_enabled())), real(batch, p))[1])
    return passes


def test_grid_equals_separate_runs_in_one_pass_per_step(tiny_tuning, monkeypatch):
    head, split, init = tiny_tuning
    separate = _separate(head, init, split, LRS)
    assert {s.stopped_early for s in separate} == {True, False}, "the setting should stop some members early"
    passes = _count_passes(head, monkeypatch)
    logged = []
    grid = tune_grid(head, init, split.train, split.dev, TuneConfig(**CFG), SEED, LRS, log=logged.append,
                     progress=False)
    _assert_same(grid, separate)
    train = [rows for rows, grad in passes if grad]
    runs_at = [sum(s.steps_run >= t for s in separate) for t in range(1, CFG["steps"] + 1)]
    assert train == [4 * n for n in runs_at if n]  # one pass per step: the batch once per member still running
    dev_steps = sorted({x["step"] for s in separate for x in s.history} | {x["step"] for s in separate
                                                                             for x in s.snapshots})
    assert len(passes) - len(train) == len(dev_steps)  # dev (8 examples, one chunk): one pass for all members
    assert [r["lr"] for r in logged if r["step"] == 0] == LRS
    assert [{k: v for k, v in r.items() if k != "lr"} for r in logged if r["lr"] == 0.1] == grid[1].history


def test_grad_hook_sees_each_members_gradient_and_the_unrepeated_batch(tiny_tuning):
    head, split, init = tiny_tuning
    rows = []

    def hook(grad, batch):
        rows.append(batch["input_ids"].shape[0])
        return grad + 0.01 * grad.sign()
    separate = _separate(head, init, split, LRS[:2], grad_hook=hook)
    grid = tune_grid(head, init, split.train, split.dev, TuneConfig(**CFG), SEED, LRS[:2], grad_hook=hook,
                     progress=False)
    _assert_same(grid, separate)
    assert set(rows) == {4} and len(rows) == 2 * sum(s.steps_run for s in separate)


def test_each_member_has_its_own_loss_scaler(tiny_tuning, monkeypatch):
    """fp16 on CUDA scales each member's loss with its own scaler; a CPU scaler stands in for it here."""
    head, split, init = tiny_tuning
    monkeypatch.setattr(tuner, "grad_scaler", lambda cfg, device: torch.amp.GradScaler("cpu"))
    _assert_same(tune_grid(head, init, split.train, split.dev, TuneConfig(**CFG), SEED, LRS[1:], progress=False),
                 _separate(head, init, split, LRS[1:]))


def test_hooks_that_cannot_be_shared_are_refused(tiny_tuning):
    head, split, init = tiny_tuning
    with pytest.raises(TypeError, match="no prompt_fn or dev_score"):
        tune_grid(head, init, split.train, split.dev, TuneConfig(**CFG), SEED, LRS, prompt_fn=lambda p, s: p)
    with pytest.raises(ConfigError, match="adafactor-relative"):
        tune_grid(head, init, split.train, split.dev, TuneConfig(optimizer="adafactor-relative"), SEED, LRS)
    with pytest.raises(ConfigError, match="at least one learning rate"):
        tune_grid(head, init, split.train, split.dev, TuneConfig(**CFG), SEED, [])


def _result(acc, loss, step):
    return TuneResult(prompt=torch.zeros(1), best_step=step, dev={"acc": acc, "f1": acc, "loss": loss},
                      step0_dev={}, steps_run=step, stopped_early=False, wall_s=0.0)


def test_selection_is_accuracy_then_loss_then_step_then_smaller_lr():
    lrs = [0.3, 0.1, 0.03, 0.01]
    assert select_member([_result(0.5, 0.1, 2), _result(0.75, 0.9, 9), _result(0.5, 0.1, 2), _result(0.7, 0.1, 2)],
                         lrs) == 1
    assert select_member([_result(0.75, 0.5, 2), _result(0.75, 0.4, 9), _result(0.5, 0.1, 2)], lrs[:3]) == 1
    assert select_member([_result(0.75, 0.4, 8), _result(0.75, 0.4, 4), _result(0.75, 0.4, 4)], lrs[:3]) == 2


def test_fewshot_lr_grid_keeps_the_member_dev_selects(tiny, toy_data, tmp_path):
    def run(name, *opts):
        out = tmp_path / name
        assert main(["fewshot", "--dataset", "toy", "--backbone", tiny["bert-mlm"], "--k", "4", "--seeds", "13",
                     "--methods", "random", "--steps", "6", "--eval-every", "2", "--prompt-length", "4",
                     "--max-length", "32", "--out", str(out), "--quiet", *opts]) == 0
        return json.loads((out / "results.json").read_text())["rows"][0], out
    row, out = run("grid", "--set", "tune.lr_grid=[0.3,0.03]")
    assert [m["lr"] for m in row["lr_grid"]] == [0.3, 0.03] and row["lr"] in (0.3, 0.03)
    best = min(row["lr_grid"], key=lambda m: (-m["dev_acc"], m["dev_loss"], m["best_step"], m["lr"]))
    assert row["lr"] == best["lr"] and (row["dev_acc"], row["best_step"]) == (best["dev_acc"], best["best_step"])
    single, _ = run("single", "--set", f"tune.lr={row['lr']}")
    assert "lr_grid" not in single and single["lr"] == row["lr"] and single["selection"] == "dev"
    assert (single["dev_acc"], single["best_step"], single["test_acc"]) == (row["dev_acc"], row["best_step"],
                                                                            row["test_acc"])
    assert single["dev_loss"] == pytest.approx(row["dev_loss"], rel=1e-5)
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {e["lr"] for e in evals if e["event"] == "eval"} == {0.3, 0.03}
