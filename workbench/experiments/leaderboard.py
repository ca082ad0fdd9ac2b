"""The leaderboard of a benchmark as markdown: settings, accuracy per cell, what the seeds can resolve (paired SD and
minimum detectable effect per cell), each init minus the reference per Holm family with its verdict."""
from __future__ import annotations

import math

import numpy as np

from workbench.engine.stats import (
    ALL,
    BOOTSTRAP_B,
    BOOTSTRAP_SEED,
    CI_LEVEL,
    NOT_RESOLVED,
    OTHER,
    statistics,
)


def _pct(mean, std=None) -> str:
    return f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def _p(p) -> str:
    return "–" if math.isnan(p) else f"{p:.3g}"


def _pts(x) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}"


def _current(results: dict) -> dict:
    """The statistics of ``results``; recomputed from its rows when written before comparisons had verdicts."""
    st, suite = results["statistics"], results["suite"]
    if all("verdict" in e for e in st["paired"]):
        return st
    return statistics(results["rows"], st["reference"], st["metric"], st["alpha"], suite.get("families"))


def _families(st: dict) -> dict:
    """Holm family name -> its comparisons: the declared families in their order, then "other" (or "all")."""
    out: dict[str, list[dict]] = {name: [] for name in [*st["families"], OTHER, ALL]}
    for e in st["paired"]:
        out[e["family"]].append(e)
    return {name: es for name, es in out.items() if es}


def _stats_line(st: dict) -> str:
    fams = _families(st)
    ns = sorted({e["n"] for e in st["paired"]})
    if not st["families"]:
        holm = f"no families declared: Holm over all {len(st['paired'])} comparisons"
    else:
        holm = (f"Holm within each family (declared: {', '.join(f'`{name}`' for name in st['families'])}): "
                + "; ".join(f"`{name}` ({', '.join(dict.fromkeys(e['method'] for e in es))}: {len(es)} comparisons)"
                            for name, es in fams.items()))
    return (f"- statistics: paired over {' or '.join(map(str, ns))} seeds vs `{st['reference']}`; {holm}; "
            f"alpha {st['alpha']}, MDE at power {st['power']}")


def _lr_text(tune: dict) -> str:
    opt = tune.get("optimizer", "adamw")
    if opt == "adafactor-relative":
        return "Adafactor with relative steps"
    lr = f"lr grid {tune['lr_grid']}" if tune.get("lr_grid") else f"lr {tune['lr']}"
    sched = tune.get("schedule", "constant")
    warm = tune.get("warmup_steps", 0)
    return f"{opt} {lr}, {sched} schedule" + (f" after {warm} warm-up steps" if warm else "")


def _selection_text(tune: dict) -> str:
    if tune.get("selection", "dev") == "cv":
        return (f"{tune['cv_folds']}-fold cross-validation over train+dev (learning rate and step), then one run on "
                f"train+dev")
    return "best dev accuracy (dev = k per class) over learning rates and evaluated steps"


def _header(results: dict, st: dict) -> list[str]:
    suite, env, sess = results["suite"], results["environment"], results.get("sessions", [])
    limit = suite["test_limit"]
    lines = [f"# Leaderboard: {suite['name']}", "", suite.get("description") or "", "",
             f"- backbone: {suite['backbone']['name']}; prompt length {suite['prompt']['length']}; "
             f"steps ≤ {suite['tune']['steps']}, {_lr_text(suite['tune'])}, batch {suite['tune']['batch_size']}, "
             f"eval every {suite['tune']['eval_every']}, autocast {suite['tune']['autocast']} "
             f"(evaluation: {suite['tune'].get('eval_autocast', 'same')})",
             f"- selection: {_selection_text(suite['tune'])}",
             f"- seeds: {suite['seeds']} (k-shot train + dev of k per class; best-on-dev prompt; test never used "
             f"for selection)"]
    lines += [_stats_line(st)] if st["paired"] else []
    lines += ["- test sets: " + ("full" if limit is None else f"**subsample of at most {limit} examples per dataset** "
                                  f"(random, seed 0; same for every row)"),
              f"- machine: {env.get('platform')}, {env.get('cpu_count')} CPUs, torch threads "
              f"{env.get('torch_threads')}, device {env.get('device')}",
              f"- wall time {sum(s['wall_s'] for s in sess):.0f} s over {len(sess)} session(s) (last: "
              f"{sess[-1]['date'] if sess else '?'}); rows: {results.get('row_wall_s', 0):.0f} s wall, "
              f"{results.get('row_cpu_s', 0):.0f} s CPU (all threads)", ""]
    if sess and sess[-1].get("command"):
        lines += [f"Command: `{sess[-1]['command']}`", ""]
    return lines


def _accuracy_table(results: dict, st: dict) -> list[str]:
    cells = [tuple(c) for c in results["suite"]["cells"]]
    summ = {(s["dataset"], s["k"], s["method"]): s for s in results["summary"]}
    lines = ["## Test accuracy (%), mean ± std over seeds", "",
             "| method | " + " | ".join(f"{d} k={k}" for d, k in cells) + " | avg rank |",
             "|---|" + "---:|" * (len(cells) + 1)]
    for r in st["ranks"]:
        m = r["method"]
        vals = [(_pct(summ[(d, k, m)]["test_acc_mean"], summ[(d, k, m)]["test_acc_std"]) if (d, k, m) in summ
                 else "–") for d, k in cells]
        lines.append(f"| {m} | " + " | ".join(vals) + f" | {r['avg_rank']:.2f} |")
    return lines


def _spread(values) -> str:
    v = [x for x in values if not math.isnan(x)]
    return f"{_pts(float(np.median(v)))} ({_pts(min(v))}–{_pts(max(v))})" if v else "–"


def _mde_table(st: dict) -> list[str]:
    cells: dict[tuple, list[dict]] = {}
    for e in st["paired"]:
        cells.setdefault((e["dataset"], e["k"]), []).append(e)
    lines = ["", "## What the seeds can resolve: minimum detectable effect per cell (accuracy points)", "",
             f"Paired SD of the per-seed differences vs `{st['reference']}` and the MDE of the paired t-test "
             f"(level {st['alpha']}, power {st['power']}): MDE = (t(1-alpha/2, n-1) + t(power, n-1)) x SD / "
             f"sqrt(n); Holm MDE at alpha / (family size). Median (range) over the cell's comparisons.", "",
             "| cell | n | paired SD | MDE | MDE Holm |", "|---|---:|---:|---:|---:|"]
    for (ds, k), es in cells.items():
        lines.append(f"| {ds} k={k} | {'/'.join(map(str, sorted({e['n'] for e in es})))} | "
                     f"{_spread(e['paired_sd'] for e in es)} | {_spread(e['mde'] for e in es)} | "
                     f"{_spread(e['mde_holm'] for e in es)} |")
    return lines


def _family_table(name: str, es: list[dict]) -> list[str]:
    lines = ["", f"### Holm family `{name}`: {len(es)} comparisons", "",
             f"| dataset | k | method | Δ mean ± paired SD | {100 * CI_LEVEL:.0f}% CI | MDE | MDE Holm | p (t) | "
             "p Holm | p Wilcoxon | verdict |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for e in es:
        v = e["verdict"] if e["verdict"] == NOT_RESOLVED else f"**{e['verdict']}**"
        lines.append(f"| {e['dataset']} | {e['k']} | {e['method']} | {100 * e['diff_mean']:+.1f} ± "
                     f"{_pts(e['paired_sd'])} | [{100 * e['ci_low']:+.1f}, {100 * e['ci_high']:+.1f}] | "
                     f"{_pts(e['mde'])} | {_pts(e['mde_holm'])} | {_p(e['p_t'])} | {_p(e['p_t_holm'])} | "
                     f"{_p(e['p_wilcoxon'])} | {v} |")
    return lines


def _cite(es: list[dict]) -> str:
    return ", ".join(f"{e['method']} on {e['dataset']} k={e['k']}" for e in es) or "none"


def _verdict_lines(st: dict) -> list[str]:
    ref, paired = st["reference"], st["paired"]
    below = sum(1 for e in paired if not abs(e["diff_mean"]) >= e["mde"])
    unresolved = [e for e in paired if e["verdict"] == NOT_RESOLVED]
    return ["", f"Better than `{ref}` (Holm p < {st['alpha']} within its family and |Δ| ≥ MDE): "
            f"{_cite([e for e in paired if e['verdict'] == 'better'])}.", "",
            f"Worse than `{ref}` (same rule): {_cite([e for e in paired if e['verdict'] == 'worse'])}.", "",
            f"Not resolved: {len(unresolved)} of {len(paired)} comparisons ({below} with |Δ| below their MDE). A "
            f"comparison that is not resolved is neither a win nor a loss: the seeds run cannot tell it from "
            f"`{ref}`."]


def _paired_section(st: dict) -> list[str]:
    lines = _mde_table(st) + [
        "", f"## Paired difference vs `{st['reference']}` (test accuracy points)", "",
        f"Per comparison: mean of the per-seed differences ± their SD; {100 * CI_LEVEL:.0f}% percentile bootstrap CI "
        f"of the mean over seeds (B = {BOOTSTRAP_B:,}, RNG seed {BOOTSTRAP_SEED}; coarse with few seeds); the MDE; the "
        f"paired t-test (two-sided), Holm-corrected within the comparison's family; the Wilcoxon signed-rank p "
        f"(exact, two-sided; its minimum with 5 seeds is 0.0625; its Holm-corrected value is in results.json). "
        f"Verdict: better / worse only when Holm p < {st['alpha']} and |Δ| ≥ MDE; otherwise not resolved."]
    for name, es in _families(st).items():
        lines += _family_table(name, es)
    return lines + _verdict_lines(st)


def _pooled_section(st: dict) -> list[str]:
    """Each init against the reference and the baselines on the mean over the cells of each k."""
    pooled = st.get("pooled") or []
    if not pooled:
        return []
    lines = ["", "## Mean over the cells of each k: each init against the reference and the baselines", "",
             "Per seed, the mean over the k's cells of the difference in test accuracy; then the paired statistics over "
             "seeds (as above; Holm within each family and reference).", "",
             "| vs | k | method | cells | n | Δ mean ± paired SD | 95% CI | MDE | p (t) | p Holm | verdict |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for e in pooled:
        v = e["verdict"] if e["verdict"] == NOT_RESOLVED else f"**{e['verdict']}**"
        lines.append(f"| {e['reference']} | {e['k']} | {e['method']} | {', '.join(e['cells'])} | {e['n']} | "
                     f"{100 * e['diff_mean']:+.1f} ± {_pts(e['paired_sd'])} | [{100 * e['ci_low']:+.1f}, "
                     f"{100 * e['ci_high']:+.1f}] | {_pts(e['mde'])} | {_p(e['p_t'])} | {_p(e['p_t_holm'])} | {v} |")
    return lines


def _meta_table(results: dict) -> list[str]:
    """One line per meta-training run the rows used: its budget, the step selected on meta-validation, whether
    meta-validation ever improved on step 0, and what it was decontaminated against."""
    runs: dict[str, dict] = {}
    for r in results["rows"]:
        m = r.get("meta")
        if m and m.get("cache_key"):
            runs.setdefault(m["cache_key"], {**m, "method": r["method"], "targets": set()})["targets"].add(r["dataset"])
    if not runs:
        return []
    lines = ["", "## Meta-training runs behind the meta inits", "",
             "| init | used for | meta-steps run / planned | task visits | inner steps | selected step | meta-val improved "
             "| decontaminated against |", "|---|---|---:|---:|---:|---:|---|---|"]
    for m in sorted(runs.values(), key=lambda m: (m["method"], sorted(m["targets"]))):
        b = m.get("budget") or {}
        lines.append(f"| {m['method']} | {', '.join(sorted(m['targets']))} | {b.get('steps_run')} / {b.get('steps')} | "
                     f"{b.get('task_visits')} | {b.get('inner_steps')} ({b.get('inner_optimizer')}) | "
                     f"{m.get('selected_step')} | {'yes' if m.get('meta_val_improved') else '**no**'} | "
                     f"{', '.join(m.get('decontaminated_against') or []) or '–'} |")
    return lines


CURVE_METRICS = (("init_test_acc", "init only (step 0)"), ("curve_auc", "learning-curve AUC"))


def _curve_table(results: dict) -> list[str]:
    """Mean test accuracy over cells and seeds at each point of the learning curve, its AUC, and how often the
    selected step was the last step run (a run that ends while still improving)."""
    tuned = [r for r in results["rows"] if r.get("curve")]
    if not tuned:
        return []
    budgets = [p["budget"] for p in tuned[0]["curve"]]
    by: dict[str, list[dict]] = {}
    for r in tuned:
        by.setdefault(r["method"], []).append(r)
    lines = ["", "## Learning curve: test accuracy (%) of the prompt selected within each step budget", "",
             "Mean over every cell and seed (budget 0 = the init itself, untuned). AUC: trapezoid over log2(1 + "
             "budget), normalised to an accuracy. Last step: the share of runs whose selected step was the last one "
             "run without early stopping (high = runs end before they converge).", "",
             "| method | " + " | ".join(f"B={b}" for b in budgets) + " | AUC | last step |",
             "|---|" + "---:|" * (len(budgets) + 2)]
    for m, rs in sorted(by.items(), key=lambda kv: -np.mean([r["curve_auc"] for r in kv[1]])):
        pts = [_pct(float(np.mean([r["curve"][i]["test_acc"] for r in rs]))) for i in range(len(budgets))]
        last = np.mean([r["best_step"] == r["steps_run"] and not r.get("stopped_early") for r in rs])
        lines.append(f"| {m} | " + " | ".join(pts) + f" | {_pct(float(np.mean([r['curve_auc'] for r in rs])))} | "
                     f"{100 * last:.0f}% |")
    for key, title in CURVE_METRICS:
        st = results.get("curve_statistics", {}).get(key)
        if st and st["paired"]:
            lines += _verdict_counts(st, title)
    return lines


def _verdict_counts(st: dict, title: str) -> list[str]:
    lines = ["", f"Paired vs `{st['reference']}` on the {title} (same tests and families as above): per method, "
             f"the mean Δ over cells (points) and the verdicts.", "",
             "| method | mean Δ | better | worse | not resolved |", "|---|---:|---:|---:|---:|"]
    by: dict[str, list[dict]] = {}
    for e in st["paired"]:
        by.setdefault(e["method"], []).append(e)
    for m, es in by.items():
        count = {v: sum(e["verdict"] == v for e in es) for v in ("better", "worse", NOT_RESOLVED)}
        lines.append(f"| {m} | {100 * np.mean([e['diff_mean'] for e in es]):+.1f} | {count['better']} | "
                     f"{count['worse']} | {count[NOT_RESOLVED]} |")
    return lines


def leaderboard_markdown(results: dict) -> str:
    """The leaderboard (test accuracy %, mean ± std over seeds; average rank), what the seeds can resolve (MDE per
    cell), and the paired comparisons vs the reference, one table per Holm family, each with its verdict."""
    st = _current(results)
    lines = _header(results, st) + _accuracy_table(results, st)
    if st["reference"] not in results["suite"]["methods"]:
        lines += ["", f"No paired tests: the reference `{st['reference']}` is not among the methods."]
    if st["paired"]:
        lines += _paired_section(st)
    lines += _pooled_section(st) + _curve_table(results) + _meta_table(results)
    return "\n".join(lines) + "\n"
