"""Figures and small widgets for the MetaPT / MPT notebooks (01 clustering, 02 meta-training): pure functions that
return plotly figures or pandas tables; nothing is displayed or trained here except inside the K panel's callback.

- :func:`project_2d`: a 2-D map of sentence features (UMAP with cosine distance, or PCA; UMAP on fewer than
  ``viz.projection.UMAP_MIN_POINTS`` texts is PCA, and :func:`cluster_map` says so).
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
from workbench.viz.projection import effective_method, fit_projection, method_label, with_projection
from workbench.viz.style import SERIES, human, integer_ticks, styled, title as style_title

BROWN_GENRES = {"a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
                "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres", "h": "government & misc.",
                "j": "learned", "k": "fiction: general", "l": "fiction: mystery", "m": "fiction: science",
                "n": "fiction: adventure", "p": "fiction: romance", "r": "humor"}
def project_2d(features, projection: str = "umap", n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of ``features`` (n, d): ``umap`` (cosine metric, ``n_neighbors`` capped at n-1, seeded) or
    ``pca``, both by :func:`workbench.viz.projection.fit_projection` (not cached on disk; UMAP on fewer than
    ``UMAP_MIN_POINTS`` rows is PCA)."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"need at least 3 feature rows (n, d) to project, got shape {x.shape}")
    return fit_projection(x, projection, seed, int(n_neighbors), cache=False).coords


def _short(text: str, width: int = 80, chars: int = 240) -> str:
    t = " ".join(str(text).split())
    t = t if len(t) <= chars else t[:chars - 1] + "…"
    return "<br>".join(textwrap.wrap(t, width))


def cluster_map(xy, texts, clustering, genres=None, title: str | None = None, projection: str = "",
                corpus: str | None = None):
    """Scatter of ``xy`` (n, 2), one trace (colour) per cluster named "id: keywords"; hover = text, cluster, size,
    keywords and (when given, e.g. Brown letters) the genre. Uses WebGL markers above 2,000 points. ``projection``
    is the method asked of :func:`project_2d` (UMAP on too few texts is named as its PCA fallback)."""
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
            marker=dict(size=5, opacity=0.75, color=SERIES[c % len(SERIES)]),
            hovertemplate=(f"%{{customdata[0]}}<br><b>cluster {c}</b> (size {s['size']}): {kw}"
                           + ("<br>genre: %{customdata[1]}" if genres else "") + "<extra></extra>")))
    used = effective_method(projection, len(texts)) if projection else ""
    label = method_label(projection, len(texts)) if projection else ""
    what = style_title(f"{len(texts)} texts in {clustering.k} clusters ({clustering.method})", corpus)
    axis = used.upper() if used else "map axis"
    styled(fig, title=title or (with_projection(what, label) if label else what), x=f"{axis} 1", y=f"{axis} 2",
           legend="cluster: keywords")
    fig.update_layout(hovermode="closest", meta={"projection": used or None, "projection_requested": projection or None,
                                                 "projection_label": label or None, "n": len(texts)})
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
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


SWEEP_NAMES = {"silhouette": "silhouette (cosine)", "genre_purity": "purity against Brown genres",
               "genre_nmi": "NMI with Brown genres"}


def k_sweep_figure(sweep: pd.DataFrame, corpus: str | None = None):
    """Lines of every numeric quality column of :func:`k_sweep` over K (human legend names, integer K ticks)."""
    fig = go.Figure()
    for i, col in enumerate(("silhouette", "genre_purity", "genre_nmi")):
        if col in sweep:
            name = human(col, SWEEP_NAMES)
            fig.add_trace(go.Scatter(x=sweep["k"], y=sweep[col], mode="lines+markers", name=name,
                                     line=dict(color=SERIES[i]),
                                     hovertemplate=f"K %{{x}}<br>{name} %{{y:.3f}}<extra></extra>"))
    styled(fig, title=style_title("Cluster quality over the number of clusters K", corpus),
           x="number of clusters K", y="score (silhouette in [-1, 1]; purity, NMI in [0, 1])", legend="measure")
    integer_ticks(fig, sweep["k"] if "k" in sweep else [], "x")
    return fig
