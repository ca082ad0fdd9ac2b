"""The meta-training loop: resume gives the same prompt as an uninterrupted run, changed configs are refused, the
meta-train loss falls on a toy problem, selection and early stopping on meta-validation (budget fields, the
never-improving case reported, resume keeps the best prompt), the CLI, the meta inits through the harness, and shape
errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_tasks import labelled_data, sentiment_rows, write_corpus, write_ds  # noqa: F401  (fixture re-export)
from workbench.learn import meta_inits, metatrain
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
    loop.update({k: kw.pop(k) for k in list(kw) if k in loop or k in ("inner_steps", "batched", "seed", "patience",
                                                                       "select", "inner_optimizer")})
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
    keys = ("budget", "best_step", "selected_step", "stopped_early", "meta_val_improved", "warning", "best_val")
    assert {k: full[k] for k in keys} == {k: res[k] for k in keys}
    assert full["budget"] == {"steps": 6, "steps_run": 6, "meta_batch": 2, "task_visits": 12, "inner_steps": 1,
                              "inner_optimizer": "sgd"}


def scripted_validation(monkeypatch, scores):
    """Replace meta-validation with ``scores(P, call)`` -> (acc_post, loss_post); returns the prompts it saw."""
    seen = []

    def fake(P, episodes, inner_lr, inner_steps, batched=True, chunk=8, inner_optimizer="sgd"):
        seen.append(P.detach().clone())
        acc, loss = scores(P, len(seen) - 1)
        return {"loss_pre": loss, "acc_pre": acc, "loss_post": loss, "acc_post": acc}
    monkeypatch.setattr(metatrain, "evaluate_episodes", fake)
    return seen


def test_early_stopping_keeps_the_best_and_reports_the_budget(labelled_data, bert, tmp_path, monkeypatch):
    """Validations at steps 0..3: 0.5, 0.6 (best), 0.6 with a higher loss (a tie lost on loss), 0.55; patience 2 stops
    after step 3 of 10, and the prompt written is step 1's."""
    script = [(0.5, 1.0), (0.6, 0.9), (0.6, 0.95), (0.55, 0.8)]
    seen = scripted_validation(monkeypatch, lambda P, i: script[i])
    cfg = cfg_for(tmp_path / "es", method="reptile", steps=10, eval_every=1, checkpoint_every=5, patience=2)
    res = run_meta_training(cfg, bert, progress=False)
    assert res["budget"] == {"steps": 10, "steps_run": 3, "meta_batch": 2, "task_visits": 6, "inner_steps": 5,
                             "inner_optimizer": "sgd"}
    assert (res["steps"], res["best_step"], res["selected_step"]) == (3, 1, 1)
    assert res["stopped_early"] and res["meta_val_improved"] and res["warning"] is None
    assert res["best_val"] == {"acc_post": 0.6, "loss_post": 0.9}
    assert json.loads((tmp_path / "es" / "results.json").read_text())["budget"]["steps_run"] == 3
    prompt, _ = load_prompt(tmp_path / "es" / "prompt")
    assert len(seen) == 4 and torch.allclose(prompt, seen[1]) and not torch.allclose(prompt, seen[3])
    recs = [json.loads(l) for l in (tmp_path / "es" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["event"] == "train"] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "es" / "checkpoints").iterdir()) == ["step-000003"]


@pytest.mark.parametrize("select", ["best", "last"])
def test_never_improving_meta_validation_is_reported(labelled_data, bert, tmp_path, monkeypatch, select):
    """Meta-validation that never beats step 0: results.json says so (meta_val_improved false, a warning naming what
    was written) and a warning is emitted; best writes the step-0 prompt, last the last one."""
    seen = scripted_validation(monkeypatch, lambda P, i: (0.5, 1.0 + i))
    cfg = cfg_for(tmp_path / select, steps=4, eval_every=1, select=select)
    with pytest.warns(UserWarning, match="never improved on step 0"):
        res = run_meta_training(cfg, bert, progress=False)
    saved = json.loads((tmp_path / select / "results.json").read_text())
    assert saved["meta_val_improved"] is False and saved["best_step"] == 0 and not saved["stopped_early"]
    assert "never improved" in saved["warning"] and f"meta.select={select}" in saved["warning"]
    assert res["selected_step"] == (0 if select == "best" else 4)
    prompt, _ = load_prompt(tmp_path / select / "prompt")
    assert torch.allclose(prompt, seen[0 if select == "best" else -1])
    assert not torch.allclose(seen[0], seen[-1])


def test_resume_keeps_the_best_prompt(labelled_data, bert, tmp_path, monkeypatch):
    """select=best with the best at step 0 and a resume from the step-3 checkpoint: the resumed run writes the same
    step-0 prompt as the uninterrupted one (the best prompt travels in the checkpoint)."""
    ref = {}

    def scores(P, i):
        ref.setdefault("P0", P.detach().clone())
        return 0.5, float((P.detach() - ref["P0"]).norm())
    scripted_validation(monkeypatch, scores)
    full = run_meta_training(cfg_for(tmp_path / "full", eval_every=1, checkpoint_every=3), bert, progress=False)
    cfg = cfg_for(tmp_path / "cut", eval_every=1, checkpoint_every=3)
    run_meta_training(cfg, bert, progress=False, stop_after=4)
    with pytest.warns(UserWarning, match="never improved"):
        res = run_meta_training(cfg, bert, progress=False, resume=True)
    assert res["resumed_from"] == "step-000003" and res["best_step"] == full["best_step"] == 0
    a, _ = load_prompt(tmp_path / "full" / "prompt")
    b, _ = load_prompt(tmp_path / "cut" / "prompt")
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, ref["P0"])


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
    assert "2 of 2 meta-steps run, 4 task visits, 5 inner sgd steps" in capsys.readouterr().out  # reptile: auto = 5
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
    adapter = tmp_path / "fs" / "adapters" / "tgt" / "mpt-fomaml" / "seed1"
    prov = json.loads((adapter / "workbench_prompt.json").read_text())["provenance"]  # the meta run's budget and
    # meta-validation outcome travel with the init's provenance
    assert prov["budget"]["task_visits"] == prov["task_visits"] == 4 and prov["budget"]["inner_steps"] == 1
    assert {"best_step", "meta_val_improved", "stopped_early", "meta_warning"} <= set(prov)
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


def test_target_free_meta_init_is_trained_once_for_all_targets_and_decontaminated_against_all(
        labelled_data, bert, tmp_path, monkeypatch):
    """meta.shared: metapt with a generic pseudo-task template does not depend on the target; a run over two targets
    trains it once, its corpus stripped of both targets' texts (counted); meta.shared=false trains one per target."""
    from test_tasks import write_corpus as topic_corpus

    from workbench.config import PseudoConfig
    from workbench.experiments.fewshot import run_fewshot
    corpus = topic_corpus(tmp_path / "c.txt")
    planted = [json.loads(line)["text"] for name, split in (("tgt", "test.jsonl"), ("srcb", "train.jsonl"))
               for line in (labelled_data / name / split).read_text().splitlines()[:2]]
    corpus.write_text(corpus.read_text() + "".join(t + "\n" for t in planted))  # 2 of each target's texts
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    calls = []
    real = meta_inits.run_meta_training
    monkeypatch.setattr(meta_inits, "run_meta_training", lambda *a, **k: calls.append(a[0]) or real(*a, **k))

    def run(shared, out):
        meta_inits._TRAINED.clear()
        cfg = FewShotConfig(datasets=["tgt", "srcb"], methods=["metapt"], k=2, seeds=[1], out=str(tmp_path / out),
                            meta=MetaConfig(steps=2, meta_batch=2, support=2, query=2, max_length=24, shared=shared),
                            pseudo=PseudoConfig(corpus=str(corpus), n_clusters=3, n_way=2, min_words=2, limit=0,
                                                template="generic"))
        cfg.prompt.length, cfg.tune.steps, cfg.tune.max_length = 4, 2, 24
        return run_fewshot(cfg, backbone=bert, progress=False)

    res = run(True, "shared")
    assert len(calls) == 1, [c.out for c in calls]
    assert calls[0].target is None and calls[0].pseudo.exclude == ["srcb", "tgt"]
    assert {r["meta"]["decontaminated_against"] == ["srcb", "tgt"] for r in res["rows"]} == {True}
    meta_res = json.loads((tmp_path / "cache" / "meta" / f"metapt-{res['rows'][0]['meta']['cache_key']}" /
                           "results.json").read_text())
    assert meta_res["source"]["decontamination"]["removed"] == len(planted)
    calls.clear()
    run(False, "per-target")
    assert [Path(c.target).name for c in calls] == ["tgt", "srcb"] and all(c.pseudo.exclude == [] for c in calls)


def test_meta_init_cache_key_ignores_sections_the_run_does_not_read():
    """A meta init's cache key changes with what its source and learner read, not with the other sections: changing
    ``selfsup.*`` or ``supmer.*`` does not retrain MetaPT, changing ``pseudo.*`` does not retrain SUPMER; a
    third-party source keeps every section in its key."""
    from types import SimpleNamespace

    from workbench.config import PseudoConfig, SelfSupConfig, SupmerConfig
    bb = SimpleNamespace(describe=lambda: {"weights_sha256": "w"}, path="/m")

    def key(method, source, **sections):
        return meta_inits.cache_key(MetaTrainConfig(method=method, source=source, **sections), bb)

    other = {"selfsup": SelfSupConfig(per_task_support=6), "supmer": SupmerConfig(mixup=False),
             "labelled": LabelledConfig(k=8)}
    assert key("fomaml", "pseudo") == key("fomaml", "pseudo", **other)
    assert key("fomaml", "pseudo") != key("fomaml", "pseudo", pseudo=PseudoConfig(n_clusters=7))
    assert key("supmer", "selfsup") == key("supmer", "selfsup", pseudo=PseudoConfig(n_clusters=7),
                                           labelled=LabelledConfig(k=8))
    assert key("supmer", "selfsup") != key("supmer", "selfsup", supmer=SupmerConfig(mixup=False))
    assert key("supmer", "selfsup") != key("supmer", "selfsup", selfsup=SelfSupConfig(per_task_support=6))
    assert key("fomaml", "labelled") != key("fomaml", "labelled", labelled=LabelledConfig(k=8))
    assert key("fomaml", "labelled") != key("maml", "labelled")
    assert key("fomaml", "custom") != key("fomaml", "custom", supmer=SupmerConfig(mixup=False))  # third-party
