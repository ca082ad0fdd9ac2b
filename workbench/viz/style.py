"""One figure style for every view: the plotly template, a stable colour per init, human names, accuracy in %.

Every figure of the package goes through :func:`styled` (the ``workbench`` template, axis titles, a title that says
what was measured on what) and takes its colours from :func:`init_colour`, so ``random`` is the same grey-blue in
the quickstart bars, the benchmark leaderboard and the embedding-space views. Accuracy is shown in percent
(:func:`pct`), counts on integer ticks (:func:`integer_ticks`), accuracies as a dot with its interval
(:func:`dot_interval`) above reference lines for zero-shot and chance (:func:`reference_lines`), never as bars from 0.
"""
from __future__ import annotations

import math
import zlib

import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "workbench"
FONT = "Inter, Helvetica Neue, Arial, sans-serif"

# A stable colour per init and baseline: the same name has the same colour in every figure (family hues: meta inits
# warm, baselines grey, BayesPrompt purple). Other names get a colour from their name's hash (stable across runs).
INIT_COLOURS = {
    "zero-shot": "#7f7f7f", "linear-probe": "#bcbd22", "random": "#1f77b4", "vocab": "#17becf", "text": "#aec7e8",
    "labels": "#9edae5", "file": "#8c564b", "metapt": "#2ca02c", "mpt-maml": "#d62728", "mpt-fomaml": "#ff7f0e",
    "mpt-reptile": "#e377c2", "multitask": "#ff9896", "supmer": "#98df8a", "supmer+psi": "#006d2c",
    "bayes": "#9467bd", "bayes-init": "#9467bd", "bayes-resample": "#c5b0d5", "bayes-ensemble": "#54278f",
}
_EXTRA = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
          "#636363", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#969696")
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")  # for things that are not inits (clusters, classes, components): index i gets SERIES[i % 10]

# Human names for column names that reach a legend or an axis. A figure passes its own additions to human().
NAMES = {
    "test_acc": "test accuracy (%)", "dev_acc": "dev accuracy (%)", "test_f1": "test macro-F1 (%)",
    "acc": "accuracy (%)", "loss": "loss", "train_loss": "train loss", "dev_loss": "dev loss",
    "val_loss_pre": "validation loss before adaptation", "val_loss_post": "validation loss after adaptation",
    "val_acc_pre": "validation accuracy before adaptation (%)", "val_acc_post": "validation accuracy after adaptation (%)",
    "genre_nmi": "NMI with Brown genres", "genre_purity": "purity against Brown genres", "silhouette": "silhouette (cosine)",
    "embed_cos": "cosine of mean sentence embeddings", "prompt_cos": "cosine of tuned prompts",
    "k": "examples per class (k)", "step": "tuning step", "meta_step": "meta-step", "avg_rank": "average rank",
    "file": "meta init (file)",
}


def human(name: str, extra: dict | None = None) -> str:
    """The legend/axis name of a column: ``extra`` first, then :data:`NAMES`, else underscores read as spaces."""
    return (extra or {}).get(name) or NAMES.get(name) or str(name).replace("_", " ")


def init_colour(name: str) -> str:
    """The colour of an init or baseline, the same in every figure."""
    if name in INIT_COLOURS:
        return INIT_COLOURS[name]
    base = name.split(":")[0].split(" ")[0]
    if base in INIT_COLOURS:
        return INIT_COLOURS[base]
    return _EXTRA[zlib.crc32(name.encode()) % len(_EXTRA)]


def colour_map(names) -> dict:
    """{name: colour} for ``names`` (plotly express ``color_discrete_map``)."""
    return {n: init_colour(n) for n in names}


def pct(x):
    """A fraction (or an array/Series of them) as percent."""
    return None if x is None else x * 100


def title(what: str, dataset=None, k=None, seeds=None, test_n=None, extra: str | None = None) -> str:
    """``"<what> · sst2, k=16, 5 seeds, test n=872"``: what was measured, on what. ``seeds`` is a count or a list."""
    n_seeds = len(seeds) if isinstance(seeds, (list, tuple)) else seeds
    parts = [str(dataset) if dataset else None, f"k={k}" if k is not None else None,
             f"{n_seeds} seed{'s' if n_seeds != 1 else ''}" if n_seeds is not None else None,
             f"test n={test_n}" if test_n is not None else None, extra]
    where = ", ".join(p for p in parts if p)
    return f"{what} · {where}" if where else what


def integer_ticks(fig, values, axis: str = "x", max_ticks: int = 10, few: int = 8) -> None:
    """Integer ticks on ``axis`` ("x" or "y", every facet) for counts such as k, K, steps or ranks: at the values
    themselves when there are at most ``few`` distinct ones (K = 4, 8, 16), else evenly at a round interval."""
    vals = sorted({float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))})
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    if 0 < len(vals) <= few and all(v.is_integer() for v in vals):
        update(tickmode="array", tickvals=[int(v) for v in vals], tickformat="d")
        return
    span = (vals[-1] - vals[0]) if vals else 1
    dtick = max(1, math.ceil(span / max_ticks))
    nice = next(d for d in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10 ** 9) if d >= dtick)
    update(tickmode="linear", tick0=0, dtick=nice, tickformat="d")


def reference_lines(fig, zero_shot=None, chance=None, row=None, col=None) -> None:
    """Horizontal lines at zero-shot (dashed, labelled at the right) and chance (dotted, labelled at the left)
    accuracy in %, so the two labels never overlap even when the values are close."""
    for value, name, dash, side in ((zero_shot, "zero-shot", "dash", "right"), (chance, "chance", "dot", "left")):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        kw = {} if row is None else dict(row=row, col=col)
        fig.add_hline(y=value, line=dict(color="#7f7f7f", dash=dash, width=1), annotation_text=f"{name} {value:.1f}%",
                      annotation_position=f"bottom {side}", annotation_font=dict(size=10, color="#555"), **kw)


def dot_interval(fig, names, means, errors, n=None, row=None, col=None, showlegend=True, hover_extra=None) -> None:
    """One dot per name at its mean (%) with an error bar (std or CI, %), coloured by init; hover shows n."""
    kw = {} if row is None else dict(row=row, col=col)
    for i, name in enumerate(names):
        n_i = None if n is None else n[i]
        extra = "" if hover_extra is None else f"<br>{hover_extra[i]}"
        fig.add_trace(go.Scatter(
            x=[name], y=[means[i]], mode="markers", name=name, legendgroup=name, showlegend=showlegend,
            marker=dict(color=init_colour(name), size=11, line=dict(color="white", width=1)),
            error_y=dict(type="data", array=[errors[i] if errors is not None else 0], thickness=2, width=6,
                         color=init_colour(name)),
            hovertemplate=(f"<b>{name}</b><br>%{{y:.1f}}% ± {errors[i] if errors is not None else 0:.1f}"
                           + (f"<br>n = {n_i}" if n_i is not None else "") + extra + "<extra></extra>")), **kw)


LABEL_LEVELS = (14, -14, 28, -28, 42, -42, 56, -56)  # vertical offsets (px) tried for a point's label, in order


def _label_shifts(xs, ys, texts, plot_px: tuple[int, int], char_px: float = 7.0) -> list[int]:
    """A vertical offset per label such that no two label boxes overlap (greedy, left to right; boxes are
    ``char_px`` per character wide and 14 px high in a plot area of ``plot_px`` (width, height) pixels)."""
    def scale(v, lo, hi, size):
        return (v - lo) / (hi - lo) * size if hi > lo else size / 2

    (x_lo, x_hi), (y_lo, y_hi), placed, shifts = (min(xs), max(xs)), (min(ys), max(ys)), [], [0] * len(xs)
    for i in sorted(range(len(xs)), key=lambda j: xs[j]):
        px, py, half = scale(xs[i], x_lo, x_hi, plot_px[0]), scale(ys[i], y_lo, y_hi, plot_px[1]), \
            char_px * len(str(texts[i])) / 2
        for level in LABEL_LEVELS:
            box = (px - half, px + half, py + level)
            if all(b[1] <= box[0] or box[1] <= b[0] or abs(b[2] - box[2]) >= 14 for b in placed):
                break
        placed.append(box)
        shifts[i] = level
    return shifts


def point_labels(fig, xs, ys, texts, colour: str = "#333", plot_px: tuple[int, int] = (700, 360), **where) -> None:
    """Label each point (``xs``, ``ys`` in data units) with its text, shifted up or down so that labels never
    overlap one another (annotations, no arrows; ``where``: ``row``/``col`` of a facet)."""
    xs, ys, texts = [float(v) for v in xs], [float(v) for v in ys], [str(t) for t in texts]
    for x, y, text, shift in zip(xs, ys, texts, _label_shifts(xs, ys, texts, plot_px)):
        fig.add_annotation(x=x, y=y, text=str(text), showarrow=False, yshift=shift, font=dict(size=11, color=colour),
                           **where)


def empty_figure(message: str, what: str = "") -> go.Figure:
    """A figure that says why there is nothing to draw (too little data, a missing input) instead of empty axes."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#555"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return styled(fig, title=what or "nothing to draw", height=260)


def styled(fig, title: str | None = None, x: str | None = None, y: str | None = None, legend: str | None = None,
           height: int | None = None):
    """``fig`` in the workbench template, with its title, axis titles and legend title (returns ``fig``)."""
    fig.update_layout(template=TEMPLATE)
    if title is not None:
        fig.update_layout(title=dict(text=title))
    if x is not None:
        fig.update_xaxes(title_text=x)
    if y is not None:
        fig.update_yaxes(title_text=y)
    if legend is not None:
        fig.update_layout(legend_title_text=legend)
    if height is not None:
        fig.update_layout(height=height)
    return fig


def _template() -> go.layout.Template:
    t = go.layout.Template(pio.templates["plotly_white"])
    t.layout.font = dict(family=FONT, size=13, color="#222")
    t.layout.title = dict(font=dict(size=15), x=0.01, xanchor="left")
    t.layout.colorway = list(SERIES)
    t.layout.legend = dict(bgcolor="rgba(255,255,255,0.8)", font=dict(size=12))
    t.layout.hoverlabel = dict(font=dict(family=FONT, size=12))
    t.layout.margin = dict(t=70, l=70, r=30, b=60)
    axis = dict(showline=True, linecolor="#999", ticks="outside", tickcolor="#999", gridcolor="#eee", zeroline=False,
                automargin=True, title=dict(standoff=8))
    t.layout.xaxis, t.layout.yaxis = axis, axis
    return t


pio.templates[TEMPLATE] = _template()  # the one registration site of the template
