"""The benchmark runner (tiny model, toy data): the grid, resume after an interrupt, refusals, results, notebook 05."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.experiments import benchmark, fewshot as harness, leaderboard
from workbench.config import ConfigError
from workbench.engine.runs import RunError

REPO = Path(__file__).resolve().parents[1]
METHODS = ["zero-shot", "linear-probe", "random", "vocab"]
SEEDS = [13, 21]
VOLATILE = ("wall_s", "cpu_s")


def suite_dict(tiny, **extra) -> dict:
    return {"name": "tiny", "methods": METHODS, "grid": [{"datasets": ["toy"], "k": [2, 4]}], "seeds": SEEDS,
            "backbone": {"name": tiny["bert-mlm"]}, "prompt": {"length": 4},
            "tune": {"steps": 4, "eval_every": 2, "max_length": 32, "lr": 0.05, "budgets": [2]}, **extra}


def write_suite(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def stable(rows):
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows), key=benchmark.row_key)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from conftest import write_dataset
    root = tmp_path_factory.mktemp("benchdata")
    write_dataset(root, "toy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_DATA", str(root))
        yield root


@pytest.fixture(scope="module")
def full_run(tiny, data_dir, tmp_path_factory):
    """One uninterrupted run through the command line: the reference for the resume test and the notebook's input."""
    from workbench.cli.main import main

    tmp = tmp_path_factory.mktemp("bench")
    suite = write_suite(tmp / "suite.json", suite_dict(tiny))
    assert main(["benchmark", "--suite", str(suite), "--out", str(tmp / "bench"), "--quiet"]) == 0
    return tmp / "bench", suite


def test_cli_run_writes_rows_results_and_leaderboard(full_run):
    out, _ = full_run
    res = json.loads((out / "results.json").read_text())
    keys = {benchmark.row_key(r) for r in res["rows"]}
    assert keys == {("toy", k, m, s) for k in (2, 4) for m in METHODS for s in SEEDS}
    assert len(res["rows"]) == len(keys) == len((out / "rows.jsonl").read_text().splitlines())
    assert {(s["k"], s["method"]) for s in res["summary"]} == {(k, m) for k in (2, 4) for m in METHODS}
    assert all(s["n"] == 2 for s in res["summary"])
    # baselines share one unprompted test pass: identical zero-shot test accuracy for every k and seed
    assert len({r["test_acc"] for r in res["rows"] if r["method"] == "zero-shot"}) == 1
    paired = res["statistics"]["paired"]
    assert {(e["k"], e["method"]) for e in paired} == {(2, "vocab"), (4, "vocab")}
    assert {e["method"] for e in res["statistics"]["ranks"]} == set(METHODS)
    assert res["data"]["toy"]["file_hashes"]["train"].startswith("sha256:")
    assert res["environment"]["packages"]["torch"] and res["suite"]["methods"] == METHODS
    for k in (2, 4):
        assert (out / f"k{k}" / "adapters" / "toy" / "vocab" / "seed21" / "adapter_model.safetensors").is_file()
    assert {json.loads(x).get("k") for x in (out / "metrics.jsonl").read_text().splitlines()} == {2, 4}
    md = (out / "leaderboard.md").read_text()
    assert "| method | toy k=2 | toy k=4 | avg rank |" in md and "Holm" in md and "test sets: full" in md


def test_interrupted_then_resumed_equals_uninterrupted(tiny, data_dir, full_run, tmp_path, monkeypatch, capsys):
    ref_out, suite = full_run
    calls = {"n": 0}
    real = harness._prompt_tuning

    def crashing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third tuned row
        return real(*a, **kw)

    from workbench.cli.main import main

    monkeypatch.setattr(harness, "_prompt_tuning", crashing)
    out = tmp_path / "bench"
    assert main(["benchmark", "--suite", str(suite), "--out", str(out), "--quiet"]) == 130
    assert "--resume" in capsys.readouterr().err
    partial = benchmark.read_rows(out / "rows.jsonl")
    assert 0 < len(partial) < 16 and not (out / "results.json").exists()
    with pytest.raises(RunError, match="--resume"):
        benchmark.run_benchmark(suite, out, progress=False)
    with open(out / "rows.jsonl", "a") as f:
        f.write('{"dataset": "toy", "k": 2, "meth')  # a torn last line, as a crash during a write leaves
    monkeypatch.setattr(harness, "_prompt_tuning", real)
    ran = []
    real_baseline = harness._baseline
    monkeypatch.setattr(harness, "_baseline", lambda *a, **kw: ran.append(a[0]) or real_baseline(*a, **kw))
    from workbench.learn import tuner
    real_eval, unprompted_test_passes = tuner.evaluate, []
    spy = lambda head, xs, prompt, *a, **kw: (  # noqa: E731
        unprompted_test_passes.append(len(xs)) if prompt is None else None) or real_eval(head, xs, prompt, *a, **kw)
    for module in (tuner, benchmark):  # where the shared test pass is made
        monkeypatch.setattr(module, "evaluate", spy)
    res = benchmark.run_benchmark(suite, out, resume=True, progress=False)
    assert unprompted_test_passes == [16]  # one shared test pass for the 4 baseline rows of k=4 (both seeds)
    ref = json.loads((ref_out / "results.json").read_text())
    assert stable(res["rows"]) == stable(ref["rows"])
    done = {benchmark.row_key(r) for r in partial}
    assert len(ran) == sum(1 for k in (2, 4) for m in ("zero-shot", "linear-probe") for s in SEEDS
                           if ("toy", k, m, s) not in done)  # finished rows are not run again
    assert len(benchmark.read_rows(out / "rows.jsonl")) == 16
    assert [s["wall_s"] >= 0 for s in res["sessions"]] == [True]


def test_resume_with_a_changed_suite_is_refused(tiny, data_dir, full_run, tmp_path):
    out, _ = full_run
    changed = write_suite(tmp_path / "s.json", suite_dict(tiny, seeds=[13, 42], tune={"steps": 5, "eval_every": 2,
                                                                                   "max_length": 32, "lr": 0.05}))
    with pytest.raises(ConfigError) as e:
        benchmark.run_benchmark(changed, out, resume=True, progress=False)
    assert "seeds" in str(e.value) and "tune.steps" in str(e.value) and "--out" in str(e.value)
    # an unchanged suite resumes a finished benchmark without running anything: results are rewritten
    before = (out / "rows.jsonl").read_text()
    benchmark.run_benchmark(full_run[1], out, resume=True, progress=False)
    assert (out / "rows.jsonl").read_text() == before


def test_suite_from_an_older_workbench_resumes_unless_a_new_field_is_set(tiny, data_dir):
    """A suite resolved before a config field existed lacks it: that counts as the field's default, not a change."""
    new = benchmark.resolve_suite(suite_dict(tiny))
    old = json.loads(json.dumps(new))
    del old["tune"]["eval_autocast"]
    assert benchmark.suite_diff(old, new) == []
    assert benchmark.suite_diff(old, {**new, "tune": {**new["tune"], "eval_autocast": "bf16"}}) == ["tune.eval_autocast"]


def test_suite_validation_lists_known_names(tiny, data_dir, tmp_path):
    from workbench.cli.main import main

    bad = write_suite(tmp_path / "bad.json", suite_dict(tiny, methods=["random", "no-such-init"]))
    with pytest.raises(ConfigError, match=r"no-such-init.*known: \[.*'random'.*'vocab'"):
        benchmark.load_suite(bad)
    bad_ds = write_suite(tmp_path / "bad_ds.json", suite_dict(tiny, grid=[{"datasets": ["nope"], "k": [4]}]))
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'; known: \[.*'toy'"):
        benchmark.load_suite(bad_ds)
    with pytest.raises(ConfigError, match="unknown config key 'wat'"):
        benchmark.resolve_suite({**suite_dict(tiny), "wat": 1})
    with pytest.raises(ConfigError, match="cannot differ per init"):
        benchmark.resolve_suite(suite_dict(tiny, init_options={"random": {"prompt.length": 8}}))
    (tmp_path / "broken.json").write_text('{"name": "x",\n "methods": [,]}')
    with pytest.raises(ConfigError, match=r"broken.json:2"):
        benchmark.load_suite(tmp_path / "broken.json")
    err = tmp_path / "err.txt"
    assert main(["benchmark", "--suite", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert not (tmp_path / "o").exists()  # nothing written for a bad suite
    # "all" expands to every registered init; exclude removes some
    r = benchmark.resolve_suite(suite_dict(tiny, methods=["zero-shot", "all"], exclude=["file", "text"]))
    from workbench.learn.inits import INITS
    assert r["methods"] == ["zero-shot"] + sorted(set(INITS) - {"file", "text"})
    assert not err.exists()
    # other FewShotConfig sections (e.g. meta, for the meta inits) pass through, validated
    assert benchmark.resolve_suite(suite_dict(tiny, meta={"steps": 3}))["meta"]["steps"] == 3
    with pytest.raises(ConfigError, match="unknown config key 'meta.nope'"):
        benchmark.resolve_suite(suite_dict(tiny, meta={"nope": 3}))


def test_test_limit_and_init_options(tiny, data_dir, tmp_path, monkeypatch):
    from workbench.learn import tuner

    s = suite_dict(tiny, methods=["zero-shot", "text"], grid=[{"datasets": ["toy"], "k": [2, 4]}], seeds=[13],
                   test_limit=6, init_options={"text": {"prompt.init_text": "great movie", "tune.steps": 2}})
    real_eval, passes = tuner.evaluate, []
    spy = lambda head, xs, prompt, *a, **kw: (  # noqa: E731
        passes.append(len(xs)) if prompt is None else None) or real_eval(head, xs, prompt, *a, **kw)
    for module in (tuner, benchmark):  # where the shared test pass is made
        monkeypatch.setattr(module, "evaluate", spy)
    res = benchmark.run_benchmark(s, tmp_path / "b", progress=False)
    assert passes == [6]  # the unprompted test pass is shared by both k cells of the dataset
    assert all(r["n_test"] == 6 and r["n_test_full"] == 16 for r in res["rows"])
    text = next(r for r in res["rows"] if r["method"] == "text" and r["k"] == 2)
    assert text["steps_run"] == 2
    meta = json.loads((tmp_path / "b" / "k2" / "adapters" / "toy" / "text" / "seed13" / "workbench_prompt.json")
                      .read_text())
    assert meta["provenance"]["text"] == "great movie"
    md = (tmp_path / "b" / "leaderboard.md").read_text()
    assert "subsample of at most 6" in md and "No paired tests: the reference `random`" in md
    with pytest.raises(ConfigError, match="reference: unknown method 'randon'"):
        benchmark.resolve_suite({**s, "reference": "randon"})


def test_results_notebook_under_papermill(full_run, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    import nbformat
    from conftest import check_export, check_saved_figure

    nb_path = REPO / "notebooks" / "05_results.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "commit the notebook without outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and [ln.split(":")[0] for ln in params[0].source.splitlines()] == [
        "bench_dir", "out_dir", "interactive"]
    out, _ = full_run
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(nb_path), str(executed), kernel_name="python3", cwd=str(tmp_path),
                               parameters=dict(bench_dir=str(out), out_dir="results", interactive=False),
                               progress_bar=False, execution_timeout=300)
    res = tmp_path / "results"
    assert sorted(p.name for p in res.glob("*.html")) == ["bars.html", "k_curve.html", "learning_curves.html",
                                                          "ranks.html"]
    for p in res.glob("*.html"):  # opens offline: plotly.min.js beside them
        check_saved_figure(p)
    assert check_export(executed) == 4  # 05_results.ipynb: each figure in the nbconvert HTML
    assert (res / "leaderboard.md").read_text() == (out / "leaderboard.md").read_text()
    csv = (res / "leaderboard.csv").read_text().splitlines()
    assert csv[0] == "method,toy k=2,toy k=4,avg rank" and len(csv) == 1 + len(METHODS)


def test_plots_on_a_benchmark(full_run, tmp_path):
    from workbench.viz import benchmark as bp

    out, _ = full_run
    res = bp.load_benchmark(out)
    table = bp.cell_table(res)
    assert set(table["cell"]) == {"toy k=2", "toy k=4"} and table["rank"].between(1, len(METHODS)).all()
    fig = bp.bars(res)  # dots ± std; zero-shot is a reference line, not a dot
    assert {t.name for t in fig.data} == set(METHODS) - {"zero-shot"}
    assert all(t.error_y.array is not None for t in fig.data)
    assert any("zero-shot" in a.text for a in fig.layout.annotations) and fig.layout.yaxis.range[0] > 0
    kc = bp.k_curve(res)
    assert {t.name for t in kc.data} == set(METHODS) - {"zero-shot"} and all(list(t.x) == [2, 4] for t in kc.data)
    rp = bp.rank_plot(res)
    assert list(rp.data[0].y) == bp.method_order(res) and "rank" in rp.data[0].hovertemplate
    assert rp.layout.xaxis.tick0 == 1 and 0.5 <= rp.layout.xaxis.range[0] < 1
    curves = bp.curve_table(res)
    tuned = [m for m in METHODS if m not in ("zero-shot", "linear-probe")]
    assert set(curves["method"]) == set(tuned) and sorted(set(curves["budget"])) == [0, 2, 4]
    one = curves[(curves["cell"] == "toy k=2") & (curves["method"] == tuned[0]) & (curves["budget"] == 4)]
    rows = [r for r in res["rows"] if (r["dataset"], r["k"], r["method"]) == ("toy", 2, tuned[0])]
    assert one["test_acc"].item() == pytest.approx(100 * sum(r["test_acc"] for r in rows) / len(rows))
    lc = bp.learning_curves(res)
    assert {t.name for t in lc.data} == set(tuned) and all(len(t.x) == 3 for t in lc.data)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "rows.jsonl").write_text("")
    with pytest.raises(ValueError, match="--resume"):
        bp.load_benchmark(tmp_path / "half")


@pytest.fixture
def probe_init():
    """A temporary init that records the run config it is given (removed from the registry afterwards)."""
    import torch
    from workbench.learn.inits import INITS, register_init

    seen = []

    @register_init("bench-probe", "test only: records ctx.extras['config']")
    def _probe(ctx):
        seen.append(ctx.extras.get("config"))
        return torch.zeros(ctx.length, ctx.backbone.hidden_size), {}

    yield seen
    INITS.pop("bench-probe")


def test_suite_sections_and_init_options_reach_the_init(tiny, data_dir, tmp_path, probe_init):
    s = suite_dict(tiny, methods=["random", "bench-probe"], grid=[{"datasets": ["toy"], "k": [2]}], seeds=[13],
                   meta={"steps": 7}, init_options={"bench-probe": {"tune.steps": 1, "tune.budgets": []}})
    res = benchmark.run_benchmark(s, tmp_path / "b", progress=False)
    cfg = probe_init[0]
    assert cfg is not None and cfg.meta.steps == 7 and cfg.tune.steps == 1 and cfg.k == 2
    steps = {r["method"]: r["steps_run"] for r in res["rows"]}
    assert steps == {"random": 4, "bench-probe": 1}


def test_shipped_suites_resolve():
    from conftest import shared_data_or_skip
    from workbench.learn.inits import INITS

    shared_data_or_skip()
    smoke = benchmark.load_suite(REPO / "benchmarks" / "suites" / "smoke.json")
    assert smoke["cells"] == [["sst2", 16]] and smoke["test_limit"] is None and "random" in smoke["methods"]
    full = benchmark.load_suite(REPO / "benchmarks" / "suites" / "full.json")
    assert sorted(m for m in full["methods"] if m in INITS) == sorted(
        set(INITS) - {"file", "file+psi", "task-names", "target-name"})  # paths needed; added after the CPU suite ran
    assert full["cells"] == [[d, 16] for d in ("sst2", "mr", "subj", "agnews", "mpqa", "sst5")] + [["sst2", 4],
                                                                                                   ["mr", 4]]
    assert len(full["seeds"]) == 10 and full["reference"] == "random" and full["test_limit"] is None
    assert full["tune"]["eval_every"] <= 5 and len(full["tune"]["lr_grid"]) >= 3 and full["tune"]["budgets"]
    cpu = benchmark.load_suite(REPO / "benchmarks" / "suites" / "cpu.json")  # full, with named knobs reduced
    assert benchmark.suite_diff(full, cpu) == ["meta.eval_every", "meta.meta_batch", "meta.patience", "meta.steps",
                                               "meta.val_tasks", "prompt.length", "test_limit", "tune.budgets", "tune.eval_autocast",
                                               "tune.lr_grid", "tune.max_length", "tune.steps", "tune.warmup_steps"]
    assert cpu["methods"] == full["methods"] and cpu["families"] == full["families"]


def test_eval_autocast_reaches_every_benchmark_evaluation(tiny, data_dir, tmp_path, monkeypatch):
    """tune.eval_autocast=bf16 in a suite: training steps run without autocast, every evaluation (the shared
    unprompted test pass of zero-shot / linear probe included) under bf16."""
    import workbench.learn.grid as grid
    import workbench.learn.tuner as tuner

    seen, real = [], tuner.autocast_ctx
    for module in (tuner, grid):  # training steps run through learn.grid, evaluation through learn.tuner.predict
        monkeypatch.setattr(module, "autocast_ctx", lambda device, mode: (seen.append(mode), real(device, mode))[1])
    suite = suite_dict(tiny, methods=["zero-shot", "random"], seeds=[13], grid=[{"datasets": ["toy"], "k": [2]}],
                       tune={"steps": 4, "eval_every": 2, "max_length": 32, "lr": 0.05, "eval_autocast": "bf16"})
    benchmark.run_benchmark(suite, tmp_path / "b", progress=False)
    assert seen.count("none") == 4  # the 4 training steps of `random`, nothing else
    assert seen.count("bf16") >= 3 + 2  # dev at steps 0, 2, 4 + the unprompted and the tuned test passes


def test_families_in_a_suite_are_checked_and_do_not_block_a_resume(tiny, data_dir, full_run, tmp_path):
    import shutil

    base = suite_dict(tiny)
    with pytest.raises(ConfigError, match=r"families\['lexical'\] names \['nope'\].*the suite's methods: "
                                          r"\['zero-shot', 'linear-probe', 'random', 'vocab'\]"):
        benchmark.resolve_suite({**base, "families": {"lexical": ["vocab", "nope"]}})
    with pytest.raises(ConfigError, match=r"families\['lexical'\] names \['zero-shot'\]"):  # baselines: not compared
        benchmark.resolve_suite({**base, "families": {"lexical": ["zero-shot"]}})
    declared = benchmark.resolve_suite({**base, "families": {"lexical": ["vocab"]}})
    assert declared["families"] == {"lexical": ["vocab"]} and benchmark.resolve_suite(base)["families"] == {}
    assert benchmark.suite_diff(benchmark.resolve_suite(base), declared) == []  # statistics only: rows unchanged
    out = tmp_path / "bench"
    shutil.copytree(full_run[0], out)
    before = (out / "rows.jsonl").read_text()
    res = benchmark.run_benchmark({**base, "families": {"lexical": ["vocab"]}}, out, resume=True, progress=False)
    assert (out / "rows.jsonl").read_text() == before
    assert {e["family"] for e in res["statistics"]["paired"]} == {"lexical"}
    md = (out / "leaderboard.md").read_text()
    assert "### Holm family `lexical`: 2 comparisons" in md and "(declared: `lexical`): `lexical` (vocab: 2" in md


def _committed_results(families=None) -> dict:
    from workbench.engine.stats import statistics, summarise

    res_dir = REPO / "benchmarks" / "results"
    rows = benchmark.read_rows(res_dir / "full-2026-11-24.rows.jsonl")
    suite = json.loads((res_dir / "full-2026-11-24.suite.json").read_text())
    return {"suite": {**suite, "families": families or {}}, "rows": rows, "summary": summarise(rows),
            "statistics": statistics(rows, suite["reference"], families=families), "environment": {}, "sessions": []}


def test_leaderboard_shows_effects_families_and_verdicts():
    families = {"labelled-source": ["mpt-maml", "mpt-fomaml", "mpt-reptile", "multitask"],
                "unlabeled": ["metapt", "supmer"]}
    md = leaderboard.leaderboard_markdown(_committed_results(families))
    assert ("- statistics: paired over 5 seeds vs `random`; Holm within each family (declared: `labelled-source`, "
            "`unlabeled`): `labelled-source` "
            "(mpt-fomaml, mpt-maml, mpt-reptile, multitask: 32 comparisons); `unlabeled` (metapt, supmer: 16 "
            "comparisons); `other` (bayes, labels, supmer+psi, text, vocab: 40 comparisons)") in md
    heads = [line for line in md.splitlines() if line.startswith("### Holm family")]
    assert heads == ["### Holm family `labelled-source`: 32 comparisons", "### Holm family `unlabeled`: 16 comparisons",
                     "### Holm family `other`: 40 comparisons"]
    assert "| sst2 k=16 | 5 | 2.3 (1.8–3.2) | 3.8 (3.0–5.3) |" in md  # the MDE table: paired SD, MDE per cell
    row = next(line for line in md.splitlines() if line.startswith("| agnews | 16 | supmer+psi |"))
    assert row.startswith("| agnews | 16 | supmer+psi | +1.2 ± 0.2 | [+1.0, +1.4] | 0.4 |") and "**better**" in row
    assert "Better than `random` (Holm p < 0.05 within its family and |Δ| ≥ MDE): supmer+psi on agnews k=16." in md
    assert "Worse than `random` (same rule): none." in md and "Not resolved: 87 of 88 comparisons" in md
    assert "At or below" not in md  # no loss read off a mean that the seeds cannot resolve


def test_leaderboard_of_results_written_before_verdicts():
    """results.json of an earlier version (no MDE, CI or verdict): the leaderboard recomputes the statistics."""
    new = _committed_results()
    old = json.loads(json.dumps(new))
    for e in old["statistics"]["paired"]:
        for key in ("paired_sd", "mde", "mde_holm", "ci_low", "ci_high", "family", "family_size", "verdict"):
            del e[key]
    del old["suite"]["families"], old["statistics"]["families"]
    assert leaderboard.leaderboard_markdown(old) == leaderboard.leaderboard_markdown(new)
    assert "no families declared: Holm over all 88 comparisons" in leaderboard.leaderboard_markdown(new)


def test_a_suite_with_budgets_reports_the_learning_curve_and_its_statistics(tiny, data_dir, tmp_path):
    suite = suite_dict(tiny, methods=["zero-shot", "random", "vocab"], grid=[{"datasets": ["toy"], "k": [2]}],
                       tune={"steps": 4, "eval_every": 2, "max_length": 32, "lr_grid": [0.05, 0.5], "budgets": [2]})
    res = benchmark.run_benchmark(suite, tmp_path / "curve", progress=False)
    tuned = [r for r in res["rows"] if r["method"] != "zero-shot"]
    assert all([p["budget"] for p in r["curve"]] == [0, 2, 4] for r in tuned)
    assert "curve" not in next(r for r in res["rows"] if r["method"] == "zero-shot")
    auc = res["curve_statistics"]["curve_auc"]["paired"]
    assert [e["method"] for e in auc] == ["vocab"]
    want = [next(r["curve_auc"] for r in tuned if r["method"] == "vocab" and r["seed"] == s)
            - next(r["curve_auc"] for r in tuned if r["method"] == "random" and r["seed"] == s) for s in SEEDS]
    assert auc[0]["diff_mean"] == pytest.approx(sum(want) / len(want))
    board = (tmp_path / "curve" / "leaderboard.md").read_text()
    assert "## Learning curve" in board and "| B=0 | B=2 | B=4 | AUC | last step |" in board
    assert "lr grid [0.05, 0.5]" in board


def test_leaderboard_has_the_mean_over_cells_against_reference_and_baselines(full_run):
    out, _ = full_run
    res = json.loads((out / "results.json").read_text())
    pooled = res["statistics"]["pooled"]
    assert {e["reference"] for e in pooled} == {"random", "zero-shot", "linear-probe"}
    assert {(e["reference"], e["method"]) for e in pooled if e["k"] == 2} >= {("random", "vocab"), ("zero-shot", "random")}
    board = (out / "leaderboard.md").read_text()
    assert "## Mean over the cells of each k" in board and "| zero-shot | 2 | vocab | toy |" in board


def test_meta_runs_table_lists_each_training_once_with_its_budget_and_outcome():
    from workbench.experiments.leaderboard import _meta_table
    meta = {"cache_key": "abc", "budget": {"steps": 200, "steps_run": 150, "task_visits": 600, "inner_steps": 5,
                                           "inner_optimizer": "sgd"}, "selected_step": 75, "meta_val_improved": False,
            "decontaminated_against": ["mr", "sst2"]}
    rows = [{"dataset": d, "method": "supmer", "seed": s, "meta": meta} for d in ("sst2", "mr") for s in (1, 2)]
    rows.append({"dataset": "sst2", "method": "random", "seed": 1})
    table = _meta_table({"rows": rows})
    assert table[-1] == "| supmer | mr, sst2 | 150 / 200 | 600 | 5 (sgd) | 75 | **no** | mr, sst2 |"
    assert sum(line.startswith("| supmer") for line in table) == 1 and _meta_table({"rows": rows[-1:]}) == []
