"""Domain generalisation (workbench.supmer_eval): Yelp-5 collapsed to two classes, decontamination of the source
against the target test sets (with counts), the table's shape and the train-dev gap column, the ``supmer-dg``
command; the ``supmer`` / ``supmer+psi`` inits (train once, then load from the cache; ψ only for callers that apply
it)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import write_dataset
from workbench.experiments.domain_gen import collapse_yelp, domain_generalisation


def _stars(root):
    d = root / "yelp5"
    d.mkdir(parents=True)
    rows = [{"text": f"the movie was {w} {i}", "label": s} for i in range(6) for s, w in enumerate(
        ["awful", "bad", "okay", "good", "great"])]
    for split in ("train", "test"):
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "meta.json").write_text(json.dumps({"task": "single", "labels": [f"{i} star" for i in range(1, 6)]}))


def test_collapse_yelp_and_bad_datasets(toy_data):
    from workbench.engine.data import load_dataset
    _stars(toy_data)
    two = collapse_yelp(load_dataset("yelp5"))
    assert two.labels == ["negative", "positive"] and len(two.splits["test"]) == 24  # the 3-star rows are dropped
    assert sorted({(e.text_a.split()[3], e.label) for e in two.splits["test"]}) == [
        ("awful", 0), ("bad", 0), ("good", 1), ("great", 1)]
    with pytest.raises(ValueError, match="5-class"):
        collapse_yelp(load_dataset("toy"))


def test_domain_generalisation_decontaminates_and_tabulates(tiny, toy_data):
    from workbench.engine.backbones import load_backbone
    from workbench.config import PromptConfig, TuneConfig
    from workbench.engine.data import load_dataset
    _stars(toy_data)
    src = load_dataset("toy")
    shared = [json.loads(l) for l in (toy_data / "toy" / "train.jsonl").read_text().splitlines()][:1]
    other = toy_data / "other"
    other.mkdir()
    rows = [{"text": f"a story {i} that was {w}", "label": y} for i in range(5) for y, w in enumerate(["bad", "fun"])]
    (other / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (other / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + shared))  # one source text leaks
    (other / "meta.json").write_text(json.dumps({"task": "single", "labels": ["negative", "positive"]}))
    leaked = {r["text"] for r in shared}
    n_leaked = sum(e.text_a in leaked for e in src.splits["train"])
    bb = load_backbone(tiny["bert-mlm"])
    res = domain_generalisation(bb, ["random", "vocab"], "toy", ["other", "yelp5"], k=2, seeds=[13, 21],
                                tune=TuneConfig(steps=2, eval_every=1, max_length=32), prompt=PromptConfig(length=3),
                                progress=False)
    assert res["overlap"]["other"]["source_train_in_target_test"] == n_leaked > 0
    assert res["overlap"]["source_train_removed"] == n_leaked
    table = res["table"]
    assert list(table.index) == ["random", "vocab"]
    assert list(table.columns) == ["toy (in-domain)", "other", "yelp5-2class", "train-dev gap"]
    assert all("±" in v for v in table.iloc[:, :3].values.ravel())
    assert len(res["rows"]) == 2 * 2 * 3 and {r["n_test"] for r in res["rows"] if r["test"] == "yelp5-2class"} == {24}


def test_supmer_dg_command_writes_a_run_and_refuses_bad_input(tiny, toy_data, tmp_path, capsys):
    from workbench.cli.main import main
    _stars(toy_data)
    base = ["supmer-dg", "--backbone", tiny["bert-mlm"], "--source", "toy", "--k", "2", "--seeds", "13",
            "--steps", "2", "--prompt-length", "3", "--max-length", "32", "--quiet"]
    assert main(base + ["--methods", "random", "--targets", "yelp5", "--out", str(tmp_path / "dg")]) == 0
    run = tmp_path / "dg"
    res = json.loads((run / "results.json").read_text())
    assert res["table"]["yelp5-2class"]["random"].count("±") == 1 and (run / "table.csv").is_file()
    assert (run / "adapters" / "toy" / "random" / "seed13" / "adapter_model.safetensors").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2 and (run / "config.json").is_file()
    write_dataset(toy_data, "three")
    meta = json.loads((toy_data / "three" / "meta.json").read_text())
    (toy_data / "three" / "meta.json").write_text(json.dumps({**meta, "labels": ["a", "b", "c"]}))
    assert main(base + ["--methods", "random", "--targets", "three", "--out", str(tmp_path / "bad")]) == 2
    assert "label set" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_supmer_psi_init_refuses_a_caller_without_the_hook(tiny, tmp_path, monkeypatch):
    from workbench.engine.backbones import load_backbone
    from workbench.config import ConfigError, PromptConfig
    from workbench.learn.inits import InitContext, make_prompt
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    ctx = InitContext(load_backbone(tiny["bert"]), PromptConfig(length=3), 13)
    with pytest.raises(ConfigError, match="applies ψ"):  # e.g. the fewshot harness, which passes no grad_hook
        make_prompt("supmer+psi", ctx)
    assert not any(tmp_path.iterdir())  # refused before any meta-training


def test_supmer_inits_train_once_then_load_from_the_cache(tiny, toy_data, tmp_path, monkeypatch):
    from test_supmer_corpus import write_corpus
    from workbench.learn import meta_inits
    from workbench.methods import supmer
    from workbench.engine.backbones import load_backbone
    from workbench.config import BackboneConfig, FewShotConfig, MetaConfig, PromptConfig, SelfSupConfig, apply_overrides
    from workbench.engine.data import load_dataset
    from workbench.learn.inits import InitContext, make_prompt
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    bb = load_backbone(tiny["bert"])
    fs = FewShotConfig(backbone=BackboneConfig(name=tiny["bert"]), meta=MetaConfig(steps=2, meta_batch=2, support=2,
                                                                                  query=2, max_length=32),
                       selfsup=SelfSupConfig(corpus=str(write_corpus(tmp_path / "c.jsonl")), n_clusters=6, n_options=3,
                                             limit=None, val_fraction=0.3))
    ctx = lambda cfg=fs, **extra: InitContext(bb, PromptConfig(length=3), 13, dataset=load_dataset("toy"),  # noqa: E731
                                              extras={"config": cfg, **extra})
    p1, prov = make_prompt("supmer", ctx())
    run = tmp_path / "cache" / "meta" / f"supmer-{prov['cache_key']}"
    assert prov["meta_run"] == str(run) and (run / "results.json").is_file() and "psi" not in prov
    stamp = (run / "results.json").stat().st_mtime_ns
    meta_inits._TRAINED.clear()  # a new process: loads from disk, trains nothing
    p2, prov2 = make_prompt("supmer+psi", ctx(applies_grad_hook=True))
    assert torch.equal(p1, p2) and (run / "results.json").stat().st_mtime_ns == stamp
    assert prov2["psi"] == str(run / "psi") and supmer.grad_hook_for(prov2, _head(bb)) is not None
    assert supmer.grad_hook_for(prov, _head(bb)) is None
    _, prov3 = make_prompt("supmer", ctx(apply_overrides(fs, ["supmer.mixup=false"])))  # an ablation: its own entry
    assert prov3["cache_key"] != prov["cache_key"]


def _head(bb):
    from workbench.config import PromptConfig, TaskConfig
    from workbench.engine.heads import make_head
    from workbench.engine.templates import resolve_format
    fmt = resolve_format("toy", "single", ["negative", "positive"], bb.family, TaskConfig())
    return make_head(bb, fmt, TaskConfig(), PromptConfig(length=3), 32)
