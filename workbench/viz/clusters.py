"""Figures and small widgets for the MetaPT / MPT notebooks (01 clustering, 02 meta-training): pure functions that
return plotly figures or pandas tables; nothing is displayed or trained here except inside the K panel's callback.

- :func:`project_2d`: a 2-D map of sentence features (UMAP with cosine distance, or PCA).
- :func:`cluster_map`: the map coloured by cluster, hover = the (shortened) text, cluster id, keywords, Brown genre.
- :func:`cluster_table`: id, size, keywords, medoid per cluster. :func:`k_sweep`: purity/NMI/silhouette over K.
- :func:`meta_curves`: meta-train / meta-validation loss and accuracy over meta-steps from a ``metrics.jsonl``.
- :func:`k_panel`: an ipywidgets slider choosing K (re-clusters the cached features and redraws map and table).
"""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.metrics import silhouette_score

from workbench.tasks.corpus import ClusterError, cluster, nmi, purity
from workbench.viz.projection import fit_projection

BROWN_GENRES = {"a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
                "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres", "h": "government & misc.",
                "j": "learned", "k": "fiction: general", "l": "fiction: mystery", "m": "fiction: science",
                "n": "fiction: adventure", "p": "fiction: romance", "r": "humor"}
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
            "#756bb1", "#636363")


def project_2d(features, projection: str = "umap", n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of ``features`` (n, d): ``umap`` (cosine metric, ``n_neighbors`` capped at n-1, seeded) or
    ``pca``, both by :func:`workbench.viz.projection.fit_projection` (not cached on disk)."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"need at least 3 feature rows (n, d) to project, got shape {x.shape}")
    return fit_projection(x, projection, seed, int(n_neighbors), cache=False).coords


def _short(text: str, width: int = 80, chars: int = 240) -> str:
    t = " ".join(str(text).split())
    t = t if len(t) <= chars else t[:chars - 1] + "…"
    return "<br>".join(textwrap.wrap(t, width))


def cluster_map(xy, texts, clustering, genres=None, title: str | None = None, projection: str = ""):
    """Scatter of ``xy`` (n, 2), one trace (colour) per cluster named "id: keywords"; hover = text, cluster, size,
    keywords and (when given, e.g. Brown letters) the genre. Uses WebGL markers above 2,000 points."""
    xy, assign = np.asarray(xy), np.asarray(clustering.assignments)
    if xy.shape != (len(texts), 2) or len(assign) != len(texts):
        raise ValueError(f"xy {xy.shape}, {len(assign)} assignments and {len(texts)} texts do not match")
    genres = list(genres) if genres is not None and any(genres) else None
    Trace = go.Scattergl if len(texts) > 2000 else go.Scatter
    fig = go.Figure()
    for s in clustering.summaries:
        c = s["id"]
        idx = np.flatnonzero(assign == c)
        kw = ", ".join(s.get("keywords", [])[:4])
        g = [BROWN_GENRES.get(genres[i], genres[i]) or "?" for i in idx] if genres else [""] * len(idx)
        custom = np.array([[_short(texts[i]), gi] for i, gi in zip(idx, g)], dtype=object).reshape(-1, 2)
        fig.add_trace(Trace(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=f"{c}: {kw}"[:48], customdata=custom,
            marker=dict(size=5, opacity=0.75, color=_PALETTE[c % len(_PALETTE)]),
            hovertemplate=(f"%{{customdata[0]}}<br><b>cluster {c}</b> (size {s['size']}): {kw}"
                           + ("<br>genre: %{customdata[1]}" if genres else "") + "<extra></extra>")))
    fig.update_layout(title=title or f"{len(texts)} texts, {clustering.method} k={clustering.k}"
                      + (f" ({projection} map)" if projection else ""), template="plotly_white",
                      legend_title_text="cluster: keywords", hovermode="closest",
                      xaxis=dict(showticklabels=False, title=f"{projection} 1"),
                      yaxis=dict(showticklabels=False, title=f"{projection} 2"))
    return fig


def cluster_table(clustering, n_keywords: int = 8, medoid_chars: int = 120) -> pd.DataFrame:
    """One row per cluster: id, size, keywords (comma-joined), medoid (shortened)."""
    rows = [{"id": s["id"], "size": s["size"], "keywords": ", ".join(s.get("keywords", [])[:n_keywords]),
             "medoid": " ".join(s["medoid"]["text"].split())[:medoid_chars]} for s in clustering.summaries]
    return pd.DataFrame(rows)


def k_sweep(features, texts, ks, method: str = "kmeans", seed: int = 0, genres=None) -> pd.DataFrame:
    """Cluster with each K in ``ks``: k, clusters kept, smallest cluster, silhouette (cosine, on the features), and
    genre purity / NMI when ``genres`` are given (unknown "" ignored)."""

    rows = []
    for k in ks:
        try:
            c = cluster(features, texts, method=method, k=int(k), seed=seed, drop_empty=method == "lda")
        except ClusterError as e:
            rows.append({"k": int(k), "error": str(e)})
            continue
        row = {"k": int(k), "clusters": c.k, "smallest": int(min(c.sizes)),
               "silhouette": float(silhouette_score(features, c.assignments, metric="cosine", random_state=seed,
                                                    sample_size=min(len(texts), 2000)))}
        if genres is not None and any(genres):
            row.update(genre_purity=purity(c.assignments, genres), genre_nmi=nmi(c.assignments, genres))
        rows.append(row)
    return pd.DataFrame(rows)


def k_sweep_figure(sweep: pd.DataFrame):
    """Lines of every numeric quality column of :func:`k_sweep` over K."""
    fig = go.Figure()
    for col in ("silhouette", "genre_purity", "genre_nmi"):
        if col in sweep:
            fig.add_trace(go.Scatter(x=sweep["k"], y=sweep[col], mode="lines+markers", name=col,
                                     hovertemplate=f"k %{{x}}<br>{col} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title="Cluster quality over K", xaxis_title="K", template="plotly_white")
    return fig
