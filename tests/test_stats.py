"""Benchmark statistics: Holm against a hand-worked example, the paired tests against scipy, ranks with ties."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from workbench.engine import stats


def test_holm_matches_a_hand_worked_example():
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> max with 0.06 = 0.06)
    p = [0.03, 0.01, 0.04, 0.02]
    assert stats.holm(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # the cap at 1 and monotonicity: 0.3 x 3 = 0.9, 0.5 x 2 = 1.0 (capped), 0.6 x 1 = 0.6 -> raised to 1.0
    assert stats.holm([0.6, 0.3, 0.5]) == pytest.approx([1.0, 0.9, 1.0])
    # NaN stays NaN and does not count: m = 2 here
    out = stats.holm([0.01, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert stats.holm([]) == []


def test_holm_never_lowers_a_p_value_and_keeps_order():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, size=12)
    adj = np.array(stats.holm(p))
    assert np.all(adj >= p - 1e-15) and np.all(adj <= 1)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= -1e-15)


def test_paired_t_agrees_with_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(0.80, 0.02, size=5)
    b = a - rng.normal(0.01, 0.01, size=5)
    t, p = stats.paired_t(a - b)
    ref = sps.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert all(math.isnan(x) for x in stats.paired_t([0.01, 0.01, 0.01]))  # no variance: undefined
    assert all(math.isnan(x) for x in stats.paired_t([0.01]))


def test_wilcoxon_floor_with_five_seeds():
    assert stats.wilcoxon_p([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(0.0625)  # 2 / 2**5
    assert stats.wilcoxon_p([0.0] * 5) == 1.0
    d = [0.03, -0.01, 0.02, 0.05, -0.02]
    assert stats.wilcoxon_p(d) == pytest.approx(sps.wilcoxon(d).pvalue)


def test_ranks_with_ties():
    assert stats.rank_with_ties([0.9, 0.8, 0.9, 0.7]) == [1.5, 3.0, 1.5, 4.0]
    summary = [{"dataset": "a", "k": 16, "method": m, "test_acc_mean": v}
               for m, v in (("random", 0.7), ("vocab", 0.8), ("zero-shot", 0.8))]
    summary += [{"dataset": "b", "k": 16, "method": m, "test_acc_mean": v}
                for m, v in (("random", 0.6), ("vocab", 0.5), ("zero-shot", 0.9))]
    ranks = {r["method"]: r for r in stats.average_ranks(summary)}
    assert ranks["zero-shot"]["avg_rank"] == pytest.approx((1.5 + 1) / 2)
    assert ranks["vocab"]["avg_rank"] == pytest.approx((1.5 + 3) / 2)
    assert ranks["random"]["avg_rank"] == pytest.approx((3 + 2) / 2)
    assert [r["method"] for r in stats.average_ranks(summary)][0] == "zero-shot"


def _rows(effect: dict, seeds=(13, 21, 42, 87, 100), cells=(("sst2", 16), ("mr", 4))):
    rng = np.random.default_rng(2)
    rows = []
    for ds, k in cells:
        for s in seeds:
            base = 0.7 + rng.normal(0, 0.02)
            rows.append({"dataset": ds, "k": k, "method": "random", "seed": s, "test_acc": base, "test_f1": base,
                         "dev_acc": base})
            for m, e in effect.items():
                v = base + e + rng.normal(0, 0.005)
                rows.append({"dataset": ds, "k": k, "method": m, "seed": s, "test_acc": v, "test_f1": v,
                             "dev_acc": v})
    return rows


def test_paired_vs_random_and_summary():
    rows = _rows({"good": 0.05, "same": 0.0, "zero-shot": 0.01})
    summ = {(s["dataset"], s["k"], s["method"]): s for s in stats.summarise(rows)}
    r = [x["test_acc"] for x in rows if (x["dataset"], x["method"]) == ("sst2", "good")]
    assert summ[("sst2", 16, "good")]["test_acc_mean"] == pytest.approx(np.mean(r))
    assert summ[("sst2", 16, "good")]["test_acc_std"] == pytest.approx(np.std(r, ddof=1))
    assert summ[("sst2", 16, "good")]["n"] == 5

    paired = stats.paired_vs(rows)
    assert {(e["dataset"], e["method"]) for e in paired} == {(d, m) for d in ("sst2", "mr") for m in ("good", "same")}
    by = {(e["dataset"], e["method"]): e for e in paired}
    g = by[("sst2", "good")]
    a = [x["test_acc"] for x in rows if (x["dataset"], x["method"]) == ("sst2", "good")]
    b = [x["test_acc"] for x in rows if (x["dataset"], x["method"]) == ("sst2", "random")]
    assert g["p_t"] == pytest.approx(sps.ttest_rel(a, b).pvalue) and g["diff_mean"] == pytest.approx(0.05, abs=0.01)
    assert g["p_t_holm"] == pytest.approx(stats.holm([e["p_t"] for e in paired])[paired.index(g)])
    assert g["significant"] and not by[("sst2", "same")]["significant"]
    assert g["p_wilcoxon"] == pytest.approx(0.0625)

    st = stats.statistics(rows)
    assert st["ranks"][0]["method"] == "good" and st["ranks"][0]["n_cells"] == 2
    # a seed missing for one method: only common seeds are paired
    partial = [x for x in rows if not (x["method"] == "good" and x["seed"] == 13)]
    ns = {(e["dataset"], e["method"]): e["n"] for e in stats.paired_vs(partial)}
    assert ns[("sst2", "good")] == 4 and ns[("sst2", "same")] == 5


def test_pooled_comparison_is_the_paired_test_of_per_seed_means_over_cells():
    from scipy import stats as sps

    from workbench.engine.stats import pooled_vs
    rng = np.random.default_rng(3)
    rows, acc = [], {}
    for d in ("a", "b", "c"):
        for s in (1, 2, 3, 4):
            for m, shift in (("random", 0.0), ("good", 0.04), ("same", 0.0), ("zero-shot", -0.1)):
                acc[(d, m, s)] = 0.6 + shift + rng.normal(0, 0.02)
                rows.append({"dataset": d, "k": 16, "method": m, "seed": s, "test_acc": acc[(d, m, s)]})
    rows.append({"dataset": "a", "k": 4, "method": "good", "seed": 1, "test_acc": 0.5})  # another k, one seed only
    out = pooled_vs(rows, "random", families={"f": ["good", "same"]})
    assert [(e["k"], e["method"]) for e in out] == [(16, "good"), (16, "same")]  # k=4: fewer than 2 seeds
    for e in out:
        a = [np.mean([acc[(d, e["method"], s)] for d in "abc"]) for s in (1, 2, 3, 4)]
        b = [np.mean([acc[(d, "random", s)] for d in "abc"]) for s in (1, 2, 3, 4)]
        assert e["diff_mean"] == pytest.approx(np.mean(np.subtract(a, b)))
        assert e["p_t"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
        assert e["cells"] == ["a", "b", "c"] and e["family"] == "f" and e["family_size"] == 2
    ps = sorted(e["p_t"] for e in out)
    assert sorted(e["p_t_holm"] for e in out) == pytest.approx([min(1, 2 * ps[0]), max(min(1, 2 * ps[0]), ps[1])])
    vs_zero = pooled_vs(rows, "zero-shot")
    assert {e["method"] for e in vs_zero} == {"random", "good", "same"}  # every init against the baseline
    assert all(e["verdict"] == "better" for e in vs_zero)
