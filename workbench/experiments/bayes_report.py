"""BayesPrompt modes against every baseline, paired over seeds, in accuracy and calibration; a markdown report.

:func:`compare` takes the rows of one or more ``bayes`` runs (``results.json`` → ``rows``) and, for every
(dataset, k) cell, every BayesPrompt mode (a method named ``bayes-*``) and every other method of the cell (the
references: ``zero-shot``, ``random``, ``vocab``, ...), computes the per-seed differences
``metric(mode, seed) - metric(reference, seed)`` over the seeds both have, their mean and sample std, the two-sided
paired t-test and the Wilcoxon signed-rank test (:mod:`workbench.stats`). The t-test p-values are Holm-corrected
over all comparisons of the same metric in the report. Accuracy: positive is better. ECE: negative is better.

:func:`report` renders the rows as markdown: per cell, every method's test accuracy and ECE (mean ± std, %), then
the comparisons. :func:`load_runs` reads several run directories into one row list and refuses a cell whose rows
come from runs with different protocols (tuning, prompt, backbone, density or test settings), or a row that two runs
both hold. ``python -m workbench bayes-report RUN [RUN ...] --out report.md`` is the command; ``bayes`` itself also
writes ``report.md`` and stores the comparisons in ``results.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

from workbench.engine.runs import RESULTS, RunError, read_run
from workbench.engine.stats import holm, paired_diffs, summarise
from workbench.methods.bayes import BayesError

METRICS = (("test_acc", "acc"), ("test_ece", "ECE"))
# config fields that do not change what a row measures (which cells and seeds a run covers, where it writes)
_NOT_PROTOCOL = ("datasets", "seeds", "out", "overwrite", "modes", "baselines")


def is_mode(method: str) -> bool:
    return method.startswith("bayes-")


def _cells(rows):
    return list(dict.fromkeys((r["dataset"], int(r["k"])) for r in rows))


def compare(rows: list[dict], metrics=tuple(m for m, _ in METRICS)) -> list[dict]:
    """Every BayesPrompt mode against every other method of its (dataset, k) cell, paired over seeds."""
    by = {(r["dataset"], int(r["k"]), r["method"], r["seed"]): r for r in rows}
    out = []
    for ds, k in _cells(rows):
        methods = list(dict.fromkeys(r["method"] for r in rows if (r["dataset"], int(r["k"])) == (ds, k)))
        for mode in (m for m in methods if is_mode(m)):
            for ref in (m for m in methods if not is_mode(m)):
                seeds = sorted(s for (d, kk, m, s) in by if (d, kk, m) == (ds, k, mode) and (ds, k, ref, s) in by)
                if not seeds:
                    continue
                e = {"dataset": ds, "k": k, "method": mode, "reference": ref, "n": len(seeds), "seeds": seeds}
                for metric in metrics:
                    e[metric] = paired_diffs([by[(ds, k, mode, s)][metric] - by[(ds, k, ref, s)][metric] for s in seeds])
                out.append(e)
    for metric in metrics:
        for e, adj in zip(out, holm([e[metric]["p_t"] for e in out])):
            e[metric]["p_t_holm"] = adj
    return out


def _pct(mean, std):
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _p(p):
    if p != p:
        return "=—"
    return "<0.001" if p < 0.001 else f"={p:.3f}" if p < 0.01 else f"={p:.2f}"


def report(rows: list[dict], title: str = "BayesPrompt modes against baselines", protocol: list[str] | None = None,
           comps: list[dict] | None = None) -> str:
    """Markdown: per cell, each method's accuracy and ECE; then each mode minus each reference, paired over seeds
    (``comps``: :func:`compare` of ``rows``, when the caller already has it)."""
    summ = summarise(rows, ("test_acc", "test_ece", "dev_acc"))
    comps = compare(rows) if comps is None else comps
    lines = [f"# {title}", ""]
    if protocol:
        lines += protocol + [""]
    lines += ["Test accuracy and expected calibration error (15 equal-width bins), %, mean ± std over seeds; every "
              "prompt selected on dev.", "",
              "| dataset | k | method | n | test acc | test ECE | dev acc |", "|---|---|---|---|---|---|---|"]
    for s in summ:
        lines.append(f"| {s['dataset']} | {s['k']} | {s['method']} | {s['n']} | {_pct(s['test_acc_mean'], s['test_acc_std'])} "
                     f"| {_pct(s['test_ece_mean'], s['test_ece_std'])} | {_pct(s['dev_acc_mean'], s['dev_acc_std'])} |")
    lines += ["", "Each BayesPrompt mode minus each reference, points, paired over seeds: per-seed differences "
              "(mean; two-sided paired t p; Holm-adjusted p over all comparisons of that metric). "
              "Accuracy: + is better. ECE: − is better.", "",
              "| dataset | k | mode | reference | n | Δ acc per seed (mean; p; Holm p) | Δ ECE per seed (mean; p; Holm p) |",
              "|---|---|---|---|---|---|---|"]
    for e in comps:
        cells = []
        for metric, _ in METRICS:
            m = e[metric]
            cells.append(" ".join(f"{100 * x:+.1f}" for x in m["diffs"]) +
                         f" ({100 * m['diff_mean']:+.1f}; p{_p(m['p_t'])}; Holm p{_p(m['p_t_holm'])})")
        lines.append(f"| {e['dataset']} | {e['k']} | {e['method']} | {e['reference']} | {e['n']} | {cells[0]} | {cells[1]} |")
    n_acc = sum(1 for e in comps if e["test_acc"]["p_t_holm"] < 0.05)
    n_ece = sum(1 for e in comps if e["test_ece"]["p_t_holm"] < 0.05)
    lines += ["", f"{len(comps)} comparisons; Holm-adjusted p < 0.05: {n_acc} in accuracy, {n_ece} in ECE."]
    return "\n".join(lines) + "\n"


def format_comparisons(comps: list[dict]) -> str:
    """Plain text for the terminal: one line per mode x reference."""
    head = f"{'dataset':<10} {'k':>3} {'mode':<16} {'vs':<10} {'Δ acc':>7} {'p':>6} {'Δ ECE':>7} {'p':>6}"
    lines = [head, "-" * len(head)]
    for e in comps:
        a, c = e["test_acc"], e["test_ece"]
        lines.append(f"{e['dataset']:<10} {e['k']:>3} {e['method']:<16} {e['reference']:<10} {100 * a['diff_mean']:+7.1f} "
                     f"{_p(a['p_t']).lstrip('='):>6} {100 * c['diff_mean']:+7.1f} {_p(c['p_t']).lstrip('='):>6}")
    return "\n".join(lines)


def _protocol(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _NOT_PROTOCOL}


def protocol_line(path, res: dict) -> str:
    c = res["config"]
    t, b = c["tune"], c["bayes"]
    return (f"- `{path}`: {', '.join(res.get('data', {}) or sorted({r['dataset'] for r in res['rows']}))} at k={c['k']}, "
            f"seeds {','.join(map(str, c['seeds']))}; {t['steps']} steps (batch {t['batch_size']}, lr {t['lr']}, "
            f"dev every {t['eval_every']}), prompt length {c['prompt']['length']}, test limit {c['test_limit'] or 'none'}, "
            f"ensemble R={c['ensemble_size']}; density `{b['density_data']}`, features `{b['features']}`, "
            f"{b['covariance']} covariance, PCA {b['pca_dim'] or 'auto (min(points, particles) // 8)'}, {b['iterations']} SVGD iterations; "
            f"backbone `{c['backbone']['name']}`; {res.get('wall_s', float('nan')):.0f} s wall")


def load_runs(paths) -> tuple[list[dict], list[str]]:
    """Rows of several ``bayes`` run directories and one protocol line per run; see the module docstring."""
    rows, lines, owner, cell_protocol = [], [], {}, {}
    for path in map(Path, paths):
        f = path / RESULTS
        try:
            res = read_run(path, "not a finished `python -m workbench bayes` run directory").results
            run_rows, cfg = res["rows"], res["config"]
        except RunError as e:
            raise BayesError(str(e)) from None
        except (KeyError, TypeError) as e:
            raise BayesError(f"{f}: not a bayes results file ({type(e).__name__}: {e})") from None
        if "bayes" not in cfg or "ensemble_size" not in cfg:
            raise BayesError(f"{f}: not a `bayes` run (its config has no bayes section)")
        proto = json.dumps(_protocol(cfg), sort_keys=True)
        for r in run_rows:
            cell, key = (r["dataset"], int(r["k"])), (r["dataset"], int(r["k"]), r["method"], r["seed"])
            if key in owner:
                raise BayesError(f"{f}: row {r['dataset']} k={r['k']} {r['method']} seed {r['seed']} is also in "
                                 f"{owner[key]}; give each row once")
            seen = cell_protocol.setdefault(cell, (proto, f))
            if seen[0] != proto:
                raise BayesError(f"{f}: cell {cell[0]} k={cell[1]} mixes protocols with {seen[1]} (their configs "
                                 f"differ outside {list(_NOT_PROTOCOL)}); report them separately")
            owner[key] = f
            rows.append(r)
        lines.append(protocol_line(path, res))
    return rows, lines
