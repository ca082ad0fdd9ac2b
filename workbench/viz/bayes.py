"""Figures for BayesPrompt runs (plotly, with hover): the distribution in 2-D, SVGD trajectories and diagnostics, the
ensemble's per-example spread, reliability diagrams. Pure functions of a :class:`~workbench.bayes.Distribution` or a
run directory; :func:`workbench.viz.output.save_figure` writes them as HTML. Every figure is in the ``workbench``
style (:mod:`workbench.viz.style`): particles in BayesPrompt's colour, methods in their init colour, accuracy in %.

2-D views (:func:`workbench.viz.projection.fit_projection`): ``method="pca"`` (default) projects the fitted space
with a PCA fitted on the density data and the particles (initial and final) together; GMM components are drawn as
their means with the 2-sigma ellipse of the projected covariance. ``method="umap"`` (needs umap-learn) embeds the same
points non-linearly; component ellipses are then omitted (a covariance has no UMAP image) and every point is placed
in that map by its nearest fitted points (``Projection.place``). UMAP on fewer than ``UMAP_MIN_POINTS`` points falls
back to PCA; the title and ``layout.meta`` say so.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from safetensors.numpy import load_file

from workbench.engine.runs import read_run
from workbench.methods.bayes import ece, rerun_svgd
from workbench.viz.projection import fit_projection, projection_meta, with_projection
from workbench.viz.style import SERIES, init_colour, integer_ticks, pct, styled, title

BAYES_RUN = "expected the --out folder of a `python -m workbench bayes` run"
PARTICLES = init_colour("bayes")  # the particles are BayesPrompt's: its colour in every figure
START = "#c5b0d5"  # the particles' start: a light shade of the same family
DATA = "#7f7f7f"


def _projection(dist, method: str = "pca", seed: int = 0):
    """:func:`workbench.viz.projection.fit_projection` fitted on the density data and the initial and final
    particles (UMAP on too few of them is PCA, noted in ``info``)."""
    pts = np.concatenate([dist.data.numpy(), dist.init_particles.numpy(), dist.particles.numpy()])
    return fit_projection(pts, method, seed, min(15, len(pts) - 1), cache=False)


def _projector(dist, method: str = "pca", seed: int = 0):
    """(map of points to 2-D, the (d, 2) PCA axes or None) of :func:`_projection`; other points are placed by
    ``Projection.place``."""
    proj = _projection(dist, method, seed)
    return proj.place, (proj.components.T if proj.method == "pca" else None)


def _title(dist, what: str, extra: str | None = None) -> str:
    info = dist.info
    seed = info.get("seed")
    return title(what, info.get("dataset"), info.get("k"), extra=", ".join(
        x for x in (f"seed {seed}" if seed is not None else None, extra) if x))


def _ellipse(mean2, cov2, n=60, sigma=2.0):
    vals, vecs = np.linalg.eigh(cov2)
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (vecs @ (sigma * np.sqrt(np.clip(vals, 0, None))[:, None] * circle)).T + mean2


def _components(fig, dist, place, w) -> None:
    means2 = place(dist.means.numpy())
    covs = dist.covariances.numpy()
    for k in range(len(means2)):
        c = SERIES[k % len(SERIES)]
        wk = float(dist.weights[k])
        if w is not None:
            cov = covs[k] if dist.covariance == "full" else np.diag(covs[k])
            e = _ellipse(means2[k], w.T @ cov @ w)
            fig.add_trace(go.Scatter(x=e[:, 0], y=e[:, 1], mode="lines", line=dict(color=c, dash="dot"),
                                     name=f"component {k} (2σ)", hoverinfo="skip", legendgroup=f"c{k}"))
        fig.add_trace(go.Scatter(x=[means2[k, 0]], y=[means2[k, 1]], mode="markers", legendgroup=f"c{k}",
                                 marker=dict(color=c, size=14, symbol="x"), name=f"component {k} mean",
                                 hovertemplate=f"component {k}<br>weight {wk:.3f}<extra></extra>"))


def distribution_2d(dist, method: str = "pca", labels=None):
    """Density data, GMM components (means + 2-sigma ellipses with PCA), initial and final particles in 2-D."""
    proj = _projection(dist, method)
    place, w = proj.place, (proj.components.T if proj.method == "pca" else None)
    fig = go.Figure()
    data2 = place(dist.data.numpy())
    n_k = dist.info.get("n_kshot", len(data2))
    text = [f"k-shot #{i}" + (f" label {labels[i]}" if labels is not None and i < len(labels) else "")
            for i in range(n_k)]
    fig.add_trace(go.Scatter(x=data2[:n_k, 0], y=data2[:n_k, 1], mode="markers", name="k-shot features",
                             marker=dict(color=DATA, size=7, symbol="circle-open"), text=text,
                             hovertemplate="%{text}<extra></extra>"))
    if len(data2) > n_k:
        fig.add_trace(go.Scatter(x=data2[n_k:, 0], y=data2[n_k:, 1], mode="markers", name="unlabeled features",
                                 marker=dict(color="#bbbbbb", size=4), hoverinfo="skip"))
    _components(fig, dist, place, w)
    for name, x, sym, col in (("initial particles", dist.init_particles, "circle-open", PARTICLES),
                              ("SVGD particles", dist.particles, "diamond", PARTICLES)):
        p2 = place(x.numpy())
        fig.add_trace(go.Scatter(x=p2[:, 0], y=p2[:, 1], mode="markers", name=name,
                                 marker=dict(color=col, size=8, symbol=sym), customdata=np.arange(len(p2)),
                                 hovertemplate=name + " #%{customdata}<extra></extra>"))
    what = f"GMM ({len(dist.means)} components, {dist.covariance} covariance) and SVGD particles"
    styled(fig, title=with_projection(_title(dist, what), proj.label), x=proj.axis(1), y=proj.axis(2), legend="points")
    fig.update_layout(meta=projection_meta(proj))
    return fig


def _path_lines(frames_xy, upto: int):
    """Every particle's path from iteration 0 to frame ``upto``, as one line trace (None between particles)."""
    xs, ys = [], []
    for i in range(frames_xy[0].shape[0]):
        xs += [f[i, 0] for f in frames_xy[:upto + 1]] + [None]
        ys += [f[i, 1] for f in frames_xy[:upto + 1]] + [None]
    return xs, ys


def _frame_traces(frames_xy, j: int, means2):
    xs, ys = _path_lines(frames_xy, j)
    xy = frames_xy[j]
    return [go.Scatter(x=xs, y=ys, mode="lines", name="paths so far", line=dict(color=PARTICLES, width=1.5),
                       hoverinfo="skip"),
            go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name="particles", customdata=np.arange(len(xy)),
                       marker=dict(color=PARTICLES, size=9, symbol="diamond", line=dict(color="white", width=1)),
                       hovertemplate="particle #%{customdata}<extra></extra>"),
            go.Scatter(x=means2[:, 0], y=means2[:, 1], mode="markers", name="component means",
                       marker=dict(color="#d62728", size=14, symbol="x"), hoverinfo="skip")]


def _iterations(dist, n_frames: int) -> list[int]:
    cfg = dist.info.get("config", {})
    every = cfg.get("record_every", 1) or 1
    its = [i * every for i in range(n_frames)]
    its[-1] = cfg.get("iterations", its[-1])
    return its


def svgd_animation(dist, method: str = "pca"):
    """Particles over SVGD iterations as an animated scatter (needs a distribution fitted with record_every > 0).

    The figure opens on iteration 0 (the slider's active step and the drawn data are the first frame); each frame
    draws every particle's path so far, and the whole paths stay in the background as faint lines."""
    if dist.trajectory is None:
        raise ValueError("this distribution has no trajectory: fit it with bayes.record_every > 0")
    proj = _projection(dist, method)
    frames_xy = [proj.place(f.numpy()) for f in dist.trajectory]
    its = _iterations(dist, len(frames_xy))
    means2 = proj.place(dist.means.numpy())
    lo = np.min([f.min(0) for f in frames_xy] + [means2.min(0)], 0)
    hi = np.max([f.max(0) for f in frames_xy] + [means2.max(0)], 0)
    pad = 0.05 * (hi - lo + 1e-9)
    xs, ys = _path_lines(frames_xy, len(frames_xy) - 1)
    whole = go.Scatter(x=xs, y=ys, mode="lines", name="whole paths", line=dict(color=START, width=1, dash="dot"),
                       hoverinfo="skip")
    frames = [go.Frame(data=_frame_traces(frames_xy, j, means2), traces=[1, 2, 3], name=str(it))
              for j, it in enumerate(its)]
    fig = go.Figure(data=[whole, *_frame_traces(frames_xy, 0, means2)], frames=frames)
    steps = [dict(method="animate", label=str(it), args=[[str(it)], dict(mode="immediate", frame=dict(duration=0,
                                                                                                       redraw=True))])
             for it in its]
    styled(fig, title=with_projection(_title(dist, f"SVGD trajectories of {frames_xy[0].shape[0]} particles"),
                                      proj.label), x=proj.axis(1), y=proj.axis(2), legend="SVGD")
    fig.update_layout(
        xaxis=dict(range=[lo[0] - pad[0], hi[0] + pad[0]]), yaxis=dict(range=[lo[1] - pad[1], hi[1] + pad[1]]),
        updatemenus=[dict(type="buttons", x=0, y=-0.12, xanchor="left", yanchor="top", buttons=[dict(
            label="play", method="animate", args=[None, dict(frame=dict(duration=200, redraw=True),
                                                            fromcurrent=True)])])],
        sliders=[dict(active=0, steps=steps, x=0.1, len=0.9, currentvalue=dict(prefix="iteration "))],
        meta={**projection_meta(proj), "iterations": its, "active_frame": str(its[0])})
    return fig


def svgd_diagnostics(dist):
    """Mean log-density and kernel Stein discrepancy of the particles over SVGD iterations."""
    h = dist.info["svgd"]["history"]
    it = [r["iteration"] for r in h]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean log-density of the particles",
                                                        "kernel Stein discrepancy (KSD)"))
    fig.add_trace(go.Scatter(x=it, y=[r["mean_log_density"] for r in h], name="mean log-density",
                             line=dict(color=PARTICLES),
                             hovertemplate="iteration %{x}<br>mean log p %{y:.4g}<extra></extra>"), 1, 1)
    fig.add_trace(go.Scatter(x=it, y=[r["ksd"] for r in h], name="KSD", line=dict(color=SERIES[1]),
                             hovertemplate="iteration %{x}<br>KSD %{y:.4g}<extra></extra>"), 1, 2)
    styled(fig, title=_title(dist, "SVGD convergence", f"{dist.info.get('n_particles', '?')} particles"),
           x="SVGD iteration", legend="measure")
    fig.update_yaxes(title_text="mean log p(particle)", row=1, col=1)
    fig.update_yaxes(title_text="KSD", row=1, col=2)
    integer_ticks(fig, it, "x")
    return fig


def load_predictions(run_dir, dataset: str, seed: int) -> dict:
    """method -> {"probs" (N, C), "labels" (N,), ["members" (R, N, C)]} as numpy arrays."""
    d = read_run(run_dir, BAYES_RUN).path / "predictions" / dataset / f"seed{seed}"
    if not d.is_dir():
        raise ValueError(f"no predictions at {d} (expected a bayes run directory)")
    return {f.stem: load_file(str(f)) for f in sorted(d.glob("*.safetensors"))}


def ensemble_spread(members: np.ndarray, labels: np.ndarray, max_points: int = 2000, dataset: str | None = None,
                    k: int | None = None):
    """Per test example: mean ± std over the R ensemble prompts of the probability of the true class (sorted, %)."""
    p_true = members[:, np.arange(members.shape[1]), labels]  # (R, N)
    mean, std = pct(p_true.mean(0)), pct(p_true.std(0))
    order = np.argsort(mean)[:: max(1, members.shape[1] // max_points)]
    correct = members.mean(0).argmax(1) == labels
    fig = go.Figure()
    x = np.arange(len(order))
    for ok, name, colour in ((True, "ensemble correct", "#2ca02c"), (False, "ensemble wrong", "#d62728")):
        m = correct[order] == ok
        fig.add_trace(go.Scatter(x=x[m], y=mean[order][m], mode="markers", name=name,
                                 error_y=dict(type="data", array=std[order][m], thickness=1, color="#c5b0d5"),
                                 marker=dict(color=colour, size=5), customdata=np.stack([order[m], std[order][m]], 1),
                                 hovertemplate="test example #%{customdata[0]}<br>mean p(true) %{y:.1f}%"
                                               "<br>std over prompts %{customdata[1]:.1f}%<extra></extra>"))
    what = (f"Ensemble of {members.shape[0]} sampled prompts: per-example spread (mean std {std.mean():.1f} "
            f"points)")
    styled(fig, title=title(what, dataset, k, test_n=members.shape[1]),
           x="test examples, sorted by mean p(true class)", y="p(true class) (%)", legend="prediction")
    fig.update_yaxes(range=[0, 100])
    fig.update_xaxes(tickformat="d")
    return fig


def reliability_diagram(probs_by_method: dict, labels: np.ndarray, n_bins: int = 15, dataset: str | None = None,
                        k: int | None = None, seed: int | None = None):
    """Accuracy vs. confidence per bin (15 equal-width bins, as the ECE) for each method; the diagonal is perfect.

    Both axes are in %; the confidence axis starts at 100/C % (the confidence of a C-class prediction is at least 1/C,
    so a [0, 1] axis would leave its left part empty for every binary task)."""
    n_classes = {np.asarray(p).shape[1] for p in probs_by_method.values()}
    if len(n_classes) != 1:
        raise ValueError(f"probs_by_method: methods with different class counts {sorted(n_classes)}")
    floor = 100 / n_classes.pop()
    fig = go.Figure(go.Scatter(x=[floor, 100], y=[floor, 100], mode="lines", line=dict(color="#999", dash="dash"),
                               name="perfect calibration", hoverinfo="skip"))
    for method, probs in probs_by_method.items():
        e, table = ece(probs, labels, n_bins)
        rows = [b for b in table if b["count"]]
        fig.add_trace(go.Scatter(x=[pct(b["conf"]) for b in rows], y=[pct(b["acc"]) for b in rows],
                                 mode="lines+markers", name=f"{method} (ECE {100 * e:.1f}%)",
                                 line=dict(color=init_colour(method)),
                                 marker=dict(size=[4 + 16 * np.sqrt(b["count"] / len(labels)) for b in rows]),
                                 customdata=[[pct(b["lo"]), pct(b["hi"]), b["count"]] for b in rows],
                                 hovertemplate=method + "<br>bin (%{customdata[0]:.0f}%, %{customdata[1]:.0f}%]"
                                               "<br>n %{customdata[2]}<br>confidence %{x:.1f}%<br>accuracy %{y:.1f}%"
                                               "<extra></extra>"))
    styled(fig, title=title("Reliability diagram", dataset, k, extra=None if seed is None else f"seed {seed}",
                            test_n=len(labels)),
           x=f"confidence (max probability, %; ≥ {floor:.0f}% for {round(100 / floor)} classes)",
           y="accuracy (%)", legend="method (ECE)")
    fig.update_layout(xaxis=dict(range=[floor - 2, 101]), yaxis=dict(range=[0, 101]),
                      meta={"n_classes": round(100 / floor), "confidence_floor": floor, "test_n": len(labels)})
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
