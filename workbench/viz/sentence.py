"""Sentence-space views of the explorer: how a tuned prompt reshapes the space in which test examples are
classified (:func:`sentence_space`), and where the auxiliary tasks of MetaPT/SUPMER (a ``cluster`` run directory)
sit relative to the target data (:func:`corpus_space`).

Geometry: every point is L2-normalised before projecting (the similarity head classifies by cosine, and it puts the
LM heads' hidden states and vocabulary rows on one scale); both panels of :func:`sentence_space` share one projection
fitted on all their points, so positions are comparable across panels. Label anchors: the label-text embeddings of
the similarity head (``head.anchors``) or, for LM heads, the output-embedding (verbalizer) rows of each label word
(mean over its pieces). Pooled features are the mean of the last hidden states over the real input tokens (the
prompt positions excluded), as the heads return them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from workbench.config import (
    BackboneConfig,
    ConfigError,
    PromptConfig,
    TaskConfig,
    TuneConfig,
    from_dict,
)
from workbench.engine.backbones import BackboneError, load_backbone
from workbench.engine.data import DataError, load_dataset
from workbench.engine.heads import make_head
from workbench.engine.runs import CONFIG, read_run
from workbench.engine.templates import resolve_format
from workbench.learn.tuner import evaluate
from workbench.methods.bayes import BayesError, load_distribution
from workbench.tasks.corpus import ClusterError, embed_texts, load_clustering
from workbench.viz.explore_data import ExploreError, backbone_for, load_prompt_runs
from workbench.viz.projection import fit_projection
from workbench.viz.runs import _PALETTE

_MAX_TEXT = 160


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _short(text: str) -> str:
    t = " ".join(str(text).split())
    return t if len(t) <= _MAX_TEXT else t[:_MAX_TEXT - 3] + "..."


def _example_text(ex) -> str:
    return ex.text_a if ex.text_b is None else f"{ex.text_a} || {ex.text_b}"


def _run_settings(run: Path):
    """The task/prompt/tune settings the run used (its config.json), or the defaults for sections it lacks."""

    r = read_run(run)
    path, cfg = r.path / CONFIG, r.config if r.has(CONFIG) else {}
    out = []
    for key, cls in (("task", TaskConfig), ("prompt", PromptConfig), ("tune", TuneConfig)):
        try:
            out.append(from_dict(cls, cfg[key]) if isinstance(cfg.get(key), dict) else cls())
        except (ConfigError, TypeError) as e:
            raise ExploreError(f"{path}: section {key!r} is not a {cls.__name__} ({e})") from None
    return out


def _sample(items: list, n: int, seed: int) -> list:
    if n is None or len(items) <= n:
        return list(items)
    idx = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in idx]


def label_anchors(head) -> tuple[np.ndarray, list[str]]:
    """(C, d) label anchors and their names: label-text embeddings (similarity head) or verbalizer rows (LM heads)."""
    if head.family == "encoder":
        return head.anchors.float().cpu().numpy(), list(head.fmt.label_texts)
    rows = head.bb.model.get_output_embeddings().weight.detach().float().cpu().numpy()
    pieces = getattr(head, "pieces", None) or head.label_pieces()
    return np.stack([rows[p].mean(0) for p in pieces]), list(head.fmt.verbalizer)


def sentence_features(run_dir, dataset: str | None = None, method: str | None = None, seed: int | None = None,
                      n_examples: int = 200, sample_seed: int = 0, backbone=None) -> dict:
    """Pooled features, predictions and texts of (a sample of) the test set, without a prompt and with the tuned
    prompt of ``method``/``seed`` (the first matching prompt of the run when not given), plus the label anchors."""


    runs = load_prompt_runs(run_dir, dataset, [method] if method else None, [seed] if seed is not None else None)
    r = runs[0]
    bb = backbone_for([r], backbone)
    task, prompt_cfg, tune = _run_settings(r.run)
    try:
        ds = load_dataset(r.dataset)
    except DataError as e:
        raise ExploreError(f"dataset {r.dataset!r} of {r.adapter} cannot be loaded: {e}") from None
    fmt = resolve_format(ds.name, ds.task, ds.labels, bb.family, task)
    head = make_head(bb, fmt, task, prompt_cfg, tune.max_length)
    examples = _sample(ds.splits["test"], n_examples, sample_seed)
    plain = evaluate(head, examples, None, tune.eval_batch_size, features=True)
    tuned = evaluate(head, examples, torch.from_numpy(r.prompt), tune.eval_batch_size, features=True)
    anchors, names = label_anchors(head)
    return {"run": r, "labels": list(ds.labels), "gold": np.array([e.label for e in examples]),
            "texts": [_example_text(e) for e in examples], "anchors": anchors, "anchor_names": names,
            "plain": {"features": plain["features"], "pred": plain["logits"].argmax(1), "acc": plain["acc"]},
            "tuned": {"features": tuned["features"], "pred": tuned["logits"].argmax(1), "acc": tuned["acc"]}}


def sentence_space(run_dir, dataset: str | None = None, method: str | None = None, seed: int | None = None,
                   n_examples: int = 200, projection: str = "pca", sample_seed: int = 0, backbone=None, cache_dir=None):
    """Side by side: test examples' pooled features without a prompt and with the tuned prompt, coloured by gold
    label, circle = correct / x = wrong, label anchors as stars; one projection shared by both panels."""

    f = sentence_features(run_dir, dataset, method, seed, n_examples, sample_seed, backbone)
    r, n, C = f["run"], len(f["gold"]), len(f["anchors"])
    pts = np.concatenate([_unit(f["plain"]["features"]), _unit(f["tuned"]["features"]), _unit(f["anchors"])])
    xy = fit_projection(pts, projection, sample_seed, cache_dir=cache_dir).coords
    panels = [("plain", xy[:n], "no prompt"), ("tuned", xy[n:2 * n], f"prompt {r.method} seed {r.seed}")]
    fig = make_subplots(rows=1, cols=2, shared_xaxes=True, shared_yaxes=True, subplot_titles=[
        f"{title} (acc {f[key]['acc']:.3f} on {n})" for key, _, title in panels])
    colour = {c: _PALETTE[c % len(_PALETTE)] for c in range(len(f["labels"]))}
    for col, (key, pxy, title) in enumerate(panels, 1):
        pred = f[key]["pred"]
        for c, label in enumerate(f["labels"]):
            for ok in (True, False):
                m = (f["gold"] == c) & ((pred == f["gold"]) == ok)
                if not m.any():
                    continue
                text = [f"{_short(t)}<br>gold {label}, predicted {f['labels'][p]}<br>{title}"
                        for t, p in zip(np.array(f["texts"], dtype=object)[m], pred[m])]
                fig.add_trace(go.Scatter(
                    x=pxy[m, 0], y=pxy[m, 1], mode="markers", name=f"{label} ({'correct' if ok else 'wrong'})",
                    legendgroup=f"{label}-{ok}", showlegend=col == 1, text=text,
                    customdata=np.nonzero(m)[0], hovertemplate="%{text}<extra>example %{customdata}</extra>",
                    marker=dict(color=colour[c], size=8 if ok else 9, symbol="circle" if ok else "x",
                                opacity=0.8)), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=xy[2 * n:, 0], y=xy[2 * n:, 1], mode="markers+text", name="label anchors", legendgroup="anchors",
            showlegend=col == 1, text=f["anchor_names"], textposition="top center",
            hovertemplate="anchor: %{text}<extra></extra>",
            marker=dict(symbol="star", size=18, color=[colour[c] for c in range(C)], line=dict(width=1.5,
                                                                                              color="black"))),
            row=1, col=col)
    kind = "label-text embeddings" if r.family == "encoder" else "verbalizer rows"
    fig.update_layout(title=f"Sentence space of {r.dataset} test examples ({projection.upper()} of L2-normalised "
                            f"pooled features; anchors = {kind})", template="plotly_white", hovermode="closest",
                      legend_title_text="gold label",
                      meta={"run": str(r.run), "dataset": r.dataset, "method": r.method, "seed": r.seed, "n": n,
                            "projection": projection, "acc_plain": f["plain"]["acc"], "acc_tuned": f["tuned"]["acc"]})
    return fig


def corpus_space(cluster_dir, dataset: str, n_corpus: int = 2000, n_target: int = 300, projection: str = "pca",
                 seed: int = 0, backbone=None, cache_dir=None):
    """A ``cluster`` run (MetaPT/SUPMER auxiliary tasks) and the target dataset's test texts in one sentence space:
    corpus texts coloured by cluster, cluster centroids (labelled with keywords), target examples in black.
    Features are :func:`workbench.corpus.embed_texts` (the same featuriser the clustering used, cached on disk)."""


    cdir = Path(cluster_dir)
    try:
        cl = load_clustering(cdir)
    except ClusterError as e:
        raise ExploreError(f"{cdir} is not a cluster run directory: {e}") from None
    run = read_run(cdir, "written by `python -m workbench cluster`")
    rows = run.jsonl("assignments.jsonl")
    cfg = run.config if run.has(CONFIG) else {}
    path = (cl.backbone or {}).get("path") or cfg.get("backbone")
    if backbone is None:
        try:
            backbone = load_backbone(BackboneConfig(name=path or "minilm", device="cpu"))
        except (BackboneError, OSError) as e:
            raise ExploreError(f"cannot load backbone {path} of {cdir}: {e}") from None
    elif path and str(backbone.path) != str(path):
        raise ExploreError(f"{cdir} was clustered with backbone {path}, not {backbone.path}: different spaces")
    try:
        ds = load_dataset(dataset)
    except DataError as e:
        raise ExploreError(f"dataset {dataset!r}: {e}") from None
    max_length = int(cl.corpus.get("max_length", cfg.get("max_length", 128)) or 128)
    rows = _sample(rows, n_corpus, seed)
    target = _sample(ds.splits["test"], n_target, seed)
    feats = embed_texts(backbone, [r["text"] for r in rows], max_length=max_length, cache_dir=cache_dir,
                        progress=False)
    tfeats = embed_texts(backbone, [_example_text(e) for e in target], max_length=max_length, cache_dir=cache_dir,
                         progress=False)
    pts = np.concatenate([_unit(feats), _unit(cl.centroids), _unit(tfeats)])
    xy = fit_projection(pts, projection, seed, cache_dir=cache_dir).coords
    n, k = len(rows), len(cl.centroids)
    fig = go.Figure()
    assign = np.array([r["cluster"] for r in rows])
    keywords = {s["id"]: ", ".join(s["keywords"][:4]) for s in cl.summaries}
    for c in range(k):
        m = assign == c
        if m.any():
            fig.add_trace(go.Scatter(
                x=xy[:n][m, 0], y=xy[:n][m, 1], mode="markers", name=f"cluster {c}: {keywords.get(c, '')}",
                legendgroup=f"c{c}", marker=dict(size=5, opacity=0.5, color=_PALETTE[c % len(_PALETTE)]),
                text=[f"cluster {c} ({keywords.get(c, '')})<br>{_short(r['text'])}"
                      for r, keep in zip(rows, m) if keep],
                hovertemplate="%{text}<extra>corpus</extra>"))
    fig.add_trace(go.Scatter(
        x=xy[n:n + k, 0], y=xy[n:n + k, 1], mode="markers+text", name="cluster centroids (auxiliary tasks)",
        text=[f"{c}" for c in range(k)], textposition="top center",
        customdata=[[keywords.get(c, ""), cl.sizes[c]] for c in range(k)],
        hovertemplate="cluster %{text}<br>keywords %{customdata[0]}<br>size %{customdata[1]}<extra>centroid</extra>",
        marker=dict(symbol="x", size=14, color=[_PALETTE[c % len(_PALETTE)] for c in range(k)],
                    line=dict(width=2, color="black"))))
    gold = np.array([e.label for e in target])
    for c, label in enumerate(ds.labels):
        m = gold == c
        if m.any():
            fig.add_trace(go.Scatter(
                x=xy[n + k:][m, 0], y=xy[n + k:][m, 1], mode="markers", name=f"{ds.name} test: {label}",
                marker=dict(size=8, color="black", symbol=("circle-open", "diamond-open", "square-open")[c % 3]),
                text=[_short(_example_text(e)) for e, keep in zip(target, m) if keep],
                hovertemplate=f"%{{text}}<br>gold {label}<extra>{ds.name}</extra>"))
    fig.update_layout(title=f"Auxiliary tasks ({cl.method}, k={k}, {cl.corpus.get('name', '?')}) and {ds.name} "
                            f"in one sentence space ({projection.upper()})", template="plotly_white",
                      hovermode="closest", meta={"n_corpus": n, "n_target": len(target), "k": k})
    return fig


def particles_space(path, dataset: str | None = None, seed: int | None = None, projection: str = "pca",
                    cache_dir=None):
    """BayesPrompt's SVGD particles with the target data their density was fitted to, in one 2-D map: the density
    data (the k-shot features), the GMM component means, and each particle's move from its start (open circle) to
    its end (diamond). ``path`` is a saved distribution folder (``distribution.json`` + ``.safetensors``) or a
    ``bayes`` run directory (then ``distributions/<dataset>/seed<seed>``; the first one when not given). All points
    are in the distribution's fitted space (the feature space, or its PCA space when ``pca_dim`` was set)."""


    p = Path(path)
    if not (p / "distribution.json").is_file():
        found = sorted(p.glob(f"distributions/{dataset or '*'}/seed{'*' if seed is None else seed}/distribution.json"))
        if not found:
            raise ExploreError(f"{p} holds no saved BayesPrompt distribution (distribution.json; in a bayes run under "
                               f"distributions/<dataset>/seed<s>/) for dataset={dataset!r} seed={seed!r}")
        p = found[0].parent
    try:
        dist = load_distribution(p)
    except BayesError as e:
        raise ExploreError(str(e)) from None
    data, start, end = (t.double().numpy() for t in (dist.data, dist.init_particles, dist.particles))
    means = dist.means.double().numpy()
    pts = np.concatenate([data, means, start, end]).astype(np.float32)
    xy = fit_projection(pts, projection, 0, cache_dir=cache_dir).coords
    a, b, m = len(data), len(data) + len(means), len(start)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xy[:a, 0], y=xy[:a, 1], mode="markers", name="target data (density fit)",
                             marker=dict(size=7, color="#7f7f7f"), customdata=np.arange(a),
                             hovertemplate="target example %{customdata}<extra>density data</extra>"))
    fig.add_trace(go.Scatter(x=xy[a:b, 0], y=xy[a:b, 1], mode="markers", name="GMM component means",
                             marker=dict(symbol="x", size=14, color="black"), customdata=dist.weights.numpy(),
                             hovertemplate="component mean<br>weight %{customdata:.3f}<extra></extra>"))
    lx, ly = [], []
    for i in range(m):
        lx += [xy[b + i, 0], xy[b + m + i, 0], None]
        ly += [xy[b + i, 1], xy[b + m + i, 1], None]
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", name="SVGD moves", line=dict(color="#d62728", width=1),
                             hoverinfo="skip"))
    for lo, sym, label in ((b, "circle-open", "particles (start)"), (b + m, "diamond", "particles (end)")):
        fig.add_trace(go.Scatter(x=xy[lo:lo + m, 0], y=xy[lo:lo + m, 1], mode="markers", name=label,
                                 marker=dict(symbol=sym, size=9, color="#d62728"), customdata=np.arange(m),
                                 hovertemplate=f"particle %{{customdata}} ({label})<extra></extra>"))
    fig.update_layout(title=f"BayesPrompt particles and target data ({projection.upper()}; {p})",
                      template="plotly_white", hovermode="closest",
                      meta={"distribution": str(p), "n_particles": m, "n_data": a, "components": len(means)})
    return fig
