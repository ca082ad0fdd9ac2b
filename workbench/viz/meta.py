"""Meta-training curves from a meta-training run's ``metrics.jsonl``: losses and accuracies (%) against meta-steps,
with human names (``val loss_pre`` reads "validation loss before adaptation") and integer meta-step ticks."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.engine.runs import read_jsonl, read_run
from workbench.viz.style import human, integer_ticks, styled, title

META_RUN = "expected a meta-training run directory"


# ----------------------------------------------------------------------------------------------- meta-training
def load_records(path) -> pd.DataFrame:
    """Every JSON object of a ``metrics.jsonl`` (a file or the run directory holding one) as a row."""
    p = Path(path)
    recs = read_jsonl(p) if p.is_file() else read_run(p, META_RUN).metrics
    return pd.DataFrame.from_records(recs)


def series_name(event, col: str) -> str:
    """The legend name of column ``col`` of ``event`` records: ``("val", "loss_pre")`` -> "validation loss before
    adaptation", ``("train", "loss")`` -> "train loss" (no unit: the axis has it)."""
    key = f"{event}_{col}" if event and str(event) not in col else col
    return human(key).removesuffix(" (%)")


def _run_title(path) -> str:
    """"Meta-training curves: <method> on <source> tasks · <target>" from the run's config.json, when there is one."""
    p = Path(path)
    run = read_run(p if p.is_dir() else p.parent, META_RUN)
    cfg = run.config if run.has("config.json") else {}
    what = "Meta-training curves" + (f": {cfg['method']}" if cfg.get("method") else "") + (
        f" on {cfg['source']} tasks" if cfg.get("source") else "")
    return title(what, dataset=cfg.get("target"))


def meta_curves(path, step_key: str = "step"):
    """Meta-train and meta-validation curves from a meta-training ``metrics.jsonl``: every numeric column whose name
    mentions loss (left panel) or acc (right panel, in %), against ``step_key``; columns are grouped by the record's
    ``event`` (e.g. ``train`` / ``val``) when present, and named for people (hover and legend)."""
    df = load_records(path)
    if df.empty or step_key not in df:
        raise ValueError(f"{path}: no records with a {step_key!r} field")
    df = df[pd.to_numeric(df[step_key], errors="coerce").notna()]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy (%)"), horizontal_spacing=0.1)
    groups = df.groupby("event", sort=False) if "event" in df else [("", df)]
    for event, g in groups:
        for col in g.columns:
            low = col.lower()
            which = 1 if "loss" in low else 2 if "acc" in low else 0
            if not which or not pd.api.types.is_numeric_dtype(g[col]) or g[col].isna().all():
                continue
            s = g[[step_key, col]].dropna().sort_values(step_key)
            name, y = series_name(event, col), s[col] * (100 if which == 2 else 1)
            unit = "%" if which == 2 else ""
            fig.add_trace(go.Scatter(x=s[step_key], y=y, mode="lines+markers", name=name, marker=dict(size=4),
                                     line=dict(dash="dash" if str(event) == "val" else "solid"),
                                     hovertemplate=f"{name}<br>meta-step %{{x}}<br>%{{y:.4g}}{unit}<extra></extra>"),
                          row=1, col=which)
    if not fig.data:
        raise ValueError(f"{path}: no loss or accuracy columns in the records")
    integer_ticks(fig, df[step_key].tolist(), "x")
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=2)
    styled(fig, title=_run_title(path), x=human("meta_step"), legend="series")
    fig.update_layout(hovermode="closest")
    return fig
