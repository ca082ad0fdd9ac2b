"""One 2-D projection helper: ``viz.projection.fit_projection`` behind the explorer, the clustering notebook's
``project_2d`` and the BayesPrompt figures (PCA and UMAP)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from workbench.methods.bayes import BayesConfig, fit_distribution
from workbench.viz.bayes import _projector, distribution_2d, svgd_animation
from workbench.viz.clusters import project_2d
from workbench.viz.explore_data import ExploreError
from workbench.viz.projection import fit_projection


def features(n=40, d=6, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, 0.3, size=(n // 2, d)) for c in (-1, 1)]).astype(np.float32)


@pytest.fixture(scope="module")
def dist():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(6, 5, generator=g) + 3, torch.randn(6, 5, generator=g) - 3])
    bb = SimpleNamespace(name="t", path="/t", hidden_size=5, device=torch.device("cpu"))
    return fit_distribution(x, BayesConfig(iterations=20, record_every=5), 2, 0, bb)


def test_project_2d_is_fit_projection_and_pca_is_the_top_two_principal_axes():
    x = features()
    xy = project_2d(x, "pca")
    assert np.array_equal(xy, fit_projection(x, "pca", cache=False).coords)
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    ref = centred @ vt[:2].T
    assert np.allclose(np.abs(xy), np.abs(ref), atol=1e-4)  # the same axes, up to each axis's sign
    with pytest.raises(ValueError, match="projection must be one of"):
        project_2d(x, "tsne")
    with pytest.raises(ValueError, match="at least 3 feature rows"):
        project_2d(x[:2], "pca")
    assert fit_projection(x[:, :1], "pca", cache=False).coords.shape == (len(x), 2)  # 1-D data: a zero second axis


def test_bayes_views_use_the_one_projection(dist):
    place, w = _projector(dist, "pca")
    pts = np.concatenate([dist.data.numpy(), dist.init_particles.numpy(), dist.particles.numpy()])
    proj = fit_projection(pts, "pca", cache=False)
    assert np.allclose(place(pts), proj.coords, atol=1e-5) and np.allclose(w.T @ w, np.eye(2), atol=1e-5)
    fig = distribution_2d(dist)
    final = next(t for t in fig.data if t.name == "SVGD particles")
    n = len(dist.particles)
    assert np.allclose(np.stack([final.x, final.y], 1), proj.coords[-n:], atol=1e-5)
    with pytest.raises(ExploreError, match="projection must be one of"):
        distribution_2d(dist, "tsne")


def test_umap_views(dist):
    pytest.importorskip("umap")
    x = features(n=60)
    assert np.array_equal(project_2d(x, "umap", n_neighbors=5), fit_projection(x, "umap", 0, 5, cache=False).coords)
    g = torch.Generator().manual_seed(1)
    big = torch.cat([torch.randn(20, 5, generator=g) + 3, torch.randn(20, 5, generator=g) - 3])
    bb = SimpleNamespace(name="t", path="/t", hidden_size=5, device=torch.device("cpu"))
    large = fit_distribution(big, BayesConfig(iterations=20, record_every=5), 2, 0, bb)  # 40 + 2 x 40 points
    fig = distribution_2d(large, "umap")
    assert fig.layout.meta["projection"] == "umap" and "UMAP" in fig.layout.title.text
    assert not any("2σ" in (t.name or "") for t in fig.data)  # no covariance ellipses in a UMAP map
    assert all(np.isfinite(np.asarray(t.x, float)).all() for t in fig.data)
    assert len(svgd_animation(large, "umap").frames) == 5
    small = distribution_2d(dist, "umap")  # 12 points + 2 x 12 particles: too few for UMAP, so PCA, said so
    assert small.layout.meta["projection"] == "pca" and "UMAP needs ≥ 50 points; 36 given" in small.layout.title.text
