"""Task sources: source->target configurations, leakage refusal, decontamination counts, pseudo-task episodes and
their bad inputs (tiny models, tiny data)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from workbench.engine.backbones import load_backbone
from workbench.config import ConfigError, MetaConfig, MetaTrainConfig, TaskConfig
from workbench.tasks.corpus import ClusterError, cluster
from workbench.tasks.pseudo import PseudoConfig, PseudoSource
from workbench.tasks.episodes import SubsetHead, make_source
from workbench.tasks.labelled import resolve_sources

NEG, POS = ["terrible", "awful", "bad", "boring"], ["great", "wonderful", "good", "fun"]
COMMON = "time year day way thing people man woman child life work part place case point".split()
TOPICS = {"sport": "game team player season win won lost".split(),
          "tech": "computer software internet phone data".split(),
          "film": "movie film actor plot script scene director".split()}


def sentiment_rows(n_per_class, offset=0, seed=0):
    rng, rows = random.Random(seed), []
    for c in (0, 1):
        for i in range(n_per_class):
            j, w = offset + i, rng.choice(POS if c else NEG)
            rows.append({"text": f"{w} {COMMON[j % 15]} {COMMON[j // 15 % 15]} {COMMON[j // 225 % 15]} {w}",
                         "label": c})
    rng.shuffle(rows)
    return rows


def write_ds(root, name, train, test, labels=("negative", "positive")):
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "meta.json").write_text(json.dumps({"name": name, "task": "single", "labels": list(labels)}))
    return d


@pytest.fixture
def labelled_data(tmp_path, monkeypatch):
    """Target 'tgt' and sources 'srca', 'srcb'; 'srca' repeats 3 target test texts and 2 target train texts."""
    root = tmp_path / "data"
    tgt_train, tgt_test = sentiment_rows(20, 0), sentiment_rows(8, 100)
    write_ds(root, "tgt", tgt_train, tgt_test)
    srca = sentiment_rows(20, 200, seed=1) + tgt_test[:3] + tgt_train[:2]
    write_ds(root, "srca", srca, sentiment_rows(6, 300, seed=1))
    write_ds(root, "srcb", sentiment_rows(20, 400, seed=2), sentiment_rows(6, 500, seed=2))
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    return root


def write_corpus(path, n_per_topic=40, seed=0):
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(words) for _ in range(6)) + f" {COMMON[i % 15]} {COMMON[i // 15 % 15]}"
             for words in TOPICS.values() for i in range(n_per_topic)]
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def bert(tiny):
    return load_backbone(tiny["bert"])


def test_configurations_and_leakage():
    avail = ["sst2", "sst5", "mr", "mpqa", "agnews", "subj", "cola", "rte", "mrpc", "qnli", "snli", "mine"]
    loo = resolve_sources("sst2", "leave-one-out", available=avail)
    assert "sst2" not in loo and "sst5" not in loo and "mine" in loo and len(loo) == len(avail) - 2
    assert resolve_sources("sst2", "same-type", available=avail) == ["mr", "mpqa"]
    assert set(resolve_sources("sst2", "cross-type", available=avail)) == {"agnews", "subj", "cola", "rte", "mrpc",
                                                                            "qnli", "snli"}
    assert resolve_sources("mr", "pairs->single", available=avail) == ["rte", "mrpc", "qnli", "snli"]
    assert resolve_sources("sst2", datasets=["mine", "mr"]) == ["mine", "mr"]  # explicit, even outside the type map
    for bad in (["mr", "sst2"], ["sst5"]):  # the target, or its family (SST-5 = SST-2's sentences)
        with pytest.raises(ConfigError, match="among its own sources"):
            resolve_sources("sst2", datasets=bad)
    with pytest.raises(ConfigError, match="no datasets"):
        resolve_sources("agnews", "same-type", available=avail)
    with pytest.raises(ConfigError, match="must be one of"):
        resolve_sources("sst2", "everything", available=avail)


def test_labelled_source_decontaminates_and_samples(labelled_data, bert):
    cfg = MetaTrainConfig(source="labelled", target="tgt", meta=MetaConfig(support=2, query=3))
    cfg.labelled.k, cfg.labelled.seeds, cfg.labelled.datasets = 4, [1, 2], ["srca", "srcb"]
    src = make_source("labelled", cfg, bert, target="tgt")
    d = json.loads(json.dumps(src.describe()))
    assert d["sources"] == ["srca", "srcb"] and d["n_tasks"] == 4
    assert d["per_source"]["srca"]["removed_train"] == 5 and d["per_source"]["srcb"]["removed_train"] == 0
    assert d["target"]["name"] == "tgt" and d["per_source"]["srca"]["file_hashes"]["train"].startswith("sha256:")
    rng = np.random.default_rng(0)
    eps = src.sample(rng, 6)
    target_texts = {r["text"] for f in ("train", "test")
                    for r in map(json.loads, (labelled_data / "tgt" / f"{f}.jsonl").read_text().splitlines())}
    for ep in eps:
        name, seed = ep.name.split("/")
        split = src.splits[(name, int(seed))]
        assert sorted(e.label for e in ep.support) == [0, 0, 1, 1] and len(ep.query) == 6
        assert set(ep.support) <= set(split.train) and set(ep.query) <= set(split.dev)
        assert not {e.text_a for e in ep.support + ep.query} & target_texts
    val = src.sample(rng, 3, split="val")
    assert all(set(ep.query) <= set(src.datasets[ep.info["source"]].splits["test"]) for ep in val)


def test_labelled_refuses_target_in_sources(labelled_data, bert):
    cfg = MetaTrainConfig(source="labelled", target="tgt")
    cfg.labelled.datasets = ["srca", "tgt"]
    with pytest.raises(ConfigError, match="leak"):
        make_source("labelled", cfg, bert, target="tgt")


def _pseudo_cfg(corpus, **kw):
    cfg = MetaTrainConfig(meta=MetaConfig(support=2, query=2, max_length=24))
    cfg.pseudo = PseudoConfig(**{"corpus": str(corpus), "n_clusters": 3, "n_way": 2, "min_words": 2, "limit": 0, **kw})
    return cfg


@pytest.mark.parametrize("features", ["tfidf", "lda", "backbone"])
def test_pseudo_source_episodes(tmp_path, bert, features, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))  # the backbone features' embedding cache
    corpus = write_corpus(tmp_path / "c.txt")
    src = make_source("pseudo", _pseudo_cfg(corpus, features=features), bert)
    d = json.loads(json.dumps(src.describe()))
    assert d["features"] == features and d["k"] >= 2 and sum(d["sizes"]) == 120
    assert d["decontamination"]["removed"] == 0
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for ep in src.sample(rng, 5, split=split):
            assert sorted(e.label for e in ep.support) == sorted(e.label for e in ep.query) == [0, 0, 1, 1]
            assert not {e.text_a for e in ep.support} & {e.text_a for e in ep.query}
            allowed = {src.texts[i] for c in ep.info["clusters"] for i in src.members[split][c]}
            assert {e.text_a for e in ep.support + ep.query} <= allowed
            for e in ep.support:  # label i is cluster cols[i]
                assert src.clustering.assignments[src.texts.index(e.text_a)] == ep.info["clusters"][e.label]
    held_out = {i for m in src.members["val"].values() for i in m}
    assert held_out and not held_out & {i for m in src.members["train"].values() for i in m}


def test_pseudo_label_expression_per_family(tmp_path, tiny, bert, labelled_data):
    corpus = write_corpus(tmp_path / "c.txt")
    mlm = load_backbone(tiny["bert-mlm"])
    cfg = _pseudo_cfg(corpus)
    cfg.task = TaskConfig(template="{text} It was {mask}.", label_template="It was {label}.")
    src = make_source("pseudo", cfg, mlm, target="tgt")  # MLM: the target's template, one cluster word each
    assert src.fmt.template == "{text} It was {mask}." and len(src.fmt.verbalizer) == 3
    assert all(" " not in w for w in src.fmt.verbalizer)
    enc = make_source("pseudo", cfg, bert, target="tgt")  # similarity head: the target's label template
    assert enc.fmt.label_texts == [f"It was {w}." for w in enc.fmt.verbalizer]
    kw = make_source("pseudo", _pseudo_cfg(corpus, label="keywords", template="generic"), bert)
    assert any("," in t for t in kw.fmt.label_texts)  # keyword lists
    with pytest.raises(ConfigError, match="similarity"):
        make_source("pseudo", _pseudo_cfg(corpus, label="keywords"), mlm)


def test_subset_head_selects_columns(tmp_path, bert):
    src = make_source("pseudo", _pseudo_cfg(write_corpus(tmp_path / "c.txt")), bert)
    ex = src.sample(np.random.default_rng(1), 1)[0]
    sub = SubsetHead(src.head, [2, 0])
    b = src.head.batch(ex.support)
    P = torch.randn(4, bert.hidden_size)
    full, _ = src.head.forward(b, P)
    part, _ = sub.forward(b, P)
    assert torch.allclose(part, full[:, [2, 0]]) and sub.n_classes == 2


def test_pseudo_bad_inputs(tmp_path, bert):
    small = tmp_path / "small.txt"
    small.write_text("\n".join(f"game team {w}" for w in COMMON[:5]) + "\n")
    with pytest.raises(ConfigError, match="fewer than K=8"):
        make_source("pseudo", _pseudo_cfg(small, n_clusters=8), bert)
    corpus = write_corpus(tmp_path / "c.txt", n_per_topic=6)  # 18 texts: 3-way x (2+2) fits the corpus, not clusters
    with pytest.raises(ConfigError, match=r"n_way=3"):
        make_source("pseudo", _pseudo_cfg(corpus, n_way=3, val_fraction=0.5), bert)
    cfg = _pseudo_cfg(corpus)
    cfg.meta.support = 20
    with pytest.raises(ConfigError, match=r"2-way x \(20\+2\) = 44"):
        make_source("pseudo", cfg, bert)
    texts = [f"text {i}" for i in range(12)]
    cl = cluster(np.eye(3)[np.arange(12) % 3] + 0.01 * np.arange(12)[:, None], texts, "kmeans", 3, 0)
    cl.assignments = np.where(cl.assignments == 2, 1, cl.assignments)  # cluster 2 now empty
    with pytest.raises(ClusterError, match=r"cluster\(s\) \[2\].*empty"):
        PseudoSource(cl, texts, bert, PseudoConfig(n_way=2), 1, 1, 16, MetaTrainConfig().prompt)


def test_pseudo_source_from_saved_clustering(tmp_path, bert, labelled_data):
    """A clustering written like `python -m workbench cluster` (clusters.* + assignments.jsonl) is used as is, minus
    the texts that occur in the target's data (decontamination count recorded)."""
    from workbench.tasks.corpus import save_clustering
    texts = [l for l in write_corpus(tmp_path / "c.txt").read_text().splitlines()]
    tgt = [json.loads(l)["text"] for l in (labelled_data / "tgt" / "test.jsonl").read_text().splitlines()][:2]
    texts = tgt + texts
    feats = np.stack([[any(w in t.split() for w in ws) for ws in TOPICS.values()] for t in texts]).astype(float)
    cl = cluster(feats + 0.01 * np.random.default_rng(0).normal(size=feats.shape), texts, "kmeans", 3, 0)
    out = save_clustering(cl, tmp_path / "clu")
    (out / "assignments.jsonl").write_text("".join(json.dumps({"index": i, "cluster": int(c), "text": t}) + "\n"
                                                   for i, (t, c) in enumerate(zip(texts, cl.assignments))))
    cfg = _pseudo_cfg(tmp_path / "unused.txt", clustering=str(out))
    src = make_source("pseudo", cfg, bert, target="tgt")
    assert src.describe()["decontamination"] == {"removed": 2, "kept": len(texts) - 2, "exclude": []}
    assert not set(tgt) & set(src.texts) and len(src.sample(np.random.default_rng(0), 2)) == 2
