"""Data-parallel meta-training under torchrun (2 CPU processes, gloo): the same prompt and curves as one process (an
uneven split of the meta-batch; FOMAML, second-order MAML, and SUPMER, whose ψ and curriculum couple the tasks), one
writer per run directory, a checkpoint resumed under another world size, and refusals that reach every process (a
meta-batch smaller than the world, rank 0's run-directory errors)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file
from test_supmer import _meta_cfg as supmer_config
from test_supmer_corpus import write_corpus
from test_tasks import labelled_data  # noqa: F401  (fixture re-export)
from workbench.config import ConfigError, LabelledConfig, MetaConfig, MetaTrainConfig, PromptConfig, to_dict
from workbench.engine.backbones import load_backbone
from workbench.engine.runs import load_prompt
from workbench.learn.data_parallel import Shards
from workbench.learn.metatrain import run_meta_training


def config(tiny, out, method="fomaml", meta_batch=3, **meta):
    loop = {"support": 2, "query": 2, "max_length": 24, "meta_batch": meta_batch, "steps": 4, "eval_every": 2,
            "checkpoint_every": 2, "val_tasks": 3, "inner_lr": 0.5, "lr": 0.05, **meta}
    cfg = MetaTrainConfig(method=method, source="labelled", target="tgt", meta=MetaConfig(**loop), out=str(out),
                          prompt=PromptConfig(length=4),
                          labelled=LabelledConfig(datasets=["srca", "srcb"], k=4, seeds=[1, 2]))
    cfg.backbone.name = tiny["bert"]
    cfg.backbone.device = "cpu"
    cfg.backbone.second_order = method == "maml"
    return cfg


def torchrun(cfg, tmp_path, *extra, nproc=2):
    """``workbench meta-train --config`` under ``torchrun --standalone --nproc-per-node nproc``."""
    path = tmp_path / f"{Path(cfg.out).name}.json"
    path.write_text(json.dumps(to_dict(cfg)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           "-m", "workbench", "meta-train", "--config", str(path), "--out", cfg.out, "--quiet", *extra],
                          env=env, capture_output=True, text=True, timeout=600)


def curves(out):
    recs = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return ([(r["step"], r["loss"]) for r in recs if r["event"] == "train"],
            [(r["step"], r["acc_post"], r["loss_post"]) for r in recs if r["event"] == "val"])


def flat(val):
    return [x for _, *rest in val for x in rest]


def test_shards_cover_every_item_once_with_sizes_within_one():
    for world in (1, 2, 3, 5):
        for n in range(world, 13):
            parts = [Shards(r, world).split(list(range(n))) for r in range(world)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("method", ["fomaml", "maml"])
def test_two_processes_train_the_same_prompt_as_one(labelled_data, tiny, tmp_path, method):
    one = run_meta_training(config(tiny, tmp_path / "one", method), progress=False)
    proc = torchrun(config(tiny, tmp_path / "two", method), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1 and "2 data-parallel processes" in proc.stdout  # rank 0 reports
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["data_parallel"] == {"world_size": 2, "backend": "gloo"} and one["data_parallel"]["world_size"] == 1
    a, _ = load_prompt(tmp_path / "one" / "prompt")
    b, _ = load_prompt(tmp_path / "two" / "prompt")
    assert not torch.allclose(a, torch.zeros_like(a)) and torch.allclose(a, b, atol=1e-5)
    (train1, val1), (train2, val2) = curves(tmp_path / "one"), curves(tmp_path / "two")
    assert [s for s, _ in train2] == [1, 2, 3, 4] and [v[0] for v in val2] == [0, 2, 4]  # written once, by rank 0
    assert [x for _, x in train2] == pytest.approx([x for _, x in train1], abs=1e-5)
    assert flat(val2) == pytest.approx(flat(val1), abs=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_resume_under_another_world_size_and_refusals_reach_every_rank(labelled_data, tiny, tmp_path):
    bert = load_backbone(tiny["bert"])
    full = run_meta_training(config(tiny, tmp_path / "full"), bert, progress=False)
    cut = config(tiny, tmp_path / "cut")
    assert run_meta_training(cut, bert, progress=False, stop_after=3)["interrupted_at"] == 3  # checkpoint: step 2
    refused = torchrun(cut, tmp_path)  # the work directory exists and --resume is missing: rank 0 refuses
    assert refused.returncode != 0 and "rank 0 refused the run" in refused.stderr and "--resume" in refused.stderr
    assert not (tmp_path / "cut").exists()
    proc = torchrun(cut, tmp_path, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert res["resumed_from"] == "step-000002" and res["data_parallel"]["world_size"] == 2
    assert torch.allclose(load_prompt(tmp_path / "full" / "prompt")[0], load_prompt(tmp_path / "cut" / "prompt")[0],
                          atol=1e-5)
    (train_cut, val_cut), (train_full, val_full) = curves(tmp_path / "cut"), curves(tmp_path / "full")
    assert [s for s, _ in train_cut] == [s for s, _ in train_full] == [1, 2, 3, 4]
    assert [x for _, x in train_cut] == pytest.approx([x for _, x in train_full], abs=1e-5)
    assert flat(val_cut) == pytest.approx(flat(val_full), abs=1e-5)
    assert full["steps"] == res["steps"] == 4


def test_a_meta_batch_smaller_than_the_world_is_refused_by_every_process(labelled_data, tiny, tmp_path):
    proc = torchrun(config(tiny, tmp_path / "small", meta_batch=1), tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("error: meta.meta_batch (1) is smaller than the data-parallel world size (2)") == 2
    assert not any(p.name.startswith("small") and p.is_dir() for p in tmp_path.iterdir())


def test_supmer_psi_and_curriculum_on_two_processes_match_one(tiny, tmp_path):
    """SUPMER couples the tasks of a meta-batch (ψ's gradient, the curriculum's alignment, one mixup ratio per task):
    sharded, its prompt, ψ and curriculum are still those of one process."""
    corpus = write_corpus(tmp_path / "c.jsonl")

    def cfg(out):
        c = supmer_config(tmp_path, corpus, tiny["bert"], out, steps=4)
        c.meta.meta_batch, c.meta.eval_every, c.meta.select, c.backbone.device = 3, 2, "last", "cpu"
        return c

    run_meta_training(cfg("one"), progress=False)
    proc = torchrun(cfg("two"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.allclose(load_prompt(tmp_path / "one" / "prompt")[0], load_prompt(tmp_path / "two" / "prompt")[0],
                          atol=1e-5)
    psi1, psi2 = (load_file(str(tmp_path / run / "psi" / "psi.safetensors")) for run in ("one", "two"))
    assert psi1.keys() == psi2.keys() and all(torch.allclose(psi1[k], psi2[k], atol=1e-5) for k in psi1)
    assert json.loads((tmp_path / "two" / "results.json").read_text())["selected_step"] == 4  # the trained prompt
    logs = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
                  if '"train"' in line] for run in ("one", "two")}
    for key in ("loss", "curriculum_s", "lambda", "alignment", "gate_loss", "psi_grad_norm"):
        assert [r[key] for r in logs["two"]] == pytest.approx([r[key] for r in logs["one"]], abs=1e-5), key
    assert 0 < logs["two"][-1]["lambda"] < 1 and all(r["grad_norm"] > 0 for r in logs["two"])  # mixup on, P moved


def test_small_batches_are_refused_before_anything_is_written(tiny, tmp_path):
    two = Shards(rank=0, world=2, backend="gloo")  # refused before any collective: no process group needed
    with pytest.raises(ConfigError, match=r"meta.meta_batch \(1\)"):
        run_meta_training(config(tiny, tmp_path / "b", meta_batch=1), shards=two)
    with pytest.raises(ConfigError, match=r"meta.val_tasks \(1\)"):
        run_meta_training(config(tiny, tmp_path / "v", val_tasks=1), shards=two)
    assert not any(tmp_path.iterdir())
