"""viz.meta."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.engine.runs import read_jsonl, read_run


# ----------------------------------------------------------------------------------------------- meta-training
def load_records(path) -> pd.DataFrame:
    """Every JSON object of a ``metrics.jsonl`` (a file or the run directory holding one) as a row."""
    p = Path(path)
    recs = read_jsonl(p) if p.is_file() else read_run(p, "expected a meta-training run directory").metrics
    return pd.DataFrame.from_records(recs)


def meta_curves(path, step_key: str = "step"):
    """Meta-train and meta-validation curves from a meta-training ``metrics.jsonl``: every numeric column whose name
    mentions loss (left panel) or acc (right panel), against ``step_key``; columns are grouped by the record's
    ``event`` (e.g. ``train`` / ``val``) when present, so hover names say which is which."""
    df = load_records(path)
    if df.empty or step_key not in df:
        raise ValueError(f"{path}: no records with a {step_key!r} field")
    df = df[pd.to_numeric(df[step_key], errors="coerce").notna()]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    groups = df.groupby("event", sort=False) if "event" in df else [("", df)]
    for event, g in groups:
        for col in g.columns:
            low = col.lower()
            which = 1 if "loss" in low else 2 if "acc" in low else 0
            if not which or not pd.api.types.is_numeric_dtype(g[col]) or g[col].isna().all():
                continue
            s = g[[step_key, col]].dropna().sort_values(step_key)
            name = f"{event} {col}".strip() if event and str(event) not in col else col
            fig.add_trace(go.Scatter(x=s[step_key], y=s[col], mode="lines+markers", name=name, marker=dict(size=4),
                                     hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.4f}}<extra></extra>"),
                          row=1, col=which)
    if not fig.data:
        raise ValueError(f"{path}: no loss or accuracy columns in the records")
    fig.update_xaxes(title_text="meta-step")
    fig.update_layout(title="Meta-training curves", template="plotly_white", hovermode="closest")
    return fig
