"""A SUPMER meta-train run as an init in ``fewshot`` and ``benchmark``: ``file`` loads its prompt (``--init-path``
the run directory), ``file+psi`` also loads its ψ and applies it, frozen, to every tuning gradient as ``supmer+psi``
does; a run without ψ, a ψ saved for another backbone, and a caller that would not apply ψ are refused."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from test_supmer import _meta_cfg
from test_supmer_corpus import write_corpus
from workbench.cli.main import main
from workbench.config import ConfigError, PromptConfig
from workbench.engine.backbones import load_backbone
from workbench.engine.runs import load_prompt
from workbench.experiments import benchmark, fewshot
from workbench.learn.inits import InitContext, make_prompt
from workbench.methods import supmer
from workbench.methods.psi import PsiError, load_psi, save_psi


@pytest.fixture(scope="module")
def bert(tiny):
    return load_backbone(tiny["bert"])


@pytest.fixture(scope="module")
def run(tiny, bert, tmp_path_factory):
    """A 2-step ``meta-train --method supmer`` run (prompt length 4) whose ψ is then made far from the identity."""
    from workbench.learn.metatrain import run_meta_training
    root = tmp_path_factory.mktemp("supmer")
    with warnings.catch_warnings():  # 2 steps: meta-validation does not improve, and says so
        warnings.simplefilter("ignore", UserWarning)
        run_meta_training(_meta_cfg(root, write_corpus(root / "c.jsonl"), tiny["bert"], steps=2, types="scsp,scc"),
                          backbone=bert, progress=False)
    meta = json.loads((root / "run" / "psi" / "psi.json").read_text())
    psi = load_psi(root / "run" / "psi")
    with torch.no_grad():
        for U in psi.U:
            U.normal_(generator=torch.Generator().manual_seed(0))
    save_psi(psi, root / "run" / "psi", {k: meta[k] for k in ("backbone", "backbone_path", "hidden_size")})
    return root / "run"


def _fewshot(tiny, out, method, init_path, monkeypatch):
    """``fewshot --methods <method> --init-path <init_path>`` on toy (one seed, 2 steps); returns the grad hook's
    first call (grad, batch, output) and the head, as tuning made them (None when no hook was passed)."""
    seen, real = {}, fewshot.tune_selected

    def spy(head, init, *a, grad_hook=None, **kw):
        def hook(g, batch):
            out = grad_hook(g, batch)
            seen.setdefault("call", (g.detach().clone(), batch, out.detach().clone()))
            return out
        seen.update(head=head, init=init.clone(), passed=grad_hook is not None)
        return real(head, init, *a, grad_hook=hook if grad_hook is not None else None, **kw)
    monkeypatch.setattr(fewshot, "tune_selected", spy)
    args = ["fewshot", "--dataset", "toy", "--backbone", tiny["bert"], "--k", "4", "--seeds", "13", "--steps", "2",
            "--eval-every", "1", "--prompt-length", "4", "--max-length", "32", "--out", str(out), "--quiet",
            "--methods", method, "--init-path", str(init_path)]
    assert main(args) == 0
    return seen


def test_file_psi_applies_the_runs_psi_to_every_gradient(tiny, toy_data, run, tmp_path, monkeypatch):
    seen = _fewshot(tiny, tmp_path / "fs", "file+psi", run, monkeypatch)
    assert torch.equal(seen["init"], load_prompt(run / "prompt")[0])
    g, batch, out = seen["call"]
    psi = load_psi(run / "psi")  # loaded here, applied here: the first update's direction is ψ(g, h̄)
    head = seen["head"]
    with torch.no_grad():
        enc = head.encode_pass(next(iter(batch["groups"].values())) if "groups" in batch else batch, None)
        h = head.pool(enc.hidden, enc.sp).float().mean(0)
        want = psi(g, h)[0]
    assert torch.allclose(out, want, rtol=1e-4, atol=1e-8 * g.abs().max().item())
    assert (out - g).norm() > 0.1 * g.norm()  # ψ is not the identity: the hook did rewrite the gradient
    saved = json.loads((tmp_path / "fs" / "adapters" / "toy" / "file+psi" / "seed13" / "workbench_prompt.json")
                       .read_text())
    assert saved["provenance"]["psi"] == str(run / "psi") and saved["provenance"]["init"] == "file+psi"


def test_file_loads_the_runs_prompt_without_psi(tiny, toy_data, run, tmp_path, monkeypatch):
    seen = _fewshot(tiny, tmp_path / "fs", "file", run, monkeypatch)
    assert torch.equal(seen["init"], load_prompt(run / "prompt")[0]) and not seen["passed"]


def test_file_psi_refusals(bert, run, tmp_path):
    ctx = lambda path, **extra: InitContext(bert, PromptConfig(length=4, init_path=str(path)), 13,  # noqa: E731
                                            extras={"applies_grad_hook": True, **extra})
    _, prov = make_prompt("file+psi", ctx(run / "prompt"))  # the run's prompt folder works as well
    assert prov["psi"] == str(run / "psi")
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    shutil.rmtree(bare / "psi")
    with pytest.raises(PsiError, match=f"{bare / 'psi' / 'psi.json'} does not exist.*init 'file'"):
        make_prompt("file+psi", ctx(bare))
    assert make_prompt("file", ctx(bare))[0].shape == (4, bert.hidden_size)
    other = tmp_path / "other"
    shutil.copytree(run, other)
    meta = json.loads((other / "psi" / "psi.json").read_text())
    (other / "psi" / "psi.json").write_text(json.dumps({**meta, "backbone_path": "/elsewhere/model"}))
    with pytest.raises(PsiError, match="was saved for .*/elsewhere/model"):
        make_prompt("file+psi", ctx(other))
    with pytest.raises(ConfigError, match="applies ψ"):
        make_prompt("file+psi", InitContext(bert, PromptConfig(length=4, init_path=str(run)), 13))
    with pytest.raises(ConfigError, match="needs prompt.init_path"):
        make_prompt("file+psi", InitContext(bert, PromptConfig(length=4), 13, extras={"applies_grad_hook": True}))


def test_a_benchmark_suite_runs_file_psi_from_its_init_options(tiny, toy_data, run, tmp_path, monkeypatch):
    hooks = []
    real = supmer.grad_hook_for
    monkeypatch.setattr(supmer, "grad_hook_for", lambda prov, head: hooks.append(prov) or real(prov, head))
    from workbench.learn import inits
    monkeypatch.setattr(inits.INITS["file+psi"], "grad_hook", supmer.grad_hook_for)
    suite = {"name": "psi", "methods": ["file+psi"], "grid": [{"datasets": ["toy"], "k": [4]}], "seeds": [13],
             "backbone": {"name": tiny["bert"]}, "prompt": {"length": 4},
             "tune": {"steps": 2, "eval_every": 1, "max_length": 32},
             "init_options": {"file+psi": {"prompt.init_path": str(run)}}}
    res = benchmark.run_benchmark(suite, tmp_path / "b", progress=False)
    assert [r["method"] for r in res["rows"]] == ["file+psi"] and res["rows"][0]["steps_run"] == 2
    assert [p["psi"] for p in hooks] == [str(run / "psi")]
