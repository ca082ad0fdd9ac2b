"""notebooks/02b_supmer.ipynb under papermill with tiny parameters (tiny model, a tiny corpus written here, toy
datasets): it meta-trains (full + both ablations), draws the curriculum, and writes both tables. The kernel inherits
WORKBENCH_DATA and WORKBENCH_CACHE; workbench itself is installed (editable) in its environment."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import check_committed_clean, check_export, check_saved_figure

papermill = pytest.importorskip("papermill")

from conftest import write_dataset  # noqa: E402
from test_supmer_corpus import write_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02b_supmer.ipynb"
PARAMS = ["backbone", "selfsup_corpus", "selfsup_n_clusters", "selfsup_limit", "n_options", "types", "per_task_support",
          "per_task_query", "prompt_length", "meta_max_length", "meta_steps", "meta_batch", "ablations", "dg_source",
          "dg_targets", "dg_methods", "k", "seeds", "tune_steps", "tune_lr", "tune_eval_every", "tune_max_length",
          "test_limit", "out_dir", "overwrite", "interactive"]


def test_notebook_is_committed_clean_and_parameterised():
    lines = check_committed_clean(NOTEBOOK, PARAMS)
    assert all(": " in ln.split("=")[0] for ln in lines)  # typed
    assert lines[-1].startswith("interactive: bool = False")


def test_notebook_runs_on_tiny_inputs(tiny, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_dataset(data, "toy")
    write_dataset(data, "toy2", seed=3)
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    monkeypatch.setenv("WORKBENCH_DATA", str(data))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    params = dict(backbone=tiny["bert"], selfsup_corpus=str(corpus), selfsup_n_clusters=6, selfsup_limit=200,
                  n_options=3, types=["nsp", "nss", "scsp", "scss", "scc"], per_task_support=3, per_task_query=3,
                  prompt_length=3, meta_max_length=40, meta_steps=3, meta_batch=2, ablations=["no-psi", "no-mixup"],
                  dg_source="toy", dg_targets=["toy2"], dg_methods=["random", "supmer", "supmer+psi"], k=2, seeds=[13],
                  tune_steps=2, tune_lr=0.05, tune_eval_every=1, tune_max_length=40, test_limit=8,
                  out_dir="runs/supmer", overwrite=True, interactive=False)
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "executed.ipynb"), kernel_name="python3",
                               parameters=params, cwd=str(tmp_path), progress_bar=False, execution_timeout=300)
    out = tmp_path / "runs" / "supmer"
    check_saved_figure(out / "curriculum.html")
    for name in ("full", "no-psi", "no-mixup"):
        assert (out / f"meta-{name}" / "results.json").is_file()
    assert (out / "meta-full" / "psi" / "psi.json").is_file() and not (out / "meta-no-psi" / "psi").exists()
    config = json.loads((out / "meta-no-psi" / "config.json").read_text())
    assert config["supmer"]["psi"] is False and config["supmer"]["mixup"] is True
    assert config["selfsup"]["per_task_support"] == 3 and config["selfsup"]["exclude"] == ["toy2"]
    assert config["meta"]["steps"] == 3 and config["meta"]["max_length"] == 40
    dg_config = json.loads((out / "domain_gen" / "config.json").read_text())  # the run directory `supmer-dg` writes
    assert dg_config["command"] == "supmer-dg" and dg_config["test_limit"] == 8 and dg_config["tune"]["eval_every"] == 1
    dg = (out / "domain_gen" / "table.csv").read_text().splitlines()
    assert dg[0].split(",")[1:] == ["toy (in-domain)", "toy2", "train-dev gap"]
    assert [l.split(",")[0] for l in dg[1:]] == ["random", "supmer", "supmer+psi"]
    abl = pd.read_csv(out / "ablations.csv")
    assert list(abl["run"]) == ["full", "no-psi", "no-mixup"]
    assert list(abl["psi"]) == [True, False, True] and list(abl["mixup"]) == [True, True, False]
    dg_table = pd.read_csv(out / "domain_gen" / "table.csv", index_col=0)
    for column in dg_table.columns:  # the same run reads the same in both tables (full SUPMER = the supmer row)
        assert str(abl.loc[0, f"test: {column}"]) == str(dg_table.loc["supmer", column]), column
    assert {"test: toy (in-domain)", "test: toy2"} <= set(abl.columns)  # ablations tested on every domain too
    text = (tmp_path / "executed.ipynb").read_text()
    assert "nss" in text and "scc" in text and "PapermillExecutionError" not in text
    assert check_export(tmp_path / "executed.ipynb") == 1  # 02b_supmer.ipynb: the curriculum
