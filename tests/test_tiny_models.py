"""The tiny random models of tests/tiny_models.py load by path like real checkpoints and keep each family's layout."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tiny_models import FAMILIES, WORDS, build_inputs_with_special_tokens, build_tiny

SENT = "The movie was GREAT!"
PAIR = ("it was good", "yes , about sports ?")

ARCH = {"bert": "BertModel", "bert-mlm": "BertForMaskedLM", "roberta-mlm": "RobertaForMaskedLM",
        "t5": "T5ForConditionalGeneration", "gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}

# the expected tokens of tokenizer(SENT) and tokenizer(*PAIR)
W = ["the", "movie", "was", "great", "!"]
A, B = ["it", "was", "good"], ["yes", ",", "about", "sports", "?"]
LAYOUT = {
    "bert": (["[CLS]", *W, "[SEP]"], ["[CLS]", *A, "[SEP]", *B, "[SEP]"]),
    "bert-mlm": (["[CLS]", *W, "[SEP]"], ["[CLS]", *A, "[SEP]", *B, "[SEP]"]),
    "roberta-mlm": (["<s>", *W, "</s>"], ["<s>", *A, "</s>", "</s>", *B, "</s>"]),
    "t5": ([*W, "</s>"], [*A, "</s>", *B, "</s>"]),
    "gpt2": (W, A + B),
    "llama": (["<s>", *W], ["<s>", *A, "<s>", *B]),
}


def auto_model_class(family):
    import transformers as tf
    return {"bert": tf.AutoModel, "bert-mlm": tf.AutoModelForMaskedLM, "roberta-mlm": tf.AutoModelForMaskedLM,
            "t5": tf.AutoModelForSeq2SeqLM, "gpt2": tf.AutoModelForCausalLM, "llama": tf.AutoModelForCausalLM}[family]


def test_vocabulary_covers_the_words_tests_use():
    assert 250 <= len(WORDS) <= 400 and len(WORDS) == len(set(WORDS))
    assert all(w == w.lower() and " " not in w for w in WORDS)
    needed = ("great terrible good bad okay awful wonderful boring negative positive yes no maybe world sports "
              "business tech subjective objective correct incorrect it was is this about answer the a movie film "
              "and . , ? ! :").split()
    assert not set(needed) - set(WORDS)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_loads_by_path_like_a_real_checkpoint(family, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    path = build_tiny(family, tmp_path)
    assert path == tmp_path / family and (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert sum(p.stat().st_size for p in path.iterdir()) < 1_000_000
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(family, tmp_path, seed=123) == path  # idempotent: an existing build is returned as is
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime

    cfg = AutoConfig.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    model = auto_model_class(family).from_pretrained(path, use_safetensors=True).eval()
    assert cfg.architectures == [ARCH[family]] and type(model).__name__ == ARCH[family]
    assert tok.is_fast and tok.model_max_length == 128

    # ids agree between tokenizer, config and model
    assert cfg.vocab_size == len(tok) == model.get_input_embeddings().weight.shape[0]
    assert cfg.pad_token_id == tok.pad_token_id is not None
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(tok, name) is not None:
            assert getattr(cfg, name) == getattr(tok, name)

    # the family's special-token layout, single and pair; case- and leading-space-insensitive words
    single, pair = LAYOUT[family]
    enc = tok(SENT)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == single
    pair_enc = tok(*PAIR)
    assert tok.convert_ids_to_tokens(pair_enc["input_ids"]) == pair
    plain = tok(SENT, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(plain) == W and tok.unk_token_id not in plain
    assert tok(" great", add_special_tokens=False)["input_ids"] == tok("Great", add_special_tokens=False)["input_ids"]
    assert tok("zyzzyva", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    assert build_inputs_with_special_tokens(tok, plain) == enc["input_ids"]
    a, b = (tok(t, add_special_tokens=False)["input_ids"] for t in PAIR)
    assert build_inputs_with_special_tokens(tok, a, b) == pair_enc["input_ids"]
    assert tok.num_special_tokens_to_add() == len(single) - len(W)
    if family.startswith("bert"):
        assert list(enc) == ["input_ids", "token_type_ids", "attention_mask"]
        assert pair_enc["token_type_ids"] == [0] * (len(A) + 2) + [1] * (len(B) + 1)
        assert (tok.pad_token_id, tok.mask_token, tok.cls_token, tok.sep_token) == (0, "[MASK]", "[CLS]", "[SEP]")
    else:  # like the real tokenizers: no token_type_ids, so model(**tok(...)) works for every family
        assert list(enc) == ["input_ids", "attention_mask"]
    if family == "roberta-mlm":
        assert (tok.pad_token_id, tok.mask_token, cfg.max_position_embeddings) == (1, "<mask>", 130)
    if family == "t5":
        sentinels = [f"<extra_id_{i}>" for i in range(10)]
        ids = tok.convert_tokens_to_ids(sentinels)
        assert ids == sorted(ids, reverse=True) and ids[0] == len(tok) - 1 and tok.unk_token_id not in ids
        assert tok.extra_special_tokens == sentinels  # transformers 5's name for additional_special_tokens
        assert tok("the <extra_id_0> was great")["input_ids"][1] == ids[0]
        assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, cfg.decoder_start_token_id) == (0, 1, 2, 0)
    if family == "gpt2":
        assert tok.bos_token == tok.eos_token == tok.pad_token == "<|endoftext|>" and cfg.n_positions == 128
    if family == "llama":
        # the post-processor prepends <s>; transformers 5 does not persist add_bos_token, so it reads False
        assert (tok.bos_token, tok.eos_token, tok("okay")["input_ids"][0]) == ("<s>", "</s>", tok.bos_token_id)
        assert cfg.max_position_embeddings == 128 and cfg.num_key_value_heads == 1

    # a padded batch goes through the model with the expected output shape
    text = ["it was [MASK] ." if family.startswith("bert") else "it was <mask> ." if family == "roberta-mlm"
            else "the film was boring", "the movie was great and the film is good"]
    batch = tok(text, padding=True, return_tensors="pt")
    n, L = batch["input_ids"].shape
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        if family == "t5":
            labels = tok(text_target=["negative", "positive"], padding=True, return_tensors="pt")["input_ids"]
            out = model(**batch, labels=labels)
            assert out.logits.shape == (n, labels.shape[1], len(tok)) and torch.isfinite(out.loss)
        else:
            out = model(**batch)
            if family == "bert":
                assert out.last_hidden_state.shape == (n, L, cfg.hidden_size) == (2, L, 32)
            else:
                assert out.logits.shape == (n, L, len(tok))
    if family in ("bert-mlm", "roberta-mlm"):
        assert (batch["input_ids"][0] == tok.mask_token_id).sum() == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_weights_are_deterministic_in_the_seed(family, tmp_path):
    one, two, other = (load_file(build_tiny(family, tmp_path / d, seed=s) / "model.safetensors")
                       for d, s in (("a", 0), ("b", 0), ("c", 1)))
    assert one.keys() == two.keys() == other.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not all(torch.equal(one[k], other[k]) for k in one)
    assert all(t.dtype == torch.float32 for t in one.values())
    cfg = json.loads((tmp_path / "a" / family / "config.json").read_text())
    assert cfg["architectures"] == [ARCH[family]]


@pytest.mark.parametrize("family,task_type", [("gpt2", "CAUSAL_LM"), ("t5", "SEQ_2_SEQ_LM"),
                                              ("llama", "CAUSAL_LM")])
def test_peft_prompt_tuning_wraps_the_tiny_models(family, task_type, tmp_path):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoTokenizer

    path = build_tiny(family, tmp_path)
    tok = AutoTokenizer.from_pretrained(path)
    model = get_peft_model(auto_model_class(family).from_pretrained(path),
                           PromptTuningConfig(task_type=task_type, num_virtual_tokens=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("prompt_encoder" in n for n in trainable)
    batch = tok(["the movie was great", "it was bad"], padding=True, return_tensors="pt")
    n, L = batch["input_ids"].shape
    if family == "t5":
        labels = tok(text_target=["positive", "negative"], return_tensors="pt")["input_ids"]
        out = model(**batch, labels=labels)
        assert out.logits.shape == (n, labels.shape[1], len(tok))
    else:
        out = model(**batch, labels=batch["input_ids"])
        assert out.logits.shape == (n, L + 4, len(tok))
    out.loss.backward()
    grads = [p.grad for n_, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
