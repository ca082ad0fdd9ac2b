"""Figures and tables from a benchmark directory (``results.json`` written by :mod:`workbench.benchmark`).

Pure functions, no training: :func:`load_benchmark`, :func:`cell_table` (long form: one row per dataset x k x method),
:func:`leaderboard_table` (methods x cells, mean ± std, average rank), :func:`bars` (per-dataset bars with error bars),
:func:`k_curve` (accuracy against k), :func:`rank_plot` (average rank, per-cell ranks behind it),
:func:`curve_table` and :func:`learning_curves` (test accuracy of the prompt selected within each step budget, when the
suite set ``tune.budgets``) and :func:`export_markdown`. Figures are plotly with hover text; save them with :func:`workbench.viz.save_html`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from workbench.engine.runs import RESULTS, RunError, atomic_write, read_run
from workbench.engine.stats import rank_with_ties
from workbench.experiments.benchmark import ROWS
from workbench.experiments.leaderboard import leaderboard_markdown


def load_benchmark(bench_dir) -> dict:
    run = read_run(bench_dir, "expected a finished benchmark's --out folder")
    if run.has(ROWS) and not run.has(RESULTS):
        raise RunError(f"{run.path / RESULTS}: no such file: the benchmark is not finished ({ROWS} is there: resume "
                       "the benchmark with --resume to finish it)")
    return run.results


def _res(x) -> dict:
    return x if isinstance(x, dict) else load_benchmark(x)


def cell_table(results) -> pd.DataFrame:
    """dataset, k, cell, method, test_acc (mean, %), test_acc_std, test_f1, n, rank (within the cell)."""

    r = _res(results)
    df = pd.DataFrame([{"dataset": s["dataset"], "k": s["k"], "cell": f"{s['dataset']} k={s['k']}",
                        "method": s["method"], "test_acc": 100 * s["test_acc_mean"],
                        "test_acc_std": 100 * s["test_acc_std"], "test_f1": 100 * s["test_f1_mean"], "n": s["n"]}
                       for s in r["summary"]])
    df["rank"] = 0.0
    for _, idx in df.groupby("cell", sort=False).groups.items():
        df.loc[idx, "rank"] = rank_with_ties(df.loc[idx, "test_acc"].tolist())
    return df


def method_order(results) -> list[str]:
    return [e["method"] for e in _res(results)["statistics"]["ranks"]]


def leaderboard_table(results) -> pd.DataFrame:
    """One row per method (best average rank first): "mean ± std" per cell, then the average rank."""
    r = _res(results)
    df = cell_table(r)
    cells = list(dict.fromkeys(df["cell"]))
    out = df.assign(value=df["test_acc"].map("{:.1f}".format) + " ± " + df["test_acc_std"].map("{:.1f}".format))
    table = out.pivot(index="method", columns="cell", values="value").reindex(columns=cells)
    ranks = {e["method"]: e["avg_rank"] for e in r["statistics"]["ranks"]}
    table["avg rank"] = [round(ranks[m], 2) for m in table.index]
    return table.loc[method_order(r)].reset_index()


def _colors(methods) -> dict:
    pal = px.colors.qualitative.Plotly + px.colors.qualitative.Dark24
    return {m: pal[i % len(pal)] for i, m in enumerate(methods)}


def bars(results):
    """Test accuracy per method, one panel per (dataset, k) cell, error bars = std over seeds."""

    r = _res(results)
    df = cell_table(r)
    order = method_order(r)
    fig = px.bar(df, x="method", y="test_acc", error_y="test_acc_std", color="method", facet_col="cell",
                 facet_col_wrap=4, category_orders={"method": order, "cell": list(dict.fromkeys(df["cell"]))},
                 color_discrete_map=_colors(order), hover_data={"n": True, "test_f1": ":.1f", "rank": True},
                 labels={"test_acc": "test acc (%)"})
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_layout(title="test accuracy (mean ± std over seeds)", showlegend=False)
    return fig


def k_curve(results):
    """Test accuracy against k, one line per method, one panel per dataset (datasets run at several k)."""

    r = _res(results)
    df = cell_table(r)
    multi = df.groupby("dataset")["k"].nunique()
    keep = multi[multi > 1].index.tolist() or df["dataset"].unique().tolist()
    df = df[df["dataset"].isin(keep)].sort_values("k")
    order = method_order(r)
    fig = px.line(df, x="k", y="test_acc", error_y="test_acc_std", color="method", facet_col="dataset",
                  markers=True, category_orders={"method": order}, color_discrete_map=_colors(order),
                  hover_data={"n": True, "rank": True}, labels={"test_acc": "test acc (%)", "k": "k (per class)"})
    fig.update_xaxes(type="log", tickvals=sorted(df["k"].unique()))
    fig.update_layout(title="accuracy against k (mean ± std over seeds)")
    return fig


def rank_plot(results):
    """Average rank per method (bars, 1 = best) with each cell's rank as a dot."""

    r = _res(results)
    df = cell_table(r)
    ranks = r["statistics"]["ranks"]
    order = [e["method"] for e in ranks]
    fig = go.Figure(go.Bar(y=order, x=[e["avg_rank"] for e in ranks], orientation="h", name="average rank",
                           marker_color=[_colors(order)[m] for m in order],
                           customdata=[[e["n_cells"]] for e in ranks],
                           hovertemplate="%{y}: average rank %{x:.2f} over %{customdata[0]} cells<extra></extra>"))
    fig.add_trace(go.Scatter(y=df["method"], x=df["rank"], mode="markers", name="rank in a cell",
                             marker=dict(color="black", size=6, opacity=0.6), text=df["cell"],
                             customdata=df[["test_acc"]].values,
                             hovertemplate="%{y} on %{text}: rank %{x}, acc %{customdata[0]:.1f}%<extra></extra>"))
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1])
    fig.update_layout(title="average rank across (dataset, k) cells (1 = best)", xaxis_title="rank")
    return fig


def curve_table(results) -> pd.DataFrame:
    """Long form of the learning curves: cell, method, budget, step (selected), test_acc (mean, %), test_acc_std,
    n; empty when the suite ran without ``tune.budgets``."""
    r = _res(results)
    recs = [{"cell": f"{row['dataset']} k={row['k']}", "method": row["method"], "seed": row["seed"],
             "budget": p["budget"], "step": p["step"], "test_acc": 100 * p["test_acc"]}
            for row in r["rows"] if row.get("curve") for p in row["curve"]]
    if not recs:
        return pd.DataFrame(columns=["cell", "method", "budget", "step", "test_acc", "test_acc_std", "n"])
    df = pd.DataFrame(recs)
    return (df.groupby(["cell", "method", "budget"], sort=False)
            .agg(step=("step", "mean"), test_acc=("test_acc", "mean"), test_acc_std=("test_acc", "std"),
                 n=("seed", "count")).reset_index())


def learning_curves(results):
    """Test accuracy of the prompt selected within each step budget (budget 0 = the untuned init), one line per
    method, one panel per cell; error bars = std over seeds. The x axis is log2(1 + budget), labelled in steps."""
    r = _res(results)
    df = curve_table(r)
    if df.empty:
        raise RunError("no learning curves in this benchmark: run a suite with tune.budgets set")
    order = [m for m in method_order(r) if m in set(df["method"])]
    df = df.assign(x=lambda d: np.log2(1 + d["budget"]))
    fig = px.line(df, x="x", y="test_acc", error_y="test_acc_std", color="method", facet_col="cell",
                  facet_col_wrap=4, markers=True, category_orders={"method": order},
                  color_discrete_map=_colors(method_order(r)),
                  hover_data={"x": False, "budget": True, "step": ":.1f", "n": True},
                  labels={"test_acc": "test acc (%)", "x": "step budget"})
    budgets = sorted(df["budget"].unique())
    fig.update_xaxes(tickvals=np.log2(1 + np.array(budgets)), ticktext=[str(b) for b in budgets])
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_layout(title="learning curve: test accuracy of the prompt selected within each budget "
                            "(mean ± std over seeds; 0 = the init)")
    return fig


def export_markdown(results, path) -> Path:
    """Write the leaderboard markdown (the same text as the benchmark's ``leaderboard.md``) to ``path``."""

    atomic_write(path, leaderboard_markdown(_res(results)))
    return Path(path)
