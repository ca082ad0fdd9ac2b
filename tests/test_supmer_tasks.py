"""The five self-supervised task types (workbench.sstasks) for every head family, their semantics, the augmentation
set and cluster metadata, the ``selfsup`` source behind the task-source registry, and the bad inputs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from test_supmer_corpus import write_corpus
from workbench.config import PromptConfig
from workbench.config import TASK_TYPES, ConfigError, MetaConfig, MetaTrainConfig, SelfSupConfig, apply_overrides
from workbench.tasks.selfsup import MCExample, SelfSupError, SelfSupSource

FAMILIES = ["bert", "bert-mlm", "roberta-mlm", "t5", "gpt2", "llama"]


def _cfg(corpus, **kw):
    return SelfSupConfig(**{"corpus": str(corpus), "n_clusters": 6, "n_options": 3, "limit": None,
                            "per_task_support": 6, "per_task_query": 3, "val_fraction": 0.3, **kw})


def _source(bb, cfg, *args, **kw):
    return SelfSupSource(bb, cfg, *args, max_length=48, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("sscorpus") / "c.jsonl")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_task_type_builds_valid_episodes(family, tiny, corpus):
    from workbench.engine.backbones import load_backbone
    from workbench.engine.joint import joint_forward
    from workbench.engine.data import read_corpus
    bb = load_backbone(tiny[family])
    src = _source(bb, _cfg(corpus), PromptConfig(length=3), progress=False)
    rows = read_corpus(str(corpus))
    next_of = {rows[i]["text"]: rows[i + 1]["text"] for i in range(len(rows) - 1)
               if rows[i]["doc"] == rows[i + 1]["doc"]}
    doc_of = {r["text"]: r["doc"] for r in rows}
    cluster_of = {src._text(u): int(src.assign[u]) for u in range(len(src.index))}
    rng, eps = np.random.default_rng(0), []
    for t in TASK_TYPES:
        ep = src.episode(t, rng)
        C = {"nsp": 3, "scsp": 2}.get(t, 3)
        assert ep.head.n_classes == C == ep.info["n_classes"] and ep.info["type"] == t
        assert len(ep.support) == 6 and len(ep.query) == 3 and len(ep.aug) == 3
        assert sorted(np.bincount([e.label for e in ep.support], minlength=C)) == [6 // C] * C or t == "nsp"
        assert not set(ep.info["clusters"]) & set(ep.info["aug_clusters"]) and 0 <= ep.info["domain_sim"] <= 1
        for e in ep.support + ep.query:
            if t == "nsp" and e.label == 0:
                assert next_of[e.text_a] == e.text_b
            elif t == "nsp":
                assert (doc_of[e.text_a] == doc_of[e.text_b]) == (e.label == 1)
            elif t == "scsp":
                assert (cluster_of[e.text_a] == cluster_of[e.text_b]) == (e.label == 1)
            elif t == "nss":
                assert isinstance(e, MCExample) and len(e.options) == 3
                anchor = e.text_a if family == "bert" else next(a for a in next_of if a.startswith(
                    e.text_a.split(" ? ")[0].removesuffix(" ...")) and next_of[a] == e.options[e.label])
                assert next_of[anchor] == e.options[e.label]
            elif t == "scss":
                assert family != "bert" or cluster_of[e.text_a] == cluster_of[e.options[e.label]]
                assert [cluster_of[o] == cluster_of[e.options[e.label]] for o in e.options].count(True) == 1
            else:
                assert e.option_clusters == tuple(ep.info["clusters"])
                assert family != "bert" or cluster_of[e.text_a] == e.option_clusters[e.label]
            if family != "bert" and t in ("nss", "scss", "scc"):
                assert " ? A . " in e.text_a  # options rendered into the text with letter label words
        logits, feats = ep.head.forward(ep.head.batch(ep.support), torch.zeros(3, bb.hidden_size))
        assert logits.shape == (6, C) and torch.isfinite(logits).all() and feats.shape == (6, bb.hidden_size)
        eps.append(ep)
    batch = src.sample(np.random.default_rng(1), 3)  # a meta-batch: one type, distinct clusters, one joint pass
    assert len({e.info["type"] for e in batch}) == 1 and len({e.name for e in batch}) == 3
    outs = joint_forward([(e.head, e.head.batch(e.query), torch.zeros(3, bb.hidden_size)) for e in batch])
    assert all(o[0].shape == (3, e.head.n_classes) for o, e in zip(outs, batch))


def test_similarity_head_uses_options_and_centroids_as_anchors(tiny, corpus):
    from workbench.engine.backbones import load_backbone
    bb = load_backbone(tiny["bert"])
    src = _source(bb, _cfg(corpus), PromptConfig(length=3), progress=False)
    ep = src.episode("scc", np.random.default_rng(0))
    b = ep.head.batch(ep.query)
    cents = torch.nn.functional.normalize(torch.as_tensor(src.centroids[ep.info["clusters"]]), dim=-1)
    assert torch.allclose(b["anchors"][0], cents, atol=1e-5)
    ep = src.episode("scss", np.random.default_rng(0))
    b = ep.head.batch(ep.query[:1])
    solo = ep.head.option_anchors([ep.query[0]])
    assert b["anchors"].shape == (1, 3, bb.hidden_size) and torch.allclose(b["anchors"], solo)


def test_validation_split_uses_held_out_documents_and_the_registry(tiny, corpus):
    from workbench.engine.backbones import load_backbone
    from workbench.tasks.episodes import make_source
    bb = load_backbone(tiny["bert-mlm"])
    cfg = apply_overrides(MetaTrainConfig(prompt=PromptConfig(length=3), meta=MetaConfig(max_length=48)),
                          [f"selfsup.corpus={corpus}", "selfsup.n_clusters=6", "selfsup.n_options=3",
                           "selfsup.limit=None", "selfsup.val_fraction=0.3", "selfsup.types=scsp,scc",
                           "selfsup.per_task_support=4", "selfsup.per_task_query=2", "supmer.psi=false"])
    src = make_source("selfsup", cfg, bb)
    assert src.types == ["scsp", "scc"] and src.cfg.per_task_support == 4 and src.describe()["clusters"] == 6
    val_units = {src._text(u) for p in src.pools["val"] for u in p}
    train_units = {src._text(u) for p in src.pools["train"] for u in p}
    assert val_units and not val_units & train_units
    val = src.sample(np.random.default_rng(0), 2, split="val")
    assert sorted(ep.info["type"] for ep in val) == ["scc", "scsp"]  # validation covers every type
    for ep in val:
        assert ep.info["split"] == "val"
        for e in ep.support:
            anchor = e.text_a.split(" ? ")[0].removesuffix(" ...")
            assert any(u.startswith(anchor) for u in val_units) and not any(u.startswith(anchor) for u in train_units)
    assert src.sample(np.random.default_rng(0), 1)[0].info["split"] == "train"


def test_adjacency_needs_document_ids(tiny, tmp_path):
    from workbench.engine.backbones import load_backbone
    bb = load_backbone(tiny["bert"])
    flat = write_corpus(tmp_path / "flat.jsonl", docs=False)
    with pytest.raises(SelfSupError, match=r"document id.*\['nsp', 'nss'\].*skip_missing_docs"):
        _source(bb, _cfg(flat), progress=False)
    with pytest.warns(UserWarning, match="skipping task types"):
        src = _source(bb, _cfg(flat, skip_missing_docs=True), progress=False)
    assert src.types == ["scsp", "scss", "scc"]
    with pytest.raises(SelfSupError, match="no task types left"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _source(bb, _cfg(flat, types=["nsp"], skip_missing_docs=True), progress=False)


def test_too_few_clusters_and_bad_options(tiny, corpus):
    from workbench.engine.backbones import load_backbone
    bb = load_backbone(tiny["bert"])
    with pytest.raises(SelfSupError, match=r"'scc' needs at least 8 clusters.*n_options=4.*has 4"):
        _source(bb, _cfg(corpus, n_clusters=4, n_options=4), progress=False)
    src = _source(bb, _cfg(corpus, n_clusters=4, n_options=4, types=["nsp", "scsp"]), progress=False)
    assert src.k == 4  # pair types need only a second cluster for the augmentation set
    with pytest.raises(ConfigError, match="selfsup.types"):
        SelfSupConfig(types=["nsp", "jigsaw"])
    with pytest.raises(SelfSupError, match="n_clusters"):
        _source(bb, _cfg(corpus, n_clusters=500), progress=False)
