"""Statistics for a benchmark: mean ± std over seeds, paired tests against ``random`` with what they can resolve
(paired SD, minimum detectable effect, bootstrap interval), Holm within declared families, verdicts, average ranks.

Rows are dicts with at least ``dataset``, ``k``, ``method``, ``seed`` and the metric (``test_acc`` by default).

- :func:`summarise`: mean and sample standard deviation (ddof=1; 0 for a single seed) per (dataset, k, method).
- :func:`paired_vs`: for every method other than the reference (``random``) and every (dataset, k) cell, the
  per-seed differences ``metric(method, seed) - metric(reference, seed)`` over the n seeds both have, their mean and
  sample SD (``diff_std``, also ``paired_sd``), and two paired tests over seeds, both two-sided:

  * the **paired t-test** (t = mean(d) / (sd(d) / sqrt(n)), n - 1 degrees of freedom; the same as
    ``scipy.stats.ttest_rel``); undefined (NaN) when n < 2 or all differences are equal to zero-variance;
  * the **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, exact null distribution for small n, zero
    differences dropped). With n = 5 seeds its smallest possible two-sided p is 2 / 2**5 = 0.0625, so it can never
    reach 0.05 on five seeds: read it as a robustness check on the sign pattern, not as the primary test.

  Each comparison also carries what the design can see (:func:`mde`, :func:`bootstrap_ci`): ``mde``, the minimum
  detectable effect of the paired t-test at level alpha and power 0.8 with its n seeds and paired SD; ``mde_holm``,
  the same at alpha / m, m = the number of comparisons in its Holm family (the first, most demanding Holm step:
  a conservative bound); and ``ci_low`` / ``ci_high``, a 95% percentile bootstrap interval of the mean difference.

  **Holm families.** ``families`` (name -> list of methods) declares groups of methods; the t-test p-values are
  Holm-corrected within each family, over its methods x cells (so are the Wilcoxon p-values, separately), and each
  comparison records its ``family`` and ``family_size``. Methods in no declared family form the family ``"other"``.
  Declaring none (the default) puts every comparison of the benchmark in one family, ``"all"``: the correction of
  earlier versions, with the same numbers. ``significant`` means Holm-corrected t-test p < alpha.

  **Verdicts** (:func:`verdict`): ``"better"`` or ``"worse"`` only when the Holm-corrected t-test p < alpha within
  the family *and* |mean difference| >= ``mde``; every other comparison is ``"not resolved"``, never a win or a
  loss: with 5 seeds most differences of a point or two are below what the design can detect.
- :func:`holm`: the Holm step-down adjustment, written out here (tested against a worked example);
  :func:`holm_within` applies it within groups.
- :func:`average_ranks`: per (dataset, k) cell, methods ranked by mean metric (1 = best; ties share the average of
  the ranks they span), then averaged over the cells a method appears in.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy import stats as sps

from workbench.config import ConfigError

BASELINES = ("zero-shot", "linear-probe")
POWER = 0.8  # the power the minimum detectable effect is computed for
CI_LEVEL, BOOTSTRAP_B, BOOTSTRAP_SEED = 0.95, 10_000, 0
OTHER, ALL = "other", "all"  # the family of undeclared methods; the one family when none is declared
NOT_RESOLVED = "not resolved"


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


def holm_within(pvalues, groups) -> list[float]:
    """:func:`holm` applied separately within each group (``groups[i]`` names the group of ``pvalues[i]``)."""
    p, out = [float(x) for x in pvalues], [float("nan")] * len(groups)
    for g in dict.fromkeys(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        for i, adj in zip(idx, holm([p[i] for i in idx])):
            out[i] = adj
    return out


def mde(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided paired t-test over n seeds with paired SD ``sd``:

        MDE = (t_{1 - alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)

    the smallest true mean difference the test detects at level ``alpha`` with probability about ``power``. It is
    the usual approximation (it ignores the skew of the noncentral t): at n = 5 the exact power at the MDE is 0.79
    for alpha = 0.05 and 0.72 for alpha = 0.05 / 16: the MDE slightly underestimates the effect needed for that
    power, more so at small alpha.

    The Holm-adjusted MDE (``mde_holm``) passes alpha / m, m = the number of comparisons in the family: the level of
    Holm's first (most demanding) step, so a conservative figure for what a family-wise test can resolve; later
    Holm steps test at alpha / (m - 1), ... NaN when n < 2."""
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    return float((sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def bootstrap_ci(diffs, level: float = CI_LEVEL, b: int = BOOTSTRAP_B, seed: int = BOOTSTRAP_SEED
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference: resample the seeds with replacement ``b`` times (a
    fixed RNG ``seed``: reproducible), take the (1 - level)/2 and (1 + level)/2 quantiles of the resampled means.

    With 5 seeds the bootstrap is coarse: there are only 126 distinct resamples, and the percentile interval is
    narrower than the t interval (it ignores the uncertainty in the SD), so read it as descriptive, not as a test."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return float("nan"), float("nan")
    means = d[np.random.default_rng(seed).integers(0, len(d), size=(b, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def paired_diffs(diffs, alpha: float = 0.05) -> dict:
    """Per-seed differences with their mean, sample std (0 for one; also ``paired_sd``), paired t-test, Wilcoxon p,
    the MDE at ``alpha`` (:func:`mde`) and the 95% bootstrap interval of the mean (:func:`bootstrap_ci`)."""
    t, p = paired_t(diffs)
    sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    lo, hi = bootstrap_ci(diffs)
    return {"diffs": list(diffs), "diff_mean": float(np.mean(diffs)), "diff_std": sd, "paired_sd": sd,
            "t": t, "p_t": p, "p_wilcoxon": wilcoxon_p(diffs), "mde": mde(sd, len(diffs), alpha),
            "ci_low": lo, "ci_high": hi}


def verdict(diff_mean: float, p_holm: float, mde_: float, alpha: float = 0.05) -> str:
    """"better" / "worse" when the Holm-corrected p < alpha and |diff_mean| >= the MDE; else "not resolved"."""
    if not (p_holm < alpha and abs(diff_mean) >= mde_):  # NaN p or MDE: not resolved
        return NOT_RESOLVED
    return "better" if diff_mean > 0 else "worse"


def compared(methods, reference: str = "random", include_baselines: bool = False) -> list[str]:
    """The methods :func:`paired_vs` compares with ``reference``, in the given order."""
    return [m for m in methods if m != reference and (include_baselines or m not in BASELINES)]


def check_families(families: dict, methods, reference: str = "random", include_baselines: bool = False):
    """Refuse families that are not name -> non-empty list of compared methods, each method in one family."""
    if not isinstance(families, dict):
        raise ConfigError(f"families must be an object of name -> [method, ...], got {families!r}")
    ok, owner = compared(methods, reference, include_baselines), {}
    for name, members in families.items():
        if name == OTHER or not isinstance(members, list) or not members:
            raise ConfigError(f"families[{name!r}] must be a non-empty list of methods, under a name other than "
                              f"{OTHER!r} (the family of the methods no family names)")
        bad = [m for m in members if m not in ok]
        if bad:
            raise ConfigError(f"families[{name!r}] names {bad}, not among the suite's methods compared with "
                              f"{reference!r}: {ok} (the suite's methods: {list(methods)})")
        for m in members:
            if owner.setdefault(m, name) != name:
                raise ConfigError(f"families: {m!r} is in both {owner[m]!r} and {name!r}; give each method one family")


def family_of(method: str, families: dict) -> str:
    """The Holm family of ``method``: its declared family, else ``"other"``; ``"all"`` when none is declared."""
    return next((name for name, ms in families.items() if method in ms), OTHER) if families else ALL


def _pairs(rows: list[dict], reference: str, metric: str, alpha: float, include_baselines: bool) -> list[dict]:
    by = {(*_cell(r), r["method"], r["seed"]): r[metric] for r in rows}
    methods = compared(dict.fromkeys(r["method"] for r in rows), reference, include_baselines)
    out = []
    for ds, k in dict.fromkeys(_cell(r) for r in rows):
        for m in methods:
            seeds = sorted(s for (d, kk, mm, s) in by if (d, kk, mm) == (ds, k, m) and (ds, k, reference, s) in by)
            if seeds:
                diffs = [by[(ds, k, m, s)] - by[(ds, k, reference, s)] for s in seeds]
                out.append({"dataset": ds, "k": k, "method": m, "reference": reference, "n": len(seeds),
                            "seeds": seeds, **paired_diffs(diffs, alpha)})
    return out


def paired_vs(rows: list[dict], reference: str = "random", metric: str = "test_acc", alpha: float = 0.05,
              include_baselines: bool = False, families: dict | None = None) -> list[dict]:
    """Each method vs ``reference`` per (dataset, k): per-seed differences, paired t and Wilcoxon, MDE, bootstrap
    interval; Holm-corrected within ``families`` (see the module docstring); a verdict per comparison."""
    families = families or {}
    check_families(families, list(dict.fromkeys(r["method"] for r in rows)), reference, include_baselines)
    out = _pairs(rows, reference, metric, alpha, include_baselines)
    groups = [family_of(e["method"], families) for e in out]
    for key in ("p_t", "p_wilcoxon"):
        for entry, adj in zip(out, holm_within([e[key] for e in out], groups)):
            entry[key + "_holm"] = adj
    size = Counter(groups)
    for e, g in zip(out, groups):
        e.update(family=g, family_size=size[g], mde_holm=mde(e["paired_sd"], e["n"], alpha / size[g]),
                 significant=bool(e["p_t_holm"] < alpha),
                 verdict=verdict(e["diff_mean"], e["p_t_holm"], e["mde"], alpha))
    return out


def pooled_vs(rows: list[dict], reference: str = "random", metric: str = "test_acc", alpha: float = 0.05,
              families: dict | None = None) -> list[dict]:
    """Each method vs ``reference`` on the mean over the cells of one k: per seed, the mean over the k's cells of
    ``metric(method) - metric(reference)``, then the paired statistics of :func:`paired_diffs` over the seeds that have
    every cell (Holm within ``families`` per k; a baseline reference compares every init, a baseline method is
    compared only with an init reference). One entry per (k, method), with the cells it averages."""
    families = families or {}
    by = {(*_cell(r), r["method"], r["seed"]): r[metric] for r in rows if r.get(metric) is not None}
    out = []
    for k in dict.fromkeys(int(r["k"]) for r in rows):
        cells = list(dict.fromkeys(_cell(r)[0] for r in rows if int(r["k"]) == k))
        group = []
        for m in compared(dict.fromkeys(r["method"] for r in rows), reference, reference in BASELINES):
            if m in BASELINES and reference in BASELINES:
                continue
            seeds = sorted({s for (d, kk, mm, s) in by if kk == k and mm == m}
                           & {s for (d, kk, mm, s) in by if kk == k and mm == reference})
            seeds = [s for s in seeds if all((d, k, m, s) in by and (d, k, reference, s) in by for d in cells)]
            if len(seeds) > 1:
                diffs = [float(np.mean([by[(d, k, m, s)] - by[(d, k, reference, s)] for d in cells])) for s in seeds]
                group.append({"k": k, "cells": cells, "method": m, "reference": reference, "n": len(seeds),
                              "seeds": seeds, **paired_diffs(diffs, alpha)})
        fams = [family_of(e["method"], families) for e in group]
        size = Counter(fams)
        for e, adj, g in zip(group, holm_within([e["p_t"] for e in group], fams), fams):
            e.update(family=g, family_size=size[g], p_t_holm=adj, verdict=verdict(e["diff_mean"], adj, e["mde"], alpha))
        out += group
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


def statistics(rows: list[dict], reference: str = "random", metric: str = "test_acc", alpha: float = 0.05,
               families: dict | None = None) -> dict:
    """Everything results.json carries under ``statistics``."""
    summary = summarise(rows, (metric,))
    have_ref = any(r["method"] == reference for r in rows)
    return {"metric": metric, "reference": reference, "alpha": alpha, "power": POWER, "families": families or {},
            "tests": "paired t-test over seeds (two-sided), Holm-corrected within each family (one family, 'all', "
                     "when none is declared); Wilcoxon signed-rank (exact, two-sided) also reported and "
                     "Holm-corrected separately",
            "effects": f"paired SD; MDE = (t_(1-alpha/2, n-1) + t_({POWER}, n-1)) * SD / sqrt(n), and at alpha / "
                       f"(family size) for mde_holm; {100 * CI_LEVEL:.0f}% percentile bootstrap CI of the mean "
                       f"difference over seeds (B = {BOOTSTRAP_B}, seed {BOOTSTRAP_SEED}); verdict better/worse only "
                       f"when Holm p < alpha and |mean| >= MDE, else 'not resolved'",
            "paired": paired_vs(rows, reference, metric, alpha, families=families) if have_ref else [],
            "pooled": [e for ref in dict.fromkeys([reference, *BASELINES]) if any(r["method"] == ref for r in rows)
                       for e in pooled_vs(rows, ref, metric, alpha, families)],
            "ranks": average_ranks(summary, f"{metric}_mean")}
