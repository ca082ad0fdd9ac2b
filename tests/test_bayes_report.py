"""BayesPrompt comparisons (each mode minus each baseline, paired over seeds) and the bayes-report command."""
import json

import numpy as np
import pytest
from scipy import stats as sps

from workbench.methods.bayes import BayesError
from workbench.experiments.bayes_report import compare, load_runs, report
from workbench.experiments.bayes_modes import BayesRunConfig
from workbench.config import TuneConfig, to_dict
from workbench.engine.stats import holm


def make_rows(dataset="toy", k=4, seeds=(1, 2, 3, 4), methods=("zero-shot", "random", "bayes-init", "bayes-ensemble"),
              rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    return [{"dataset": dataset, "k": k, "seed": s, "method": m, "test_acc": float(rng.uniform(0.5, 0.9)),
             "test_ece": float(rng.uniform(0.0, 0.2)), "dev_acc": float(rng.uniform(0.5, 0.9))}
            for s in seeds for m in methods]


def test_compare_pairs_each_mode_with_each_reference_like_scipy():
    rows = make_rows() + make_rows(dataset="other", rng_seed=1)
    rows = [r for r in rows if not (r["dataset"] == "toy" and r["method"] == "random" and r["seed"] == 4)]
    comps = compare(rows)
    # 2 cells x 2 modes x 2 references; modes are never references of each other
    assert [(e["dataset"], e["method"], e["reference"]) for e in comps[:4]] == [
        ("toy", "bayes-init", "zero-shot"), ("toy", "bayes-init", "random"),
        ("toy", "bayes-ensemble", "zero-shot"), ("toy", "bayes-ensemble", "random")]
    assert len(comps) == 8
    by = {(r["dataset"], r["method"], r["seed"]): r for r in rows}
    e = comps[1]  # toy bayes-init vs random: seed 4 has no random row, so it is not paired
    assert e["seeds"] == [1, 2, 3] and e["n"] == 3
    for metric in ("test_acc", "test_ece"):
        a = [by[("toy", "bayes-init", s)][metric] for s in e["seeds"]]
        b = [by[("toy", "random", s)][metric] for s in e["seeds"]]
        assert np.allclose(e[metric]["diffs"], np.subtract(a, b))
        assert e[metric]["p_t"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
        assert [c[metric]["p_t_holm"] for c in comps] == holm([c[metric]["p_t"] for c in comps])
    assert comps[0]["n"] == 4


def test_report_lists_every_method_and_comparison():
    rows = make_rows()
    text = report(rows, "T", ["protocol line"])
    assert text.startswith("# T\n\nprotocol line")
    for m in ("zero-shot", "random", "bayes-init", "bayes-ensemble"):
        assert f"| toy | 4 | {m} | 4 |" in text
    acc = np.mean([r["test_acc"] for r in rows if r["method"] == "bayes-init"])
    assert f"| toy | 4 | bayes-init | 4 | {100 * acc:.1f} ± " in text
    assert text.count("| toy | 4 | bayes-") == 2 + 4  # 2 summary rows + 2 modes x 2 references
    assert "4 comparisons" in text


def _write_run(path, rows, **cfg_kw):
    cfg = BayesRunConfig(datasets=sorted({r["dataset"] for r in rows}), k=rows[0]["k"],
                         seeds=sorted({r["seed"] for r in rows}), **cfg_kw)
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"rows": rows, "config": to_dict(cfg), "wall_s": 1.0}))
    return path


def test_load_runs_combines_and_refuses_duplicates_mixed_protocols_and_non_runs(tmp_path, capsys):
    from workbench.cli.main import main
    a = _write_run(tmp_path / "a", make_rows(dataset="sst2"))
    b = _write_run(tmp_path / "b", make_rows(dataset="mr", rng_seed=3))
    rows, proto = load_runs([a, b])
    assert len(rows) == 32 and len(proto) == 2 and "sst2 at k=4" in proto[0]
    out = tmp_path / "rep" / "report.md"
    assert main(["bayes-report", "--runs", f"{a},{b}", "--out", str(out), "--rows", str(tmp_path / "rows.jsonl")]) == 0
    assert "| mr | 4 | bayes-ensemble | random |" in out.read_text()
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 32

    with pytest.raises(BayesError, match=r"a/results.json: row sst2 k=4 zero-shot seed 1 is also in .*a/results.json"):
        load_runs([a, a])
    c = _write_run(tmp_path / "c", make_rows(dataset="sst2", seeds=(5,)), tune=TuneConfig(steps=7))
    with pytest.raises(BayesError, match=r"c/results.json: cell sst2 k=4 mixes protocols with .*a/results.json"):
        load_runs([a, c])
    (tmp_path / "d").mkdir()
    capsys.readouterr()
    bad_out = tmp_path / "bad.md"
    assert main(["bayes-report", "--runs", f"{a},{tmp_path / 'd'}", "--out", str(bad_out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "d/results.json: no such file (not a finished `python -m workbench bayes`" in err and not bad_out.exists()
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "results.json").write_text("{not json")
    with pytest.raises(BayesError, match=r"e/results.json:1: not valid JSON \(.*column 2\)"):
        load_runs([tmp_path / "e"])
