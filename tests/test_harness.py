"""The harness end to end on a tiny model, and every bad input: a clear error naming the culprit, exit code 2, and no
run directory (not even a partial one) left behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def fewshot(tiny, out, *extra, family="bert-mlm"):
    return ["fewshot", "--dataset", "toy", "--backbone", tiny[family], "--k", "4", "--seeds", "13,21",
            "--steps", "6", "--eval-every", "2", "--prompt-length", "4", "--max-length", "32", "--out", str(out),
            "--quiet", *extra]


def test_fewshot_writes_a_complete_run_directory(tiny, toy_data, tmp_path, capsys):
    out = tmp_path / "runs" / "demo"
    assert main(fewshot(tiny, out, "--methods", "zero-shot,linear-probe,random,vocab")) == 0
    printed = capsys.readouterr().out
    assert "zero-shot" in printed and "±" in printed and str(out) in printed
    res = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["seed"]) for r in res["rows"]} == {(m, s) for m in ("zero-shot", "linear-probe", "random",
                                                                               "vocab") for s in (13, 21)}
    for r in res["rows"]:
        assert r["k"] == 4 and r["n_train"] == 8 and r["n_dev"] == 8 and r["n_test"] == 16
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["dev_acc"] <= 1 and r["wall_s"] >= 0
    assert {(s["method"], s["n"]) for s in res["summary"]} == {(m, 2) for m in ("zero-shot", "linear-probe",
                                                                                  "random", "vocab")}
    assert res["environment"]["packages"]["torch"] and res["data"]["toy"]["file_hashes"]["train"].startswith("sha256:")
    assert json.loads((out / "config.json").read_text())["k"] == 4
    for m in ("random", "vocab"):
        for s in (13, 21):
            d = out / "adapters" / "toy" / m / f"seed{s}"
            assert (d / "adapter_config.json").exists() and (d / "adapter_model.safetensors").exists()
    evals = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in evals if e["event"] == "eval" and e["method"] == "random" and e["seed"] == 13]
    assert steps[0] == 0 and steps == sorted(steps)
    assert not list(out.parent.glob(".*partial*"))


def test_same_seed_gives_the_same_numbers(tiny, toy_data, tmp_path):
    rows = []
    for name in ("a", "b"):
        assert main(fewshot(tiny, tmp_path / name, "--methods", "random", "--seeds", "13")) == 0
        rows.append(json.loads((tmp_path / name / "results.json").read_text())["rows"][0])
    for key in ("dev_acc", "dev_loss", "test_acc", "best_step"):
        assert rows[0][key] == rows[1][key]


def _bad(tiny, tmp_path, capsys, *extra, dataset="toy"):
    out = tmp_path / "runs" / "bad"
    args = fewshot(tiny, out, "--methods", "random", *extra)
    args[args.index("--dataset") + 1] = dataset
    assert main(args) == 2
    err = capsys.readouterr().err
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))
    return err


def test_unknown_dataset_says_where_it_looked(tiny, toy_data, tmp_path, capsys):
    err = _bad(tiny, tmp_path, capsys, dataset="no_such_set")
    assert "no_such_set" in err and str(toy_data) in err


def test_malformed_jsonl_names_file_and_line(tiny, toy_data, tmp_path, capsys):
    f = toy_data / "toy" / "train.jsonl"
    lines = f.read_text().splitlines()
    lines[2] = '{"text": "broken", "label": '
    f.write_text("\n".join(lines) + "\n")
    err = _bad(tiny, tmp_path, capsys)
    assert "train.jsonl" in err and "3" in err


def test_label_outside_meta_labels(tiny, toy_data, tmp_path, capsys):
    f = toy_data / "toy" / "train.jsonl"
    f.write_text(f.read_text() + json.dumps({"text": "the film", "label": 7}) + "\n")
    err = _bad(tiny, tmp_path, capsys)
    assert "train.jsonl" in err and "7" in err


def test_empty_text(tiny, toy_data, tmp_path, capsys):
    f = toy_data / "toy" / "test.jsonl"
    f.write_text(json.dumps({"text": "   ", "label": 0}) + "\n" + f.read_text())
    err = _bad(tiny, tmp_path, capsys)
    assert "test.jsonl" in err and "1" in err and "empty" in err.lower()


def test_k_larger_than_the_smallest_class(tiny, toy_data, tmp_path, capsys):
    err = _bad(tiny, tmp_path, capsys, "--k", "7")
    assert "negative" in err or "positive" in err
    assert "7" in err


def test_unknown_method_lists_the_registered_ones(tiny, toy_data, tmp_path, capsys):
    err = _bad(tiny, tmp_path, capsys, "--methods", "random,magic")
    assert "magic" in err and "vocab" in err and "zero-shot" in err


def test_prompt_plus_max_length_beyond_positions(tiny, toy_data, tmp_path, capsys):
    err = _bad(tiny, tmp_path, capsys, "--prompt-length", "120")
    assert "prompt.length (120)" in err and "128 positions" in err


def test_non_finite_loss_stops_and_names_the_step(tiny, toy_data, tmp_path, capsys):
    err = _bad(tiny, tmp_path, capsys, "--set", "tune.lr=1e38", "--set", "tune.grad_clip=0")
    assert "non-finite" in err and "step" in err


def test_existing_output_directory_needs_overwrite(tiny, toy_data, tmp_path, capsys):
    out = tmp_path / "runs" / "taken"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    assert main(fewshot(tiny, out, "--methods", "zero-shot")) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert main(fewshot(tiny, out, "--methods", "zero-shot", "--overwrite")) == 0
    assert (out / "results.json").exists() and not (out / "keep.txt").exists()


def test_pair_dataset_runs(tiny, toy_data, tmp_path):
    out = tmp_path / "pair"
    args = fewshot(tiny, out, "--methods", "zero-shot,random", "--seeds", "13", family="gpt2")
    args[args.index("--dataset") + 1] = "toypair"
    assert main(args) == 0
    assert len(json.loads((out / "results.json").read_text())["rows"]) == 2


def test_module_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "workbench", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for cmd in ("fewshot", "inits", "datasets"):
        assert cmd in out.stdout
    out = subprocess.run([sys.executable, "-m", "workbench", "inits"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and all(n in out.stdout for n in ("random", "vocab", "text", "labels", "file"))


def test_eval_autocast_applies_to_evaluation_only(tiny, toy_data, tmp_path, monkeypatch):
    """--eval-autocast bf16 with fp32 training: every training step runs without autocast, every dev/test pass under
    bf16, and the choice is recorded in config.json."""
    import workbench.learn.grid as grid
    import workbench.learn.tuner as tuner

    seen, real = [], tuner.autocast_ctx

    def spy(device, mode):
        seen.append(mode)
        return real(device, mode)

    for module in (tuner, grid):  # training steps run through learn.grid, evaluation through learn.tuner.predict
        monkeypatch.setattr(module, "autocast_ctx", spy)
    out = tmp_path / "ev"
    assert main(fewshot(tiny, out, "--methods", "zero-shot,random", "--seeds", "13", "--eval-autocast", "bf16")) == 0
    assert json.loads((out / "config.json").read_text())["tune"]["eval_autocast"] == "bf16"
    assert seen.count("none") == 6  # one per training step (--steps 6), nothing else fp32
    assert seen.count("bf16") >= 4 + 2  # dev at steps 0, 2, 4, 6 + the zero-shot and tuned test passes
    assert set(seen) == {"none", "bf16"}


def test_eval_autocast_is_checked():
    from workbench.config import ConfigError, TuneConfig

    with pytest.raises(ConfigError, match="tune.eval_autocast"):
        TuneConfig(eval_autocast="fp8")
    assert TuneConfig(autocast="bf16").eval_precision == "bf16"
    assert TuneConfig(autocast="bf16", eval_autocast="none").eval_precision == "none"
