"""What the explorer, clustering and BayesPrompt figures show (issue #15): one style, honest small-data views.

UMAP on too few points is PCA and says so; the SVGD animation opens on the state its slider names, with paths; the
reliability diagram's confidence axis starts at 1/C; a sampled accuracy shows its n; titles carry no path; anchor
labels never sit on one spot; accuracies are in %; an init has its style colour in every view. Synthetic inputs and
one tiny run (bert-mlm, toy data) keep it fast.
"""
from __future__ import annotations

import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import write_dataset
from workbench.cli.main import main
from workbench.methods.bayes import BayesConfig, Distribution, fit_distribution
from workbench.viz import bayes as bayes_viz
from workbench.viz import explore
from workbench.viz.clusters import cluster_map, k_sweep_figure, project_2d
from workbench.viz.projection import UMAP_MIN_POINTS, fit_projection, method_label
from workbench.viz.sentence import ANCHOR_OFFSET, accuracy_label, anchor_offsets
from workbench.viz.style import init_colour


def _plain(text: str) -> str:
    """A title without its HTML tags (``<br>``, ``</sup>``), as the reader sees it."""
    return re.sub(r"<[^>]+>", " ", text)


def _points(n, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _particles_dir(tmp_path, n_particles=26):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(8, 6, generator=g, dtype=torch.float64)
    start = torch.randn(n_particles, 6, generator=g, dtype=torch.float64)
    dist = Distribution(torch.tensor([0.5, 0.5]), torch.randn(2, 6, generator=g, dtype=torch.float64),
                        torch.ones(2, 6, dtype=torch.float64), "diag", None, None, data, start, start * 0.5,
                        {"backbone": "tiny", "feature_dim": 6, "dataset": "toy", "k": 4})
    out = tmp_path / "bayes-run" / "distributions" / "toy" / "seed13"
    dist.save(out)
    return tmp_path / "bayes-run"


@pytest.fixture(scope="module")
def dist():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(6, 5, generator=g) + 3, torch.randn(6, 5, generator=g) - 3])
    bb = SimpleNamespace(name="t", path="/t", hidden_size=5, device=torch.device("cpu"))
    return fit_distribution(x, BayesConfig(iterations=20, record_every=5), 2, 0, bb,
                            info={"dataset": "toy", "k": 6})


# ----------------------------------------------------------------------------------------------- UMAP fallback
def test_umap_on_too_few_points_is_pca_and_says_so(tmp_path):
    x = _points(26)
    proj = fit_projection(x, "umap", cache=False)
    assert proj.method == "pca" and proj.info["requested"] == "umap"
    assert proj.label == f"PCA (UMAP needs ≥ {UMAP_MIN_POINTS} points; 26 given)" == method_label("umap", 26)
    np.testing.assert_array_equal(proj.coords, fit_projection(x, "pca", cache=False).coords)
    np.testing.assert_array_equal(project_2d(x, "umap"), proj.coords)
    assert method_label("umap", UMAP_MIN_POINTS) == "UMAP" and method_label("pca", 3) == "PCA"

    fig = explore.particles_space(_particles_dir(tmp_path, 26), projection="umap")  # 8 + 2 + 2 x 26 = 62 points
    assert fig.layout.meta["projection"] == "umap"
    fig = explore.particles_space(_particles_dir(tmp_path / "few", 10), projection="umap")  # 30 points
    meta = fig.layout.meta
    assert (meta["projection"], meta["projection_requested"]) == ("pca", "umap")
    assert "UMAP needs ≥ 50 points; 30 given" in meta["projection_note"] and meta["projection_note"] in \
        fig.layout.title.text
    assert fig.layout.xaxis.title.text == "PCA 1"

    clustering = SimpleNamespace(assignments=[0] * 13 + [1] * 13, method="kmeans", k=2,
                                 summaries=[{"id": 0, "size": 13, "keywords": ["a"]},
                                            {"id": 1, "size": 13, "keywords": ["b"]}])
    cmap = cluster_map(project_2d(x, "umap"), [f"t{i}" for i in range(26)], clustering, projection="umap")
    assert "UMAP needs ≥ 50 points; 26 given" in cmap.layout.title.text and cmap.layout.meta["projection"] == "pca"
    assert cmap.layout.xaxis.title.text == "PCA 1"


def test_k_sweep_figure_has_human_names_and_integer_k():
    import pandas as pd

    fig = k_sweep_figure(pd.DataFrame({"k": [2, 4, 8], "silhouette": [0.1, 0.2, 0.15], "genre_nmi": [.3, .4, .5]}))
    assert [t.name for t in fig.data] == ["silhouette (cosine)", "NMI with Brown genres"]
    assert fig.layout.xaxis.tickformat == "d" and list(fig.layout.xaxis.tickvals) == [2, 4, 8]  # the K swept
    assert fig.layout.xaxis.title.text
    assert fig.layout.template.layout.font.family.startswith("Inter")  # the workbench template


# ----------------------------------------------------------------------------------------------- SVGD animation
def test_svgd_animation_opens_on_its_slider_step_with_paths(dist):
    fig = bayes_viz.svgd_animation(dist)
    slider = fig.layout.sliders[0]
    active = slider.active
    assert active == 0
    name = slider.steps[active].args[0][0]
    frame = next(f for f in fig.frames if f.name == name)
    assert name == "0" == fig.layout.meta["active_frame"]
    for shown, framed in zip(fig.data[1:], frame.data):  # the drawn state is the slider's active frame
        assert shown.name == framed.name
        np.testing.assert_array_equal(np.asarray(shown.x, dtype=float), np.asarray(framed.x, dtype=float))
    assert not any("iteration" in (t.name or "") for t in fig.data)  # the slider, not the legend, names it
    whole = fig.data[0]  # every particle's whole path, drawn from the start
    m, T = len(dist.particles), len(dist.trajectory)
    assert whole.mode == "lines" and sum(v is not None for v in whole.x) == m * T
    last = fig.frames[-1].data[0]  # the path so far at the last frame is the whole path
    assert list(last.x) == list(whole.x) and fig.frames[-1].name == str(dist.info["config"]["iterations"])
    assert all(f.traces == (1, 2, 3) for f in fig.frames)
    assert fig.data[2].marker.color == init_colour("bayes")


# ----------------------------------------------------------------------------------------------- reliability
@pytest.mark.parametrize("classes", [2, 3])
def test_reliability_axis_starts_at_one_over_c_and_is_in_percent(classes):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, classes)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, classes, 200)
    fig = bayes_viz.reliability_diagram({"bayes-init": probs, "zero-shot": probs[:, ::-1]}, labels, dataset="toy")
    floor = 100 / classes
    assert floor - 3 <= fig.layout.xaxis.range[0] <= floor and fig.data[0].x[0] == pytest.approx(floor)
    assert f"≥ {floor:.0f}%" in fig.layout.xaxis.title.text and fig.layout.meta["n_classes"] == classes
    traces = {t.name.split(" (")[0]: t for t in fig.data[1:]}
    assert traces["bayes-init"].line.color == init_colour("bayes-init")
    assert traces["zero-shot"].line.color == init_colour("zero-shot")
    xs = np.concatenate([np.asarray(t.x, float) for t in traces.values()])
    assert xs.min() >= floor - 1e-6 and xs.max() <= 100 and max(max(t.y) for t in traces.values()) > 1
    assert "test n=200" in fig.layout.title.text and "%" in fig.layout.yaxis.title.text


def test_ensemble_spread_is_in_percent_with_a_legend():
    rng = np.random.default_rng(0)
    members = rng.dirichlet([1, 1], size=(4, 30))
    fig = bayes_viz.ensemble_spread(members, rng.integers(0, 2, 30), dataset="toy", k=4)
    assert {t.name for t in fig.data} <= {"ensemble correct", "ensemble wrong"}
    ys = np.concatenate([np.asarray(t.y, float) for t in fig.data])
    assert ys.max() <= 100 and ys.max() > 1 and "toy, k=4" in fig.layout.title.text


# ----------------------------------------------------------------------------------------------- labels
def test_accuracy_label_shows_n_and_the_full_test_value():
    assert accuracy_label(0.56, 100, 872, 0.724) == "56% on 100 sampled test examples (full test: 72.4%, n=872)"
    assert accuracy_label(0.724, 872, 872, 0.724) == "72.4% on all 872 test examples"
    assert accuracy_label(0.5, 10, 872) == "50% on 10 sampled test examples of 872"


@pytest.mark.parametrize("n", [1, 2, 3, 7, 12])
def test_anchor_offsets_are_distinct(n):
    offsets = anchor_offsets(n)
    assert len(set(offsets)) == n and all(abs(np.hypot(*o) - ANCHOR_OFFSET) < 0.2 for o in offsets)
    assert offsets[0] == (0.0, -ANCHOR_OFFSET)  # the first label straight above its anchor


def test_particles_title_has_no_path(tmp_path):
    run = _particles_dir(tmp_path)
    fig = explore.particles_space(run, dataset="toy")
    text = _plain(fig.layout.title.text)
    assert os.sep not in text and str(tmp_path) not in text and "toy" in text and "seed 13" in text
    assert fig.layout.meta["distribution"].startswith(str(run))  # the path is kept, in meta
    moves = next(t for t in fig.data if t.name == "SVGD moves")
    assert moves.line.color == init_colour("bayes")


# ----------------------------------------------------------------------------------------------- on a tiny run
@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("views")
    write_dataset(tmp / "data", "toy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_DATA", str(tmp / "data"))
        mp.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
        out = tmp / "runs" / "views"
        assert main(["fewshot", "--dataset", "toy", "--backbone", tiny["bert-mlm"], "--k", "4", "--seeds", "13",
                     "--steps", "2", "--eval-every", "1", "--prompt-length", "2", "--max-length", "32", "--out",
                     str(out), "--quiet", "--methods", "zero-shot,random,vocab", "--snapshot-every", "1"]) == 0
        yield out


def test_run_views_in_one_style(run):
    figs = {"token": explore.token_space(run, projection="umap", n_vocab=40),
            "trajectories": explore.trajectories(run, projection="pca", n_vocab=60),
            "distance": explore.distance_vs_accuracy(run), "similarity": explore.prompt_similarity(run)}
    for name, fig in figs.items():
        text = _plain(fig.layout.title.text)
        assert os.sep not in text and str(run) not in text, (name, text)  # no path, even of the tiny backbone
        assert "toy" in text and "k=4" in text and "1 seed" in text and "test n=16" in text, (name, text)
    token = figs["token"]
    assert "UMAP needs ≥ 50 points; 40 given" in token.layout.title.text and token.layout.meta["projection"] == "pca"
    for t in token.data[1:]:
        assert t.marker.color == init_colour(t.name), t.name
    for t in figs["trajectories"].data[1:]:
        assert t.line.color == init_colour(t.name)
    dist = figs["distance"]
    rows = explore.distances(run)
    ys = sorted(y for t in dist.data if t.xaxis == "x" for y in t.y)
    assert ys == pytest.approx(sorted(100 * rows["test_acc"]))  # in %
    assert dist.layout.yaxis.title.text == "test accuracy (%)"
    assert all(t.marker.color == init_colour(t.name) for t in dist.data)


def test_sentence_space_states_n_and_keeps_anchor_labels_apart(run):
    fig = explore.sentence_space(run, method="vocab", seed=13, n_examples=10)
    meta = fig.layout.meta
    assert meta["n"] == 10 and meta["n_test"] == 16 and meta["subsample"]
    titles = [a.text for a in fig.layout.annotations if a.text and "test examples" in a.text]
    assert len(titles) == 2 and all("on 10 sampled test examples" in t and "full test:" in t and "n=16" in t
                                    for t in titles)
    assert f"(full test: {100 * meta['acc_tuned_full']:.1f}%" in titles[1]
    assert "10 of 16 test examples sampled" in fig.layout.title.text and os.sep not in _plain(fig.layout.title.text)
    names = set(next(t for t in fig.data if t.name == "label anchors").text)
    labels = [a for a in fig.layout.annotations if a.text in names]
    assert len(labels) == 2 * len(names)  # each anchor labelled in both panels
    for panel in {a.xref for a in labels}:
        spots = [(a.x, a.y, a.ax, a.ay) for a in labels if a.xref == panel]
        assert len(set(spots)) == len(spots) and len({(a.ax, a.ay) for a in labels if a.xref == panel}) == len(spots)
    full = explore.sentence_space(run, method="vocab", seed=13, n_examples=None)
    assert any("on all 16 test examples" in (a.text or "") for a in full.layout.annotations)
    assert not full.layout.meta["subsample"] and "test n=16" in full.layout.title.text
