"""viz.supmer."""
from __future__ import annotations

import plotly.graph_objects as go

from workbench.engine.runs import read_run


def curriculum_figure(run_dir, title: str = "SUPMER: ψ gate and mixup curriculum"):
    """Plotly figure of a supmer meta-training run's ``metrics.jsonl``: the ψ gate and its regression target, the
    curriculum s, the mean sampled λ and the support/query alignment per step (hover shows the values)."""
    metrics = read_run(run_dir, "expected a meta-training run directory").metrics
    recs = [r for r in metrics if r.get("event") == "train"]
    fig = go.Figure()
    for key, name in (("gate", "ψ gate c"), ("gate_target", "gate target"), ("curriculum_s", "curriculum s"),
                      ("lambda", "mean λ"), ("alignment", "alignment")):
        pts = [(r["step"], r[key]) for r in recs if key in r]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name,
                                     hovertemplate=f"step %{{x}}<br>{name} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="meta-step", yaxis_title="value", yaxis_range=[0, 1.05])
    return fig
