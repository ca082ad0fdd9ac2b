"""notebooks/03_bayesian_prompts.ipynb under papermill (tiny model, toy data) and the figures/widgets it uses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import check_committed_clean, check_export, check_saved_figure

papermill = pytest.importorskip("papermill")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "03_bayesian_prompts.ipynb"
PARAMS = ["dataset", "backbone", "k", "seed", "baselines", "mode", "features", "components", "covariance", "pca_dim",
          "density_data", "n_particles", "iterations", "step_size", "record_every", "ensemble_size", "steps", "lr",
          "prompt_length", "max_length", "test_limit", "projection", "out_dir", "overwrite", "interactive"]
FIGURES = ["distribution_2d.html", "svgd_trajectories.html", "svgd_diagnostics.html", "ensemble_spread.html",
           "reliability.html"]


def test_notebook_is_committed_clean_and_parameterised():
    check_committed_clean(NOTEBOOK, PARAMS)


def test_notebook_runs_and_writes_run_and_figures(tiny, toy_data, tmp_path, monkeypatch):
    params = dict(dataset="toy", backbone=tiny["bert-mlm"], k=4, seed=3, baselines=["zero-shot", "random"], mode="all",
                  pca_dim=4, iterations=40, record_every=10, ensemble_size=3, steps=2, prompt_length=3, max_length=32,
                  out_dir="runs/bn", interactive=False)
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), kernel_name="python3", parameters=params, cwd=str(tmp_path),
                               progress_bar=False, execution_timeout=300)
    run = tmp_path / "runs" / "bn"
    res = json.loads((run / "results.json").read_text())
    assert {s["method"] for s in res["summary"]} == {"zero-shot", "random", "bayes-init", "bayes-resample",
                                                     "bayes-ensemble"}
    assert res["config"]["bayes"]["pca_dim"] == 4 and res["distributions"]["toy/seed3"]["fitted_dim"] == 4
    for name in FIGURES:
        check_saved_figure(run / name)  # opens offline: plotly.min.js beside it
    anim = (run / "svgd_trajectories.html").read_text()
    assert "Plotly.addFrames" in anim and '"name":"40"' in anim  # frames 0, 10, 20, 30, 40
    assert (run / "distributions/toy/seed3/distribution.safetensors").is_file()
    assert "PapermillExecutionError" not in out.read_text()
    assert check_export(out) == len(FIGURES)  # 03_bayesian_prompts.ipynb: each figure in the nbconvert HTML


def test_viz_functions_and_widgets(tmp_path):
    import numpy as np
    import torch
    from types import SimpleNamespace
    from workbench.methods.bayes import BayesConfig, fit_distribution
    from workbench.viz.bayes import distribution_2d, ensemble_spread, reliability_diagram, svgd_animation

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(6, 5, generator=g) + 3, torch.randn(6, 5, generator=g) - 3])
    bb = SimpleNamespace(name="t", path="/t", hidden_size=5, device=torch.device("cpu"))
    dist = fit_distribution(x, BayesConfig(iterations=20, record_every=5), 2, 0, bb)
    fig = distribution_2d(dist)
    names = [t.name for t in fig.data]
    assert names.count("SVGD particles") == 1 and "component 1 (2σ)" in names
    assert len(svgd_animation(dist).frames) == 5
    with pytest.raises(ValueError, match="record_every"):
        svgd_animation(fit_distribution(x, BayesConfig(iterations=5), 2, 0, bb))
    members = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]])
    spread = ensemble_spread(members, np.array([0, 1]))
    assert np.allclose(sorted(spread.data[0].y), [70, 80]) and np.allclose(sorted(spread.data[0].error_y.array), [10, 10])  # %
    rel = reliability_diagram({"a": members.mean(0)}, np.array([0, 1]))
    assert "ECE" in rel.data[1].name

    pytest.importorskip("ipywidgets")
    from workbench.viz.bayes import svgd_explorer
    box = svgd_explorer(dist)
    box.controls["particles"].value = 20  # reruns SVGD with 20 particles
    box.controls["iterations"].value = 30
    fitted = box.last.info["fitted_dim"]  # particles live in the auto-sized PCA space, map back to the 5 features
    assert box.last.particles.shape == (20, fitted) and box.last.info["config"]["iterations"] == 30
    assert fitted < 5 and box.last.feature_particles().shape == (20, 5)
    assert box.last.info["svgd"]["history"][-1]["iteration"] == 30
