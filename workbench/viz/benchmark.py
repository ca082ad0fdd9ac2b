"""Figures and tables from a benchmark directory (``results.json`` written by :mod:`workbench.benchmark`).

Pure functions, no training: :func:`load_benchmark`, :func:`cell_table` (long form: one row per dataset x k x method),
:func:`leaderboard_table` (methods x cells, mean ± std, average rank), :func:`bars` (accuracy as dots with their std
over seeds per (dataset, k) cell, zero-shot and chance as reference lines), :func:`k_curve` (accuracy against k),
:func:`rank_plot` (average rank from 1 = best, per-cell ranks behind it), :func:`curve_table` and
:func:`learning_curves` (test accuracy of the prompt selected within each step budget, when the suite set
``tune.budgets``) and :func:`export_markdown`. Every figure is in the :mod:`workbench.viz.style` style (accuracy in %,
one colour per init); save them with :func:`workbench.viz.output.save_figure`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.engine.runs import RESULTS, RunError, atomic_write, read_run
from workbench.engine.stats import rank_with_ties
from workbench.experiments.benchmark import ROWS
from workbench.experiments.leaderboard import leaderboard_markdown
from workbench.viz.runs import chance_of
from workbench.viz.style import dot_interval, empty_figure, human, init_colour, reference_lines, styled, title

ZERO_SHOT = "zero-shot"
SHARED_Y = ("dataset", "all", "none")  # which panels share a y range: those of one dataset, all, none


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


# ----------------------------------------------------------------------------------------------- figure pieces
def test_n_of(results, dataset) -> int | None:
    """The number of test examples every row of ``dataset`` was scored on (the subsample when the suite set one)."""
    d = (_res(results).get("data") or {}).get(dataset) or {}
    return d.get("test_used") or (d.get("sizes") or {}).get("test")


def _seeds(r: dict, df: pd.DataFrame):
    seeds = (r.get("suite") or {}).get("seeds")
    return len(seeds) if seeds else (int(df["n"].max()) if len(df) else None)


def _title(what: str, r: dict, df: pd.DataFrame) -> str:
    """``what · datasets, k=..., n seeds, test n=...`` (the test size when every dataset used the same)."""
    datasets = list(dict.fromkeys(df["dataset"]))
    tests = {test_n_of(r, d) for d in datasets}
    return title(what, dataset=", ".join(map(str, datasets)), k=",".join(str(k) for k in sorted(set(df["k"]))),
                 seeds=_seeds(r, df), test_n=next(iter(tests)) if len(tests) == 1 else None,
                 extra=None if len(tests) == 1 else "test n per panel")


def _cells(df: pd.DataFrame) -> list[tuple]:
    """(cell, dataset, k) in dataset order (as first listed), k ascending within a dataset."""
    datasets = list(dict.fromkeys(df["dataset"]))
    cells = df[["cell", "dataset", "k"]].drop_duplicates()
    cells = cells.assign(order=cells["dataset"].map(datasets.index)).sort_values(["order", "k"])
    return list(cells[["cell", "dataset", "k"]].itertuples(index=False, name=None))


def _panel_title(r: dict, df: pd.DataFrame, cell: str, dataset) -> str:
    per_test = len({test_n_of(r, d) for d in df["dataset"].unique()}) > 1
    return f"{cell} · test n={test_n_of(r, dataset)}" if per_test else cell


def _grid(titles: list[str], wrap: int, row_px: int = 380, gap_px: int = 110):
    """Subplots for ``titles``, ``wrap`` per row (``row_px`` high, ``gap_px`` between rows); returns the figure, each
    title's (row, col) and the figure height in pixels."""
    n = max(1, len(titles))
    cols = min(wrap, n)
    rows = math.ceil(n / cols)
    height = 140 + row_px * rows
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08 if cols > 1 else 0.02,
                        vertical_spacing=min(0.9 / (rows - 1), gap_px / height) if rows > 1 else 0.1)
    return fig, [(i // cols + 1, i % cols + 1) for i in range(n)], height


def _x_titles(fig, pos: list[tuple], text: str) -> None:
    """``text`` as the x title of the lowest panel of each column only (titles of stacked panels would collide)."""
    for col in {c for _, c in pos}:
        fig.update_xaxes(title_text=text, row=max(r for r, c in pos if c == col), col=col)


def _check_shared(shared_y: str) -> None:
    if shared_y not in SHARED_Y:
        raise ValueError(f"shared_y={shared_y!r}: expected one of {', '.join(SHARED_Y)}")


def _share(shared_y: str, dataset, cell) -> str:
    return {"all": "all", "dataset": f"d:{dataset}", "none": f"c:{cell}"}[shared_y]


def _span(values) -> list[float]:
    """A y range (%) around ``values`` with a margin; never below 0 or above 100."""
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return [0.0, 100.0]
    lo, hi = min(vals), max(vals)
    pad = max(2.0, 0.08 * (hi - lo))
    return [max(0.0, lo - pad), min(100.0, hi + pad)]


def _apply_ranges(fig, spans: dict, where: dict) -> None:
    """Set each panel's y range to the span of its sharing group (``where``: (row, col) -> group)."""
    for (row, col), key in where.items():
        fig.update_yaxes(range=_span(spans[key]), row=row, col=col)


def _zero_shot(c: pd.DataFrame):
    """The zero-shot accuracy (%) of one cell's rows (indexed by method), or None."""
    return float(c.loc[ZERO_SHOT, "test_acc"]) if ZERO_SHOT in c.index else None


# ----------------------------------------------------------------------------------------------- figures
def bars(results, shared_y: str = "dataset"):
    """Test accuracy (%) per method as a dot with its std over seeds, one panel per (dataset, k) cell; zero-shot and
    chance as dashed reference lines. ``shared_y``: "dataset" (panels of one dataset share the y range, the default),
    "all" or "none". (Named ``bars`` for the notebooks that call it; it draws dots, not bars from 0.)"""
    _check_shared(shared_y)
    r = _res(results)
    df = cell_table(r)
    order = [m for m in method_order(r) if m != ZERO_SHOT]
    cells = _cells(df)
    wrap = 4 if len(order) <= 8 else 3
    fig, pos, height = _grid([_panel_title(r, df, cell, ds) for cell, ds, _ in cells], wrap, gap_px=150)
    spans, where = {}, {}
    for (cell, ds, _), (row, col) in zip(cells, pos):
        c = df[df["cell"] == cell].set_index("method")
        dots = [m for m in order if m in c.index]
        d = c.loc[dots]
        dot_interval(fig, dots, d["test_acc"].tolist(), d["test_acc_std"].tolist(), n=d["n"].tolist(), row=row,
                     col=col, showlegend=False,
                     hover_extra=[f"{cell}: rank {rk:g}, macro-F1 {f1:.1f}%" for rk, f1 in zip(d["rank"], d["test_f1"])])
        zs, chance = _zero_shot(c), chance_of(r, ds)
        reference_lines(fig, zs, chance, row, col)
        where[(row, col)] = key = _share(shared_y, ds, cell)
        spans.setdefault(key, []).extend([*(d["test_acc"] - d["test_acc_std"]), *(d["test_acc"] + d["test_acc_std"]),
                                          zs, chance])
    _apply_ranges(fig, spans, where)
    # every method named under every panel: one tick per method, the figure wide enough for them not to overlap
    fig.update_xaxes(categoryorder="array", categoryarray=order, tickmode="array", tickvals=order, tickangle=-60,
                     tickfont=dict(size=11))
    _x_titles(fig, pos, "init / baseline")
    fig.update_yaxes(title_text=human("test_acc"), col=1)
    styled(fig, title=_title("Test accuracy (mean ± std over seeds)", r, df), height=height)
    fig.update_layout(showlegend=False, width=max(900, min(wrap, len(cells)) * (90 + 20 * len(order))))
    return fig


def _line(fig, x, y, err, method: str, row: int, col: int, shown: set, hover: str, customdata=None) -> None:
    """One method's line with error bars in one panel (legend entry once per method)."""
    fig.add_trace(go.Scatter(
        x=x, y=y, mode="lines+markers", name=method, legendgroup=method, showlegend=method not in shown,
        line=dict(color=init_colour(method), width=2), marker=dict(size=7),
        error_y=dict(type="data", array=err, thickness=1.5, width=4), customdata=customdata,
        hovertemplate=hover), row=row, col=col)
    shown.add(method)


def k_curve(results, shared_y: str = "dataset"):
    """Test accuracy (%) against k, one line per method (std over seeds as error bars), one panel per dataset run
    at several k; zero-shot and chance as reference lines. ``shared_y``: "dataset" (each panel its own range: the
    default), "all" (one range) or "none". A suite with one k per dataset gets a figure that says so."""
    _check_shared(shared_y)
    r = _res(results)
    df = cell_table(r)
    multi = df.groupby("dataset")["k"].nunique()
    keep = [d for d in dict.fromkeys(df["dataset"]) if multi[d] > 1]
    what = "Test accuracy against k (mean ± std over seeds)"
    if not keep:
        return empty_figure("every dataset ran at a single k: there is no curve over k "
                            "(the accuracy dots show each cell)", _title(what, r, df))
    order = [m for m in method_order(r) if m != ZERO_SHOT]
    fig, pos, height = _grid(keep, 3)
    spans, where, shown = {}, {}, set()
    for ds, (row, col) in zip(keep, pos):
        d = df[df["dataset"] == ds].sort_values("k")
        for m in order:
            s = d[d["method"] == m]
            if len(s):
                _line(fig, s["k"], s["test_acc"], s["test_acc_std"], m, row, col, shown, customdata=s[["n", "rank", "test_acc_std"]],
                      hover=f"<b>{m}</b><br>{ds} k=%{{x}}<br>%{{y:.1f}}% ± %{{customdata[2]:.1f}}<br>"
                            "n = %{customdata[0]} seeds, rank %{customdata[1]:g}<extra></extra>")
        zs = d.loc[d["method"] == ZERO_SHOT, "test_acc"]
        zs, chance = (float(zs.mean()) if len(zs) else None), chance_of(r, ds)
        reference_lines(fig, zs, chance, row, col)
        where[(row, col)] = key = _share(shared_y, ds, ds)
        spans.setdefault(key, []).extend([*(d["test_acc"] - d["test_acc_std"]), *(d["test_acc"] + d["test_acc_std"]),
                                          zs, chance])
    _apply_ranges(fig, spans, where)
    ks = sorted(int(k) for k in df[df["dataset"].isin(keep)]["k"].unique())
    fig.update_xaxes(type="log", tickmode="array", tickvals=ks, ticktext=[str(k) for k in ks])
    _x_titles(fig, pos, human("k"))
    fig.update_yaxes(title_text=human("test_acc"), col=1)
    styled(fig, title=_title(what, r, df[df["dataset"].isin(keep)]), legend="init / baseline", height=height)
    return fig


def rank_plot(results):
    """Average rank per method (large dot, 1 = best, best on top) with each cell's rank as a small grey dot; the
    rank axis runs from 1 (left) to the number of methods."""
    r = _res(results)
    df = cell_table(r)
    ranks = r["statistics"]["ranks"]
    order = [e["method"] for e in ranks]
    n = max(len(order), 1)
    fig = go.Figure(go.Scatter(
        y=order, x=[e["avg_rank"] for e in ranks], mode="markers", name="average rank",
        marker=dict(color=[init_colour(m) for m in order], size=14, line=dict(color="white", width=1)),
        customdata=[[e["n_cells"]] for e in ranks],
        hovertemplate="<b>%{y}</b>: average rank %{x:.2f} over %{customdata[0]} cells<extra></extra>"))
    fig.add_trace(go.Scatter(y=df["method"], x=df["rank"], mode="markers", name="rank in one (dataset, k) cell",
                             marker=dict(color="#555", size=6, opacity=0.45), text=df["cell"],
                             customdata=df[["test_acc"]].values,
                             hovertemplate="%{y} on %{text}: rank %{x:g}, acc %{customdata[0]:.1f}%<extra></extra>"))
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1])
    fig.update_xaxes(range=[0.6, n + 0.4], tickmode="linear", tick0=1, dtick=max(1, math.ceil((n - 1) / 10)),
                     tickformat="d")
    fig.add_annotation(x=1, y=1, xref="x", yref="paper", yanchor="bottom", showarrow=False, text="1 = best",
                       font=dict(size=11, color="#555"))
    n_cells = df["cell"].nunique()
    styled(fig, title=_title(f"Average rank across {n_cells} (dataset, k) cells (1 = best)", r, df),
           x="rank within a cell (1 = best)", y="init / baseline", legend="", height=160 + 28 * n)
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


def learning_curves(results, shared_y: str = "dataset"):
    """Test accuracy (%) of the prompt selected within each step budget (budget 0 = the untuned init), one line per
    method, one panel per cell; error bars = std over seeds. The x axis is log2(1 + budget), labelled in steps.
    ``shared_y``: "dataset" (panels of one dataset share the y range, the default), "all" or "none"."""
    _check_shared(shared_y)
    r = _res(results)
    df = curve_table(r)
    if df.empty:
        raise RunError("no learning curves in this benchmark: run a suite with tune.budgets set")
    order = [m for m in method_order(r) if m in set(df["method"])]
    cells = [c for c in _cells(cell_table(r)) if c[0] in set(df["cell"])]
    fig, pos, height = _grid([c[0] for c in cells], 3)
    spans, where, shown = {}, {}, set()
    for (cell, ds, _), (row, col) in zip(cells, pos):
        for m in order:
            s = df[(df["cell"] == cell) & (df["method"] == m)].sort_values("budget")
            if len(s):
                _line(fig, np.log2(1 + s["budget"]), s["test_acc"], s["test_acc_std"], m, row, col, shown,
                      customdata=s[["budget", "step", "n", "test_acc_std"]],
                      hover=f"<b>{m}</b><br>{cell}, budget %{{customdata[0]}} steps (selected step "
                            "%{customdata[1]:.1f})<br>%{y:.1f}% ± %{customdata[3]:.1f}<br>n = %{customdata[2]} seeds"
                            "<extra></extra>")
        c = df[df["cell"] == cell]
        chance = chance_of(r, ds)
        reference_lines(fig, None, chance, row, col)
        where[(row, col)] = key = _share(shared_y, ds, cell)
        spans.setdefault(key, []).extend([*(c["test_acc"] - c["test_acc_std"].fillna(0)),
                                          *(c["test_acc"] + c["test_acc_std"].fillna(0)), chance])
    _apply_ranges(fig, spans, where)
    budgets = sorted(int(b) for b in df["budget"].unique())
    fig.update_xaxes(tickmode="array", tickvals=np.log2(1 + np.array(budgets)), ticktext=[str(b) for b in budgets])
    _x_titles(fig, pos, "step budget (log scale)")
    fig.update_yaxes(title_text=human("test_acc"), col=1)
    what = "Accuracy of the prompt selected within each step budget (0 = the init)"
    styled(fig, title=_title(what, r, cell_table(r)), legend="init", height=height)
    return fig


def export_markdown(results, path) -> Path:
    """Write the leaderboard markdown (the same text as the benchmark's ``leaderboard.md``) to ``path``."""

    atomic_write(path, leaderboard_markdown(_res(results)))
    return Path(path)
