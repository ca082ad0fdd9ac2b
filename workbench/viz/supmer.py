"""SUPMER's ψ gate and mixup curriculum over meta-steps (values in [0, 1], integer meta-step ticks)."""
from __future__ import annotations

import plotly.graph_objects as go

from workbench.engine.runs import read_run
from workbench.viz.style import SERIES, empty_figure, human, integer_ticks, styled
from workbench.viz.style import title as what_on

DEFAULT_TITLE = "SUPMER: ψ gate and mixup curriculum"
CURRICULUM = (("gate", "ψ gate c"), ("gate_target", "gate target"), ("curriculum_s", "curriculum s"),
              ("lambda", "mean λ"), ("alignment", "support/query alignment"))


def curriculum_figure(run_dir, title: str = DEFAULT_TITLE):
    """Plotly figure of a supmer meta-training run's ``metrics.jsonl``: the ψ gate and its regression target, the
    curriculum s, the mean sampled λ and the support/query alignment per step (hover shows the values). A run that
    logged none of them gets a figure that says so. The default title names the run's target (config.json)."""
    run = read_run(run_dir, "expected a meta-training run directory")
    metrics = run.metrics
    if title == DEFAULT_TITLE and run.has("config.json"):
        title = what_on(title, dataset=run.config.get("target"))
    recs = [r for r in metrics if r.get("event") == "train"]
    fig, steps = go.Figure(), []
    for i, (key, name) in enumerate(CURRICULUM):
        pts = [(r["step"], r[key]) for r in recs if key in r]
        if pts:
            steps += [p[0] for p in pts]
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name,
                                     line=dict(color=SERIES[i % len(SERIES)]),
                                     hovertemplate=f"meta-step %{{x}}<br>{name} %{{y:.3f}}<extra></extra>"))
    if not fig.data:
        return empty_figure(f"no SUPMER gate or curriculum values in {len(recs)} train records "
                            "(a run of another method, or one without ψ and mixup)", title)
    integer_ticks(fig, steps, "x")
    fig.update_layout(yaxis_range=[0, 1.05])
    return styled(fig, title=title, x=human("meta_step"), y="value (0–1)", legend="series")
