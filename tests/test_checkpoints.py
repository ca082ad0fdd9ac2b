"""Checkpoints as users have them: a hub name offline from the Hugging Face cache, pickled weights refused with a
conversion that works, and a PEFT prompt-tuning adapter folder as the backbone."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from workbench.cli.main import main
from workbench.config import BackboneConfig, PromptConfig
from workbench.engine.backbones import BackboneError, hub_cache_dir, load_backbone
from workbench.engine.runs import save_prompt
from workbench.learn.inits import InitContext, make_prompt

REV = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache: Path, repo: str, model_dir: str, rev: str = REV) -> Path:
    """``model_dir`` stored in ``cache`` as huggingface_hub stores a download of ``repo``: blobs named by hash,
    ``snapshots/<rev>/<file>`` symlinks to them, ``refs/main`` holding ``rev``. Returns the snapshot folder."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / rev
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in sorted(Path(model_dir).iterdir()):
        blob = root / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(rev)
    return snapshot


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("repo,layout", [("roberta-large", "HF_HUB_CACHE"), ("tiny-org/tiny-mlm", "HF_HOME")])
def test_hub_name_loads_offline_from_the_cache(tiny, tmp_path, monkeypatch, repo, layout):
    cache = tmp_path / "hf" / "hub"
    snapshot = fake_hub_cache(cache, repo, tiny["bert-mlm"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    if layout == "HF_HUB_CACHE":
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    else:
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir() == cache
    bb = load_backbone(repo)
    assert (bb.name, bb.path, bb.family) == (repo, str(snapshot), "mlm")
    assert _same_weights(bb, load_backbone(tiny["bert-mlm"]))
    assert bb.describe()["weights_sha256"].startswith("sha256:")
    assert load_backbone(BackboneConfig(name=repo, revision=REV)).path == str(snapshot)  # a commit hash
    with pytest.raises(BackboneError, match=rf"{re.escape(str(cache))} has no snapshot of it at revision 'v2'"):
        load_backbone(BackboneConfig(name=repo, revision="v2"))
    with pytest.raises(BackboneError, match=r"'nobody/absent' is not a local folder.*hf download nobody/absent"):
        load_backbone("nobody/absent")
    with pytest.raises(BackboneError, match=r"/missing/model': no such folder"):
        load_backbone(str(tmp_path / "missing" / "model"))


def pickled_copy(model_dir: str, out: Path) -> Path:
    """``model_dir`` as an older checkpoint ships it: config, tokenizer and pickled ``pytorch_model.bin`` only."""
    out.mkdir(parents=True)
    for f in Path(model_dir).iterdir():
        if f.suffix != ".safetensors":
            shutil.copyfile(f, out / f.name)
    state = load_backbone(model_dir).model.state_dict()
    torch.save({k: v.clone() for k, v in state.items()}, out / "pytorch_model.bin")
    return out


def _fewshot(backbone, out, *opts) -> int:
    return main(["fewshot", "--dataset", "toy", "--backbone", str(backbone), "--k", "4", "--seeds", "13",
                 "--max-length", "32", "--out", str(out), "--quiet", *opts])


def test_pickled_weights_are_refused_with_a_conversion_that_works(tiny, toy_data, tmp_path, capsys):
    folder = pickled_copy(tiny["bert-mlm"], tmp_path / "my models" / "bert-bin")  # a space: the command quotes it
    out = tmp_path / "run"
    assert _fewshot(folder, out, "--methods", "zero-shot") == 2
    err = capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".run*"))
    assert f"{folder} holds weights only as pickle files (pytorch_model.bin)" in err
    command = re.search(r"Convert them once, where you trust the files: (python -c .+) ; then pass --backbone (.+)$",
                        err.strip())
    assert command, err
    argv, converted = shlex.split(command.group(1)), shlex.split(command.group(2))[0]
    assert argv[:2] == ["python", "-c"] and "use_safetensors=False" in argv[2]
    assert converted == str(tmp_path / "my models" / "bert-bin-safetensors")
    exec(argv[2], {})  # what the message tells the user to run
    assert (Path(converted) / "model.safetensors").is_file()
    assert _same_weights(load_backbone(converted), load_backbone(tiny["bert-mlm"]))
    assert _fewshot(converted, out, "--methods", "zero-shot") == 0


def test_pickled_files_are_never_loaded_even_beside_a_config(tiny, tmp_path):
    folder = pickled_copy(tiny["gpt2"], tmp_path / "gpt2-bin")
    with pytest.raises(BackboneError, match=r"AutoModelForCausalLM.*use_safetensors=False"):
        load_backbone(str(folder))


@pytest.fixture
def adapter(tiny, tmp_path):
    """A prompt (4 x hidden) of the tiny BERT masked LM saved by the package, and that base model's folder."""
    base = load_backbone(tiny["bert-mlm"])
    prompt = torch.randn(4, base.hidden_size, generator=torch.Generator().manual_seed(3)) * 0.3
    return save_prompt(tmp_path / "adapter", prompt, base), prompt, base


def test_adapter_folder_loads_its_base_and_its_prompt_is_the_file_init(adapter, capsys):
    folder, prompt, base = adapter
    bb = load_backbone(str(folder))
    assert "is a PEFT prompt-tuning adapter" in capsys.readouterr().err
    assert (bb.name, bb.path, bb.family) == (str(folder), base.path, "mlm") and _same_weights(bb, base)
    init, prov = make_prompt("file", InitContext(bb, PromptConfig(length=4), seed=0))
    torch.testing.assert_close(init, prompt)
    assert (prov["path"], prov["source"]) == (str(folder), "the backbone adapter")
    info = bb.describe()
    assert info["path"] == base.path and info["adapter"]["path"] == str(folder)
    assert info["adapter"]["base_model_name_or_path"] == base.path and info["adapter"]["num_virtual_tokens"] == 4


def test_fewshot_from_an_adapter_backbone_equals_file_init_on_its_base(adapter, toy_data, tmp_path, capsys):
    folder, _, base = adapter
    opts = ("--methods", "file", "--prompt-length", "4", "--steps", "3", "--eval-every", "1")
    assert _fewshot(folder, tmp_path / "a", *opts) == 0
    assert "the adapter's prompt (4 x 32) is the 'file' init" in capsys.readouterr().err
    assert _fewshot(base.path, tmp_path / "b", *opts, "--init-path", str(folder)) == 0
    a, b = (json.loads((tmp_path / r / "results.json").read_text()) for r in "ab")
    keys = ("step0_dev_acc", "dev_acc", "test_acc", "best_step")
    assert [a["rows"][0][k] for k in keys] == [b["rows"][0][k] for k in keys]
    assert a["config"]["backbone"]["name"] == str(folder)
    assert a["backbone"]["path"] == base.path and a["backbone"]["adapter"]["path"] == str(folder)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["backbone"]["name"] == str(folder)
    saved = json.loads((tmp_path / "a" / "adapters" / "toy" / "file" / "seed13" / "workbench_prompt.json").read_text())
    assert saved["provenance"]["path"] == str(folder) and saved["provenance"]["source"] == "the backbone adapter"


def test_adapter_backbone_refusals(adapter, tiny, toy_data, tmp_path, capsys):
    folder, _, base = adapter
    assert _fewshot(folder, tmp_path / "r1", "--methods", "zero-shot,file", "--prompt-length", "6") == 2
    err = capsys.readouterr().err
    assert f"saved prompt {folder} has shape (4, 32)" in err and "pass --prompt-length 4" in err
    assert not (tmp_path / "r1").exists()
    narrow = save_prompt(tmp_path / "narrow", torch.randn(4, 16), base)  # not this model's hidden size
    assert _fewshot(narrow, tmp_path / "r2", "--methods", "file", "--prompt-length", "4") == 2
    assert "adapter_model.safetensors: the adapter's prompt vectors have 16 dimensions" in capsys.readouterr().err
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": base.path}))
    assert _fewshot(lora, tmp_path / "r3", "--methods", "zero-shot") == 2
    err = capsys.readouterr().err
    assert f"{lora / 'adapter_config.json'}: a LORA adapter; only PROMPT_TUNING adapters" in err
    assert "merge_and_unload" in err
    assert not any((tmp_path / r).exists() for r in ("r2", "r3"))


def test_an_adapter_saved_by_peft_itself_loads_as_the_backbone(tiny, tmp_path):
    peft = pytest.importorskip("peft")
    base = load_backbone(tiny["gpt2"])
    model = peft.get_peft_model(base.model, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    model.save_pretrained(str(tmp_path / "peft"))
    bb = load_backbone(str(tmp_path / "peft"))
    assert bb.path == base.path and bb.adapter.n_tokens == 3
    init, _ = make_prompt("file", InitContext(bb, PromptConfig(length=3), seed=0))
    torch.testing.assert_close(init, model.prompt_encoder["default"].embedding.weight.detach())


def test_an_adapter_whose_base_does_not_load_says_so(adapter, tmp_path):
    folder, _, _ = adapter
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/gone/model"}))
    with pytest.raises(BackboneError, match=r"adapter_config.json: its base model '/gone/model' does not load: .*no "
                                            r"such folder"):
        load_backbone(str(folder))
