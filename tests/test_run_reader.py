"""One run-directory reader (``runs.read_run``): what a run wrote reads back; a missing or malformed file is an error
naming the file and line, the same from every figure and report that reads run directories."""
from __future__ import annotations

import re

import pytest

from workbench.engine.runs import RunDir, RunError, read_json, read_jsonl, read_run
from workbench.experiments import bayes_report, similarity, walkthroughs
from workbench.viz import bayes as viz_bayes
from workbench.viz import benchmark as viz_benchmark
from workbench.viz import explore_data, meta, sentence, supmer
from workbench.viz import runs as viz_runs

BAD_JSON = '{\n  "rows": [\n    oops\n  ]\n}\n'  # line 3
BAD_JSONL = '{"event": "train", "step": 1}\n\n{"event": "train", "step": \n'  # line 3


def test_read_run_reads_back_what_a_run_wrote(tmp_path):
    with RunDir(tmp_path / "r") as run:
        run.write_json("config.json", {"k": 4})
        run.log({"event": "eval", "step": 0})
        run.log({"event": "eval", "step": 2})
        run.write_json("results.json", {"rows": [{"acc": 0.5}]})
    r = read_run(tmp_path / "r")
    assert r.config == {"k": 4} and r.results == {"rows": [{"acc": 0.5}]}
    assert [m["step"] for m in r.metrics] == [0, 2] and r.metrics is r.metrics  # parsed once
    assert r.has("results.json") and not r.has("nope.json") and r.path == tmp_path / "r"


def test_missing_and_malformed_files_name_the_file_and_line(tmp_path):
    with pytest.raises(RunError, match=r"run directory .*nowhere does not exist \(a hint\)"):
        read_run(tmp_path / "nowhere", "a hint")
    r = read_run(tmp_path, "expected a fewshot run")
    with pytest.raises(RunError, match=r"results.json: no such file \(expected a fewshot run\)"):
        _ = r.results
    (tmp_path / "results.json").write_text(BAD_JSON)
    with pytest.raises(RunError, match=r"results.json:3: not valid JSON \(Expecting value, column 5\)"):
        read_json(tmp_path / "results.json")
    (tmp_path / "metrics.jsonl").write_text(BAD_JSONL)
    with pytest.raises(RunError, match=r"metrics.jsonl:3: not valid JSON"):
        _ = r.metrics
    (tmp_path / "list.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(RunError, match=r"list.jsonl:2: expected a JSON object, got list"):
        read_jsonl(tmp_path / "list.jsonl")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(RunError, match="latin.json: not valid UTF-8"):
        read_json(tmp_path / "latin.json")


READERS = {  # every figure and report that reads a run directory: (file it reads, call)
    "viz.runs.load_metrics": ("metrics.jsonl", viz_runs.load_metrics),
    "viz.runs.summary_table": ("results.json", viz_runs.summary_table),
    "viz.meta.load_records": ("metrics.jsonl", meta.load_records),
    "viz.supmer.curriculum_figure": ("metrics.jsonl", supmer.curriculum_figure),
    "viz.benchmark.load_benchmark": ("results.json", viz_benchmark.load_benchmark),
    "viz.bayes.summary_table": ("results.json", viz_bayes.summary_table),
    "viz.explore_data test accuracies": ("results.json", explore_data._test_accuracies),
    "viz.sentence run settings": ("config.json", sentence._run_settings),
    "bayes_report.load_runs": ("results.json", lambda d: bayes_report.load_runs([d])),
    "similarity.gains": ("results.json", lambda d: similarity.gains(d, "m")),
    "walkthroughs.supmer_ablation_table": ("results.json", lambda d: walkthroughs.supmer_ablation_table({"a": d})),
}


@pytest.mark.parametrize("name", READERS)
def test_every_reader_reports_a_malformed_file_with_its_line(name, tmp_path):
    file, read = READERS[name]
    (tmp_path / file).write_text(BAD_JSONL if file.endswith(".jsonl") else BAD_JSON)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / file}:3: not valid JSON")):
        read(tmp_path)
