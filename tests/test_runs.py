"""Run directories are all-or-nothing, and saved prompts round-trip through PEFT."""
from __future__ import annotations

import json

import pytest
import torch

from workbench.engine.backbones import load_backbone
from workbench.config import ConfigError, PromptConfig
from workbench.learn.inits import InitContext, make_prompt
from workbench.engine.runs import RunDir, RunError, load_prompt, save_prompt


def test_failed_run_leaves_nothing_behind(tmp_path):
    out = tmp_path / "runs" / "r1"
    with pytest.raises(RuntimeError):
        with RunDir(out) as run:
            run.write_json("config.json", {"a": 1})
            run.log({"step": 1})
            raise RuntimeError("boom")
    assert not out.exists()
    assert not (tmp_path / "runs").exists()  # the folder the run created for itself is gone too
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with RunDir(tmp_path / "kept" / "a" / "b" / "r2"):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and list((tmp_path / "kept").iterdir()) == []


def test_run_commits_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "r"
    with RunDir(out) as run:
        run.write_json("results.json", {"x": 1})
        run.log({"step": 0, "acc": 0.5})
    assert json.loads((out / "results.json").read_text()) == {"x": 1}
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["acc"] == 0.5
    with pytest.raises(RunError, match="exists and is not empty.*--overwrite"):
        RunDir(out)
    with RunDir(out, overwrite=True) as run:
        run.write_json("results.json", {"x": 2})
    assert json.loads((out / "results.json").read_text()) == {"x": 2}


@pytest.mark.parametrize("family,peft_cls", [("gpt2", "PeftModelForCausalLM"), ("llama", "PeftModelForCausalLM"),
                                             ("t5", "PeftModelForSeq2SeqLM"), ("bert", "PeftModelForFeatureExtraction")])
def test_saved_prompt_loads_in_peft(tiny, tmp_path, family, peft_cls):
    peft = pytest.importorskip("peft")
    bb = load_backbone(tiny[family])
    prompt = torch.randn(5, bb.hidden_size)
    save_prompt(tmp_path / "adapter", prompt, bb, {"note": "test"})
    model = peft.PeftModel.from_pretrained(bb.model, str(tmp_path / "adapter"))
    assert type(model).__name__ == peft_cls
    loaded = model.prompt_encoder["default"].embedding.weight.detach()
    torch.testing.assert_close(loaded, prompt)
    back, meta = load_prompt(tmp_path / "adapter")
    torch.testing.assert_close(back, prompt)
    assert meta["workbench"]["note"] == "test"


def test_file_init_checks_shape_and_names_both(tiny, tmp_path):
    bb = load_backbone(tiny["bert"])
    save_prompt(tmp_path / "p", torch.randn(6, bb.hidden_size), bb)
    ok, prov = make_prompt("file", InitContext(bb, PromptConfig(length=6, init_path=str(tmp_path / "p")), seed=0))
    assert ok.shape == (6, bb.hidden_size) and prov["init"] == "file"
    with pytest.raises(ConfigError, match=rf"shape \(6, {bb.hidden_size}\).*needs \(4, {bb.hidden_size}\)"):
        make_prompt("file", InitContext(bb, PromptConfig(length=4, init_path=str(tmp_path / "p")), seed=0))


def test_load_prompt_rejects_other_files(tmp_path):
    from safetensors.torch import save_file
    save_file({"weights": torch.zeros(2, 2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(RunError, match="not 'prompt_embeddings'"):
        load_prompt(tmp_path / "x.safetensors")
    with pytest.raises(RunError, match="no saved prompt"):
        load_prompt(tmp_path / "missing")
    (tmp_path / "p.pt").write_bytes(b"\x00")
    with pytest.raises(RunError, match="safetensors only"):
        load_prompt(tmp_path / "p.pt")
