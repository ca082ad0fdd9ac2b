"""notebooks/02b_supmer.ipynb under papermill with tiny parameters (tiny model, a tiny corpus written here, toy
datasets): it meta-trains (full + both ablations), draws the curriculum, and writes both tables."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import check_committed_clean

papermill = pytest.importorskip("papermill")

from conftest import write_dataset  # noqa: E402
from test_supmer_corpus import write_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02b_supmer.ipynb"


def test_notebook_is_committed_clean_and_parameterised():
    lines = check_committed_clean(NOTEBOOK)
    assert all(": " in ln.split("=")[0] for ln in lines)  # typed
    assert lines[-1].startswith("interactive: bool = False")


def test_notebook_runs_on_tiny_inputs(tiny, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_dataset(data, "toy")
    write_dataset(data, "toy2", seed=3)
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    monkeypatch.setenv("WORKBENCH_DATA", str(data))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    params = dict(backbone=tiny["bert"], corpus=str(corpus), n_clusters=6, corpus_limit=200, n_options=3,
                  types=["nsp", "nss", "scsp", "scss", "scc"], prompt_length=3, max_length=40, meta_steps=3,
                  meta_batch=2, support=3, query=3, ablations=["no-psi", "no-mixup"], dg_source="toy",
                  dg_targets=["toy2"], dg_methods=["random", "supmer", "supmer+psi"], k=2, seeds=[13], tune_steps=2,
                  tune_lr=0.05, max_test=8, out_dir="runs/supmer", overwrite=True, interactive=False)
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "executed.ipynb"), kernel_name="python3",
                               parameters=params, cwd=str(tmp_path), progress_bar=False, execution_timeout=300)
    out = tmp_path / "runs" / "supmer"
    assert (out / "curriculum.html").stat().st_size > 100_000
    for name in ("full", "no-psi", "no-mixup"):
        assert (out / f"meta-{name}" / "results.json").is_file()
    assert (out / "meta-full" / "psi" / "psi.json").is_file() and not (out / "meta-no-psi" / "psi").exists()
    dg = (out / "domain_generalisation.csv").read_text().splitlines()
    assert dg[0].split(",")[1:] == ["toy (in-domain)", "toy2", "train-dev gap"]
    assert [l.split(",")[0] for l in dg[1:]] == ["random", "supmer", "supmer+psi"]
    abl = (out / "ablations.csv").read_text().splitlines()
    assert [l.split(",")[0] for l in abl[1:]] == ["full", "no-psi", "no-mixup"]
    assert abl[1].split(",")[1:3] == ["True", "True"] and abl[2].split(",")[1:3] == ["False", "True"]
    text = (tmp_path / "executed.ipynb").read_text()
    assert "nss" in text and "scc" in text and "PapermillExecutionError" not in text
