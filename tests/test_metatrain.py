"""The meta-training loop: resume gives the same prompt as an uninterrupted run, changed configs are refused, the
meta-train loss falls on a toy problem, the CLI, the meta inits through the harness, and shape errors."""
from __future__ import annotations

import json

import pytest
import torch

from test_tasks import labelled_data, sentiment_rows, write_corpus, write_ds  # noqa: F401  (fixture re-export)
from workbench.learn import meta_inits
from workbench.engine.backbones import load_backbone
from workbench.cli.main import main
from workbench.engine.data import load_dataset
from workbench.config import ConfigError, FewShotConfig, LabelledConfig, MetaConfig, PromptConfig
from workbench.learn.inits import InitContext, make_prompt
from workbench.config import MetaTrainConfig
from workbench.learn.metatrain import run_meta_training
from workbench.engine.runs import load_prompt, save_prompt


@pytest.fixture(scope="module")
def bert(tiny):
    return load_backbone(tiny["bert"])


def cfg_for(out, **kw):
    loop = {"support": 2, "query": 2, "max_length": 24, "meta_batch": 2, "steps": 6, "eval_every": 3,
            "checkpoint_every": 2, "val_tasks": 2, "inner_lr": 0.5, "lr": 0.05}
    loop.update({k: kw.pop(k) for k in list(kw) if k in loop or k in ("inner_steps", "batched", "seed")})
    cfg = MetaTrainConfig(**{"method": "fomaml", "source": "labelled", "target": "tgt", "meta": MetaConfig(**loop),
                             "out": str(out), **kw})
    cfg.prompt = PromptConfig(length=4)
    cfg.labelled.datasets, cfg.labelled.k, cfg.labelled.seeds = ["srca", "srcb"], 4, [1, 2]
    return cfg


def test_resume_gives_the_same_prompt(labelled_data, bert, tmp_path):
    full = run_meta_training(cfg_for(tmp_path / "full"), bert, progress=False)
    cfg = cfg_for(tmp_path / "cut")
    part = run_meta_training(cfg, bert, progress=False, stop_after=3)  # "interrupted" after step 3
    assert part["interrupted_at"] == 3 and not (tmp_path / "cut").exists()
    assert sorted(p.name for p in (tmp_path / "cut.partial" / "checkpoints").iterdir()) == ["step-000002"]
    with pytest.raises(Exception, match="--resume"):
        run_meta_training(cfg, bert, progress=False)
    res = run_meta_training(cfg, bert, progress=False, resume=True)
    assert res["resumed_from"] == "step-000002" and not (tmp_path / "cut.partial").exists()
    a, _ = load_prompt(tmp_path / "full" / "prompt")
    b, _ = load_prompt(tmp_path / "cut" / "prompt")
    assert torch.allclose(a, b, atol=1e-6)
    for run in ("full", "cut"):
        d = tmp_path / run
        names = {p.name for p in d.iterdir()}
        assert {"config.json", "metrics.jsonl", "results.json", "prompt", "checkpoints"} <= names
        recs = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in recs if r["event"] == "train"] == [1, 2, 3, 4, 5, 6]
        assert [r["step"] for r in recs if r["event"] == "val"] == [0, 3, 6]
    losses = {run: [json.loads(l).get("loss", json.loads(l).get("loss_post")) for l in
                    (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("full", "cut")}
    assert losses["full"] == pytest.approx(losses["cut"], abs=1e-6)  # same train and validation curves
    assert run_meta_training(cfg, bert, progress=False, resume=True)["steps"] == 6  # finished: returned as is


def test_resume_with_changed_config_is_refused(labelled_data, bert, tmp_path):
    run_meta_training(cfg_for(tmp_path / "r"), bert, progress=False, stop_after=2)
    changed = cfg_for(tmp_path / "r")
    changed.meta.inner_lr, changed.labelled.k = 0.1, 5
    with pytest.raises(ConfigError, match=r"differs in \['labelled.k', 'meta.inner_lr'\]"):
        run_meta_training(changed, bert, progress=False, resume=True)


@pytest.mark.parametrize("method", ["fomaml", "multitask"])
def test_meta_train_loss_falls(labelled_data, bert, tmp_path, method):
    cfg = cfg_for(tmp_path / method, method=method)
    cfg.meta.steps, cfg.meta.meta_batch, cfg.meta.eval_every, cfg.meta.checkpoint_every, cfg.meta.lr = 40, 4, 40, 40, 0.1
    run_meta_training(cfg, bert, progress=False)
    recs = [json.loads(l) for l in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in recs if r["event"] == "train"]
    assert sum(loss[-8:]) / 8 < 0.8 * sum(loss[:8]) / 8
    val = [r for r in recs if r["event"] == "val"]
    assert val[-1]["loss_pre"] < val[0]["loss_pre"]


def test_cli_meta_train_and_errors(labelled_data, tiny, tmp_path, capsys):
    base = ["meta-train", "--backbone", tiny["bert"], "--source", "labelled", "--target", "tgt", "--steps", "2",
            "--meta-batch", "2", "--quiet", "--set", "prompt.length=4", "--set", "labelled.k=4",
            "--set", "labelled.seeds=[1]", "--set", "meta.support=2", "--set", "meta.query=2", "--set", "meta.val_tasks=2"]
    assert main(base + ["--source-datasets", "srca,srcb", "--method", "reptile", "--out", str(tmp_path / "ok")]) == 0
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["source"]["sources"] == ["srca", "srcb"]
    capsys.readouterr()
    for extra, pattern in ((["--source-datasets", "srca,tgt"], "among its own sources"),
                           (["--method", "nope"], "unknown meta-learner"),
                           (["--set", "meta.inner_steps=x"], "meta.inner_steps")):
        assert main(base + extra + ["--out", str(tmp_path / "bad")]) == 2
        err = [l for l in capsys.readouterr().err.strip().splitlines() if "Loading weights" not in l]
        assert len(err) == 1 and err[0].startswith("error:") and pattern in err[0]
    assert not (tmp_path / "bad").exists()


def test_meta_init_through_harness_and_shape_errors(labelled_data, bert, tmp_path, monkeypatch):
    from workbench.experiments.fewshot import run_fewshot
    write_ds(labelled_data, "srcc", sentiment_rows(20, 600, seed=3), sentiment_rows(6, 700, seed=3))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    small = MetaConfig(steps=2, meta_batch=2, support=2, query=2, max_length=24)
    cfg = FewShotConfig(datasets=["tgt"], methods=["random", "mpt-fomaml"], k=2, seeds=[1, 2], out=str(tmp_path / "fs"),
                        meta=small, labelled=LabelledConfig(k=4, datasets=["srca", "srcc"]))  # the harness hands cfg to the init (InitContext.extras["config"])
    cfg.prompt.length, cfg.tune.steps, cfg.tune.max_length = 4, 2, 24
    calls = []
    real = meta_inits.run_meta_training
    monkeypatch.setattr(meta_inits, "run_meta_training", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = run_fewshot(cfg, backbone=bert, progress=False)
    assert len(calls) == 1  # trained once, reused for the second seed
    rows = [r for r in res["rows"] if r["method"] == "mpt-fomaml"]
    assert len(rows) == 2 and all(0 <= r["test_acc"] <= 1 for r in rows)
    cached = list((tmp_path / "cache" / "meta").iterdir())
    assert len(cached) == 1 and (cached[0] / "results.json").is_file()
    # a cached / saved meta prompt whose shape does not fit: both shapes named
    save_prompt(cached[0] / "prompt", torch.zeros(3, bert.hidden_size), bert)
    meta_inits._TRAINED.clear()
    ctx = InitContext(bert, PromptConfig(length=4), 1, dataset=load_dataset("tgt"), extras={"config": cfg})
    with pytest.raises(ConfigError, match=rf"\(3, {bert.hidden_size}\).*\(4, {bert.hidden_size}\)"):
        make_prompt("mpt-fomaml", ctx)
    ctx = InitContext(bert, PromptConfig(length=5, init_path=str(tmp_path / "fs" / "adapters" / "tgt" / "mpt-fomaml"
                                                                 / "seed1")), 1)
    with pytest.raises(ConfigError, match=rf"\(4, {bert.hidden_size}\).*\(5, {bert.hidden_size}\)"):
        make_prompt("file", ctx)
