"""Figures and tables from a run directory (``metrics.jsonl``, ``results.json``): pure functions, no training.

``dev_curves`` draws dev accuracy (%) over tuning steps (one line per method: the mean over seeds, thin per-seed lines
behind it, the baselines as flat dashed lines at their mean dev accuracy; one panel per dataset). ``summary_bars``
shows test accuracy (%) per method as a dot with its std over seeds, zero-shot and chance as reference lines, and
``summary_table`` the test numbers. Every figure function takes ``names`` (method -> display label, e.g.
``{"file": "meta-fomaml"}``); styled by :mod:`workbench.viz.style`, saved with :func:`workbench.viz.output.save_figure`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.engine.runs import read_run
from workbench.viz.style import INIT_COLOURS, dot_interval, human, init_colour, integer_ticks, \
    reference_lines, styled, title

BASELINES = ("zero-shot", "linear-probe")
ZERO_SHOT = "zero-shot"


FEWSHOT_RUN = "expected the --out folder of a fewshot run"


def load_metrics(run_dir) -> pd.DataFrame:
    """Every record of ``<run_dir>/metrics.jsonl`` as one row (columns: event, dataset, method, seed, step, ...)."""
    return pd.DataFrame.from_records(read_run(run_dir, FEWSHOT_RUN).metrics)


def load_results(run_dir) -> dict:
    return read_run(run_dir, FEWSHOT_RUN).results


def _method_order(df: pd.DataFrame) -> list[str]:
    """Methods in run order (as first logged), so colours match across figures of the same run."""
    return list(dict.fromkeys(df["method"])) if "method" in df else []


def label_of(method: str, names: dict | None = None) -> str:
    """The display label of ``method``: ``names[method]`` when given, else the method."""
    return (names or {}).get(method, method)


def colour_of(method: str, names: dict | None = None) -> str:
    """The colour of ``method``: its label's when the label is a known init (``file`` shown as ``mpt-fomaml`` is
    coloured as mpt-fomaml everywhere), else the method's own."""
    label = label_of(method, names)
    return init_colour(label if label.split(":")[0].split(" ")[0] in INIT_COLOURS else method)


def _one(values):
    """The single value of ``values`` (ignoring NaN), else None."""
    vals = {v for v in values if pd.notna(v)}
    return next(iter(vals)) if len(vals) == 1 else None


def _run_title(what: str, rows: pd.DataFrame, seeds, datasets, size: str = "n_test") -> str:
    """``what · datasets, k=.., n seeds, test n=..`` from the run's row records (dev n when ``size="n_dev"``)."""
    k = _one(rows["k"]) if "k" in rows else None
    n = _one(rows[size]) if size in rows else None
    extra = f"dev n={int(n)}" if size == "n_dev" and n is not None else None
    return title(what, dataset=", ".join(map(str, datasets)), k=None if k is None else int(k), seeds=len(seeds) or None,
                 test_n=int(n) if size == "n_test" and n is not None else None, extra=extra)


def _seed_lines(fig, m: pd.DataFrame, method: str, label: str, colour: str, ds, col: int) -> None:
    for seed in dict.fromkeys(m["seed"]):
        s = m[m["seed"] == seed]
        fig.add_trace(go.Scatter(
            x=s["step"], y=100 * s["dev_acc"], mode="lines", name=f"{label} seed {seed}", legendgroup=method,
            showlegend=False, opacity=0.35, line=dict(color=colour, width=1),
            hovertemplate=f"{label}<br>seed {seed}<br>step %{{x}}<br>dev acc %{{y:.1f}}%<extra>{ds}</extra>"),
            row=1, col=col)


def _tuned_line(fig, m: pd.DataFrame, method: str, names, ds, col: int, legend: dict) -> None:
    label, colour = label_of(method, names), colour_of(method, names)
    seeds = list(dict.fromkeys(m["seed"]))
    if len(seeds) > 1:
        _seed_lines(fig, m, method, label, colour, ds, col)
    g = m.groupby("step")["dev_acc"].agg(["mean", "count"]).reset_index()
    seed_label = f"mean of {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    fig.add_trace(go.Scatter(
        x=g["step"], y=100 * g["mean"], mode="lines+markers", name=label, customdata=g[["count"]],
        line=dict(color=colour, width=3), marker=dict(size=5),
        hovertemplate=f"{label}<br>{seed_label} (n=%{{customdata[0]}} at this step)<br>step %{{x}}"
                      f"<br>dev acc %{{y:.1f}}%<extra>{ds}</extra>", **legend), row=1, col=col)


def _flat_line(fig, r: pd.DataFrame, method: str, names, ds, col: int, max_step: int, legend: dict) -> None:
    label = label_of(method, names)
    seeds = ", ".join(str(s) for s in r["seed"])
    acc = 100 * float(r["dev_acc"].mean())
    fig.add_trace(go.Scatter(
        x=[0, max_step], y=[acc, acc], mode="lines", name=label,
        line=dict(color=colour_of(method, names), width=2, dash="dash"),
        hovertemplate=f"{label} (no tuning)<br>seeds {seeds}<br>step %{{x}}<br>dev acc (mean) "
                      f"{acc:.1f}%<extra>{ds}</extra>", **legend), row=1, col=col)


def dev_curves(run_dir, names: dict | None = None):
    """Dev accuracy (%) over steps: per method the mean over seeds (thick), each seed (thin), baselines (dashed).
    ``names`` maps a method to its display label (e.g. ``{"file": "meta-fomaml"}``)."""
    df = load_metrics(run_dir)
    if df.empty or "event" not in df:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'} holds no records")
    evals, rows = df[df["event"] == "eval"], df[df["event"] == "row"]
    evals = evals.dropna(subset=["step", "dev_acc"]).astype({"step": int}) if len(evals) else evals
    datasets = list(dict.fromkeys(list(rows.get("dataset", [])) + list(evals.get("dataset", []))))
    methods = _method_order(df[df["event"].isin(["eval", "row"])])
    fig = make_subplots(rows=1, cols=max(1, len(datasets)), subplot_titles=datasets if len(datasets) > 1 else None)
    shown: set[str] = set()
    max_step = int(evals["step"].max()) if len(evals) else 1
    for col, ds in enumerate(datasets, 1):
        ev = evals[evals["dataset"] == ds]
        for method in methods:
            m = ev[ev["method"] == method].sort_values(["seed", "step"])
            legend = dict(legendgroup=method, showlegend=method not in shown)
            r = rows[(rows["dataset"] == ds) & (rows["method"] == method)] if len(rows) else rows
            if len(m):
                _tuned_line(fig, m, method, names, ds, col, legend)
            elif len(r):
                _flat_line(fig, r, method, names, ds, col, max_step, legend)
            else:
                continue
            shown.add(method)
    integer_ticks(fig, [0, max_step], "x")
    fig.update_yaxes(title_text=human("dev_acc"), col=1)
    seeds = list(dict.fromkeys(df["seed"].dropna())) if "seed" in df else []
    styled(fig, title=_run_title("Dev accuracy during prompt tuning", rows, seeds, datasets, "n_dev"),
           x=human("step"), legend="init / baseline")
    fig.update_layout(hovermode="closest")
    return fig


def summary_table(run_dir, percent: bool = True) -> pd.DataFrame:
    """The run's summary (dataset x method): n seeds and mean/std of test acc, test macro-F1 and dev acc.

    Values are percentages rounded to 2 decimals when ``percent`` (the default), else fractions as stored.
    """
    res = load_results(run_dir)
    summary = res.get("summary")
    if not summary:
        raise ValueError(f"{Path(run_dir) / 'results.json'} has no summary entries")
    out = pd.DataFrame(summary)
    cols = ["dataset", "method", "n"]
    for key in ("test_acc", "test_f1", "dev_acc"):
        out = out.rename(columns={f"{key}_mean": key})
        cols += [key, f"{key}_std"]
        if percent:
            out[[key, f"{key}_std"]] = (100 * out[[key, f"{key}_std"]]).round(2)
    return out[cols].reset_index(drop=True)


def chance_of(res: dict, dataset) -> float | None:
    """Chance accuracy (%) of ``dataset``: 100 / its number of labels, when the results (fewshot's or a
    benchmark's ``results.json``) describe it."""
    labels = ((res.get("data") or {}).get(dataset) or {}).get("labels")
    return 100.0 / len(labels) if labels else None


def _dots(fig, t: pd.DataFrame, names, col: int) -> None:
    """One dot ± std per method of ``t`` (a dataset's summary rows) in panel ``col``, coloured by init."""
    labels = [label_of(m, names) for m in t["method"]]
    start = len(fig.data)
    dot_interval(fig, labels, t["test_acc"].tolist(), t["test_acc_std"].tolist(), n=t["n"].tolist(), row=1, col=col,
                 showlegend=False, hover_extra=[f"macro-F1 {f:.1f}%" for f in t["test_f1"]])
    for trace, method in zip(fig.data[start:], t["method"]):
        trace.marker.color = trace.error_y.color = colour_of(method, names)


def summary_bars(run_dir, names: dict | None = None):
    """Test accuracy (%) per method as a dot with its std over seeds, one panel per dataset; zero-shot and chance
    as reference lines. ``names`` maps a method to its display label (e.g. ``{"file": "meta-fomaml"}``)."""
    table = summary_table(run_dir, percent=True)
    res = load_results(run_dir)
    rows = pd.DataFrame(res.get("rows") or [])
    datasets = list(dict.fromkeys(table["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets if len(datasets) > 1 else None,
                        horizontal_spacing=0.08)
    for col, ds in enumerate(datasets, 1):
        t = table[table["dataset"] == ds]
        _dots(fig, t[t["method"] != ZERO_SHOT], names, col)
        zs = t.loc[t["method"] == ZERO_SHOT, "test_acc"]
        reference_lines(fig, float(zs.iloc[0]) if len(zs) else None, chance_of(res, ds), row=1, col=col)
        lo = [*(t["test_acc"] - t["test_acc_std"]), chance_of(res, ds) or 100]
        hi = [*(t["test_acc"] + t["test_acc_std"])]
        pad = max(2.0, 0.08 * (max(hi) - min(lo)))
        fig.update_yaxes(range=[max(0.0, min(lo) - pad), min(100.0, max(hi) + pad)], row=1, col=col)
    fig.update_yaxes(title_text=human("test_acc"), col=1)
    seeds = sorted({s for s in rows.get("seed", [])})
    styled(fig, title=_run_title("Test accuracy (mean ± std over seeds)", rows, seeds, datasets), x="init / baseline")
    fig.update_layout(showlegend=False)
    return fig
