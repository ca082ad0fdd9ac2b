"""Task similarity against the meta init's gain (``workbench similarity``, notebook 02): one point per (target,
source) at the source's similarity to the target (x) and the target's gain of the meta init over a baseline (y, in
points, ± its std over seeds). The table comes from :func:`workbench.experiments.walkthroughs.similarity_to_sources`
(or :func:`workbench.experiments.similarity.join`); this module only draws it.

Honest figures: when no point has a value (the update cosines are NaN when a selected per-task prompt is its
untuned init), :func:`scatter` returns a figure that says why; with a single target every source shares that
target's gain (one y), and the figure says so instead of suggesting a relation.
"""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.experiments.similarity import PROMPT_COLUMNS, SimilarityError, cosine
from workbench.viz.style import SERIES, empty_figure, human, point_labels, styled, title

X_NAMES = {"embed_cos": "cosine of mean sentence embeddings", "prompt_cos_flat": "cosine of tuned prompts (flattened)",
           "prompt_cos_slots": "cosine of tuned prompts (means over slots)",
           "update_cos_flat": "cosine of prompt updates P − P_init (flattened)",
           "update_cos_slots": "cosine of prompt updates P − P_init (means over slots)",
           "gain_mean": "gain in test accuracy (points)"}
FIGURES = {"similarity_scatter": "embed_cos", "similarity_scatter_prompts": "update_cos_flat"}  # file name -> x


def rank_corr(x, y) -> float:
    """Spearman's rho of two arrays over the pairs where both are finite (NaN with fewer than 3 pairs)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3:
        return float("nan")
    rx, ry = pd.Series(x[ok]).rank().to_numpy(), pd.Series(y[ok]).rank().to_numpy()
    return cosine(rx - rx.mean(), ry - ry.mean())


def _infos(info) -> list[dict]:
    """The per-target info dicts of ``info``: one task_similarity info, or target -> info."""
    if not info:
        return []
    return [info] if "config" in info else [v for v in info.values() if isinstance(v, dict)]


def _wrap(text: str, width: int = 95) -> str:
    return "<br>".join(textwrap.wrap(text, width))


def why_empty(table: pd.DataFrame, x: str, info=None) -> str:
    """Why no (target, source) pair has a value of ``x``: for the update cosines, how often the dev-selected prompt
    of the target or the source was its untuned init (best step 0) and what the tuning schedule was."""
    if x not in PROMPT_COLUMNS:
        return f"No point to draw: no (target, source) pair has a finite {human(x, X_NAMES)} ({len(table)} rows)."
    per_seed = [r for i in _infos(info) for r in i.get("per_seed", [])]
    if not per_seed:
        return (f"No point to draw: {x} was not computed (similarity.prompts = false, or no per-task prompt was "
                "tuned); the embedding cosine (embed_cos) does not need tuned prompts.")
    at_init = sum(1 for r in per_seed if r.get("target_best_step") == 0 or r.get("source_best_step") == 0)
    tune = next(iter(_infos(info))).get("config", {}).get("tune", {})
    steps, every = tune.get("steps"), tune.get("eval_every")
    schedule = ""
    if steps is not None and every is not None:
        schedule = (f" The per-task prompts were tuned for {steps} steps (similarity_steps) with a dev evaluation "
                    f"every {every} (tune.eval_every)" + (f", so only steps 0 and {steps} were candidates"
                                                           if steps < every else "") + ".")
    why = (f"the dev-selected prompt of the target or of the source was its untuned init (best step 0) in {at_init} "
           f"of {len(per_seed)} (source, seed) pairs, so P − P_init = 0 and the cosine is undefined."
           if at_init else "every update cosine came out NaN (an update of zero norm).")
    fix = ("Raise similarity_steps (tune.steps) to several times tune.eval_every, or plot prompt_cos_flat, which "
           "needs no update.")
    return f"No point to draw: {human(x, X_NAMES)} is missing (NaN) for every source: {why}{schedule} {fix}"


def _trace(t: pd.DataFrame, x: str, y: str, name: str, colour: str) -> go.Scatter:
    """One (target, method) group's points (labelled by source with :func:`point_labels` over all groups)."""
    pts = 100.0
    diffs = [", ".join(f"{pts * d:+.1f}" for d in ds) for ds in t.get("diffs", pd.Series([[]] * len(t)))]
    custom = np.stack([t["source"], t["target"], t.get("method", pd.Series([""] * len(t))), diffs,
                       t.get("n_removed", pd.Series([0] * len(t))), pts * t.get("gain_std", 0 * t[y])], axis=1)
    return go.Scatter(
        x=t[x], y=pts * t[y], mode="markers", name=name, customdata=custom, marker=dict(size=11, color=colour),
        error_y=dict(type="data", array=pts * t["gain_std"], visible=True, color=colour) if "gain_std" in t else None,
        hovertemplate=(f"source %{{customdata[0]}} → target %{{customdata[1]}}<br>method %{{customdata[2]}}<br>"
                       f"{x} %{{x:.3f}}<br>gain %{{y:+.1f}} ± %{{customdata[5]:.1f}} points<br>"
                       f"per seed: %{{customdata[3]}}<br>source texts removed: %{{customdata[4]}}<extra></extra>"))


def _title(table: pd.DataFrame, x: str, info, names, rho: float, n: int) -> str:
    methods = list(dict.fromkeys(table["method"])) if "method" in table else []
    label = ", ".join((names or {}).get(m, m) for m in methods) or "the meta init"
    base = table["baseline"].iloc[0] if "baseline" in table and len(table) else "the baseline"
    cfg = next(iter(_infos(info)), {}).get("config", {})
    seeds = int(table["n"].max()) if "n" in table and len(table) else None
    extra = f"Spearman ρ = {rho:.2f} over {n} points" if not math.isnan(rho) else f"{n} points"
    return title(f"Task similarity vs gain of {label} over {base}",
                 dataset=", ".join(map(str, dict.fromkeys(table["target"]))), k=cfg.get("k"), seeds=seeds, extra=extra)


def scatter(table: pd.DataFrame, x: str = "embed_cos", y: str = "gain_mean", title: str | None = None,
            info=None, names: dict | None = None):
    """Similarity (``x``) against gain (``y``, in points), one colour per target (and method), error bars = the
    gain's std over seeds; hover: source, target, method, the similarity, gain ± std, per-seed differences, removed
    texts. ``info`` (the analysis' info: target -> details) explains an empty figure; ``names`` maps a method to its
    display label (e.g. ``{"file": "meta-fomaml"}``). The title gives Spearman's rho over all points (3 or more)."""
    if x not in table or y not in table:
        raise SimilarityError(f"table has no column {x if x not in table else y!r}; columns: {list(table.columns)}")
    ok = table[x].notna() & table[y].notna()
    what = title or _title(table, x, info, names, float("nan"), 0)
    if not ok.any():
        return empty_figure(_wrap(why_empty(table, x, info)), what)
    drawn = table[ok]
    fig = go.Figure()
    groups = drawn.groupby(["target", "method"], sort=False) if "method" in drawn else drawn.groupby(["target"])
    for i, (key, t) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        name = " · ".join(str((names or {}).get(k, k)) for k in key)
        fig.add_trace(_trace(t, x, y, name, SERIES[i % len(SERIES)]))
    point_labels(fig, drawn[x], 100.0 * drawn[y], drawn["source"])  # one placement over all groups: no overlaps
    rho = rank_corr(drawn[x].to_numpy(float), drawn[y].to_numpy(float))
    _notes(fig, table, drawn, x)
    styled(fig, title=title or _title(table, x, info, names, rho, len(drawn)), x=human(x, X_NAMES),
           y=human(y, X_NAMES), legend="target · init")
    fig.update_layout(hovermode="closest", margin=dict(t=110))
    return fig


def _notes(fig, table: pd.DataFrame, drawn: pd.DataFrame, x: str) -> None:
    """Say in the figure what it cannot show: one target (one gain for every source), pairs without a value."""
    notes = []
    targets = list(dict.fromkeys(drawn["target"]))
    if len(targets) == 1:
        notes.append(f"One target ({targets[0]}): y is its gain, the same for every source; only the similarity "
                     "varies, so this figure cannot show whether similarity predicts the gain.")
    if missing := len(table) - len(drawn):
        notes.append(f"{missing} of {len(table)} (target, source) pairs have no {human(x, X_NAMES)} value and are not drawn.")
    if notes:
        fig.add_annotation(text=_wrap(" ".join(notes), 120), x=0, y=1.0, xref="paper", yref="paper", xanchor="left",
                           yanchor="bottom", showarrow=False, align="left", font=dict(size=11, color="#555"))


def similarity_figures(table: pd.DataFrame, info=None, names: dict | None = None) -> dict:
    """The figures ``workbench similarity`` writes: name -> figure (``similarity_scatter`` against the embedding
    cosine; ``similarity_scatter_prompts`` against the update cosine when the table has it). Empty when the table has
    no gains (no result rows were given)."""
    if "gain_mean" not in table:
        return {}
    return {name: scatter(table, x, info=info, names=names) for name, x in FIGURES.items() if x in table}
