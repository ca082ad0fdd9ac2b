"""MetaPT's task construction ``pseudo.tasks``: clusters-as-classes (N clusters are an episode's classes) against
labels-within-clusters (one cluster is one task, its texts pseudo-labelled in the target's label space by the frozen
backbone's zero-shot prediction). Tiny random BERT, toy target, a topic-clustered toy corpus saved as a clustering."""
from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from conftest import write_dataset
from workbench.cli.main import main
from workbench.config import (ConfigError, FewShotConfig, MetaConfig, MetaTrainConfig, PromptConfig, PseudoConfig,
                              TaskConfig)
from workbench.engine.backbones import load_backbone
from workbench.engine.data import Example, load_dataset
from workbench.engine.heads import make_head
from workbench.engine.templates import resolve_format
from workbench.learn.meta_inits import cache_key, target_free
from workbench.learn.metatrain import run_meta_training
from workbench.tasks.corpus import cluster, save_clustering
from workbench.tasks.episodes import make_source

TOPICS = {"sport": "game team player season win".split(), "tech": "computer software internet phone data".split(),
          "film": "movie film actor plot scene".split()}
WITHIN = "labels-within-clusters"


@pytest.fixture(scope="module")
def bert(tiny):
    return load_backbone(tiny["bert"])


@pytest.fixture
def within_data(tmp_path, monkeypatch):
    """Target 'toy' on WORKBENCH_DATA and a saved 3-cluster clustering of a topic corpus (texts repeat 'negative' or
    'positive', which the tiny encoder's zero-shot head tells apart) that holds 2 test and 1 train text of 'toy'."""
    root = tmp_path / "data"
    write_dataset(root, "toy")
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    rng = random.Random(0)
    texts = [" ".join([("negative", "positive")[i % 2]] * 4 + [rng.choice(ws), rng.choice(ws)]) + f" n{i}"
             for ws in TOPICS.values() for i in range(48)]
    toy = load_dataset("toy")
    texts += [e.text_a for e in toy.splits["test"][:2] + toy.splits["train"][:1]]
    feats = np.array([[any(w in t.split() for w in ws) for ws in TOPICS.values()] for t in texts], dtype=float)
    cl = cluster(feats + 0.01 * np.random.default_rng(0).normal(size=feats.shape), texts, "kmeans", 3, 0)
    out = save_clustering(cl, tmp_path / "clu")
    (out / "assignments.jsonl").write_text("".join(json.dumps({"index": i, "cluster": int(c), "text": t}) + "\n"
                                                   for i, (t, c) in enumerate(zip(texts, cl.assignments))))
    return out


def _cfg(clustering, tasks=WITHIN, **kw) -> MetaTrainConfig:
    cfg = MetaTrainConfig(method="fomaml", source="pseudo", target="toy",
                          meta=MetaConfig(**{"support": 2, "query": 2, "max_length": 24, **kw}))
    cfg.pseudo = PseudoConfig(clustering=str(clustering), tasks=tasks, template="generic", val_fraction=0.4)
    cfg.prompt = PromptConfig(length=4)
    return cfg


def zero_shot(bb, texts) -> list[int]:
    """The backbone's zero-shot class of each text under the target's own format, one text at a time."""
    ds = load_dataset("toy")
    head = make_head(bb, resolve_format(ds.name, ds.task, ds.labels, bb.family, TaskConfig()), TaskConfig(),
                     PromptConfig(length=4), 24)
    with torch.inference_mode():
        return [int(head.forward(head.batch([Example(t, 0)]), None)[0].argmax()) for t in texts]


def test_episodes_are_one_cluster_labelled_by_zero_shot(within_data, bert):
    src = make_source("pseudo", _cfg(within_data), bert, target="toy")
    d = json.loads(json.dumps(src.describe()))
    assert d["tasks"] == WITHIN and d["decontamination"]["removed"] == 3 and d["decontamination"]["kept"] == 144
    assert not {e.text_a for e in load_dataset("toy").splits["test"]} & set(src.texts)
    pl = d["pseudo_labels"]
    assert pl["classes"] == ["negative", "positive"] and src.head.n_classes == 2
    assert [sum(r) for r in pl["per_cluster"]] == d["sizes"] and sum(pl["total"]) == 144
    by_text = dict(zip(src.texts, zero_shot(bert, src.texts)))
    assert len(set(by_text.values())) == 2  # the toy labeller is not constant: the test can tell labels apart
    rng, assign = np.random.default_rng(0), np.asarray(src.clustering.assignments)
    for split in ("train", "val"):
        for ep in src.sample(rng, 6, split=split):
            (c,) = ep.info["clusters"]
            assert c in src.eligible[split] and ep.info["tasks"] == WITHIN
            assert sorted(e.label for e in ep.support) == sorted(e.label for e in ep.query) == [0, 0, 1, 1]
            members = {src.texts[i] for i in src.members[split][c]}
            for e in ep.support + ep.query:
                assert e.text_a in members and assign[src.texts.index(e.text_a)] == c
                assert e.label == by_text[e.text_a]
            assert not {e.text_a for e in ep.support} & {e.text_a for e in ep.query}


def test_clusters_as_classes_unchanged_and_cache_keys_differ(within_data, bert):
    cfg = _cfg(within_data, tasks="clusters-as-classes")
    src = make_source("pseudo", cfg, bert, target="toy")
    ep = src.sample(np.random.default_rng(0), 1)[0]
    assert len(ep.info["clusters"]) == cfg.pseudo.n_way and "pseudo_labels" not in src.describe()
    assert cache_key(cfg, bert) != cache_key(_cfg(within_data), bert)
    fs = FewShotConfig()
    fs.pseudo.template = "generic"
    assert target_free("pseudo", fs)
    assert not target_free("pseudo", dataclasses.replace(fs, pseudo=dataclasses.replace(fs.pseudo, tasks=WITHIN)))


def test_within_errors_name_the_knobs(within_data, bert):
    cfg = _cfg(within_data, support=30)
    with pytest.raises(ConfigError, match=r"no cluster has >= 32 train texts.*meta\.support.*pseudo\.n_clusters"):
        make_source("pseudo", cfg, bert, target="toy")
    with pytest.raises(ConfigError, match="needs a target dataset"):
        make_source("pseudo", _cfg(within_data), bert, target=None)
    with pytest.raises(ConfigError, match="pseudo.tasks must be one of"):
        PseudoConfig(tasks="nope")


def test_meta_training_loss_falls(within_data, bert, tmp_path):
    cfg = _cfg(within_data, steps=30, meta_batch=4, eval_every=30, checkpoint_every=30, val_tasks=2, lr=0.1,
               inner_lr=0.5)
    cfg.out = str(tmp_path / "run")
    run_meta_training(cfg, bert, progress=False)
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in recs if r["event"] == "train"]
    assert sum(loss[-6:]) / 6 < 0.8 * sum(loss[:6]) / 6
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["source"]["tasks"] == WITHIN and len(res["source"]["pseudo_labels"]["per_cluster"]) == 3


def test_cli_meta_train_within(within_data, tiny, tmp_path):
    out = tmp_path / "cli"
    assert main(["meta-train", "--backbone", tiny["bert"], "--source", "pseudo", "--target", "toy", "--method",
                 "fomaml", "--steps", "2", "--meta-batch", "2", "--quiet", "--out", str(out),
                 "--set", f"pseudo.tasks={WITHIN}", "--set", f"pseudo.clustering={within_data}",
                 "--set", "pseudo.val_fraction=0.4", "--set", "prompt.length=4", "--set", "meta.support=2",
                 "--set", "meta.query=2", "--set", "meta.val_tasks=2", "--set", "meta.max_length=24"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["pseudo"]["tasks"] == WITHIN and res["source"]["pseudo_labels"]["total"]
