"""Selection and learning curves (``learn.selection``): the prompt chosen within each step budget is the one a run
of that length would choose; k-fold cross-validation picks the candidate with the best mean fold accuracy, computed
here from separate runs, and trains it on train+dev; the harness reports the curve and its area."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.cli.main import main
from workbench.config import ConfigError, TuneConfig
from workbench.learn.selection import curve_auc, stratified_folds, tune_selected
from workbench.learn.tuner import tune_prompt

SEED = 13
BASE = {"steps": 12, "batch_size": 4, "eval_every": 2, "patience": 0, "lr": 0.3}


def test_budget_prompt_is_what_a_run_of_that_length_selects(tiny_tuning):
    head, split, init = tiny_tuning
    cfg = TuneConfig(**BASE, budgets=[4, 8])
    sel = tune_selected(head, init, split.train, split.dev, cfg, SEED, progress=False)
    assert [p["budget"] for p in sel.points] == [0, 4, 8, 12]
    assert torch.equal(sel.prompts[0], init.float())
    for p, prompt in zip(sel.points[1:], sel.prompts[1:]):
        short = tune_prompt(head, init, split.train, split.dev, TuneConfig(**{**BASE, "steps": p["budget"]}), SEED,
                            progress=False)
        assert p["step"] == short.best_step and p["dev_acc"] == short.dev["acc"]
        assert torch.allclose(prompt, short.prompt, atol=1e-6)
    full = tune_prompt(head, init, split.train, split.dev, TuneConfig(**BASE), SEED, progress=False)
    assert torch.allclose(sel.prompt, full.prompt, atol=1e-6) and sel.best_step == full.best_step


def test_budget_selection_across_a_grid_picks_the_best_member_within_the_budget(tiny_tuning):
    head, split, init = tiny_tuning
    lrs = [0.03, 1.0]
    sel = tune_selected(head, init, split.train, split.dev, TuneConfig(**BASE, lr_grid=lrs, budgets=[2, 6]), SEED,
                        progress=False)
    runs = [tune_prompt(head, init, split.train, split.dev, TuneConfig(**{**BASE, "lr": lr}), SEED, progress=False)
            for lr in lrs]
    for p in sel.points[1:]:
        cands = [(-h["dev_acc"], h["dev_loss"], h["step"], lr) for lr, r in zip(lrs, runs) for h in r.history
                 if h["step"] <= p["budget"]]
        acc, _, step, lr = min(cands)
        assert (p["dev_acc"], p["step"], p["lr"]) == (-acc, step, lr)


def test_curve_auc_is_the_mean_height_on_a_log_axis():
    flat = [{"budget": b, "test_acc": 0.7} for b in (0, 10, 100)]
    assert curve_auc(flat) == pytest.approx(0.7)
    two = [{"budget": 0, "test_acc": 0.5}, {"budget": 3, "test_acc": 0.9}]
    assert curve_auc(two) == pytest.approx(0.7)
    three = [{"budget": 0, "test_acc": 0.5}, {"budget": 1, "test_acc": 0.7}, {"budget": 3, "test_acc": 0.7}]
    assert curve_auc(three) == pytest.approx((1 * (0.5 + 0.7) / 2 + 1 * (0.7 + 0.7) / 2) / 2)  # x = 0, 1, 2


def test_folds_are_stratified_disjoint_and_refuse_too_few_examples(tiny_tuning):
    _, split, _ = tiny_tuning
    pool = list(split.train) + list(split.dev)
    folds = stratified_folds(pool, 4, SEED)
    assert sorted(i for f in folds for i in f) == list(range(len(pool)))
    for f in folds:
        counts = np.bincount([pool[i].label for i in f], minlength=2)
        assert counts.max() - counts.min() <= 1
    with pytest.raises(ConfigError, match="tune.cv_folds .9. is more than the examples per class of train.dev .8"):
        stratified_folds(pool, 9, SEED)


def test_cross_validation_picks_the_best_mean_fold_candidate_and_fits_on_the_pool(tiny_tuning):
    head, split, init = tiny_tuning
    lrs = [0.03, 1.0]
    cfg = TuneConfig(**BASE, lr_grid=lrs, selection="cv", cv_folds=2)
    sel = tune_selected(head, init, split.train, split.dev, cfg, SEED, progress=False)
    pool = list(split.train) + list(split.dev)
    scores = {}
    for held in stratified_folds(pool, 2, SEED):
        tr = [ex for i, ex in enumerate(pool) if i not in held]
        for lr in lrs:
            r = tune_prompt(head, init, tr, [pool[i] for i in held], TuneConfig(**{**BASE, "lr": lr}), SEED,
                            progress=False)
            for h in r.history:
                scores.setdefault((lr, h["step"]), []).append((h["dev_acc"], h["dev_loss"]))
    best = min(scores, key=lambda key: (-np.mean([a for a, _ in scores[key]]), np.mean([lo for _, lo in scores[key]]),
                                        key[1], key[0]))
    assert (sel.record["lr"], sel.best_step) == best and sel.record["selection"] == "cv"
    assert sel.dev["acc"] == pytest.approx(np.mean([a for a, _ in scores[best]]))
    ref = tune_prompt(head, init, pool, split.dev, TuneConfig(**{**BASE, "lr": best[0], "snapshot_every": 1}), SEED,
                      progress=False)
    want = init.float() if best[1] == 0 else next(s["prompt"] for s in ref.snapshots if s["step"] == best[1])
    assert torch.allclose(sel.prompt, want, atol=1e-6)


@pytest.mark.parametrize("kw, msg", [
    ({"budgets": [20]}, "budget 20 is longer than the run .tune.steps = 12"),
    ({"budgets": [0]}, "tune.budgets must list step counts >= 1"),
    ({"budgets": [4, 4]}, "lists a budget twice"),
    ({"cv_folds": 1}, "tune.cv_folds must be >= 2"),
    ({"selection": "test"}, "tune.selection"),
])
def test_bad_budgets_and_folds_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        TuneConfig(**{**BASE, **kw})


def test_fewshot_rows_carry_the_learning_curve(tiny, toy_data, tmp_path):
    out = tmp_path / "curve"
    assert main(["fewshot", "--dataset", "toy", "--backbone", tiny["bert-mlm"], "--k", "4", "--seeds", "13",
                 "--methods", "random", "--steps", "6", "--eval-every", "2", "--prompt-length", "4",
                 "--max-length", "32", "--out", str(out), "--quiet", "--set", "tune.budgets=[2,4]"]) == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert [p["budget"] for p in row["curve"]] == [0, 2, 4, 6] and row["curve"][0]["step"] == 0
    assert row["curve"][-1]["test_acc"] == row["test_acc"] and row["init_test_acc"] == row["curve"][0]["test_acc"]
    assert row["curve_auc"] == pytest.approx(curve_auc(row["curve"]))
    assert all(p["step"] <= p["budget"] for p in row["curve"])


def test_fewshot_refuses_more_folds_than_examples_before_training(tiny, toy_data, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["fewshot", "--dataset", "toy", "--backbone", tiny["bert-mlm"], "--k", "2", "--seeds", "13",
                 "--methods", "random", "--steps", "4", "--prompt-length", "4", "--max-length", "32", "--out", str(out),
                 "--quiet", "--set", "tune.selection=cv", "--set", "tune.cv_folds=5"]) == 2
    err = capsys.readouterr().err
    assert "tune.cv_folds (5) is more than the examples per class of train+dev (4 in toy k=2 seed 13)" in err
    assert not out.exists()


def test_fewshot_with_cross_validation_records_the_protocol(tiny, toy_data, tmp_path):
    out = tmp_path / "cv"
    assert main(["fewshot", "--dataset", "toy", "--backbone", tiny["bert-mlm"], "--k", "4", "--seeds", "13",
                 "--methods", "random", "--steps", "4", "--eval-every", "2", "--prompt-length", "4",
                 "--max-length", "32", "--out", str(out), "--quiet", "--set", "tune.selection=cv",
                 "--set", "tune.cv_folds=2", "--set", "tune.lr_grid=[0.05,0.5]", "--set", "tune.budgets=[2]"]) == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["selection"] == "cv" and row["cv_folds"] == 2 and row["n_pool"] == 16
    assert {(c["lr"], c["step"]) for c in row["cv_candidates"]} == {(lr, s) for lr in (0.05, 0.5) for s in (0, 2, 4)}
    best = max(row["cv_candidates"], key=lambda c: (c["cv_acc"], -c["cv_loss"], -c["step"], -c["lr"]))
    assert (row["lr"], row["best_step"], row["dev_acc"]) == (best["lr"], best["step"], best["cv_acc"])
    assert [p["budget"] for p in row["curve"]] == [0, 2, 4]
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {e.get("fold") for e in evals if e.get("event") == "eval"} == {0, 1}
