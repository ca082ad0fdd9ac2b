"""2-D projections for the explorer: PCA (exact and fast) and UMAP (fitted once per input, coordinates cached).

UMAP's own ``transform`` needs the fitted model object, which can only be persisted with pickle, so this module
never keeps it. Instead a UMAP map is fitted on the *base* points (a vocabulary sample) and only the base points'
2-D coordinates are cached, as safetensors under ``<cache>/explore/umap-<key>.safetensors``; the key is the sha256
of the base array's bytes and shape plus every UMAP parameter, so a different backbone, sample size or parameter is
a different entry. New points (prompt vectors) are then *placed*, not refitted: each goes to the weighted mean of
the coordinates of its ``n_neighbors`` nearest base points by cosine, with UMAP's membership weights
``exp(-(d - d_nearest) / sigma)`` (the same initial placement UMAP's ``transform`` starts from, without its extra
optimisation epochs). ``placement="joint"`` instead fits UMAP on base and new points together (cached under the
hash of both): exact for those inputs, but refitted whenever a prompt changes. PCA is fitted on the base points and
applied to new points exactly (a linear map), so it needs no cache.

Too few points for UMAP: below :data:`UMAP_MIN_POINTS` a UMAP map of a handful of points is mostly the layout's
random initialisation (26 SVGD particles "start far from the data" in UMAP and on it in PCA), so ``method="umap"``
falls back to PCA and says so: ``Projection.info`` records ``requested``, ``method`` and ``note``
("PCA (UMAP needs ≥ 50 points; 26 given)"), which every figure puts in its title and ``layout.meta``
(:func:`projection_meta`); :func:`effective_method` and :func:`method_label` give the same answer from a count alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from workbench.viz.explore_data import ExploreError

PROJECTIONS = ("umap", "pca")
UMAP_MIN_POINTS = 50  # fewer points than this: PCA instead of UMAP, said in the figure


def cache_root(cache_dir=None) -> Path:
    """``cache_dir``, else ``$WORKBENCH_CACHE``, else ``~/.cache/workbench``; explorer files go to ``explore/``."""
    return Path(cache_dir or os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench").expanduser() \
        / "explore"


def _check_method(method: str) -> None:
    if method not in PROJECTIONS:
        raise ExploreError(f"projection must be one of {list(PROJECTIONS)}, got {method!r}")


def effective_method(method: str, n_points: int) -> str:
    """The projection actually used for ``n_points`` points when ``method`` is asked for: PCA below
    :data:`UMAP_MIN_POINTS` for UMAP."""
    _check_method(method)
    return "pca" if method == "umap" and n_points < UMAP_MIN_POINTS else method


def method_label(method: str, n_points: int) -> str:
    """What a figure says about its projection: "UMAP", "PCA", or "PCA (UMAP needs ≥ 50 points; 26 given)"."""
    used = effective_method(method, n_points)
    if used == method:
        return used.upper()
    return f"PCA (UMAP needs ≥ {UMAP_MIN_POINTS} points; {n_points} given)"


def array_key(x: np.ndarray, **params) -> str:
    h = hashlib.sha256()
    x = np.ascontiguousarray(x, dtype=np.float32)
    h.update(json.dumps({"shape": list(x.shape), **params}, sort_keys=True).encode())
    h.update(x.tobytes())
    return h.hexdigest()[:32]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class Projection:
    """A 2-D map fitted on ``base`` (n, d): ``coords`` (n, 2); :meth:`place` maps new points into it."""

    method: str
    base: np.ndarray
    coords: np.ndarray
    n_neighbors: int = 15
    mean: np.ndarray | None = None  # PCA
    components: np.ndarray | None = None  # PCA (2, d)
    info: dict = field(default_factory=dict)  # cache hit, key, seconds; requested method, note (fallback)

    @property
    def label(self) -> str:
        """"UMAP", "PCA", or the fallback note "PCA (UMAP needs ≥ 50 points; 26 given)"."""
        return self.info.get("note") or self.method.upper()

    def axis(self, i: int) -> str:
        """The title of axis ``i`` (1 or 2): "PCA 1", "UMAP 2"."""
        return f"{self.method.upper()} {i}"

    def place(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32).reshape(-1, self.base.shape[1])
        if self.method == "pca":
            return (y - self.mean) @ self.components.T
        cos = _unit(y) @ _unit(self.base).T
        k = min(self.n_neighbors, self.base.shape[0])
        idx = np.argpartition(-cos, k - 1, axis=1)[:, :k]
        d = 1.0 - np.take_along_axis(cos, idx, axis=1)
        rho = d.min(1, keepdims=True)
        sigma = np.maximum((d - rho).mean(1, keepdims=True), 1e-6)
        w = np.exp(-(d - rho) / sigma)
        return (w[..., None] * self.coords[idx]).sum(1) / w.sum(1, keepdims=True)


def fit_projection(base: np.ndarray, method: str = "umap", seed: int = 0, n_neighbors: int = 15,
                   min_dist: float = 0.1, n_epochs: int = 200, cache_dir=None, cache: bool = True) -> Projection:
    """Fit a 2-D ``method`` map on ``base``; UMAP coordinates are read from / written to the on-disk cache.
    UMAP on fewer than :data:`UMAP_MIN_POINTS` points is PCA, noted in ``info`` (see the module text)."""
    base = np.ascontiguousarray(base, dtype=np.float32)
    t0 = time.perf_counter()
    if effective_method(method, base.shape[0]) == "pca":
        proj = _pca(base, n_neighbors)
        note = {} if method == "pca" else {"note": method_label(method, base.shape[0])}
        proj.info = {"cache": "none", "fit_s": round(time.perf_counter() - t0, 3), "requested": method,
                     "method": "pca", **note}
        return proj
    params = dict(method="umap", seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, n_epochs=n_epochs,
                  metric="cosine", knn="exact")
    key = array_key(base, **params)
    file = cache_root(cache_dir) / f"umap-{key}.safetensors"
    coords = _read_coords(file, base.shape[0]) if cache else None
    hit = coords is not None
    if coords is None:
        coords = umap_coords(base, seed, n_neighbors, min_dist, n_epochs)
        if cache:
            _write_coords(file, coords, params)
    return Projection("umap", base, coords, n_neighbors,
                      info={"cache": "hit" if hit else ("miss" if cache else "off"), "key": key, "file": str(file),
                            "fit_s": round(time.perf_counter() - t0, 3), "requested": "umap", "method": "umap"})


def _pca(base: np.ndarray, n_neighbors: int) -> Projection:
    mean = base.mean(0)
    centred = (base - mean).astype(np.float64)
    _, vecs = np.linalg.eigh(centred.T @ centred)  # (d, d): cheap for many rows, unlike a full SVD
    vt = vecs[:, ::-1][:, :2].T.astype(np.float32)
    vt = np.pad(vt, ((0, 2 - len(vt)), (0, 0)))  # one-dimensional data: a zero second axis
    comps = vt * np.sign(vt[:, :1] + 1e-12)  # fixed signs: the same data always gives the same picture
    return Projection("pca", base, (base - mean) @ comps.T, n_neighbors, mean, comps)


def with_projection(text: str, label: str) -> str:
    """A title ``text`` with the projection's label (a fallback note included) on a smaller second line."""
    return f"{text}<br><sup>2-D map: {label}</sup>"


def projection_meta(proj: Projection) -> dict:
    """What ``layout.meta`` records of a projection: the method used, the one asked for, its label and the note."""
    return {"projection": proj.method, "projection_requested": proj.info.get("requested", proj.method),
            "projection_label": proj.label, "projection_note": proj.info.get("note")}


def cosine_knn(x: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine (each point first, at distance 0): indices (n, k), distances (n, k)."""
    u = _unit(np.asarray(x, dtype=np.float32))
    idx, dist = np.empty((len(u), k), np.int64), np.empty((len(u), k), np.float32)
    for s in range(0, len(u), chunk):
        c = u[s:s + chunk] @ u.T
        c[np.arange(len(c)), np.arange(s, s + len(c))] = 2.0  # self first, even among duplicates
        top = np.argpartition(-c, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(c, top, 1), axis=1)
        idx[s:s + chunk] = np.take_along_axis(top, order, 1)
        dist[s:s + chunk] = np.clip(1.0 - np.take_along_axis(c, idx[s:s + chunk], 1), 0.0, 2.0)
    return idx, dist


def umap_coords(x: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                n_epochs: int = 200) -> np.ndarray:
    """UMAP (cosine metric, seeded, in this process) of ``x`` to 2-D.

    The neighbour graph is computed exactly here (one matrix product per chunk) and handed to UMAP as
    ``precomputed_knn``: on 10k x 384 rows that is ~8x faster than UMAP's approximate NN-descent and its numba
    compilation (benchmarks/explore_speed.py), and exact."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", numba/TBB notes
        import umap  # lazy: umap-learn: heavy to import, notebooks extra
        n = x.shape[0]
        k = max(2, min(n_neighbors, n - 1))
        idx, dist = cosine_knn(x, k)
        reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, metric="cosine", random_state=seed,
                            n_epochs=n_epochs, init="pca" if n > 3 else "random", precomputed_knn=(idx, dist, None))
        return reducer.fit_transform(x).astype(np.float32)


def joint_coords(base: np.ndarray, extra: np.ndarray, method: str = "umap", seed: int = 0, n_neighbors: int = 15,
                 cache_dir=None, cache: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fit one map on ``base`` and ``extra`` together; return (base coords, extra coords, info)."""
    both = np.concatenate([np.asarray(base, np.float32), np.asarray(extra, np.float32).reshape(-1, base.shape[1])])
    proj = fit_projection(both, method, seed, n_neighbors, cache_dir=cache_dir, cache=cache)
    n = base.shape[0]
    return proj.coords[:n], proj.coords[n:], {**proj.info, "placement": "joint"}


def _read_coords(file: Path, n: int) -> np.ndarray | None:
    if not file.is_file():
        return None
    try:
        coords = load_file(str(file))["coords"]
    except (SafetensorError, OSError, KeyError):  # unreadable entry: refit and replace it
        return None
    return coords if coords.shape == (n, 2) else None


def _write_coords(file: Path, coords: np.ndarray, params: dict):
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    save_file({"coords": np.ascontiguousarray(coords, dtype=np.float32)}, str(tmp),
              metadata={k: str(v) for k, v in params.items()})
    os.replace(tmp, file)
