"""Sentence-space views of the explorer: how a tuned prompt reshapes the space in which test examples are
classified (:func:`sentence_space`), and where the auxiliary tasks of MetaPT/SUPMER (a ``cluster`` run directory)
sit relative to the target data (:func:`corpus_space`).

Geometry: every point is L2-normalised before projecting (the similarity head classifies by cosine, and it puts the
LM heads' hidden states and vocabulary rows on one scale); both panels of :func:`sentence_space` share one projection
fitted on all their points, so positions are comparable across panels. Label anchors: the label-text embeddings of
the similarity head (``head.anchors``) or, for LM heads, the output-embedding (verbalizer) rows of each label word
(mean over its pieces). Pooled features are the mean of the last hidden states over the real input tokens (the
prompt positions excluded), as the heads return them.

What a panel claims: accuracy on a sample of the test set is shown with its n and marked as a subsample, next to the
full-test accuracy from the run's ``results.json`` when known ("56% on 100 sampled test examples (full test: 72.4%,
n=872)"). Anchor names are drawn as annotations pushed apart in distinct directions, so two anchors that project onto
one spot ("It was great." / "It was terrible.") stay readable. Titles name no file-system path.
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
from workbench.viz.explore_data import ExploreError, backbone_for, load_prompt_runs, result_rows, short_name
from workbench.viz.projection import fit_projection, projection_meta, with_projection
from workbench.viz.style import SERIES, init_colour, pct, styled, title

ANCHOR_OFFSET = 38  # pixels between an anchor and its label; the labels of C anchors point in C directions

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
            "n_test": len(ds.splits["test"]),
            "texts": [_example_text(e) for e in examples], "anchors": anchors, "anchor_names": names,
            "plain": {"features": plain["features"], "pred": plain["logits"].argmax(1), "acc": plain["acc"]},
            "tuned": {"features": tuned["features"], "pred": tuned["logits"].argmax(1), "acc": tuned["acc"]}}


def accuracy_label(acc: float, n: int, n_test: int | None = None, full: float | None = None) -> str:
    """Accuracy with its n: "72.4% on all 872 test examples", or for a sample "56% on 100 sampled test examples
    (full test: 72.4%, n=872)" (the full-test value when known)."""
    if n_test is not None and n >= n_test:
        return f"{pct(acc):.1f}% on all {n} test examples"
    text = f"{pct(acc):.{0 if n <= 200 else 1}f}% on {n} sampled test examples"
    if full is not None:
        return f"{text} (full test: {pct(full):.1f}%" + (f", n={n_test})" if n_test is not None else ")")
    return text + (f" of {n_test}" if n_test is not None else "")


def anchor_offsets(n: int, radius: float = ANCHOR_OFFSET) -> list[tuple[float, float]]:
    """(ax, ay) pixel offsets of ``n`` labels: one direction each, the first straight up, so no two coincide."""
    angles = -np.pi / 2 + 2 * np.pi * np.arange(n) / max(n, 1)
    return [(round(float(radius * np.cos(a)), 1), round(float(radius * np.sin(a)), 1)) for a in angles]


def _anchor_labels(fig, xy, names, colours, row: int, col: int) -> None:
    for (x, y), name, (ax, ay), c in zip(xy, names, anchor_offsets(len(names)), colours):
        fig.add_annotation(x=x, y=y, ax=ax, ay=ay, text=name, showarrow=True, arrowhead=0, arrowwidth=1,
                           arrowcolor=c, font=dict(size=12, color="#222"), bgcolor="rgba(255,255,255,0.85)",
                           bordercolor=c, borderwidth=1, row=row, col=col)


def _full_accuracies(f) -> dict:
    """The full-test accuracies of the two panels from the run's results.json: zero-shot, and the tuned prompt."""
    r = f["run"]
    rows = result_rows(r.run)
    plain = next((row.get("test_acc") for (ds, m, _), row in sorted(rows.items()) if ds == r.dataset
                  and m == "zero-shot"), None)
    return {"plain": plain, "tuned": r.test_acc}


def _example_traces(fig, f, key: str, pxy, name: str, col: int) -> None:
    pred = f[key]["pred"]
    for c, label in enumerate(f["labels"]):
        for ok in (True, False):
            m = (f["gold"] == c) & ((pred == f["gold"]) == ok)
            if not m.any():
                continue
            text = [f"{_short(t)}<br>gold {label}, predicted {f['labels'][p]}<br>{name}"
                    for t, p in zip(np.array(f["texts"], dtype=object)[m], pred[m])]
            fig.add_trace(go.Scatter(
                x=pxy[m, 0], y=pxy[m, 1], mode="markers", name=f"{label} ({'correct' if ok else 'wrong'})",
                legendgroup=f"{label}-{ok}", showlegend=col == 1, text=text,
                customdata=np.nonzero(m)[0], hovertemplate="%{text}<extra>example %{customdata}</extra>",
                marker=dict(color=SERIES[c % len(SERIES)], size=8 if ok else 9, symbol="circle" if ok else "x",
                            opacity=0.8)), row=1, col=col)


def sentence_space(run_dir, dataset: str | None = None, method: str | None = None, seed: int | None = None,
                   n_examples: int = 200, projection: str = "pca", sample_seed: int = 0, backbone=None, cache_dir=None):
    """Side by side: test examples' pooled features without a prompt and with the tuned prompt, coloured by gold
    label, circle = correct / x = wrong, label anchors as stars; one projection shared by both panels. Each panel
    states its accuracy with n (and the full-test accuracy when the examples are a sample)."""

    f = sentence_features(run_dir, dataset, method, seed, n_examples, sample_seed, backbone)
    r, n, C, n_test = f["run"], len(f["gold"]), len(f["anchors"]), f["n_test"]
    pts = np.concatenate([_unit(f["plain"]["features"]), _unit(f["tuned"]["features"]), _unit(f["anchors"])])
    proj = fit_projection(pts, projection, sample_seed, cache_dir=cache_dir)
    xy = proj.coords
    full = _full_accuracies(f)
    panels = [("plain", xy[:n], "no prompt"), ("tuned", xy[n:2 * n], f"prompt {r.method} seed {r.seed}")]
    labels = {key: accuracy_label(f[key]["acc"], n, n_test, full[key]) for key, _, _ in panels}
    fig = make_subplots(rows=1, cols=2, shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"<b>{name}</b><br>{labels[key].replace(' (', '<br>(')}"
                                        for key, _, name in panels])
    colours = [SERIES[c % len(SERIES)] for c in range(C)]
    for col, (key, pxy, name) in enumerate(panels, 1):
        _example_traces(fig, f, key, pxy, name, col)
        fig.add_trace(go.Scatter(
            x=xy[2 * n:, 0], y=xy[2 * n:, 1], mode="markers", name="label anchors", legendgroup="anchors",
            showlegend=col == 1, text=f["anchor_names"], hovertemplate="anchor: %{text}<extra></extra>",
            marker=dict(symbol="star", size=18, color=colours, line=dict(width=1.5, color="black"))), row=1, col=col)
        _anchor_labels(fig, xy[2 * n:], f["anchor_names"], colours, 1, col)
    kind = "label-text embeddings" if r.family == "encoder" else "verbalizer rows"
    sample = None if n >= n_test else f"{n} of {n_test} test examples sampled"
    head = title("Sentence space of test examples", r.dataset, r.k, extra=sample, test_n=n if sample is None else None)
    styled(fig, title=f"{head}<br><sup>{proj.label} of L2-normalised pooled features; stars = label anchors ({kind})"
                      f"</sup>", legend="gold label (marker: prediction)", height=580)
    fig.update_annotations(selector=dict(showarrow=False), font_size=12)
    fig.update_xaxes(title_text=proj.axis(1))
    fig.update_yaxes(title_text=proj.axis(2), row=1, col=1)
    fig.update_layout(hovermode="closest", margin=dict(t=140),
                      meta={"run": str(r.run), "dataset": r.dataset, "method": r.method, "seed": r.seed, "n": n,
                            "n_test": n_test, "subsample": n < n_test, **projection_meta(proj),
                            "acc_plain": f["plain"]["acc"], "acc_tuned": f["tuned"]["acc"],
                            "acc_plain_full": full["plain"], "acc_tuned_full": full["tuned"],
                            "acc_labels": labels})
    return fig


def _cluster_run(cdir: Path, backbone=None):
    """(clustering, assignment rows, config, backbone) of a ``cluster`` run directory; the backbone it was
    clustered with (loaded on CPU unless ``backbone`` is given, which must be the same one)."""
    try:
        cl = load_clustering(cdir)
    except ClusterError as e:
        raise ExploreError(f"{cdir} is not a cluster run directory: {e}") from None
    run = read_run(cdir, "written by `python -m workbench cluster`")
    cfg = run.config if run.has(CONFIG) else {}
    path = (cl.backbone or {}).get("path") or cfg.get("backbone")
    if backbone is None:
        try:
            backbone = load_backbone(BackboneConfig(name=path or "minilm", device="cpu"))
        except (BackboneError, OSError) as e:
            raise ExploreError(f"cannot load backbone {path} of {cdir}: {e}") from None
    elif path and str(backbone.path) != str(path):
        raise ExploreError(f"{cdir} was clustered with backbone {path}, not {backbone.path}: different spaces")
    return cl, run.jsonl("assignments.jsonl"), cfg, backbone


def corpus_space(cluster_dir, dataset: str, n_corpus: int = 2000, n_target: int = 300, projection: str = "pca",
                 seed: int = 0, backbone=None, cache_dir=None):
    """A ``cluster`` run (MetaPT/SUPMER auxiliary tasks) and the target dataset's test texts in one sentence space:
    corpus texts coloured by cluster, cluster centroids (labelled with keywords), target examples in black.
    Features are :func:`workbench.corpus.embed_texts` (the same featuriser the clustering used, cached on disk)."""
    cl, rows, cfg, backbone = _cluster_run(Path(cluster_dir), backbone)
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
    proj = fit_projection(pts, projection, seed, cache_dir=cache_dir)
    xy = proj.coords
    n, k = len(rows), len(cl.centroids)
    fig = go.Figure()
    assign = np.array([r["cluster"] for r in rows])
    keywords = {s["id"]: ", ".join(s["keywords"][:4]) for s in cl.summaries}
    for c in range(k):
        m = assign == c
        if m.any():
            fig.add_trace(go.Scatter(
                x=xy[:n][m, 0], y=xy[:n][m, 1], mode="markers", name=f"cluster {c}: {keywords.get(c, '')}",
                legendgroup=f"c{c}", marker=dict(size=5, opacity=0.5, color=SERIES[c % len(SERIES)]),
                text=[f"cluster {c} ({keywords.get(c, '')})<br>{_short(r['text'])}"
                      for r, keep in zip(rows, m) if keep],
                hovertemplate="%{text}<extra>corpus</extra>"))
    fig.add_trace(go.Scatter(
        x=xy[n:n + k, 0], y=xy[n:n + k, 1], mode="markers", name="cluster centroids (auxiliary tasks)",
        text=[f"{c}" for c in range(k)],  # hover only: the legend names each cluster's colour, no labels to overlap
        customdata=[[keywords.get(c, ""), cl.sizes[c]] for c in range(k)],
        hovertemplate="cluster %{text}<br>keywords %{customdata[0]}<br>size %{customdata[1]}<extra>centroid</extra>",
        marker=dict(symbol="x", size=14, color=[SERIES[c % len(SERIES)] for c in range(k)],
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
    corpus = short_name(cl.corpus.get("name", "?"))
    what = (f"Auxiliary tasks ({cl.method}, {k} clusters of {n} {corpus} texts) and {len(target)} {ds.name} test "
            f"examples in one sentence space")
    styled(fig, title=with_projection(what, proj.label), x=proj.axis(1), y=proj.axis(2),
           legend="cluster: keywords / target label")
    fig.update_layout(hovermode="closest", meta={"n_corpus": n, "n_target": len(target), "k": k,
                                                 **projection_meta(proj)})
    return fig


def _distribution(p: Path, dataset: str | None, seed: int | None):
    """(folder, distribution): ``p`` itself when it holds ``distribution.json``, else the first match in a bayes run."""
    if not (p / "distribution.json").is_file():
        found = sorted(p.glob(f"distributions/{dataset or '*'}/seed{'*' if seed is None else seed}/distribution.json"))
        if not found:
            raise ExploreError(f"{p} holds no saved BayesPrompt distribution (distribution.json; in a bayes run under "
                               f"distributions/<dataset>/seed<s>/) for dataset={dataset!r} seed={seed!r}")
        p = found[0].parent
    try:
        return p, load_distribution(p)
    except BayesError as e:
        raise ExploreError(str(e)) from None


def particles_space(path, dataset: str | None = None, seed: int | None = None, projection: str = "pca",
                    cache_dir=None):
    """BayesPrompt's SVGD particles with the target data their density was fitted to, in one 2-D map: the density
    data (the k-shot features), the GMM component means, and each particle's move from its start (open circle) to
    its end (diamond). ``path`` is a saved distribution folder (``distribution.json`` + ``.safetensors``) or a
    ``bayes`` run directory (then ``distributions/<dataset>/seed<seed>``; the first one when not given). All points
    are in the distribution's fitted space (the feature space, or its PCA space when ``pca_dim`` was set)."""
    p, dist = _distribution(Path(path), dataset, seed)
    data, start, end = (t.double().numpy() for t in (dist.data, dist.init_particles, dist.particles))
    means = dist.means.double().numpy()
    pts = np.concatenate([data, means, start, end]).astype(np.float32)
    proj = fit_projection(pts, projection, 0, cache_dir=cache_dir)
    xy = proj.coords
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
    colour = init_colour("bayes")
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", name="SVGD moves", line=dict(color=colour, width=1),
                             hoverinfo="skip"))
    for lo, sym, label in ((b, "circle-open", "particles (start)"), (b + m, "diamond", "particles (end)")):
        fig.add_trace(go.Scatter(x=xy[lo:lo + m, 0], y=xy[lo:lo + m, 1], mode="markers", name=label,
                                 marker=dict(symbol=sym, size=9, color=colour), customdata=np.arange(m),
                                 hovertemplate=f"particle %{{customdata}} ({label})<extra></extra>"))
    info, where = dist.info, p.name if p.name.startswith("seed") else None
    head = title(f"BayesPrompt: {m} SVGD particles and {a} target examples", info.get("dataset"), info.get("k"),
                 extra=where.replace("seed", "seed ") if where else None)
    styled(fig, title=with_projection(head, proj.label), x=proj.axis(1), y=proj.axis(2), legend="points")
    fig.update_layout(hovermode="closest", meta={"distribution": str(p), "n_particles": m, "n_data": a,
                                                 "components": len(means), **projection_meta(proj)})
    return fig
