"""Config round trips and overrides; the init registry."""
from __future__ import annotations

import json

import pytest
import torch

from workbench.engine.backbones import load_backbone
from workbench.config import ConfigError, FewShotConfig, PromptConfig, TuneConfig, apply_overrides, from_dict, to_json
from workbench.learn.inits import INITS, InitContext, make_prompt
from workbench.engine.templates import resolve_format
from workbench.config import TaskConfig


def test_config_round_trips_through_json():
    cfg = FewShotConfig(datasets=["sst2", "mr"], k=8, tune=TuneConfig(lr=0.3, steps=7))
    back = from_dict(FewShotConfig, json.loads(to_json(cfg)))
    assert back == cfg


def test_overrides_are_typed_and_checked():
    cfg = apply_overrides(FewShotConfig(), ["tune.lr=0.03", "prompt.length=7", "prompt.pool_prompt=true",
                                            "seeds=1,2", "task.verbalizer=bad,good"])
    assert cfg.tune.lr == 0.03 and cfg.prompt.length == 7 and cfg.prompt.pool_prompt is True
    assert cfg.seeds == [1, 2] and cfg.task.verbalizer == ["bad", "good"]
    with pytest.raises(ConfigError, match="unknown config key 'tune.lrr'"):
        apply_overrides(FewShotConfig(), ["tune.lrr=1"])
    with pytest.raises(ConfigError, match="tune.steps expects int"):
        apply_overrides(FewShotConfig(), ["tune.steps=many"])
    with pytest.raises(ConfigError, match="tune.optimizer must be one of"):
        apply_overrides(FewShotConfig(), ["tune.optimizer=sgd"])


def test_unknown_keys_in_a_config_file_are_named():
    with pytest.raises(ConfigError, match="unknown config key 'tune.speed'"):
        from_dict(FewShotConfig, {"tune": {"speed": 3}})


@pytest.fixture(scope="module")
def bert(tiny):
    return load_backbone(tiny["bert"])


def ctx(bb, seed=0, **kw):
    fmt = resolve_format("toy", "single", ["negative", "positive"], bb.family, TaskConfig())
    return InitContext(bb, PromptConfig(length=kw.pop("length", 6), **kw), seed=seed, fmt=fmt)


@pytest.mark.parametrize("name", ["random", "vocab", "labels"])
def test_inits_are_deterministic_per_seed_and_have_the_prompt_shape(bert, name):
    a, _ = make_prompt(name, ctx(bert, 1))
    b, _ = make_prompt(name, ctx(bert, 1))
    assert a.shape == (6, bert.hidden_size)
    torch.testing.assert_close(a, b)
    if name != "labels":  # labels are the same words whatever the seed
        c, _ = make_prompt(name, ctx(bert, 2))
        assert not torch.allclose(a, c)


def test_random_init_matches_the_embedding_scale(bert):
    p, prov = make_prompt("random", ctx(bert, 0, length=200))
    table_std = bert.embeddings.weight.std().item()
    assert abs(p.std().item() - table_std) < 0.2 * table_std and prov["std"] == pytest.approx(table_std)


def test_vocab_and_text_inits_are_rows_of_the_embedding_table(bert):
    table = bert.embeddings.weight.detach()
    p, prov = make_prompt("vocab", ctx(bert, 3))
    torch.testing.assert_close(p, table[torch.tensor(prov["token_ids"])])
    assert not set(prov["token_ids"]) & set(bert.tokenizer.all_special_ids)
    t, prov = make_prompt("text", ctx(bert, 0, init_text="great movie"))
    ids = prov["token_ids"]
    assert len(ids) == 2
    torch.testing.assert_close(t, table[torch.tensor([ids[i % 2] for i in range(6)])])  # repeated to L


def test_text_init_needs_text_and_unknown_inits_list_the_registry(bert):
    with pytest.raises(ConfigError, match="prompt.init_text"):
        make_prompt("text", ctx(bert))
    with pytest.raises(ConfigError, match="registered: .*random"):
        make_prompt("nope", ctx(bert))
    assert {"random", "vocab", "text", "labels", "file"} <= set(INITS)
