"""``--tracker tensorboard``: the events of metrics.jsonl mirrored to TensorBoard event files inside the run directory
(read back with TensorBoard's own reader and compared with metrics.jsonl), off by default, and refused by name when
TensorBoard is missing."""
from __future__ import annotations

import json
import sys

import pytest

from test_tasks import labelled_data  # noqa: F401  (fixture re-export)
from workbench.cli.main import main
from workbench.engine import tracking

accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(run) -> dict[str, list[tuple[int, float]]]:
    acc = accumulator.EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def records(run, event):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if f'"event": "{event}"' in x]


@pytest.fixture(autouse=True)
def reset():
    yield
    tracking.configure("none")


def fewshot_args(tiny, out):
    return ["fewshot", "--dataset", "tgt", "--methods", "random,zero-shot", "--k", "4", "--seeds", "13,21",
            "--steps", "4", "--eval-every", "2", "--backbone", tiny["bert-mlm"], "--prompt-length", "4",
            "--max-length", "32", "--out", str(out), "--quiet"]


def test_fewshot_dev_curves_reach_tensorboard(labelled_data, tiny, tmp_path):
    assert main(fewshot_args(tiny, tmp_path / "tb") + ["--tracker", "tensorboard"]) == 0
    events = read_events(tmp_path / "tb")
    for seed in (13, 21):
        want = [(r["step"], r["dev_acc"]) for r in records(tmp_path / "tb", "eval") if r["seed"] == seed]
        got = events[f"eval/tgt/random/seed{seed}/lr0.01/dev_acc"]  # a grid member per lr
        assert [s for s, _ in got] == [s for s, _ in want] == [0, 2, 4]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)
    assert "row/tgt/k4/zero-shot/seed13/test_acc" in events  # one point per finished row
    assert not any(t.endswith(("/time", "/step", "/seed")) for t in events)


def test_meta_training_curves_reach_tensorboard_and_none_writes_nothing(labelled_data, tiny, tmp_path):
    base = ["meta-train", "--backbone", tiny["bert"], "--source", "labelled", "--target", "tgt", "--steps", "4",
            "--meta-batch", "2", "--quiet", "--source-datasets", "srca,srcb", "--set", "prompt.length=4",
            "--set", "labelled.k=4", "--set", "labelled.seeds=[1]", "--set", "meta.support=2", "--set",
            "meta.query=2", "--set", "meta.val_tasks=2", "--set", "meta.eval_every=2"]
    assert main(base + ["--out", str(tmp_path / "tb"), "--tracker", "tensorboard"]) == 0
    events = read_events(tmp_path / "tb")
    assert [s for s, _ in events["train/loss"]] == [1, 2, 3, 4]
    assert [v for _, v in events["train/loss"]] == pytest.approx([r["loss"] for r in records(tmp_path / "tb", "train")],
                                                                   abs=1e-6)
    assert [s for s, _ in events["val/acc_post"]] == [0, 2, 4]
    assert main(base + ["--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_missing_tensorboard_is_refused_by_name_before_anything_is_written(labelled_data, tiny, tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    assert main(fewshot_args(tiny, tmp_path / "x") + ["--tracker", "tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "--tracker tensorboard needs TensorBoard (pip install tensorboard)" in err
    assert not (tmp_path / "x").exists()
