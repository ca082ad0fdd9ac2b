"""The quickstart notebook end to end under papermill (tiny model, toy data), the figures it draws, and its panel.

The notebook runs in a separate kernel process: it inherits this process's environment, so WORKBENCH_DATA (the toy
data) is set with monkeypatch before executing; workbench itself is installed (editable) in the kernel's environment.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import check_committed_clean, check_export, check_saved_figure

papermill = pytest.importorskip("papermill")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "00_quickstart.ipynb"
METHODS = ["zero-shot", "linear-probe", "random"]
SEEDS = [13]
TEST_LIMIT = 10  # of the toy set's 16 test examples


def execute(tmp: Path, monkeypatch, data_dir: Path, **params) -> Path:
    """Run the notebook with ``params`` in ``tmp`` (its cwd); return the executed copy."""
    monkeypatch.setenv("WORKBENCH_DATA", str(data_dir))
    out = tmp / "executed.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), kernel_name="python3", parameters=params, cwd=str(tmp),
                               progress_bar=False, execution_timeout=300)
    return out


def tiny_params(tiny, **extra) -> dict:
    return {**dict(dataset="toy", backbone=tiny["bert-mlm"], methods=METHODS, k=4, seeds=SEEDS, steps=4, eval_every=2,
                   snapshot_every=2, prompt_length=4, max_length=32, test_limit=TEST_LIMIT, out_dir="runs/quickstart",
                   overwrite=True, interactive=False),
            **extra}


@pytest.fixture(scope="module")
def quickstart_run(tiny, tmp_path_factory):
    """The notebook executed once (interactive=False); shared by the result and figure tests.

    Module-scoped, so it builds the same 'toy' dataset as the ``toy_data`` fixture (conftest.write_dataset) itself.
    """
    from conftest import write_dataset

    tmp = tmp_path_factory.mktemp("quickstart")
    write_dataset(tmp / "data", "toy")
    with pytest.MonkeyPatch.context() as mp:
        nb = execute(tmp, mp, tmp / "data", **tiny_params(tiny))
    return tmp / "runs" / "quickstart", nb


def test_notebook_is_committed_clean_and_parameterised():
    check_committed_clean(NOTEBOOK, ["dataset", "backbone", "methods", "k", "seeds", "steps", "lr", "eval_every",
                                     "snapshot_every", "prompt_length", "max_length", "test_limit", "out_dir",
                                     "overwrite", "interactive"])


def test_notebook_writes_a_complete_run(quickstart_run):
    run, nb = quickstart_run
    results = json.loads((run / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in results["rows"]) == sorted((m, s) for m in METHODS for s in SEEDS)
    assert all(r["dataset"] == "toy" and r["k"] == 4 and r["n_test"] == TEST_LIMIT for r in results["rows"])
    assert results["config"]["test_limit"] == TEST_LIMIT and results["config"]["tune"]["eval_every"] == 2
    assert {(s["dataset"], s["method"]) for s in results["summary"]} == {("toy", m) for m in METHODS}
    assert all(s["n"] == len(SEEDS) and 0 <= s["test_acc_mean"] <= 1 for s in results["summary"])
    assert results["config"]["tune"]["steps"] == 4 and results["config"]["prompt"]["length"] == 4
    for seed in SEEDS:
        adapter = run / "adapters" / "toy" / "random" / f"seed{seed}"
        assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
        assert any("snapshot" in p.name for p in adapter.iterdir())  # snapshot_every=2: notebook 04's trajectories
    from workbench.viz.explore import distances  # what notebook 04 reads from this run (its default runs)

    assert set(distances([str(run)])["method"]) == {"random"}
    assert not (run / "adapters" / "toy" / "zero-shot").exists()
    check_saved_figure(run / "dev_curves.html")  # opens offline: plotly.min.js beside it
    check_saved_figure(run / "summary_bars.html")
    assert (run / "metrics.jsonl").is_file() and (run / "config.json").is_file()
    text = nb.read_text()
    assert "test_acc" in text and "PapermillExecutionError" not in text
    assert check_export(nb) == 2  # dev curves and summary bars, each in the nbconvert HTML


def test_viz_on_the_notebook_run(quickstart_run, tmp_path):
    from workbench.viz import runs as viz
    from workbench.viz.output import save_figure

    run, _ = quickstart_run
    df = viz.load_metrics(run)
    assert set(df["event"]) == {"eval", "row"}
    evals = df[df["event"] == "eval"]
    assert set(evals["method"]) == {"random"} and {0, 4} <= set(evals["step"])

    fig = viz.dev_curves(run)
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == METHODS  # one trace per method (one seed: no per-seed lines)
    assert len(fig.data) == len(METHODS)
    curve = next(t for t in fig.data if t.name == "random")
    assert list(curve.x) == sorted(evals["step"]) and "step" in curve.hovertemplate and "dev acc" in curve.hovertemplate

    bars = viz.summary_bars(run)
    assert [t.name for t in bars.data] == [m for m in METHODS if m != "zero-shot"]  # a dot ± std per method
    assert all(t.error_y.array is not None for t in bars.data)
    assert any("zero-shot" in a.text for a in bars.layout.annotations)  # zero-shot: a reference line
    table = viz.summary_table(run)
    assert list(table["method"]) == METHODS and {"test_acc", "test_acc_std", "n"} <= set(table.columns)
    assert table["test_acc"].between(0, 100).all()

    path = save_figure(bars, tmp_path / "figs" / "bars.html")
    assert path.is_file() and "<html" in path.read_text()[:500].lower()
    assert sorted(p.name for p in path.parent.iterdir()) == ["bars.html", "plotly.min.js"]  # no temporary file

    with pytest.raises(ValueError, match="no_such_run"):
        viz.dev_curves(tmp_path / "no_such_run")
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="metrics.jsonl"):
        viz.load_metrics(tmp_path / "half")
    with pytest.raises(ValueError, match="results.json"):
        viz.summary_table(tmp_path / "half")


def test_notebook_builds_the_panel_headlessly(tiny, toy_data, tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    nb = execute(tmp_path, monkeypatch, toy_data, **tiny_params(tiny, interactive=True, steps=2,
                                                                  methods=["zero-shot", "random"]))
    assert (tmp_path / "runs" / "quickstart" / "results.json").is_file()
    assert "application/vnd.jupyter.widget-view+json" in nb.read_text()  # the panel was displayed


def test_panel_run_button_runs_the_harness(tiny, toy_data, tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.ui.quickstart import quickstart_panel

    defaults = dict(dataset="toy", backbone=tiny["bert-mlm"], methods=["zero-shot", "random"], k=4, seeds=[13],
                    steps=2, lr=0.01, prompt_length=4, max_length=32, out_dir=str(tmp_path / "runs" / "qs"))
    panel = quickstart_panel(defaults)
    assert panel.controls["dataset"].value == "toy" and "toy" in panel.controls["dataset"].options
    assert panel.controls["methods"].value == ("zero-shot", "random") and panel.controls["steps"].value == 2
    panel.controls["k"].value = 3
    panel.run_button.click()
    panel.run_button.click()  # a second click writes a second, fresh directory
    assert len(panel.runs) == 2 and panel.runs[0] != panel.runs[1]
    for run in map(Path, panel.runs):
        results = json.loads((run / "results.json").read_text())
        assert results["config"]["k"] == 3 and {r["method"] for r in results["rows"]} == {"zero-shot", "random"}
    assert not panel.run_button.disabled
