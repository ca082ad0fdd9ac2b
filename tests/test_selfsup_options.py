"""``selfsup.options_per_type``: each multiple-choice type (nss, scss, scc) with its own option count (SUPMER/PPT:
nss 6, scss 4, scc 4), ``selfsup.n_options`` for the others, validated against the clusters and texts available."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_supmer_corpus import write_corpus
from workbench.config import ConfigError, MetaTrainConfig, PromptConfig, SelfSupConfig, apply_overrides
from workbench.engine.backbones import load_backbone
from workbench.tasks.selfsup import MCExample, SelfSupError, SelfSupSource

PER_TYPE = {"nss": 6, "scss": 4}  # scc keeps n_options = 3


def _cfg(corpus, **kw):
    return SelfSupConfig(**{"corpus": str(corpus), "n_clusters": 6, "n_options": 3, "limit": None,
                            "per_task_support": 12, "per_task_query": 6, "val_fraction": 0.3,
                            "options_per_type": PER_TYPE, **kw})


def _source(bb, cfg, **kw):
    return SelfSupSource(bb, cfg, PromptConfig(length=3), max_length=96, progress=False, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("optcorpus") / "c.jsonl")


@pytest.mark.parametrize("family", ["bert", "roberta-mlm", "t5", "gpt2"])
def test_episodes_of_each_type_have_their_option_count(tiny, corpus, family):
    bb = load_backbone(tiny[family])
    src = _source(bb, _cfg(corpus))
    rng = np.random.default_rng(0)
    for t, C in {"nss": 6, "scss": 4, "scc": 3, "nsp": 3, "scsp": 2}.items():
        ep = src.episode(t, rng)
        assert ep.head.n_classes == C == ep.info["n_classes"], t
        for e in ep.support + ep.query + ep.aug:
            assert 0 <= e.label < C
            if t in PER_TYPE or t == "scc":
                assert isinstance(e, MCExample) and len(e.options) == C
                assert len(set(e.options)) == C or t == "scc"  # distinct sentences as options
            if t == "scc":
                assert len(e.option_clusters) == C
            if family != "bert" and t in ("nss", "scss", "scc"):
                assert f" {'ABCDEFGHIJ'[C - 1]} . " in e.text_a and f" {'ABCDEFGHIJ'[C]} . " not in e.text_a
        assert sorted(np.bincount([e.label for e in ep.support], minlength=C)) == [12 // C] * C or t == "nsp"
        logits, _ = ep.head.forward(ep.head.batch(ep.query), torch.zeros(3, bb.hidden_size))
        assert logits.shape == (6, C)
    assert src.head("nss").fmt.verbalizer == list("ABCDEF") and src.head("scc").fmt.verbalizer == list("ABC")


def test_meta_batches_and_validation_use_the_per_type_counts(tiny, corpus):
    bb = load_backbone(tiny["bert-mlm"])
    src = _source(bb, _cfg(corpus, types=["nss", "scc"]))
    seen = {}
    for seed in range(4):
        for ep in src.sample(np.random.default_rng(seed), 2) + src.sample(np.random.default_rng(seed), 2, "val"):
            seen.setdefault(ep.info["type"], set()).add(ep.head.n_classes)
    assert seen == {"nss": {6}, "scc": {3}}


def test_options_per_type_is_validated():
    with pytest.raises(ConfigError, match=r"selfsup.options_per_type: \['nsp'\] have no options"):
        SelfSupConfig(options_per_type={"nsp": 3})
    with pytest.raises(ConfigError, match="selfsup.options_per_type: option counts must be integers from 2 to 10"):
        SelfSupConfig(options_per_type={"nss": 11})
    with pytest.raises(ConfigError, match="option counts must be integers"):
        SelfSupConfig(options_per_type={"scc": 1})
    cfg = SelfSupConfig(n_options=4, options_per_type={"nss": 6})
    assert [cfg.options(t) for t in ("nss", "scss", "scc")] == [6, 4, 4]
    over = apply_overrides(MetaTrainConfig(), ['selfsup.options_per_type={"nss": 6}'])
    assert over.selfsup.options_per_type == {"nss": 6} and over.selfsup.options("nss") == 6


def test_too_few_clusters_or_texts_name_the_per_type_knob(tiny, corpus, tmp_path):
    bb = load_backbone(tiny["bert"])
    with pytest.raises(SelfSupError, match=r"'scss' needs at least 7 clusters.*selfsup.options_per_type\['scss'\]=7"
                                           r".*has 6"):
        _source(bb, _cfg(corpus, options_per_type={"scss": 7}))
    with pytest.raises(SelfSupError, match=r"'scc' needs at least 8 clusters.*selfsup.options_per_type\['scc'\]=4"):
        _source(bb, _cfg(corpus, options_per_type={"scc": 4}))
    _source(bb, _cfg(corpus, options_per_type={"scc": 4}, types=["nss", "scss"]))  # scc not asked for: fine
    small = write_corpus(tmp_path / "small.jsonl", n_docs=2, paras=1, sents=4)  # 8 lines
    with pytest.raises(SelfSupError, match=r"'nss' needs an anchor and 9 option sentences.*\['nss'\]=9.*8 usable"):
        _source(bb, _cfg(small, n_clusters=2, options_per_type={"nss": 9}, types=["nss"]))
