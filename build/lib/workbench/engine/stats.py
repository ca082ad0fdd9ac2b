"""Statistics for a benchmark: mean ± std over seeds, paired tests against ``random``, Holm, average ranks.

Rows are dicts with at least ``dataset``, ``k``, ``method``, ``seed`` and the metric (``test_acc`` by default).

- :func:`summarise`: mean and sample standard deviation (ddof=1; 0 for a single seed) per (dataset, k, method).
- :func:`paired_vs`: for every method other than the reference (``random``) and every (dataset, k) cell, the
  per-seed differences ``metric(method, seed) - metric(reference, seed)`` over the seeds both have, their mean and
  std, and two paired tests over seeds, both two-sided:

  * the **paired t-test** (t = mean(d) / (sd(d) / sqrt(n)), n - 1 degrees of freedom; the same as
    ``scipy.stats.ttest_rel``); undefined (NaN) when n < 2 or all differences are equal to zero-variance;
  * the **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, exact null distribution for small n, zero
    differences dropped). With n = 5 seeds its smallest possible two-sided p is 2 / 2**5 = 0.0625, so it can never
    reach 0.05 on five seeds: read it as a robustness check on the sign pattern, not as the primary test.

  The t-test p-values are Holm-corrected across all comparisons of the benchmark (every method x cell); so are the
  Wilcoxon p-values, separately. ``significant`` means Holm-corrected t-test p < alpha.
- :func:`holm`: the Holm step-down adjustment, written out here (tested against a worked example).
- :func:`average_ranks`: per (dataset, k) cell, methods ranked by mean metric (1 = best; ties share the average of
  the ranks they span), then averaged over the cells a method appears in.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

BASELINES = ("zero-shot", "linear-probe")


def _cell(r: dict) -> tuple:
    return (r["dataset"], int(r["k"]))


def summarise(rows: list[dict], metrics=("test_acc", "test_f1", "dev_acc")) -> list[dict]:
    """Mean and sample std (ddof=1; 0 for one seed) per (dataset, k, method), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((*_cell(r), r["method"]), []).append(r)
    out = []
    for (dataset, k, method), rs in groups.items():
        entry = {"dataset": dataset, "k": k, "method": method, "n": len(rs), "seeds": sorted(r["seed"] for r in rs)}
        for key in metrics:
            v = np.array([r[key] for r in rs if r.get(key) is not None], dtype=float)
            entry[f"{key}_mean"] = float(v.mean()) if len(v) else float("nan")
            entry[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(entry)
    return out


def paired_t(diffs) -> tuple[float, float]:
    """Two-sided paired t-test on differences: (t, p). NaN when n < 2 or the differences have no variance."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2:
        return float("nan"), float("nan")
    sd = d.std(ddof=1)
    if sd == 0 or not math.isfinite(sd):
        return float("nan"), float("nan")
    t = d.mean() / (sd / math.sqrt(n))
    return float(t), float(2 * sps.t.sf(abs(t), n - 1))


def wilcoxon_p(diffs) -> float:
    """Two-sided Wilcoxon signed-rank p over the non-zero differences (exact for small n); 1.0 if all are zero."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    return float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues) -> list[float]:
    """Holm step-down adjusted p-values, in the input order.

    Sort the m finite p-values ascending, p_(1) <= ... <= p_(m); adjusted p_(i) = max over j <= i of
    min(1, (m - j + 1) * p_(j)). NaN entries stay NaN and do not count towards m.
    """
    p = [float(x) for x in pvalues]
    idx = sorted((i for i, x in enumerate(p) if not math.isnan(x)), key=lambda i: p[i])
    m = len(idx)
    out = [float("nan")] * len(p)
    running = 0.0
    for j, i in enumerate(idx):
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def paired_diffs(diffs) -> dict:
    """Per-seed differences with their mean, sample std (0 for one), paired t-test and Wilcoxon p."""
    t, p = paired_t(diffs)
    return {"diffs": list(diffs), "diff_mean": float(np.mean(diffs)),
            "diff_std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0,
            "t": t, "p_t": p, "p_wilcoxon": wilcoxon_p(diffs)}


def paired_vs(rows: list[dict], reference: str = "random", metric: str = "test_acc", alpha: float = 0.05,
              include_baselines: bool = False) -> list[dict]:
    """Each method vs ``reference`` per (dataset, k): per-seed differences, paired t and Wilcoxon, Holm-corrected."""
    by = {(*_cell(r), r["method"], r["seed"]): r[metric] for r in rows}
    cells = list(dict.fromkeys(_cell(r) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for ds, k in cells:
        for m in methods:
            if m == reference or (m in BASELINES and not include_baselines):
                continue
            seeds = sorted(s for (d, kk, mm, s) in by if (d, kk, mm) == (ds, k, m) and (ds, k, reference, s) in by)
            if not seeds:
                continue
            diffs = [by[(ds, k, m, s)] - by[(ds, k, reference, s)] for s in seeds]
            out.append({"dataset": ds, "k": k, "method": m, "reference": reference, "n": len(seeds), "seeds": seeds,
                        **paired_diffs(diffs)})
    for key in ("p_t", "p_wilcoxon"):
        for entry, adj in zip(out, holm([e[key] for e in out])):
            entry[key + "_holm"] = adj
    for e in out:
        e["significant"] = bool(not math.isnan(e["p_t_holm"]) and e["p_t_holm"] < alpha)
    return out


def rank_with_ties(values, higher_is_better: bool = True) -> list[float]:
    """Ranks 1..n (1 = best); tied values share the mean of the ranks they occupy."""
    v = -np.asarray(values, dtype=float) if higher_is_better else np.asarray(values, dtype=float)
    return [float(x) for x in sps.rankdata(v, method="average")]


def average_ranks(summary: list[dict], metric: str = "test_acc_mean") -> list[dict]:
    """Average rank per method over the (dataset, k) cells it appears in, best first."""
    cells: dict[tuple, list[dict]] = {}
    for s in summary:
        cells.setdefault(_cell(s), []).append(s)
    ranks: dict[str, list[float]] = {}
    for entries in cells.values():
        for s, r in zip(entries, rank_with_ties([e[metric] for e in entries])):
            ranks.setdefault(s["method"], []).append(r)
    out = [{"method": m, "avg_rank": float(np.mean(r)), "n_cells": len(r), "ranks": r} for m, r in ranks.items()]
    return sorted(out, key=lambda e: (e["avg_rank"], e["method"]))


def statistics(rows: list[dict], reference: str = "random", metric: str = "test_acc", alpha: float = 0.05) -> dict:
    """Everything results.json carries under ``statistics``."""
    summary = summarise(rows)
    have_ref = any(r["method"] == reference for r in rows)
    return {"metric": metric, "reference": reference, "alpha": alpha,
            "tests": "paired t-test over seeds (two-sided), Holm-corrected across all comparisons; Wilcoxon "
                     "signed-rank (exact, two-sided) also reported and Holm-corrected separately",
            "paired": paired_vs(rows, reference, metric, alpha) if have_ref else [],
            "ranks": average_ranks(summary, f"{metric}_mean")}
