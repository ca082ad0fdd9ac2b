"""The ``vocab`` init's token frequencies: from the brown corpus on the data path; vocabulary order only when there is
no such corpus; a malformed corpus is an error naming its file and line, never a silent fallback."""
from __future__ import annotations

import json

import pytest

from workbench.config import PromptConfig
from workbench.engine.backbones import load_backbone
from workbench.engine.data import DataError, find_corpus
from workbench.learn import inits
from workbench.learn.inits import InitContext, make_prompt


@pytest.fixture(scope="module")
def bert(tiny):
    return load_backbone(tiny["bert"])


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty data folder on WORKBENCH_DATA, a working directory with no data folders near it, no cached ranking."""
    root = tmp_path / "data"
    (root / "unlabeled").mkdir(parents=True)
    cwd = tmp_path / "work" / "cwd"
    cwd.mkdir(parents=True)
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(inits, "_FREQ_CACHE", {})
    return root


def vocab_prompt(bb):
    return make_prompt("vocab", InitContext(bb, PromptConfig(length=4), seed=0))


def test_no_brown_corpus_falls_back_to_vocabulary_order(bert, data_root):
    assert find_corpus("brown") is None, "a brown corpus outside the test's data folder is on the search path"
    _, prov = vocab_prompt(bert)
    assert prov["frequency_source"] == "vocab-order"
    ranked, _ = inits.frequent_tokens(bert)
    assert ranked == sorted(ranked) and not set(ranked) & set(bert.tokenizer.all_special_ids)


def test_a_malformed_brown_corpus_fails_the_vocab_init_naming_file_and_line(bert, data_root):
    brown = data_root / "unlabeled" / "brown.jsonl"
    good = json.dumps({"text": "the movie was great and the film is good"}) + "\n"
    brown.write_text(good + '{"text": "the film was\n')
    with pytest.raises(DataError, match=f"{brown}:2: malformed JSON"):
        vocab_prompt(bert)
    brown.write_text(good + json.dumps({"doc": 3}) + "\n")
    with pytest.raises(DataError, match=f"{brown}:2: missing key 'text'"):
        vocab_prompt(bert)
    brown.write_text("\n")
    with pytest.raises(DataError, match=f"{brown}: the corpus holds no texts"):
        vocab_prompt(bert)
    brown.write_text(good * 3)  # repaired: the failures cached nothing
    _, prov = vocab_prompt(bert)
    assert prov["frequency_source"] == "brown (3 lines)"
    ranked, _ = inits.frequent_tokens(bert)
    assert bert.tokenizer.convert_ids_to_tokens(ranked[0]) in {"the", "movie", "was", "great", "and", "film", "is",
                                                               "good"}
