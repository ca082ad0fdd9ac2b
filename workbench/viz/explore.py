"""The embedding-space explorer: pure functions from run directories to plotly figures (hover text on every point).

- :func:`token_space`: one 2-D map of a frequent-vocabulary sample (UMAP, or PCA as the fast option) with every
  learned prompt vector placed in it, coloured by init; hover = slot, init, seed and the nearest tokens by cosine.
- :func:`trajectories`: each prompt slot's path through its snapshots, from the init (step 0) to the best-on-dev
  prompt; :func:`distance_vs_accuracy`: distance travelled (L2 and cosine) against test accuracy, per init x seed.
- :func:`prompt_similarity`: similarity of the final prompts of all inits x seeds; :func:`nearest_words_table`.
- sentence and corpus views are in :mod:`workbench.viz.sentence` (re-exported here).

Style (:mod:`workbench.viz.style`): an init has its :func:`~workbench.viz.style.init_colour` in every view, accuracy
is in %, titles name the dataset, k, seeds and test size where the runs record them and never a file-system path
(the backbone is named by its folder's name; paths stay in ``layout.meta``). A UMAP asked of too few points is PCA,
and the title says so (:data:`workbench.viz.projection.UMAP_MIN_POINTS`).

Slot matching in :func:`prompt_similarity`: ``"aligned"`` compares slot i with slot i (the mean of the L cosines;
meaningful because the position of a slot in the input is fixed); ``"hungarian"`` first pairs the slots of the two
prompts one-to-one so that the summed cosine is largest (``scipy.optimize.linear_sum_assignment``), then averages,
which ignores any permutation of the slots. Distances in :func:`distance_vs_accuracy`: L2 is the Frobenius norm of
(final - init); cosine distance is 1 - the mean over slots of cos(init slot, final slot).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.optimize import linear_sum_assignment

from workbench.viz.explore_data import (  # noqa: F401  (the explorer's one namespace for notebook 04 and the CLI)
    ExploreError,
    PromptRun,
    backbone_for,
    format_neighbours,
    load_prompt_runs,
    nearest_tokens,
    short_name,
    vocab_sample,
)
from workbench.viz.output import save_figure
from workbench.viz.projection import fit_projection, joint_coords, with_projection
from workbench.viz.sentence import (  # noqa: F401  (re-exported: the explorer's one namespace)
    corpus_space,
    label_anchors,
    particles_space,
    sentence_features,
    sentence_space,
)
from workbench.viz.style import colour_map, pct, styled, title

__all__ = [  # the explorer's one namespace (notebook 04, the CLI, the panel), re-exports included
    "ExploreError", "PromptRun", "backbone_for", "format_neighbours", "load_prompt_runs", "nearest_tokens",
    "short_name", "vocab_sample", "corpus_space", "label_anchors", "particles_space", "sentence_features",
    "sentence_space", "runs_title", "token_space", "trajectories", "distances", "distance_vs_accuracy",
    "similarity_matrix", "prompt_similarity", "nearest_words_table", "write_html", "explore_figures", "write_explore",
]

_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross", "x", "star", "pentagon", "hexagon", "triangle-down")


def _colours(runs: list[PromptRun]) -> dict:
    return colour_map(dict.fromkeys(r.method for r in runs))


def _symbols(runs: list[PromptRun]) -> dict:
    return {s: _SYMBOLS[i % len(_SYMBOLS)] for i, s in enumerate(sorted({r.seed for r in runs}))}


def _acc(x) -> str:
    return "n/a" if x is None else f"{pct(x):.1f}%"


def _one(values):
    values = {v for v in values if v is not None}
    return next(iter(values)) if len(values) == 1 else None


def runs_title(what: str, runs: list[PromptRun], extra: str | None = None) -> str:
    """:func:`workbench.viz.style.title` for prompt runs: dataset, k and test size when all runs share them, the
    number of seeds."""
    return title(what, _one(r.dataset for r in runs), _one(r.k for r in runs), len({r.seed for r in runs}),
                 _one(r.n_test for r in runs), extra)


def _token_map(runs, bb, projection, n_vocab, seed, cache_dir, placement, extra: np.ndarray):
    """Vocabulary sample, its 2-D coords, and the coords of ``extra`` (n, d) vectors in the same map."""
    ids, toks, vocab = vocab_sample(bb, n_vocab)
    if placement == "joint":
        vxy, exy, info = joint_coords(vocab, extra, projection, seed, cache_dir=cache_dir)
    elif placement == "knn":
        proj = fit_projection(vocab, projection, seed, cache_dir=cache_dir)
        vxy, exy, info = proj.coords, proj.place(extra), {**proj.info, "placement": "knn"}
    else:
        raise ExploreError(f"placement must be 'knn' or 'joint', got {placement!r}")
    return toks, vxy, exy, {**info, "projection": info.get("method", projection), "projection_requested": projection,
                            "projection_label": info.get("note") or info.get("method", projection).upper(),
                            "n_vocab": len(ids), "backbone": bb.name}


def _vocab_trace(go, toks, vxy):
    return go.Scattergl(x=vxy[:, 0], y=vxy[:, 1], mode="markers", name=f"vocabulary ({len(toks)} frequent tokens)",
                        marker=dict(size=3, color="#c8c8c8"), text=toks, customdata=np.arange(len(toks)),
                        hovertemplate="token %{text}<br>frequency rank %{customdata}<extra>vocabulary</extra>")


def token_space(run_dirs, dataset: str | None = None, methods=None, seeds=None, projection: str = "umap",
                n_vocab: int = 10000, neighbours: int = 5, seed: int = 0, cache_dir=None, backbone=None,
                placement: str = "knn"):
    """Every learned prompt vector on a 2-D map of the ``n_vocab`` most frequent tokens' embeddings.

    The map is fitted on the vocabulary only and cached (see :mod:`workbench.viz.projection`); prompts are placed
    into it (``placement="knn"``) or fitted together with it (``"joint"``). Runs of different backbones are refused.
    ``fig.layout.meta`` records the projection, cache hit/miss and fit seconds.
    """

    runs = load_prompt_runs(run_dirs, dataset, methods, seeds)
    bb = backbone_for(runs, backbone)
    P = np.concatenate([r.prompt for r in runs])
    toks, vxy, pxy, info = _token_map(runs, bb, projection, n_vocab, seed, cache_dir, placement, P)
    nn = nearest_tokens(P, bb, neighbours)
    fig = go.Figure([_vocab_trace(go, toks, vxy)])
    colour, symbol, start = _colours(runs), _symbols(runs), 0
    shown = set()
    for r in runs:
        L = r.prompt.shape[0]
        xy, hood = pxy[start:start + L], nn[start:start + L]
        start += L
        hover = [f"slot {i}<br>init {r.method}<br>seed {r.seed}<br>{r.dataset}, test acc {_acc(r.test_acc)}<br>"
                 f"nearest: {format_neighbours(h)}" for i, h in enumerate(hood)]
        fig.add_trace(go.Scatter(
            x=xy[:, 0], y=xy[:, 1], mode="markers", name=r.method, legendgroup=r.method,
            showlegend=r.method not in shown, text=hover, hovertemplate="%{text}<extra></extra>",
            marker=dict(size=9, color=colour[r.method], symbol=symbol[r.seed], line=dict(width=1, color="white")),
            customdata=[[str(r.run), r.dataset, r.method, r.seed, i] for i in range(L)]))
        shown.add(r.method)
    what = f"Prompt vectors among the {info['n_vocab']} most frequent tokens of {short_name(runs[0].backbone)}"
    _map_layout(fig, with_projection(runs_title(what, runs), info["projection_label"]), info, "init (marker = seed)")
    return fig


def _map_layout(fig, text: str, info: dict, legend: str) -> None:
    axis = info["projection"].upper()
    styled(fig, title=text, x=f"{axis} 1", y=f"{axis} 2", legend=legend)
    fig.update_layout(meta=info, hovermode="closest")


def _path(r: PromptRun) -> tuple[list[int], np.ndarray, list]:
    """Steps, prompts (S, L, d) and dev accuracies from step 0 to the best-on-dev prompt (the saved adapter)."""
    s = r.snapshots
    best = r.best_step if r.best_step is not None else s["steps"][-1]
    keep = [i for i, st in enumerate(s["steps"]) if st <= best]
    steps, prompts, acc = [s["steps"][i] for i in keep], s["prompts"][keep], [s["dev_acc"][i] for i in keep]
    if not steps or steps[-1] != best:  # the best step was not a snapshot step: end at the saved prompt
        steps, prompts, acc = steps + [best], np.concatenate([prompts, r.prompt[None]]), acc + [r.dev_acc]
    return steps, prompts, acc


def _with_snapshots(runs: list[PromptRun]) -> list[PromptRun]:
    have = [r for r in runs if r.snapshots]
    if not have:
        dirs = sorted({str(r.run) for r in runs})
        raise ExploreError(f"no prompt snapshots in {dirs}: rerun tuning with --snapshot-every N "
                           f"(tune.snapshot_every) to record trajectories")
    return have


def trajectories(run_dirs, dataset: str | None = None, methods=None, seeds=None, projection: str = "pca",
                 n_vocab: int = 10000, neighbours: int = 5, seed: int = 0, cache_dir=None, backbone=None,
                 placement: str = "knn"):
    """Each slot's path from its init (open circle) through the snapshots to the best-on-dev prompt (star)."""

    runs = _with_snapshots(load_prompt_runs(run_dirs, dataset, methods, seeds))
    bb = backbone_for(runs, backbone)
    paths = [_path(r) for r in runs]
    allp = np.concatenate([p.reshape(-1, p.shape[-1]) for _, p, _ in paths])
    toks, vxy, xy, info = _token_map(runs, bb, projection, n_vocab, seed, cache_dir, placement, allp)
    ends = np.concatenate([p[[0, -1]].reshape(-1, p.shape[-1]) for _, p, _ in paths])
    nn = nearest_tokens(ends, bb, neighbours)
    fig = go.Figure([_vocab_trace(go, toks, vxy)])
    colour, start, e, shown = _colours(runs), 0, 0, set()
    for r, (steps, prompts, acc) in zip(runs, paths):
        S, L = prompts.shape[:2]
        pts = xy[start:start + S * L].reshape(S, L, 2)
        start += S * L
        first, last = nn[e:e + L], nn[e + L:e + 2 * L]
        e += 2 * L
        for i in range(L):
            hover = [f"{r.method} seed {r.seed}, slot {i}<br>step {st}, dev acc {_acc(a)}" for st, a in zip(steps, acc)]
            hover[0] += f"<br>init nearest: {format_neighbours(first[i])}"
            hover[-1] += f" (best on dev)<br>test acc {_acc(r.test_acc)}<br>nearest: {format_neighbours(last[i])}"
            fig.add_trace(go.Scatter(
                x=pts[:, i, 0], y=pts[:, i, 1], mode="lines+markers", name=r.method, legendgroup=r.method,
                showlegend=r.method not in shown, line=dict(color=colour[r.method], width=1), text=hover,
                hovertemplate="%{text}<extra></extra>",
                marker=dict(color=colour[r.method], size=[9] + [4] * (S - 2) + [12] if S > 1 else [9],
                            symbol=["circle-open"] + ["circle"] * (S - 2) + ["star"] if S > 1 else ["star"])))
            shown.add(r.method)
    _map_layout(fig, with_projection(runs_title("Prompt trajectories: init (open circle) to best-on-dev (star)", runs),
                                     info["projection_label"]), info, "init")
    return fig


def distances(run_dirs, dataset: str | None = None, methods=None, seeds=None) -> pd.DataFrame:
    """Per init x seed: L2 (Frobenius) and cosine distance from the init (step-0 snapshot) to the final prompt."""
    runs = _with_snapshots(load_prompt_runs(run_dirs, dataset, methods, seeds))
    rows = []
    for r in runs:
        init = r.snapshots["prompts"][0]
        cos = (init * r.prompt).sum(1) / np.maximum(np.linalg.norm(init, axis=1) * np.linalg.norm(r.prompt, axis=1),
                                                   1e-12)
        rows.append({"run": str(r.run), "dataset": r.dataset, "method": r.method, "seed": r.seed,
                     "l2": float(np.linalg.norm(r.prompt - init)), "cosine": float(1 - cos.mean()),
                     "best_step": r.best_step, "dev_acc": r.dev_acc, "test_acc": r.test_acc})
    return pd.DataFrame(rows)


def distance_vs_accuracy(run_dirs, dataset: str | None = None, methods=None, seeds=None):
    """Two panels (L2, cosine distance travelled) against test accuracy (%); one point per init x seed."""

    runs = _with_snapshots(load_prompt_runs(run_dirs, dataset, methods, seeds))
    df = distances(run_dirs, dataset, methods, seeds)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=("L2 (Frobenius) distance",
                                                                           "cosine distance (1 - mean slot cos)"))
    colour = colour_map(dict.fromkeys(df["method"]))
    for method, g in df.groupby("method", sort=False):
        text = [f"{method} seed {s}<br>{d}<br>best step {b}<br>dev acc {_acc(dv)}<br>test acc {_acc(t)}"
                for s, d, b, dv, t in zip(g["seed"], g["dataset"], g["best_step"], g["dev_acc"], g["test_acc"])]
        y = [None if t is None or t != t else pct(t) for t in g["test_acc"]]
        for col, key in ((1, "l2"), (2, "cosine")):
            fig.add_trace(go.Scatter(x=g[key], y=y, mode="markers", name=method, legendgroup=method,
                                     showlegend=col == 1, marker=dict(size=10, color=colour[method]), text=text,
                                     hovertemplate=f"%{{text}}<br>{key} %{{x:.4f}}<extra></extra>"), row=1, col=col)
    styled(fig, title=runs_title("How far tuning moved each prompt vs its test accuracy", runs),
           x="distance from init to final prompt", legend="init")
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    return fig


def similarity_matrix(prompts: list[np.ndarray], match: str = "aligned") -> np.ndarray:
    """(N, N) mean slot cosine between prompts (L, d); ``match`` = "aligned" (slot i to slot i) or "hungarian"."""
    if match not in ("aligned", "hungarian"):
        raise ExploreError(f"match must be 'aligned' or 'hungarian', got {match!r}")
    if len({p.shape for p in prompts}) > 1:
        raise ExploreError(f"prompts of shapes {sorted({p.shape for p in prompts})} cannot be compared slot by slot")
    units = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in prompts]
    n = len(units)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            c = units[i] @ units[j].T
            if match == "aligned":
                v = float(np.diag(c).mean())
            else:
                a, b = linear_sum_assignment(-c)
                v = float(c[a, b].mean())
            out[i, j] = out[j, i] = v
    return out


def prompt_similarity(run_dirs, dataset: str | None = None, methods=None, seeds=None, match: str = "aligned"):
    """Heatmap of :func:`similarity_matrix` between the final prompts of all inits x seeds."""

    runs = load_prompt_runs(run_dirs, dataset, methods, seeds)
    check = {r.backbone_path for r in runs}
    if len(check) > 1:
        backbone_for(runs)  # raises the mixed-backbones error
    names = [f"{r.dataset}/{r.label}" if len({x.dataset for x in runs}) > 1 else r.label for r in runs]
    sim = similarity_matrix([r.prompt for r in runs], match)
    how = "slot-aligned" if match == "aligned" else "Hungarian-matched"
    fig = go.Figure(go.Heatmap(z=sim, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu_r",
                               colorbar=dict(title="cosine"),
                               hovertemplate=f"%{{y}} vs %{{x}}<br>{how} mean cosine %{{z:.3f}}<extra></extra>"))
    styled(fig, title=runs_title(f"Similarity of final prompts ({how} mean slot cosine)", runs),
           x="prompt (init, seed)", y="prompt (init, seed)")
    fig.update_layout(yaxis=dict(autorange="reversed"), meta={"match": match})
    return fig


def nearest_words_table(run_dirs, dataset: str | None = None, methods=None, seeds=None, neighbours: int = 5,
                        backbone=None) -> pd.DataFrame:
    """One row per (prompt, slot): the slot's nearest vocabulary tokens with cosine, and the top cosine."""
    runs = load_prompt_runs(run_dirs, dataset, methods, seeds)
    bb = backbone_for(runs, backbone)
    nn = nearest_tokens(np.concatenate([r.prompt for r in runs]), bb, neighbours)
    rows, k = [], 0
    for r in runs:
        for slot in range(r.prompt.shape[0]):
            rows.append({"dataset": r.dataset, "method": r.method, "seed": r.seed, "slot": slot,
                         "nearest": format_neighbours(nn[k]), "top_cosine": round(nn[k][0][1], 4)})
            k += 1
    return pd.DataFrame(rows)


def write_html(figs: dict, out_dir, images=()) -> dict:
    """Write each figure of ``{name: fig}`` to ``<out_dir>/<name>.html`` (:func:`workbench.viz.output.save_figure`:
    all of them load the one ``plotly.min.js`` of ``out_dir``; ``images`` adds PNG/SVG copies); return name -> path."""
    return {name: save_figure(fig, Path(out_dir) / f"{name}.html", images) for name, fig in figs.items()}


def explore_figures(cfg, warn=None) -> dict:
    """The explorer's figures for an ``ExploreConfig`` (``workbench explore``, notebook 04): token space,
    trajectories and distance vs accuracy (runs with snapshots; otherwise skipped with ``warn(message)``), prompt
    similarity, sentence space, and the corpus (``cfg.cluster_dir``) and particle (``cfg.bayes_dir``) views.
    Returns name -> figure, in that order."""
    if not cfg.runs:
        raise ExploreError("explore needs at least one run directory (runs)")
    sel = {"dataset": cfg.dataset or None}
    figs = {"token_space": token_space(cfg.runs, **sel, projection=cfg.projection, n_vocab=cfg.n_vocab,
                                       neighbours=cfg.neighbours)}
    if any(r.snapshots for r in load_prompt_runs(cfg.runs, sel["dataset"])):
        figs["trajectories"] = trajectories(cfg.runs, **sel, projection=cfg.projection, n_vocab=cfg.n_vocab,
                                            neighbours=cfg.neighbours)
        figs["distance_vs_accuracy"] = distance_vs_accuracy(cfg.runs, **sel)
    elif warn:
        warn("no snapshots in these runs (tune with --snapshot-every N / tune.snapshot_every): trajectories skipped")
    figs["prompt_similarity"] = prompt_similarity(cfg.runs, **sel, match=cfg.match)
    figs["sentence_space"] = sentence_space(cfg.runs[0], sel["dataset"], cfg.method or None, cfg.seed,
                                            cfg.n_examples, cfg.projection)
    if cfg.cluster_dir:
        figs["corpus_space"] = corpus_space(cfg.cluster_dir, figs["sentence_space"].layout.meta["dataset"],
                                            projection=cfg.projection)
    if cfg.bayes_dir:
        figs["particles_space"] = particles_space(cfg.bayes_dir, sel["dataset"], projection=cfg.projection)
    return figs


def write_explore(figs: dict, words: pd.DataFrame, out_dir, images=()) -> dict:
    """``<out_dir>/<name>.html`` per figure (:func:`write_html`, ``images`` adds PNG/SVG copies) and the
    nearest-words table as ``nearest_words.csv``; returns name -> path (``nearest_words`` last)."""
    paths = write_html(figs, out_dir, images)
    paths["nearest_words"] = Path(out_dir) / "nearest_words.csv"
    words.to_csv(paths["nearest_words"], index=False)
    return paths
