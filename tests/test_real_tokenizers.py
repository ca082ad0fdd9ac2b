"""The heads, the prompt splice, saved prompts and a few-shot run through realistic tokenizers (tiny_models.build_tiny_real,
trained on the Brown corpus): byte-level BPE whose tokens carry their leading space (RoBERTa, GPT-2) and
SentencePiece-style Unigram with "▁" pieces and sentinels (T5, Llama), where label words split into several pieces.

Every expected value is computed here independently of the package: label tokens are read off the tokenisation of the
whole sentence with the label word in place (by character offsets), and scores come from the model's own forward pass.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tiny_models import N_SENTINELS, REAL_FAMILIES
from workbench.config import BackboneConfig, ConfigError, FewShotConfig, PromptConfig, TaskConfig, TuneConfig
from workbench.engine.backbones import load_backbone
from workbench.engine.data import Example
from workbench.engine.heads import make_head
from workbench.engine.runs import load_prompt, save_prompt
from workbench.engine.templates import resolve_format

BPE = ("roberta-mlm", "gpt2")
LEADING = {"roberta-mlm": ("<s>", 0), "llama": ("<s>", 1)}  # families whose tokenizer adds a leading special token
SPECIAL_IDS = {"roberta-mlm": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, "gpt2": {},
               "t5": {"<pad>": 0, "</s>": 1, "<unk>": 2}, "llama": {"<unk>": 0, "<s>": 1, "</s>": 2}}
TEMPLATE = "{text} It was {mask}."
TEMPLATES = [TEMPLATE, "{mask} News: {text}", "{text} All in all, it was {mask}!", "{text} It was \"{mask}\".",
             "{text} (Mood:{mask})"]
WORDS = ["terrible", "great", "wonderful"]  # several pieces / one piece after a space (checked below)
EXAMPLES = [Example("The jury praised the City of Atlanta for the manner of the election.", 0),
            Example("Mr. Kennedy said nothing", 1), Example("A boring speech, indeed", 2)]

_cache: dict = {}


def backbone(tiny_real, family):
    if family not in _cache:
        _cache[family] = load_backbone(BackboneConfig(name=tiny_real[family]))
    return _cache[family]


def head_for(bb, words=WORDS, template=TEMPLATE, norm="mean", position="auto", L=4):
    tcfg = TaskConfig(template=template, verbalizer=list(words), length_norm=norm)
    fmt = resolve_format("real", "single", [f"c{i}" for i in range(len(words))], bb.family, tcfg)
    return make_head(bb, fmt, tcfg, PromptConfig(length=L, position=position), 48)


def rand_prompt(bb, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, bb.hidden_size, generator=g) * bb.embeddings.weight.std().item()


def in_context(tok, template, text, word, specials=True):
    """Ids of ``template`` filled with ``text`` and the label ``word`` itself, and the positions of the word's tokens
    (those overlapping the word or the space just before it, which "Ġ"/"▁" tokens carry)."""
    before, after = template.replace("{text}", text).split("{mask}")
    start, end = len(before), len(before) + len(word)
    enc = tok(before + word + after, add_special_tokens=specials, return_offsets_mapping=True,
              return_special_tokens_mask=True)
    lo = start - 1 if before[-1:].isspace() else start
    pos = [i for i, ((s, e), sp) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"]))
           if not sp and s < end and (e > lo or (s == e == start))]
    assert pos == list(range(pos[0], pos[-1] + 1)), "the label's tokens are not contiguous"
    return enc["input_ids"], pos


def context_label_ids(tok, template, word, text=EXAMPLES[1].text_a):
    ids, pos = in_context(tok, template, text, word, specials=False)
    return [ids[p] for p in pos]


def reduce(lp: torch.Tensor, norm: str) -> torch.Tensor:
    return lp.mean() if norm == "mean" else lp.sum()


# ----------------------------------------------------------------------------------------------- the tokenizers
@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_realistic_tokenizers_keep_each_familys_conventions(tiny_real, family):
    tok = AutoTokenizer.from_pretrained(tiny_real[family])
    vocab, n = tok.get_vocab(), len(tok)
    assert 800 <= n <= 2000 + N_SENTINELS
    assert {t: vocab[t] for t in SPECIAL_IDS[family]} == SPECIAL_IDS[family]
    if family == "roberta-mlm":
        assert tok.mask_token_id == n - 1
    if family == "gpt2":
        assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == n - 1
    if family == "t5":  # sentinels at the end, <extra_id_0> the highest id, like T5
        assert [vocab[f"<extra_id_{i}>"] for i in range(N_SENTINELS)] == list(range(n - 1, n - 1 - N_SENTINELS, -1))
    core = tok("It was great.", add_special_tokens=False)["input_ids"]
    lead = [LEADING[family][1]] if family in LEADING else []
    tail = {"roberta-mlm": [2], "t5": [1]}.get(family, [])
    assert tok("It was great.")["input_ids"] == lead + core + tail
    spaced, bare = (tok.convert_ids_to_tokens(tok(w, add_special_tokens=False)["input_ids"]) for w in (" great", "great"))
    if family in BPE:  # the leading space is part of the token, and the bare word is another tokenisation
        assert spaced[0].startswith("Ġ") and spaced != bare
    else:
        assert spaced[0].startswith("▁") and spaced == bare
    pieces = {w: len(context_label_ids(tok, TEMPLATE, w)) for w in WORDS}
    assert pieces["great"] == 1 and pieces["terrible"] > 1 and pieces["wonderful"] > 1, pieces  # the tests' premise


def test_realistic_models_are_saved_like_checkpoints_and_built_once(tiny_real):
    from tiny_models import build_tiny_real
    for family, path in tiny_real.items():
        path = Path(path)
        assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
        assert not list(path.glob("*.bin")) and sum(f.stat().st_size for f in path.iterdir()) < 2_000_000
        mtime = (path / "tokenizer.json").stat().st_mtime_ns
        assert build_tiny_real(family, path.parent, "no-corpus-needed.jsonl") == path  # returned as is, not retrained
        assert (path / "tokenizer.json").stat().st_mtime_ns == mtime


# ----------------------------------------------------------------------------------------------- label words
@pytest.mark.parametrize("family", REAL_FAMILIES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_label_words_are_tokenised_as_they_appear_in_context(tiny_real, family, template):
    bb = backbone(tiny_real, family)
    tok = bb.tokenizer
    if causal_refuses(bb, template):
        return
    head = head_for(bb, template=template)
    want = [context_label_ids(tok, template, w) for w in WORDS]
    assert head.label_pieces() == want
    if family in BPE and " {mask}" in template:  # " great", not "great"
        assert want[1] != tok(WORDS[1], add_special_tokens=False)["input_ids"]
    if head.family in ("mlm", "causal"):
        assert head.pieces == want
    else:  # seq2seq: the decoder target is the sentinel, then the label's pieces
        sentinel = tok.convert_tokens_to_ids("<extra_id_0>")
        for c, p in enumerate(want):
            assert head.target[c, :1 + len(p)].tolist() == [sentinel] + p
            assert head.valid[c].tolist() == [0.0] + [1.0] * len(p) + [0.0] * (head.valid.shape[1] - 1 - len(p))


@pytest.mark.parametrize("family", REAL_FAMILIES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_model_inputs_equal_the_sentence_with_the_label_in_place(tiny_real, family, template):
    """The ids a head feeds the model are those of the whole sentence with the label word in place: the mask tokens
    stand exactly where the label's pieces are (masked LM), the context plus the label pieces is the sentence (causal
    LM), and the sentinel replaces the label (seq2seq)."""
    bb = backbone(tiny_real, family)
    tok = bb.tokenizer
    if causal_refuses(bb, template):
        return
    head = head_for(bb, template=template)
    for ex in EXAMPLES:
        for word in WORDS:
            ids, pos = in_context(tok, template, ex.text_a, word)
            pieces = [ids[p] for p in pos]
            if head.family == "mlm":
                masked = [tok.mask_token_id if i in pos else t for i, t in enumerate(ids)]
                assert head.encode(ex, len(pieces))["input_ids"] == masked
            elif head.family == "causal":
                assert head.encode(ex)["input_ids"] + pieces == ids[:pos[-1] + 1]
            else:  # (what follows the sentinel may differ: T5's Metaspace puts a "▁" before the "." there)
                enc = head.encode(ex)["input_ids"]
                assert enc[:pos[0] + 1] == ids[:pos[0]] + [tok.convert_tokens_to_ids("<extra_id_0>")]


# ----------------------------------------------------------------------------------------------- scores
def forward_logits(bb, ids, positions_of_prompt_rows, prompt, offset, **kw):
    """The model's own forward pass over ``ids`` (one sequence) with ``prompt`` inserted at ``offset``; returns the
    output logits at the sequence's own positions (prompt rows dropped) and log-softmaxed."""
    emb = bb.model.get_input_embeddings()(torch.tensor([ids]))
    L = 0 if prompt is None else prompt.shape[0]
    if L:
        emb = torch.cat([emb[:, :offset], prompt.unsqueeze(0), emb[:, offset:]], dim=1)
    out = bb.model(inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2], dtype=torch.long), **kw).logits[0]
    if positions_of_prompt_rows:  # decoder-only / encoder-only: drop the prompt's rows
        out = torch.cat([out[:offset], out[offset + L:]])
    return out.float().log_softmax(-1)


def direct_score(bb, family, template, text, word, prompt, offset, norm):
    """The label score of ``word`` for ``text``, straight from the model (see the module docstring)."""
    tok = bb.tokenizer
    ids, pos = in_context(tok, template, text, word)
    pieces = [ids[p] for p in pos]
    if family == "roberta-mlm":  # the label's pieces masked, each predicted at its own position
        masked = [tok.mask_token_id if i in pos else t for i, t in enumerate(ids)]
        logp = forward_logits(bb, masked, True, prompt, offset)
        lp = torch.stack([logp[p, t] for p, t in zip(pos, pieces)])
    elif family == "t5":  # the label replaced by the sentinel; decoder target = sentinel + pieces
        sentinel = tok.convert_tokens_to_ids("<extra_id_0>")
        enc = tok(template.replace("{text}", text).replace("{mask}", "<extra_id_0>"))["input_ids"]
        logp = forward_logits(bb, enc, False, prompt, offset, labels=torch.tensor([[sentinel] + pieces]))
        lp = torch.stack([logp[1 + j, t] for j, t in enumerate(pieces)])
    else:  # causal: each piece predicted from everything before it
        logp = forward_logits(bb, ids[:pos[-1] + 1], True, prompt, offset)
        lp = torch.stack([logp[p - 1, t] for p, t in zip(pos, pieces)])
    return reduce(lp, norm)


OFFSET = {"roberta-mlm": 1, "llama": 1, "gpt2": 0, "t5": 0}  # after <s> where the tokenizer adds it


@pytest.mark.parametrize("family", REAL_FAMILIES)
@pytest.mark.parametrize("norm", ["mean", "sum"])
@pytest.mark.parametrize("prompt_kind", ["none", "empty", "random"])
@pytest.mark.parametrize("template", [TEMPLATE, TEMPLATES[3]])
def test_multi_piece_labels_score_as_the_models_own_forward_pass(tiny_real, family, norm, prompt_kind, template):
    """Every head scores one-piece and several-piece labels (mean or sum of piece log-probs, task.length_norm) as the
    model itself does with the label in context; a zero-length prompt is the unprompted model."""
    bb = backbone(tiny_real, family)
    head = head_for(bb, template=template, norm=norm)
    assert head.offset == OFFSET[family]
    prompt = {"none": None, "empty": torch.zeros(0, bb.hidden_size), "random": rand_prompt(bb)}[prompt_kind]
    with torch.no_grad():
        logits, feats = head.forward(head.batch(EXAMPLES), prompt)
        want = torch.stack([torch.stack([direct_score(bb, family, template, ex.text_a, w, prompt, head.offset, norm)
                                         for w in WORDS]) for ex in EXAMPLES])
    assert logits.shape == want.shape == (len(EXAMPLES), len(WORDS)) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_prompt_is_spliced_after_the_leading_special_token(tiny_real, family):
    bb = backbone(tiny_real, family)
    head = head_for(bb)
    batch = head.batch(EXAMPLES)
    batch = batch["groups"][head.lengths[0]] if "groups" in batch else batch  # MLM: one batch per piece count
    prompt, L = rand_prompt(bb), 4
    ids = batch["input_ids"]
    bare = [tok_ids[0] for tok_ids in bb.tokenizer([ex.text_a for ex in EXAMPLES], add_special_tokens=False)["input_ids"]]
    first = [LEADING[family][1]] * len(EXAMPLES) if family in LEADING else bare  # nothing added in front otherwise
    assert ids[:, 0].tolist() == first
    off = OFFSET[family]
    with torch.no_grad():
        sp = head.spliced(batch, prompt)
        emb = bb.embed(ids)
    torch.testing.assert_close(sp.inputs_embeds[:, off:off + L], prompt.expand(len(EXAMPLES), -1, -1))
    torch.testing.assert_close(sp.inputs_embeds[:, :off], emb[:, :off])
    torch.testing.assert_close(sp.inputs_embeds[:, off + L:], emb[:, off:])
    assert sp.attention_mask[:, off:off + L].all() and sp.prompt_mask.sum(1).tolist() == [L] * len(EXAMPLES)
    outside = torch.cat([sp.attention_mask[:, :off], sp.attention_mask[:, off + L:]], dim=1)
    torch.testing.assert_close(outside, batch["attention_mask"])



def causal_refuses(bb, template) -> bool:
    """A causal LM reads a template only up to {mask}: one with text after it is refused by name (True)."""
    if bb.family != "causal" or template.index("{mask}") > template.index("{text}"):
        return False
    with pytest.raises(ConfigError, match="causal LM reads the template only up to"):
        head_for(bb, template=template)
    return True


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_lm_gets_a_template_with_the_text_before_the_label(tiny_real, family):
    """The agnews preset puts the label first ('{mask} News: {text}'): for a causal LM, which reads the template only
    up to {mask}, the preset's template is replaced by one with the text first, so the scores depend on the text."""
    bb = backbone(tiny_real, family)
    fmt = resolve_format("agnews", "single", ["w", "s", "b", "t"], bb.family, TaskConfig())
    assert fmt.template.index("{text}") < fmt.template.index("{mask}") and fmt.verbalizer[1] == "Sports"
    pair = resolve_format("rte", "pair", ["entailment", "not_entailment"], bb.family, TaskConfig())
    assert pair.template.index("{text_b}") < pair.template.index("{mask}")  # the hypothesis is seen too
    head = make_head(bb, fmt, TaskConfig(), PromptConfig(length=4), 48)
    with torch.no_grad():
        logits, _ = head.forward(head.batch(EXAMPLES), None)
    assert torch.isfinite(logits).all() and not torch.allclose(logits[0], logits[1])


# ----------------------------------------------------------------------------------------------- saved prompts, runs
@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_saved_prompt_round_trips_through_peft_and_scores_alike(tiny_real, family, tmp_path):
    """A prompt saved as a PEFT adapter loads back (workbench and PEFT) unchanged; PEFT's model with it gives the
    model's own outputs with the prompt first, which is how the package scores with prompt.position="prepend"."""
    peft = pytest.importorskip("peft")
    bb = backbone(tiny_real, family)
    L, prompt = 5, rand_prompt(bb, L=5, seed=3)
    save_prompt(tmp_path / "adapter", prompt, bb, {"note": "real"})
    back, meta = load_prompt(tmp_path / "adapter")
    torch.testing.assert_close(back, prompt)
    assert meta["workbench"]["note"] == "real" and meta["adapter_config"]["num_virtual_tokens"] == L
    model = peft.PeftModel.from_pretrained(load_backbone(tiny_real[family]).model, str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight.detach(), prompt)
    tok, ex = bb.tokenizer, EXAMPLES[0]
    ids, pos = in_context(tok, TEMPLATE, ex.text_a, WORDS[0])
    with torch.no_grad():
        if family == "t5":
            enc = tok(TEMPLATE.replace("{text}", ex.text_a).replace("{mask}", "<extra_id_0>"))["input_ids"]
            labels = torch.tensor([[tok.convert_tokens_to_ids("<extra_id_0>")] + [ids[p] for p in pos]])
            got = model(input_ids=torch.tensor([enc]), labels=labels).logits[0].float().log_softmax(-1)
            want = forward_logits(bb, enc, False, prompt, 0, labels=labels)
        else:
            got = model(input_ids=torch.tensor([ids])).logits[0, L:].float().log_softmax(-1)
            want = forward_logits(bb, ids, True, prompt, 0)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        head = head_for(bb, position="prepend", L=L)
        logits, _ = head.forward(head.batch([ex]), prompt)
        direct = torch.stack([direct_score(bb, family, TEMPLATE, ex.text_a, w, prompt, 0, "mean") for w in WORDS])
    torch.testing.assert_close(logits[0], direct, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_fewshot_runs_end_to_end_through_a_realistic_tokenizer(tiny_real, toy_data, tmp_path, family):
    from workbench.experiments.fewshot import run_fewshot
    cfg = FewShotConfig(datasets=["toy"], methods=["zero-shot", "random"], k=4, seeds=[13], out=str(tmp_path / "fs"),
                        prompt=PromptConfig(length=4), tune=TuneConfig(steps=2, eval_every=1, max_length=32, lr=0.05))
    cfg.backbone.name = tiny_real[family]
    bb = backbone(tiny_real, family)
    template = resolve_format("toy", "single", ["negative", "positive"], bb.family, TaskConfig()).template
    assert max(len(context_label_ids(bb.tokenizer, template, w)) for w in ("negative", "positive")) > 1
    res = run_fewshot(cfg, progress=False)
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"zero-shot", "random"}
    assert all(0 <= r["test_acc"] <= 1 and r["dev_loss"] == r["dev_loss"] for r in rows.values())
    assert rows["random"]["steps_run"] == 2
    saved = json.loads((tmp_path / "fs" / "results.json").read_text())
    assert [r["method"] for r in saved["rows"]] == [r["method"] for r in res["rows"]]
    adapters = list((tmp_path / "fs").rglob("adapter_model.safetensors"))
    assert len(adapters) == 1
    prompt, meta = load_prompt(adapters[0].parent)
    assert prompt.shape == (4, bb.hidden_size) and torch.isfinite(prompt).all()


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_labels_init_uses_the_label_tokens_the_head_scores(tiny_real, family):
    """The `labels` init's rows are the embeddings of the label words' tokens as they stand in the template (the
    pieces the head scores), not of the words tokenised alone."""
    from workbench.learn.inits import InitContext, make_prompt

    bb = backbone(tiny_real, family)
    template = TEMPLATES[3]  # '{text} It was "{mask}".': no space before the word
    head = head_for(bb, template=template)
    ids = [i for p in head.label_pieces() for i in p]
    L = len(ids)
    prompt, info = make_prompt("labels", InitContext(bb, PromptConfig(length=L, init="labels"), 13, fmt=head.fmt))
    assert info["token_ids"] == ids
    torch.testing.assert_close(prompt, bb.embeddings.weight[torch.tensor(ids)].detach().float())
