"""MPT's init from task names: ``task-names`` (one row per labelled source-task name, resolved as the ``labelled``
source resolves them for the target) and ``target-name`` (MPT's PT baseline: the target's own name), each followed
by frequent tokens sampled as the ``vocab`` init samples them; checked against rows computed here from the tokenizer
and the embedding table."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import NEG, POS, write_dataset
from workbench.config import ConfigError, FewShotConfig, LabelledConfig, MetaTrainConfig, PromptConfig
from workbench.engine.backbones import load_backbone
from workbench.engine.data import list_datasets, load_dataset
from workbench.learn.inits import InitContext, make_prompt


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def bb(tiny, request):
    return load_backbone(tiny[request.param])


@pytest.fixture
def sources(toy_data):
    """The toy data folder plus two sources whose names use "_" and "-"."""
    write_dataset(toy_data, "movie_reviews", seed=1)
    write_dataset(toy_data, "film-talk", seed=2)
    return toy_data


def expected(bb, names: list[str], length: int, seed: int = 13) -> torch.Tensor:
    """Row i = mean embedding of name i's tokens ("_"/"-" -> " "); the rest = the ``vocab`` init's first rows (the
    same seeded permutation of the same frequent pool, so its prefix)."""
    table = bb.embeddings.weight.detach().float().cpu()
    rows = [table[bb.tokenizer(n.replace("_", " ").replace("-", " "), add_special_tokens=False)["input_ids"]].mean(0)
            for n in names]
    rest, _ = make_prompt("vocab", InitContext(bb, PromptConfig(length=length - len(names)), seed))
    return torch.cat([torch.stack(rows), rest])


def ctx(bb, length=6, labelled=None, **extra):
    cfg = FewShotConfig(labelled=labelled or LabelledConfig())
    return InitContext(bb, PromptConfig(length=length), 13, dataset=load_dataset("toy"), extras={"config": cfg, **extra})


def test_task_names_are_the_explicit_sources_then_frequent_tokens(bb, sources):
    p, prov = make_prompt("task-names", ctx(bb, labelled=LabelledConfig(datasets=["movie_reviews", "film-talk"])))
    assert prov["names"] == ["movie_reviews", "film-talk"] and p.shape == (6, bb.hidden_size)
    assert torch.allclose(p, expected(bb, ["movie_reviews", "film-talk"], 6), atol=1e-6)


def test_task_names_resolve_a_source_configuration_for_the_target(bb, sources):
    everything = list_datasets()  # the toy folder and whatever else is on the data path
    loo = LabelledConfig(sources="leave-one-out")
    _, prov = make_prompt("task-names", ctx(bb, length=len(everything) + 1, labelled=loo))
    assert sorted(prov["names"]) == sorted(d for d in everything if d != "toy")  # every dataset but the target
    assert {"film-talk", "movie_reviews", "toypair"} <= set(prov["names"])
    cfg = MetaTrainConfig(method="fomaml", source="labelled", target="movie_reviews", labelled=loo,
                          prompt=PromptConfig(length=len(everything) + 1))
    p, prov = make_prompt("task-names", InitContext(bb, cfg.prompt, 13, extras={"config": cfg}))  # as meta-train
    assert "toy" in prov["names"] and "movie_reviews" not in prov["names"]
    assert torch.allclose(p, expected(bb, prov["names"], len(everything) + 1), atol=1e-6)


def test_target_name_is_mpt_pt_baseline(bb, sources):
    p, prov = make_prompt("target-name", ctx(bb, length=4))
    assert prov["names"] == ["toy"] and torch.allclose(p, expected(bb, ["toy"], 4), atol=1e-6)
    with pytest.raises(ConfigError, match="needs a target dataset"):
        make_prompt("target-name", InitContext(bb, PromptConfig(length=4), 13))


def test_a_prompt_shorter_than_the_names_is_refused_naming_the_knob(bb, sources):
    with pytest.raises(ConfigError, match=r"3 names .*prompt.length=2.*--prompt-length.*labelled.datasets"):
        make_prompt("task-names", ctx(bb, length=2, labelled=LabelledConfig(datasets=["mr", "film-talk", "cola"])))
    with pytest.raises(ConfigError, match="among its own sources"):  # the target as a source: leakage, refused
        make_prompt("task-names", ctx(bb, labelled=LabelledConfig(datasets=["toy"])))


def test_auto_sources_are_the_labelled_sources_selection_made_once(tiny, sources, monkeypatch):
    from workbench.learn import meta_inits
    from workbench.tasks import labelled
    bb = load_backbone(tiny["bert"])
    for name, word in (("movie_reviews", "film"), ("film-talk", "story")):  # texts that are not toy's
        rows = [{"text": f"{word} {w} {i} {j}", "label": int(w in POS)} for i in range(6) for j in range(2)
                for w in (POS[i % 4], NEG[i % 4])]
        for split in ("train", "test"):
            (sources / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(labelled, "list_datasets", lambda: ["toy", "movie_reviews", "film-talk"])
    monkeypatch.setattr(meta_inits, "_SOURCE_NAMES", {})
    calls = []
    real = meta_inits.make_source
    monkeypatch.setattr(meta_inits, "make_source", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    lc = LabelledConfig(k=2, seeds=[13], auto_top=2, auto_alpha=0.99)
    p, prov = make_prompt("task-names", ctx(bb, labelled=lc))
    cfg = MetaTrainConfig(method="fomaml", source="labelled", target="toy", labelled=lc, prompt=PromptConfig(length=6))
    assert prov["names"] == labelled.labelled_factory(cfg, bb, target="toy").info["sources"]
    assert 1 <= len(prov["names"]) <= 2 and "toy" not in prov["names"]
    assert torch.allclose(p, expected(bb, prov["names"], 6), atol=1e-6)
    make_prompt("task-names", InitContext(bb, PromptConfig(length=6), 21, dataset=load_dataset("toy"),
                                          extras={"config": FewShotConfig(labelled=lc)}))  # another seed
    assert len(calls) == 1
