"""Every backbone family, with tiny random models loaded by path: shapes, frozen weights, gradients only into the
prompt, learning, exact multi-token label scoring, per-example prompts, and second-order gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tiny_models import FAMILIES
from workbench.engine.backbones import load_backbone
from workbench.config import BackboneConfig, ConfigError, PromptConfig, TaskConfig
from workbench.engine.data import Example
from workbench.engine.heads import make_head
from workbench.engine.templates import resolve_format

EXPECTED = {"bert": "encoder", "bert-mlm": "mlm", "roberta-mlm": "mlm", "t5": "seq2seq", "gpt2": "causal",
            "llama": "causal"}
SINGLE = [Example("the movie was great", 1), Example("a terrible boring film", 0),
          Example("it is good and the film was wonderful", 1), Example("bad", 0)]
PAIR = [Example("the movie was great", 1, "it was good"), Example("a terrible film", 0, "it was bad and boring")]

_cache: dict = {}


def backbone(tiny, family, **kw):
    key = (family, tuple(sorted(kw.items())))
    if key not in _cache:
        _cache[key] = load_backbone(BackboneConfig(name=tiny[family], **kw))
    return _cache[key]


def head_for(bb, task="single", L=4, position="auto", **task_kw):
    tcfg = TaskConfig(**task_kw)
    fmt = resolve_format("toy", task, ["negative", "positive"], bb.family, tcfg)
    return make_head(bb, fmt, tcfg, PromptConfig(length=L, position=position), 48)


def rand_prompt(bb, L=4, B=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (L, bb.hidden_size) if B is None else (B, L, bb.hidden_size)
    return torch.randn(*shape, generator=g) * bb.embeddings.weight.std().item()


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_read_from_config_and_weights_are_frozen(tiny, family):
    bb = backbone(tiny, family)
    assert bb.family == EXPECTED[family]
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["single", "pair"])
def test_scores_shapes_and_gradients_reach_only_the_prompt(tiny, family, task):
    bb = backbone(tiny, family)
    head = head_for(bb, task)
    examples = SINGLE if task == "single" else PAIR
    prompt = rand_prompt(bb).requires_grad_(True)
    logits, feats = head.forward(head.batch(examples), prompt)
    assert logits.shape == (len(examples), 2) and feats.shape == (len(examples), bb.hidden_size)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([e.label for e in examples])).backward()
    assert prompt.grad is not None and torch.isfinite(prompt.grad).all() and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_tuning_the_prompt_lowers_the_loss(tiny, family):
    bb = backbone(tiny, family)
    head = head_for(bb)
    batch = head.batch(SINGLE)
    labels = torch.tensor([e.label for e in SINGLE])
    prompt = rand_prompt(bb).requires_grad_(True)
    opt = torch.optim.Adam([prompt], lr=0.05)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(head.forward(batch, prompt)[0], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]


@pytest.mark.parametrize("family", FAMILIES)
def test_per_example_prompts_equal_one_pass_per_example(tiny, family):
    """A (B, L, d) prompt scores each example as if it ran alone with its own prompt (padding-invariant)."""
    bb = backbone(tiny, family)
    head = head_for(bb)
    prompts = rand_prompt(bb, B=len(SINGLE))
    batched, _ = head.forward(head.batch(SINGLE), prompts)
    for i, ex in enumerate(SINGLE):
        alone, _ = head.forward(head.batch([ex]), prompts[i])
        torch.testing.assert_close(batched[i], alone[0], rtol=1e-4, atol=1e-4)
    shared = rand_prompt(bb)
    a, _ = head.forward(head.batch(SINGLE), shared)
    b, _ = head.forward(head.batch(SINGLE), shared.expand(len(SINGLE), -1, -1))
    torch.testing.assert_close(a, b)


def _manual_causal(bb, head, ex, words, norm):
    tok = bb.tokenizer
    ctx = tok(head.context_template.replace("{text}", ex.text_a), add_special_tokens=True)["input_ids"]
    out = []
    for w in words:
        lab = tok(" " + w, add_special_tokens=False)["input_ids"]
        logp = bb.model(input_ids=torch.tensor([ctx + lab])).logits[0].log_softmax(-1)
        lp = torch.stack([logp[len(ctx) - 1 + j, t] for j, t in enumerate(lab)])
        out.append(lp.mean() if norm == "mean" else lp.sum())
    return torch.stack(out)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("norm", ["mean", "sum"])
def test_causal_multi_token_labels_are_scored_exactly(tiny, family, norm):
    bb = backbone(tiny, family)
    words = ["very bad", "good"]  # 2 pieces and 1 piece
    head = head_for(bb, verbalizer=words, length_norm=norm)
    assert not head.single
    with torch.no_grad():
        logits, _ = head.forward(head.batch(SINGLE), None)
        for i, ex in enumerate(SINGLE):
            torch.testing.assert_close(logits[i], _manual_causal(bb, head, ex, words, norm), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("position", ["auto", "append"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_fast_path_equals_expanded_path(tiny, family, position):
    bb = backbone(tiny, family)
    head = head_for(bb, position=position)
    assert head.single
    prompt = rand_prompt(bb)
    with torch.no_grad():
        fast, _ = head.forward(head.batch(SINGLE), prompt)
        head.single = False
        slow, _ = head.forward(head.batch(SINGLE), prompt)
        head.single = True
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["bert-mlm", "roberta-mlm"])
def test_mlm_multi_token_labels_use_one_mask_per_piece(tiny, family):
    bb = backbone(tiny, family)
    words = ["very bad", "good"]
    head = head_for(bb, verbalizer=words)
    tok = bb.tokenizer
    with torch.no_grad():
        logits, _ = head.forward(head.batch(SINGLE), None)
        for i, ex in enumerate(SINGLE):
            for c, w in enumerate(words):
                pieces = tok(" " + w, add_special_tokens=False)["input_ids"]
                text = head.fmt.template.replace("{text}", ex.text_a).replace("{mask}", tok.mask_token * len(pieces))
                ids = torch.tensor([tok(text)["input_ids"]])
                pos = (ids[0] == tok.mask_token_id).nonzero()[:, 0]
                logp = bb.model(input_ids=ids).logits[0, pos].log_softmax(-1)
                want = torch.stack([logp[j, t] for j, t in enumerate(pieces)]).mean()
                torch.testing.assert_close(logits[i, c], want, rtol=1e-4, atol=1e-4)


def test_seq2seq_label_scores_match_teacher_forced_loss(tiny):
    bb = backbone(tiny, "t5")
    words = ["very bad", "good"]
    head = head_for(bb, verbalizer=words, length_norm="sum")
    tok = bb.tokenizer
    with torch.no_grad():
        logits, _ = head.forward(head.batch(SINGLE), None)
        for i, ex in enumerate(SINGLE):
            src = tok(head.fmt.template.replace("{text}", ex.text_a).replace("{mask}", "<extra_id_0>"),
                      return_tensors="pt")
            for c, w in enumerate(words):
                pieces = tok(" " + w, add_special_tokens=False)["input_ids"]
                target = torch.tensor([[tok.convert_tokens_to_ids("<extra_id_0>")] + pieces])
                out = bb.model(**src, labels=target)
                logp = out.logits[0].log_softmax(-1)
                want = sum(logp[1 + j, t] for j, t in enumerate(pieces))
                torch.testing.assert_close(logits[i, c], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_second_order_gradients_flow_with_eager_attention(tiny, family):
    bb = backbone(tiny, family, second_order=True)
    assert bb.attn == "eager"
    head = head_for(bb)
    batch, labels = head.batch(SINGLE), torch.tensor([e.label for e in SINGLE])
    prompt = rand_prompt(bb).requires_grad_(True)
    inner = F.cross_entropy(head.forward(batch, prompt)[0], labels)
    (g,) = torch.autograd.grad(inner, prompt, create_graph=True)
    adapted = prompt - 1.0 * g
    outer = F.cross_entropy(head.forward(batch, adapted)[0], labels)
    (second,) = torch.autograd.grad(outer, prompt)
    assert torch.isfinite(second).all() and second.abs().sum() > 0
    a = adapted.detach().requires_grad_(True)
    (fo,) = torch.autograd.grad(F.cross_entropy(head.forward(batch, a)[0], labels), a)
    assert not torch.allclose(second, fo), "second-order meta-gradient should differ from the first-order one"


def test_prompt_plus_max_length_beyond_positions_is_refused(tiny):
    bb = backbone(tiny, "bert")
    head = head_for(bb)
    with pytest.raises(ConfigError, match=r"prompt.length \(100\).*max_length \(48\).*exceeds the 128 positions"):
        head.check_prompt_length(100)
    head.check_prompt_length(80)


@pytest.mark.parametrize("family,offset", [("bert", 1), ("roberta-mlm", 1), ("llama", 1), ("gpt2", 0), ("t5", 0)])
def test_prompt_goes_after_a_leading_special_token(tiny, family, offset):
    assert head_for(backbone(tiny, family)).offset == offset


def test_pool_prompt_option_changes_the_pooled_output(tiny):
    bb = backbone(tiny, "bert")
    tcfg = TaskConfig()
    fmt = resolve_format("toy", "single", ["negative", "positive"], bb.family, tcfg)
    prompt = rand_prompt(bb)
    feats = []
    for pool in (False, True):
        head = make_head(bb, fmt, tcfg, PromptConfig(length=4, pool_prompt=pool), 48)
        with torch.no_grad():
            feats.append(head.forward(head.batch(SINGLE), prompt)[1])
    assert not torch.allclose(feats[0], feats[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_joint_pass_over_heads_equals_one_pass_per_head(tiny, family):
    """Tasks with different label spaces and prompts share one backbone pass and score as if run alone."""
    from workbench.engine.joint import joint_forward
    bb = backbone(tiny, family)
    h1 = head_for(bb)
    tcfg = TaskConfig(verbalizer=["bad", "okay", "great"])
    fmt3 = resolve_format("three", "single", ["a", "b", "c"], bb.family, tcfg)
    h2 = make_head(bb, fmt3, tcfg, PromptConfig(length=4), 48)
    items = [(h1, h1.batch(SINGLE), rand_prompt(bb, seed=1)),
             (h2, h2.batch(SINGLE[:3]), rand_prompt(bb, B=3, seed=2))]
    joint = joint_forward(items)
    for (h, b, p), (lg, ft) in zip(items, joint):
        alone_lg, alone_ft = h.forward(b, p)
        torch.testing.assert_close(lg, alone_lg, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ft, alone_ft, rtol=1e-4, atol=1e-4)
    assert joint[1][0].shape == (3, 3)


def test_length_groups_bound_padding_and_join_similar_tasks():
    from workbench.engine.joint import length_groups
    assert length_groups([(8, 20), (8, 22), (8, 21)]) == [[0, 2, 1]]  # similar lengths: one pass
    groups = length_groups([(8, 128), (8, 12), (8, 14), (8, 120)])
    assert groups == [[1, 2], [3, 0]]  # short tasks never padded to the news task's length
    shapes = [(8, 128), (8, 12), (8, 14), (8, 120), (4, 60), (16, 30)]
    for g in length_groups(shapes, slack=1.15):
        rows, longest = sum(shapes[i][0] for i in g), max(shapes[i][1] for i in g)
        assert rows * longest <= 1.15 * sum(shapes[i][0] * shapes[i][1] for i in g)
    assert sorted(i for g in length_groups(shapes) for i in g) == list(range(len(shapes)))
