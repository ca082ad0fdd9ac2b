"""Figures for BayesPrompt runs (plotly, with hover): the distribution in 2-D, SVGD trajectories and diagnostics, the
ensemble's per-example spread, reliability diagrams. Pure functions of a :class:`~workbench.bayes.Distribution` or a
run directory; :func:`workbench.viz.save_html` writes them as self-contained HTML.

2-D views (:func:`workbench.viz.projection.fit_projection`): ``method="pca"`` (default) projects the fitted space
with a PCA fitted on the density data and the particles (initial and final) together; GMM components are drawn as
their means with the 2-sigma ellipse of the projected covariance. ``method="umap"`` (needs umap-learn) embeds the same
points non-linearly; component ellipses are then omitted (a covariance has no UMAP image) and every point is placed
in that map by its nearest fitted points (``Projection.place``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from safetensors.numpy import load_file

from workbench.engine.runs import read_run
from workbench.methods.bayes import ece, rerun_svgd
from workbench.viz.projection import fit_projection

BAYES_RUN = "expected the --out folder of a `python -m workbench bayes` run"
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _projector(dist, method: str = "pca", seed: int = 0):
    """(map of points to 2-D, the (d, 2) PCA axes or None): :func:`workbench.viz.projection.fit_projection` fitted on
    the density data and the initial and final particles; other points are placed by ``Projection.place``."""
    pts = np.concatenate([dist.data.numpy(), dist.init_particles.numpy(), dist.particles.numpy()])
    proj = fit_projection(pts, method, seed, min(15, len(pts) - 1), cache=False)
    return proj.place, (proj.components.T if method == "pca" else None)


def _ellipse(mean2, cov2, n=60, sigma=2.0):
    vals, vecs = np.linalg.eigh(cov2)
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (vecs @ (sigma * np.sqrt(np.clip(vals, 0, None))[:, None] * circle)).T + mean2


def distribution_2d(dist, method: str = "pca", labels=None):
    """Density data, GMM components (means + 2-sigma ellipses with PCA), initial and final particles in 2-D."""
    proj, w = _projector(dist, method)
    fig = go.Figure()
    data2 = proj(dist.data.numpy())
    n_k = dist.info.get("n_kshot", len(data2))
    text = [f"k-shot #{i}" + (f" label {labels[i]}" if labels is not None and i < len(labels) else "") for i in range(n_k)]
    fig.add_trace(go.Scatter(x=data2[:n_k, 0], y=data2[:n_k, 1], mode="markers", name="k-shot features",
                             marker=dict(color="#7f7f7f", size=7, symbol="circle-open"), text=text,
                             hovertemplate="%{text}<extra></extra>"))
    if len(data2) > n_k:
        fig.add_trace(go.Scatter(x=data2[n_k:, 0], y=data2[n_k:, 1], mode="markers", name="unlabeled features",
                                 marker=dict(color="#bbbbbb", size=4), hoverinfo="skip"))
    means2 = proj(dist.means.numpy())
    covs = dist.covariances.numpy()
    for k in range(len(means2)):
        c = _COLORS[k % len(_COLORS)]
        wk = float(dist.weights[k])
        if w is not None:
            cov = covs[k] if dist.covariance == "full" else np.diag(covs[k])
            e = _ellipse(means2[k], w.T @ cov @ w)
            fig.add_trace(go.Scatter(x=e[:, 0], y=e[:, 1], mode="lines", line=dict(color=c, dash="dot"),
                                     name=f"component {k} (2σ)", hoverinfo="skip", legendgroup=f"c{k}"))
        fig.add_trace(go.Scatter(x=[means2[k, 0]], y=[means2[k, 1]], mode="markers", legendgroup=f"c{k}",
                                 marker=dict(color=c, size=14, symbol="x"), name=f"component {k} mean",
                                 hovertemplate=f"component {k}<br>weight {wk:.3f}<extra></extra>"))
    for name, x, sym, col in (("initial particles", dist.init_particles, "circle", "#9ecae1"),
                              ("SVGD particles", dist.particles, "diamond", "#08519c")):
        p2 = proj(x.numpy())
        fig.add_trace(go.Scatter(x=p2[:, 0], y=p2[:, 1], mode="markers", name=name,
                                 marker=dict(color=col, size=8, symbol=sym), customdata=np.arange(len(p2)),
                                 hovertemplate=name + " #%{customdata}<extra></extra>"))
    fig.update_layout(title=f"GMM ({len(means2)} components, {dist.covariance}) and particles, {method.upper()} 2-D",
                      xaxis_title=f"{method} 1", yaxis_title=f"{method} 2", template="plotly_white")
    return fig


def svgd_animation(dist, method: str = "pca"):
    """Particles over SVGD iterations as an animated scatter (needs a distribution fitted with record_every > 0)."""
    if dist.trajectory is None:
        raise ValueError("this distribution has no trajectory: fit it with bayes.record_every > 0")
    proj, _ = _projector(dist, method)
    frames_xy = [proj(f.numpy()) for f in dist.trajectory]
    every = dist.info.get("config", {}).get("record_every", 1)
    its = [i * every for i in range(len(frames_xy))]
    its[-1] = dist.info.get("config", {}).get("iterations", its[-1])
    means2 = proj(dist.means.numpy())
    lo = np.min([f.min(0) for f in frames_xy] + [means2.min(0)], 0)
    hi = np.max([f.max(0) for f in frames_xy] + [means2.max(0)], 0)
    pad = 0.05 * (hi - lo + 1e-9)
    mk = lambda xy, it: go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=f"particles (iteration {it})",
                                   marker=dict(color="#08519c", size=8), customdata=np.arange(len(xy)),
                                   hovertemplate="particle #%{customdata}<extra></extra>")
    means = go.Scatter(x=means2[:, 0], y=means2[:, 1], mode="markers", name="component means",
                       marker=dict(color="#d62728", size=14, symbol="x"), hoverinfo="skip")
    fig = go.Figure(data=[mk(frames_xy[0], its[0]), means],
                    frames=[go.Frame(data=[mk(xy, it), means], name=str(it)) for xy, it in zip(frames_xy, its)])
    steps = [dict(method="animate", label=str(it), args=[[str(it)], dict(mode="immediate", frame=dict(duration=0))])
             for it in its]
    fig.update_layout(title="SVGD trajectories", template="plotly_white",
                      xaxis=dict(range=[lo[0] - pad[0], hi[0] + pad[0]], title=f"{method} 1"),
                      yaxis=dict(range=[lo[1] - pad[1], hi[1] + pad[1]], title=f"{method} 2"),
                      updatemenus=[dict(type="buttons", buttons=[dict(label="play", method="animate", args=[
                          None, dict(frame=dict(duration=200, redraw=True), fromcurrent=True)])])],
                      sliders=[dict(steps=steps, currentvalue=dict(prefix="iteration "))])
    return fig


def svgd_diagnostics(dist):
    """Mean log-density and kernel Stein discrepancy of the particles over SVGD iterations."""
    h = dist.info["svgd"]["history"]
    it = [r["iteration"] for r in h]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean log-density", "kernel Stein discrepancy"))
    fig.add_trace(go.Scatter(x=it, y=[r["mean_log_density"] for r in h], name="mean log p",
                             hovertemplate="iteration %{x}<br>mean log p %{y:.4g}<extra></extra>"), 1, 1)
    fig.add_trace(go.Scatter(x=it, y=[r["ksd"] for r in h], name="KSD",
                             hovertemplate="iteration %{x}<br>KSD %{y:.4g}<extra></extra>"), 1, 2)
    fig.update_xaxes(title_text="SVGD iteration")
    fig.update_layout(title="SVGD convergence", template="plotly_white")
    return fig


def load_predictions(run_dir, dataset: str, seed: int) -> dict:
    """method -> {"probs" (N, C), "labels" (N,), ["members" (R, N, C)]} as numpy arrays."""
    d = read_run(run_dir, BAYES_RUN).path / "predictions" / dataset / f"seed{seed}"
    if not d.is_dir():
        raise ValueError(f"no predictions at {d} (expected a bayes run directory)")
    return {f.stem: load_file(str(f)) for f in sorted(d.glob("*.safetensors"))}


def ensemble_spread(members: np.ndarray, labels: np.ndarray, max_points: int = 2000):
    """Per test example: mean ± std over the R ensemble prompts of the probability of the true class (sorted)."""
    p_true = members[:, np.arange(members.shape[1]), labels]  # (R, N)
    mean, std = p_true.mean(0), p_true.std(0)
    order = np.argsort(mean)[:: max(1, members.shape[1] // max_points)]
    correct = members.mean(0).argmax(1) == labels
    fig = go.Figure(go.Scatter(x=np.arange(len(order)), y=mean[order], mode="markers",
                               error_y=dict(type="data", array=std[order], thickness=1, color="#9ecae1"),
                               marker=dict(color=np.where(correct[order], "#2ca02c", "#d62728"), size=5),
                               customdata=np.stack([order, std[order]], 1),
                               hovertemplate="test example #%{customdata[0]}<br>mean p(true) %{y:.3f}"
                                             "<br>std over prompts %{customdata[1]:.3f}<extra></extra>"))
    fig.update_layout(title=f"Ensemble of {members.shape[0]} sampled prompts: per-example spread "
                            f"(mean std {std.mean():.3f}; green = ensemble correct)",
                      xaxis_title="test examples, sorted by mean p(true class)", yaxis_title="p(true class)",
                      template="plotly_white")
    return fig


def reliability_diagram(probs_by_method: dict, labels: np.ndarray, n_bins: int = 15):
    """Accuracy vs. confidence per bin (15 equal-width bins, as the ECE) for each method; the diagonal is perfect."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#999", dash="dash"),
                               name="perfect calibration", hoverinfo="skip"))
    for i, (method, probs) in enumerate(probs_by_method.items()):
        e, table = ece(probs, labels, n_bins)
        rows = [b for b in table if b["count"]]
        fig.add_trace(go.Scatter(x=[b["conf"] for b in rows], y=[b["acc"] for b in rows], mode="lines+markers",
                                 name=f"{method} (ECE {100 * e:.1f}%)", line=dict(color=_COLORS[i % len(_COLORS)]),
                                 marker=dict(size=[4 + 16 * np.sqrt(b["count"] / len(labels)) for b in rows]),
                                 customdata=[[b["lo"], b["hi"], b["count"]] for b in rows],
                                 hovertemplate=method + "<br>bin (%{customdata[0]:.2f}, %{customdata[1]:.2f}]"
                                               "<br>n %{customdata[2]}<br>conf %{x:.3f}<br>acc %{y:.3f}<extra></extra>"))
    fig.update_layout(title="Reliability diagram (test)", xaxis_title="confidence (max probability)",
                      yaxis_title="accuracy", template="plotly_white", xaxis=dict(range=[0, 1]),
                      yaxis=dict(range=[0, 1]))
    return fig


def summary_table(run_dir):
    """Test acc and ECE (mean ± std over seeds, %) per dataset x method from ``results.json``."""
    res = read_run(run_dir, BAYES_RUN).results
    return pd.DataFrame([{"dataset": s["dataset"], "method": s["method"], "n": s["n"],
                          "test_acc": 100 * s["test_acc_mean"], "test_acc_std": 100 * s["test_acc_std"],
                          "test_ece": 100 * s["test_ece_mean"], "test_ece_std": 100 * s["test_ece_std"],
                          "density_data": s["density_data"]} for s in res["summary"]])


def svgd_explorer(dist, method: str = "pca", max_particles: int | None = None, max_iterations: int = 3000):
    """Widgets (ipywidgets): sliders for the number of particles and SVGD iterations; each change reruns SVGD on the
    same fitted GMM (:func:`workbench.bayes.rerun_svgd`) and redraws the 2-D view and the diagnostics."""
    import ipywidgets as W  # lazy: notebooks extra
    n = int(dist.info["n_kshot"])
    parts = W.IntSlider(value=int(dist.info["n_particles"]), min=2, max=max_particles or 4 * n, description="particles")
    iters = W.IntSlider(value=int(dist.info["config"]["iterations"]), min=10, max=max_iterations, step=10,
                        description="iterations", continuous_update=False)
    parts.continuous_update = False
    out = W.Output()

    def redraw(_=None):
        d = rerun_svgd(dist, parts.value, iters.value)
        box.last = d  # the rerun distribution (inspectable; also what the figures show)
        with out:
            out.clear_output(wait=True)
            distribution_2d(d, method).show()
            svgd_diagnostics(d).show()

    parts.observe(redraw, "value")
    iters.observe(redraw, "value")
    box = W.VBox([W.HBox([parts, iters]), out])
    box.controls, box.last = {"particles": parts, "iterations": iters}, None
    box.redraw = redraw
    redraw()
    return box
