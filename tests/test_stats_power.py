"""What the paired statistics can resolve: MDE (against t quantiles and a simulation), Holm within declared families,
bootstrap intervals, verdicts, bad families, and the default (no families) keeping the p-values of earlier versions."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from workbench.config import ConfigError
from workbench.engine import stats

REPO = Path(__file__).resolve().parents[1]
SEEDS = (13, 21, 42, 87, 100)
# test accuracy per seed (SEEDS order) of each method in two cells; "good" ~ +3 points, "bad" ~ -2, "same" ~ 0
CELLS = {("a", 16): {"random": [0.7, 0.6909, 0.6902, 0.7021, 0.6731], "good": [0.733, 0.711, 0.714, 0.7228, 0.6985],
                     "bad": [0.6773, 0.6715, 0.6751, 0.6818, 0.6341], "same": [0.6911, 0.7043, 0.6937, 0.7091, 0.6602]},
         ("b", 4): {"random": [0.6632, 0.7031, 0.699, 0.6804, 0.6993], "good": [0.6908, 0.7313, 0.7302, 0.7023, 0.7382],
                    "bad": [0.6305, 0.658, 0.6637, 0.671, 0.6735], "same": [0.6659, 0.6977, 0.6943, 0.6724, 0.6982]}}


def fixed_rows() -> list[dict]:
    return [{"dataset": ds, "k": k, "method": m, "seed": s, "test_acc": v}
            for (ds, k), methods in CELLS.items() for m, vals in methods.items() for s, v in zip(SEEDS, vals)]


def by_key(paired):
    return {(e["dataset"], e["method"]): e for e in paired}


def test_mde_is_the_t_quantile_formula():
    for n in (3, 5, 10):
        for alpha in (0.05, 0.05 / 16):
            expected = (sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(0.8, n - 1)) * 0.02 / math.sqrt(n)
            assert stats.mde(0.02, n, alpha) == pytest.approx(expected, rel=1e-12)
    # five seeds, alpha 0.05: t_0.975,4 = 2.7764, t_0.8,4 = 0.9410 -> 3.7174 * sd / sqrt(5)
    assert stats.mde(0.02, 5) == pytest.approx(3.7174 * 0.02 / math.sqrt(5), rel=1e-4)
    assert math.isnan(stats.mde(0.02, 1)) and stats.mde(0.0, 5) == 0.0


def _power(effect, sd, n, alpha, draws=2000, seed=0):
    d = np.random.default_rng(seed).normal(effect, sd, size=(draws, n))
    return float(np.mean(sps.ttest_1samp(d, 0.0, axis=1).pvalue < alpha))


def test_a_paired_t_test_rejects_about_80_percent_of_draws_at_the_mde():
    sd = 0.02
    assert _power(stats.mde(sd, 5), sd, 5, 0.05) == pytest.approx(0.80, abs=0.05)
    assert _power(stats.mde(sd, 10), sd, 10, 0.05, seed=1) == pytest.approx(0.80, abs=0.05)
    assert _power(stats.mde(sd, 5) / 2, sd, 5, 0.05, seed=2) < 0.5  # half the MDE: mostly missed


def test_holm_within_groups_by_hand():
    # a: 0.01 x 2 = 0.02, 0.04 x 1 = 0.04; b: 0.005 x 2 = 0.01, 0.03 x 1 = 0.03; NaN stays NaN, not counted
    out = stats.holm_within([0.01, 0.04, 0.03, 0.005, float("nan")], ["a", "a", "b", "b", "a"])
    assert out[:4] == pytest.approx([0.02, 0.04, 0.03, 0.01]) and math.isnan(out[4])
    assert stats.holm_within([0.03, 0.01], ["x", "x"]) == stats.holm([0.03, 0.01])


def test_paired_vs_applies_holm_within_declared_families():
    rows = fixed_rows()
    paired = by_key(stats.paired_vs(rows, families={"up": ["good"], "down": ["bad"]}))
    assert {k: e["family"] for k, e in paired.items()} == {
        (ds, m): f for ds in ("a", "b") for m, f in (("good", "up"), ("bad", "down"), ("same", "other"))}
    assert {e["family_size"] for e in paired.values()} == {2}
    for m in ("good", "bad", "same"):  # two comparisons per family: p_(1) x 2, then max(that, p_(2) x 1)
        pa, pb = paired[("a", m)]["p_t"], paired[("b", m)]["p_t"]
        lo, hi = min(pa, pb), max(pa, pb)
        holm = {lo: min(1.0, 2 * lo), hi: max(min(1.0, 2 * lo), hi)}
        assert paired[("a", m)]["p_t_holm"] == pytest.approx(holm[pa])
        assert paired[("b", m)]["p_t_holm"] == pytest.approx(holm[pb])
    g = paired[("a", "good")]
    assert g["mde_holm"] == pytest.approx(stats.mde(g["paired_sd"], 5, 0.05 / 2))
    assert g["mde"] == pytest.approx(stats.mde(g["paired_sd"], 5)) and g["paired_sd"] == g["diff_std"]


def test_without_families_the_p_values_are_those_of_earlier_versions():
    # p-values of the version before families existed (Holm over every comparison), on the same rows
    before = {("a", "good"): (0.0004449472611868835, 0.0026483310309406947, 0.375),
              ("a", "bad"): (0.004786817146871068, 0.01914726858748427, 0.375),
              ("a", "same"): (0.9361658900514009, 0.9361658900514009, 1.0),
              ("b", "good"): (0.0004413885051567825, 0.0026483310309406947, 0.375),
              ("b", "bad"): (0.007510011814014299, 0.0225300354420429, 0.375),
              ("b", "same"): (0.1509440536690208, 0.3018881073380416, 0.375)}
    paired = stats.paired_vs(fixed_rows())
    assert {k: (e["p_t"], e["p_t_holm"], e["p_wilcoxon_holm"]) for k, e in by_key(paired).items()} == before
    assert {e["family"] for e in paired} == {"all"} and {e["family_size"] for e in paired} == {6}
    assert stats.paired_vs(fixed_rows(), families={}) == paired


def test_the_committed_full_benchmark_keeps_its_published_p_values():
    """leaderboard of 2026-11-24 (written before families): every p, Holm p and Wilcoxon Holm p, to its 3 digits."""
    md = (REPO / "benchmarks" / "results" / "full-2026-11-24.md").read_text(encoding="utf-8")
    published = {(c[0], int(c[1]), c[2]): (c[5], c[6], c[8]) for c in
                 (line.strip("| ").split(" | ") for line in md.splitlines() if re.match(r"\| \w+ \| \d+ \| ", line))}
    rows = [json.loads(x) for x in (REPO / "benchmarks" / "results" / "full-2026-11-24.rows.jsonl")
            .read_text(encoding="utf-8").splitlines()]
    paired = stats.paired_vs(rows)
    assert len(paired) == len(published) == 88
    f = lambda p: f"{p:.3g}"  # noqa: E731  (the leaderboard's format)
    assert {(e["dataset"], e["k"], e["method"]): (f(e["p_t"]), f(e["p_t_holm"]), f(e["p_wilcoxon_holm"]))
            for e in paired} == published


def test_bootstrap_ci_contains_the_mean_shrinks_with_seeds_and_is_reproducible():
    rng = np.random.default_rng(3)
    d5, d200 = rng.normal(0.01, 0.02, 5), rng.normal(0.01, 0.02, 200)
    lo5, hi5 = stats.bootstrap_ci(d5)
    lo200, hi200 = stats.bootstrap_ci(d200)
    assert lo5 <= d5.mean() <= hi5 and lo200 <= d200.mean() <= hi200
    assert hi200 - lo200 < (hi5 - lo5) / 3
    # many seeds: close to the normal interval 2 x 1.96 x sd / sqrt(n) (the bootstrap SD uses ddof=0)
    normal = 2 * 1.96 * d200.std(ddof=0) / math.sqrt(200)
    assert hi200 - lo200 == pytest.approx(normal, rel=0.1)
    assert stats.bootstrap_ci(d5) == (lo5, hi5) and stats.bootstrap_ci(d5, seed=1) != (lo5, hi5)
    assert stats.bootstrap_ci([0.02] * 5) == pytest.approx((0.02, 0.02))
    e = stats.paired_diffs(list(d5))
    assert (e["ci_low"], e["ci_high"]) == (lo5, hi5)


def test_verdicts():
    assert stats.verdict(0.05, 0.01, 0.03) == "better" and stats.verdict(-0.05, 0.01, 0.03) == "worse"
    assert stats.verdict(0.05, 0.2, 0.03) == "not resolved"  # not significant after Holm
    assert stats.verdict(0.02, 0.01, 0.03) == "not resolved"  # significant, but below the MDE
    assert stats.verdict(0.05, float("nan"), 0.03) == "not resolved"
    assert stats.verdict(0.05, 0.01, float("nan")) == "not resolved"
    paired = stats.paired_vs(fixed_rows())
    verdicts = {k: e["verdict"] for k, e in by_key(paired).items()}
    assert verdicts == {("a", "good"): "better", ("b", "good"): "better", ("a", "bad"): "worse",
                        ("b", "bad"): "worse", ("a", "same"): "not resolved", ("b", "same"): "not resolved"}
    for e in paired:  # never a win or a loss below the MDE, nor without Holm significance
        if abs(e["diff_mean"]) < e["mde"] or not e["p_t_holm"] < 0.05:
            assert e["verdict"] == "not resolved"


def test_bad_families_are_refused_by_name():
    rows = fixed_rows()
    with pytest.raises(ConfigError, match=r"families\['up'\] names \['nope'\].*'good', 'bad', 'same'"):
        stats.paired_vs(rows, families={"up": ["good", "nope"]})
    with pytest.raises(ConfigError, match=r"'random'"):  # the reference is not compared
        stats.paired_vs(rows, families={"up": ["random"]})
    with pytest.raises(ConfigError, match="'good' is in both 'up' and 'down'"):
        stats.paired_vs(rows, families={"up": ["good"], "down": ["good", "bad"]})
    for bad in ({"other": ["good"]}, {"up": []}, {"up": "good"}):
        with pytest.raises(ConfigError, match="non-empty list"):
            stats.paired_vs(rows, families=bad)
