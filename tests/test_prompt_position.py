"""``prompt.position=append`` (MPT's layout): the prompt after each example's input, before a trailing special token,
so the offsets differ per example of a padded batch. Every head is compared against a direct computation that
builds the spliced embeddings by hand, one example at a time without padding."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from test_heads import PAIR, SINGLE, backbone, rand_prompt
from tiny_models import FAMILIES
from workbench.config import PromptConfig, TaskConfig
from workbench.engine.backbones import load_backbone
from workbench.engine.heads import make_head
from workbench.engine.joint import joint_forward
from workbench.engine.prompts import splice
from workbench.engine.runs import load_prompt, save_prompt
from workbench.engine.templates import resolve_format
from workbench.learn.inits import InitContext, file_init
from workbench.methods.supmer import mixed_logits

L = 3
MULTI = ["very bad", "good"]  # 2 pieces and 1 piece


def head_for(bb, task="single", position="append", **task_kw):
    tcfg = TaskConfig(**task_kw)
    fmt = resolve_format("toy", task, ["negative", "positive"], bb.family, tcfg)
    return make_head(bb, fmt, tcfg, PromptConfig(length=L, position=position), 48)


def by_hand(bb, ids, prompt, at, types=None):
    """Embeddings (1, T+L, d) of ``ids`` with ``prompt`` inserted at ``at``, and the matching token types."""
    e = bb.embed(torch.tensor([ids]))[0]
    emb = torch.cat([e[:at], prompt, e[at:]]).unsqueeze(0)
    if types is None:
        return emb, None
    t = types[:at] + [types[at - 1] if at else 0] * prompt.shape[0] + types[at:]
    return emb, torch.tensor([t])


def manual_encoder(bb, head, ex, prompt):
    enc = head.encode(ex)
    ids, types = enc["input_ids"], enc["token_type_ids"] or [0] * len(enc["input_ids"])
    at = len(ids) - head.trailing
    emb, tt = by_hand(bb, ids, prompt, at, types)
    h = bb.model(inputs_embeds=emb, token_type_ids=tt).last_hidden_state[0]
    keep = torch.ones(h.shape[0], dtype=torch.bool)
    keep[at:at + L] = False
    f = h[keep].mean(0)
    return F.normalize(f, dim=-1) @ head.anchors.T / head.cfg.temperature


def manual_mlm(bb, head, ex, prompt):
    out = []
    for pieces in head.pieces:
        enc = head.encode(ex, len(pieces))
        ids = enc["input_ids"]
        at = len(ids) - head.trailing
        pos = [i for i, t in enumerate(ids) if t == head.tok.mask_token_id]
        assert max(pos) < at  # the masks precede the appended prompt: their positions do not move
        emb, tt = by_hand(bb, ids, prompt, at, enc["token_type_ids"])
        logp = bb.model(inputs_embeds=emb, token_type_ids=tt).logits[0, pos].log_softmax(-1)
        out.append(torch.stack([logp[j, t] for j, t in enumerate(pieces)]).mean())
    return torch.stack(out)


def manual_seq2seq(bb, head, ex, prompt):
    ids = head.encode(ex)["input_ids"]
    at = len(ids) - head.trailing  # before </s>
    emb, _ = by_hand(bb, ids, prompt, at)
    h = bb.model.get_encoder()(inputs_embeds=emb).last_hidden_state
    out = []
    for c in range(head.n_classes):
        dec = bb.model(encoder_outputs=(h,), decoder_input_ids=head.dec_in[c:c + 1]).logits[0].log_softmax(-1)
        lp = dec.gather(-1, head.target[c].unsqueeze(-1)).squeeze(-1)
        out.append((lp * head.valid[c]).sum() / head.valid[c].sum())
    return torch.stack(out)


def manual_causal(bb, head, ex, prompt):
    """Context, then the prompt, then the label pieces; piece j is predicted by the hidden state before it."""
    ctx = head.encode(ex)["input_ids"]
    at = len(ctx) - head.trailing
    out = []
    for pieces in head.pieces:
        emb, _ = by_hand(bb, ctx + pieces, prompt, at)
        logp = bb.model(inputs_embeds=emb).logits[0].log_softmax(-1)
        out.append(torch.stack([logp[len(ctx) + L - 1 + j, t] for j, t in enumerate(pieces)]).mean())
    return torch.stack(out)


MANUAL = {"encoder": manual_encoder, "mlm": manual_mlm, "seq2seq": manual_seq2seq, "causal": manual_causal}


def check_against_manual(bb, head, examples, prompt):
    """``prompt`` (L, d) or (B, L, d)."""
    assert len({len(head.encode(ex)["input_ids"]) for ex in examples}) > 1, "the batch must be padded"
    with torch.no_grad():
        logits, _ = head.forward(head.batch(examples), prompt)
        for i, ex in enumerate(examples):
            p = prompt if prompt.dim() == 2 else prompt[i]
            torch.testing.assert_close(logits[i], MANUAL[bb.family](bb, head, ex, p), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_append_matches_a_direct_computation(tiny, family):
    bb = backbone(tiny, family)
    head = head_for(bb)
    check_against_manual(bb, head, SINGLE, rand_prompt(bb, L))
    check_against_manual(bb, head, SINGLE, rand_prompt(bb, L, B=len(SINGLE), seed=3))


@pytest.mark.parametrize("family", ["bert-mlm", "roberta-mlm", "t5", "gpt2", "llama"])
def test_append_with_multi_piece_labels(tiny, family):
    bb = backbone(tiny, family)
    head = head_for(bb, verbalizer=MULTI)
    check_against_manual(bb, head, SINGLE, rand_prompt(bb, L, seed=5))


@pytest.mark.parametrize("family", ["bert", "bert-mlm", "roberta-mlm", "t5", "gpt2", "llama"])
def test_append_on_text_pairs_goes_before_the_final_special_token(tiny, family):
    """Pairs: the prompt ends segment b (token type of b for BERT), before the last [SEP] / </s>."""
    bb = backbone(tiny, family)
    head = head_for(bb, task="pair")
    prompt = rand_prompt(bb, L, seed=7)
    with torch.no_grad():
        batch = head.batch(PAIR)
        logits, _ = head.forward(batch, prompt)
        sp = head.spliced(batch, prompt)
        for i, ex in enumerate(PAIR):
            enc = head.encode(ex)
            ids, at = enc["input_ids"], len(enc["input_ids"]) - head.trailing
            assert sp.prompt_mask[i].nonzero().flatten().tolist() == list(range(at, at + L))
            if head.trailing:
                torch.testing.assert_close(sp.inputs_embeds[i, at + L], bb.embed(torch.tensor(ids[-1:]))[0])
            if sp.token_type_ids is not None:
                assert sp.token_type_ids[i, at:at + L].tolist() == [enc["token_type_ids"][at - 1]] * L
            alone, _ = head.forward(head.batch([ex]), prompt)
            torch.testing.assert_close(logits[i], alone[0], rtol=1e-4, atol=1e-4)
    if family in ("bert", "roberta-mlm", "t5"):
        assert head.trailing == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_positions_per_example(tiny, family):
    """Offsets are per row; mask positions precede the prompt; causal labels are read after the last prompt vector."""
    bb = backbone(tiny, family)
    head = head_for(bb)
    batch = head.batch(SINGLE)
    sp = head.spliced(batch, rand_prompt(bb, L))
    n = batch["attention_mask"].sum(1)
    assert sp.offset.tolist() == (n - head.trailing).tolist()
    assert len(set(sp.offset.tolist())) > 1
    assert (sp.attention_mask.sum(1) == n + L).all()
    if "mask_pos" in batch:
        assert torch.equal(sp.shift(batch["mask_pos"]), batch["mask_pos"])
    if "last" in batch:  # causal: the prompt's last vector predicts the label
        assert torch.equal(sp.predictor(batch["last"]), batch["last"] + L)
        assert head.trailing == 0 and torch.equal(sp.offset, batch["last"] + 1)


def test_splice_with_equal_per_row_offsets_equals_the_shared_offset():
    g = torch.Generator().manual_seed(0)
    emb, prompt = torch.randn(3, 6, 5, generator=g), torch.randn(3, 2, 5, generator=g)
    am = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    tt = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0]])
    a = splice(emb, am, prompt, 1, tt)
    b = splice(emb, am, prompt, torch.tensor([1, 1, 1]), tt)
    for x, y in zip((a.inputs_embeds, a.attention_mask, a.prompt_mask), (b.inputs_embeds, b.attention_mask,
                                                                        b.prompt_mask)):
        assert torch.equal(x, y)
    pos = torch.tensor([[0, 3], [2, 1], [5, 0]])
    assert torch.equal(a.shift(pos), b.shift(pos))
    assert torch.equal(a.rows(slice(1, 3)).shift(pos[1:]), b.rows(slice(1, 3)).shift(pos[1:]))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_auto_and_prepend_are_unchanged(tiny, family):
    bb = backbone(tiny, family)
    for position, offset in (("auto", 1 if family == "bert" else 0), ("prepend", 0)):
        head = head_for(bb, position=position)
        sp = head.spliced(head.batch(SINGLE), rand_prompt(bb, L))
        assert sp.offset == offset and sp.prompt_mask[:, offset:offset + L].all()


@pytest.mark.parametrize("family", FAMILIES)
def test_joint_pass_with_append_equals_one_pass_per_head(tiny, family):
    bb = backbone(tiny, family)
    h1 = head_for(bb)
    tcfg = TaskConfig(verbalizer=["bad", "okay", "great"])
    fmt3 = resolve_format("three", "single", ["a", "b", "c"], bb.family, tcfg)
    h2 = make_head(bb, fmt3, tcfg, PromptConfig(length=L, position="append"), 48)
    items = [(h1, h1.batch(SINGLE[2:]), rand_prompt(bb, L, seed=1)),
             (h2, h2.batch(SINGLE[:3]), rand_prompt(bb, L, B=3, seed=2))]
    with torch.no_grad():
        for (h, b, p), (lg, ft) in zip(items, joint_forward(items)):
            alone_lg, alone_ft = h.forward(b, p)
            torch.testing.assert_close(lg, alone_lg, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(ft, alone_ft, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="same prompt position"):
        joint_forward([items[0], (head_for(bb, position="auto"), h1.batch(SINGLE), rand_prompt(bb, L))])


@pytest.mark.parametrize("family", ["bert-mlm", "llama"])
def test_supmer_mixup_reads_the_appended_positions(tiny, family):
    """λ = 1 mixes nothing: the mixed logits are the head's own, with per-row offsets."""
    bb = backbone(tiny, family)
    head = head_for(bb)
    prompt = rand_prompt(bb, L)
    qb, ab = head.batch(SINGLE), head.batch(SINGLE[1:] + SINGLE[:1])
    with torch.no_grad():
        oq, oa = head.encode_pass(qb, prompt), head.encode_pass(ab, prompt)
        mixed, _ = mixed_logits(head, qb, ab, oq, oa, 1.0, prompt)
        plain, _ = head.forward(qb, prompt)
    torch.testing.assert_close(mixed, plain, rtol=1e-4, atol=1e-4)


def test_saved_prompt_records_its_position_and_loading_warns_on_a_mismatch(tiny, tmp_path):
    bb = backbone(tiny, "gpt2")
    prompt = rand_prompt(bb, L)
    save_prompt(tmp_path / "a", prompt, bb, {"position": "append"})
    loaded, meta = load_prompt(tmp_path / "a")
    assert meta["position"] == "append" and meta["workbench"]["position"] == "append"
    torch.testing.assert_close(loaded, prompt)
    cfg = PromptConfig(length=L, init="file", init_path=str(tmp_path / "a"))
    with pytest.warns(UserWarning, match=r"trained with prompt.position='append'.*prompt.position='auto'"):
        file_init(InitContext(backbone=bb, cfg=cfg, seed=0))
    same = PromptConfig(length=L, init="file", init_path=str(tmp_path / "a"), position="append")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        file_init(InitContext(backbone=bb, cfg=same, seed=0))
    save_prompt(tmp_path / "b", prompt, bb)  # no position recorded (older runs): nothing to compare
    assert load_prompt(tmp_path / "b")[1]["position"] is None


def test_an_append_prompt_still_loads_in_peft_with_its_position_in_the_metadata(tiny, tmp_path):
    """PEFT cannot express append (it prepends); the adapter loads, and the position travels in its metadata."""
    peft = pytest.importorskip("peft")
    bb = load_backbone(tiny["t5"])  # a fresh copy: PEFT wraps the model
    prompt = rand_prompt(bb, L)
    save_prompt(tmp_path / "a", prompt, bb, {"position": "append"})
    with safe_open(str(tmp_path / "a" / "adapter_model.safetensors"), framework="pt") as f:
        assert f.metadata()["workbench_position"] == "append"
    model = peft.PeftModel.from_pretrained(bb.model, str(tmp_path / "a"))
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight.detach(), prompt)
