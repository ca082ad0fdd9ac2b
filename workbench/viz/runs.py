"""Figures and tables from a run directory (``metrics.jsonl``, ``results.json``): pure functions, no training.

``dev_curves`` draws dev accuracy over tuning steps (one line per method: the mean over seeds, thin per-seed lines
behind it, the baselines as flat dashed lines at their mean dev accuracy; one panel per dataset). ``summary_bars``
and ``summary_table`` show the test numbers (mean ± std over seeds). ``save_html`` writes a self-contained page.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.engine.runs import read_run

BASELINES = ("zero-shot", "linear-probe")
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")


FEWSHOT_RUN = "expected the --out folder of a fewshot run"


def load_metrics(run_dir) -> pd.DataFrame:
    """Every record of ``<run_dir>/metrics.jsonl`` as one row (columns: event, dataset, method, seed, step, ...)."""
    return pd.DataFrame.from_records(read_run(run_dir, FEWSHOT_RUN).metrics)


def load_results(run_dir) -> dict:
    return read_run(run_dir, FEWSHOT_RUN).results


def _method_order(df: pd.DataFrame) -> list[str]:
    """Methods in run order (as first logged), so colours match across figures of the same run."""
    return list(dict.fromkeys(df["method"])) if "method" in df else []


def _colors(methods) -> dict:
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(methods)}


def dev_curves(run_dir):
    """Dev accuracy over steps: per method the mean over seeds (thick), each seed (thin), baselines (dashed)."""

    df = load_metrics(run_dir)
    if df.empty or "event" not in df:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'} holds no records")
    evals, rows = df[df["event"] == "eval"], df[df["event"] == "row"]
    evals = evals.dropna(subset=["step", "dev_acc"]).astype({"step": int}) if len(evals) else evals
    datasets = list(dict.fromkeys(list(rows.get("dataset", [])) + list(evals.get("dataset", []))))
    methods = _method_order(df[df["event"].isin(["eval", "row"])])
    color = _colors(methods)
    fig = make_subplots(rows=1, cols=max(1, len(datasets)), shared_yaxes=True,
                        subplot_titles=datasets if len(datasets) > 1 else None)
    shown: set[str] = set()
    max_step = int(evals["step"].max()) if len(evals) else 1
    for col, ds in enumerate(datasets, 1):
        ev = evals[evals["dataset"] == ds]
        for method in methods:
            m = ev[ev["method"] == method].sort_values(["seed", "step"])
            legend = dict(legendgroup=method, showlegend=method not in shown)
            if len(m):
                seeds = list(dict.fromkeys(m["seed"]))
                if len(seeds) > 1:
                    for seed in seeds:
                        s = m[m["seed"] == seed]
                        fig.add_trace(go.Scatter(
                            x=s["step"], y=s["dev_acc"], mode="lines", name=f"{method} seed {seed}",
                            legendgroup=method, showlegend=False, opacity=0.35,
                            line=dict(color=color[method], width=1),
                            hovertemplate=f"{method}<br>seed {seed}<br>step %{{x}}<br>dev acc %{{y:.3f}}<extra>{ds}"
                                          f"</extra>"), row=1, col=col)
                g = m.groupby("step")["dev_acc"].agg(["mean", "count"]).reset_index()
                seed_label = f"mean of {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
                fig.add_trace(go.Scatter(
                    x=g["step"], y=g["mean"], mode="lines+markers", name=method, customdata=g[["count"]],
                    line=dict(color=color[method], width=3), marker=dict(size=5),
                    hovertemplate=f"{method}<br>{seed_label} (n=%{{customdata[0]}} at this step)<br>step %{{x}}"
                                  f"<br>dev acc %{{y:.3f}}<extra>{ds}</extra>", **legend), row=1, col=col)
            else:
                r = rows[(rows["dataset"] == ds) & (rows["method"] == method)] if len(rows) else rows
                if not len(r):
                    continue
                seeds = ", ".join(str(s) for s in r["seed"])
                acc = float(r["dev_acc"].mean())
                fig.add_trace(go.Scatter(
                    x=[0, max_step], y=[acc, acc], mode="lines", name=method,
                    line=dict(color=color[method], width=2, dash="dash"),
                    hovertemplate=f"{method} (no tuning)<br>seeds {seeds}<br>step %{{x}}<br>dev acc (mean) "
                                  f"{acc:.3f}<extra>{ds}</extra>", **legend), row=1, col=col)
            shown.add(method)
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_yaxes(title_text="dev accuracy", row=1, col=1)
    title = "Dev accuracy during prompt tuning" + (f" ({datasets[0]})" if len(datasets) == 1 else "")
    fig.update_layout(title=title, hovermode="closest", template="plotly_white", legend_title_text="method")
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


def summary_bars(run_dir):
    """Test accuracy (mean ± std over seeds, %) per method; one colour per dataset."""

    table = summary_table(run_dir, percent=True)
    fig = go.Figure()
    for ds, t in table.groupby("dataset", sort=False):
        fig.add_trace(go.Bar(
            x=t["method"], y=t["test_acc"], name=ds, error_y=dict(type="data", array=t["test_acc_std"], visible=True),
            customdata=t[["test_acc_std", "n"]],
            hovertemplate=f"{ds}<br>%{{x}}<br>test acc %{{y:.1f}} ± %{{customdata[0]:.1f}} %<br>"
                          f"n=%{{customdata[1]}} seeds<extra></extra>"))
    fig.update_layout(title="Test accuracy (mean ± std over seeds)", barmode="group", template="plotly_white",
                      yaxis_title="test accuracy (%)", xaxis_title="method", legend_title_text="dataset",
                      showlegend=table["dataset"].nunique() > 1)
    return fig
