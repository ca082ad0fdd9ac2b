"""``tune.select_metric``: dev selection (step and learning rate, dev and cross-validation) and early stopping by
accuracy or by macro-F1. The dev scores are scripted from constructed predictions on which the two metrics disagree:
X is more accurate, Y has the higher macro-F1."""
from __future__ import annotations

import json

import numpy as np
import pytest

import workbench.learn.grid as grid
from workbench.cli.main import main
from workbench.config import ConfigError, TuneConfig
from workbench.learn.selection import tune_selected
from workbench.learn.tuner import metrics, tune_prompt

SEED = 13
BASE = {"steps": 12, "batch_size": 4, "eval_every": 2, "patience": 0, "lr": 0.3}
LABELS = np.array([0] * 10 + [1] * 10)


def scores(correct0: int, correct1: int) -> dict:
    """Dev metrics of predictions with ``correct0`` of ten class-0 and ``correct1`` of ten class-1 examples right."""
    preds = np.array([0] * correct0 + [1] * (10 - correct0) + [1] * correct1 + [0] * (10 - correct1))
    return metrics(2.0 * np.eye(2)[preds], LABELS, 2)


X, Y, BAD = scores(10, 2), scores(6, 5), scores(0, 10)  # X: acc .60 / F1 .52; Y: acc .55 / F1 .55; BAD: .50 / .33


def test_the_constructed_predictions_disagree():
    assert X["acc"] > Y["acc"] > BAD["acc"] and Y["f1"] > X["f1"] > BAD["f1"]


def test_select_metric_is_validated():
    with pytest.raises(ConfigError, match="tune.select_metric"):
        TuneConfig(select_metric="f1")
    assert TuneConfig().select_metric == "acc"


@pytest.mark.parametrize("metric,best,stop", [("acc", 2, 6), ("macro_f1", 4, 8)])
def test_step_and_early_stopping_follow_the_metric(tiny_tuning, metric, best, stop):
    head, split, init = tiny_tuning
    script = iter([BAD, X, Y, BAD, BAD, BAD, BAD])  # steps 0, 2, 4, ...
    cfg = TuneConfig(**{**BASE, "patience": 2}, select_metric=metric)
    res = tune_prompt(head, init, split.train, split.dev, cfg, SEED, progress=False,
                      dev_score=lambda p: next(script))
    assert res.best_step == best and res.steps_run == stop and res.stopped_early
    assert res.dev == {k: (X if best == 2 else Y)[k] for k in ("acc", "f1", "loss")}


def scripted_members(lrs):
    """score_members replaced: member lrs[0] scores X at step 2, member lrs[1] scores Y at step 4, else BAD."""
    def score(head, examples, runs, cfg):
        good = {(lrs[0], 2): X, (lrs[1], 4): Y}
        return [good.get((run.cfg.lr, run.steps_run), BAD) for run in runs]
    return score


@pytest.mark.parametrize("selection", ["dev", "cv"])
@pytest.mark.parametrize("metric,lr,step", [("acc", 0.05, 2), ("macro_f1", 0.5, 4)])
def test_rate_and_step_follow_the_metric(tiny_tuning, monkeypatch, selection, metric, lr, step):
    head, split, init = tiny_tuning
    lrs = [0.05, 0.5]
    monkeypatch.setattr(grid, "score_members", scripted_members(lrs))
    cfg = TuneConfig(**BASE, lr_grid=lrs, select_metric=metric, selection=selection, cv_folds=2, budgets=[6])
    sel = tune_selected(head, init, split.train, split.dev, cfg, SEED, progress=False)
    assert (sel.record["lr"], sel.best_step) == (lr, step)
    assert sel.record["select_metric"] == metric and sel.record["selection"] == selection
    want = X if step == 2 else Y
    assert sel.dev["acc"] == pytest.approx(want["acc"]) and sel.dev["f1"] == pytest.approx(want["f1"])
    assert [(p["budget"], p["step"], p["lr"]) for p in sel.points[1:]] == [(6, step, lr), (12, step, lr)]
    if selection == "cv":
        cand = {(c["lr"], c["step"]): c for c in sel.record["cv_candidates"]}
        assert cand[(0.5, 4)]["cv_f1"] == pytest.approx(Y["f1"]) and cand[(0.05, 2)]["cv_acc"] == pytest.approx(X["acc"])


def test_fewshot_records_the_select_metric(tiny, toy_data, tmp_path):
    out = tmp_path / "f1"
    assert main(["fewshot", "--dataset", "toy", "--backbone", tiny["bert-mlm"], "--k", "4", "--seeds", "13",
                 "--methods", "random", "--steps", "4", "--eval-every", "2", "--prompt-length", "4",
                 "--max-length", "32", "--out", str(out), "--quiet", "--set", "tune.select_metric=macro_f1"]) == 0
    res = json.loads((out / "results.json").read_text())
    row = res["rows"][0]
    assert row["select_metric"] == "macro_f1" and res["config"]["tune"]["select_metric"] == "macro_f1"
