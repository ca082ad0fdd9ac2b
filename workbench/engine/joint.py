"""One backbone pass for several heads' batches, each example with its own prompt.

Meta-learning runs a meta-batch of tasks, each with its own label space (its own head) and its own adapted prompt.
:func:`joint_forward` pads the tasks' batches to a common length, stacks the per-example prompts, runs the frozen
backbone once, and lets each head score its own rows. The result equals one forward per task (tested), because
padding is masked and every head reads only its own rows and positions.

Padding costs compute: a task of 128-token news texts padded together with a task of 10-token sentences would make the
short task pay for 128 tokens per row. Tasks are therefore grouped by length (:func:`length_groups`): a task joins a
group only while the group's padded tokens stay within ``JOIN_SLACK`` of what separate passes would process, so the
joint path never does much more work than the per-task loop, and tasks of similar length share one pass.
"""
from __future__ import annotations

import torch

from workbench.engine.heads import Head, Pass


def _pad_to(t: torch.Tensor | None, T: int, value: int) -> torch.Tensor | None:
    if t is None or t.shape[1] == T:
        return t
    return torch.cat([t, t.new_full((t.shape[0], T - t.shape[1]), value)], dim=1)


def _per_example(prompt: torch.Tensor | None, n: int, L: int, d: int, like: torch.Tensor) -> torch.Tensor:
    if prompt is None:
        return like.new_zeros(n, 0, d)
    return prompt.unsqueeze(0).expand(n, -1, -1) if prompt.dim() == 2 else prompt


JOIN_SLACK = 1.15  # a group's padded tokens may exceed the sum of its tasks' own padded tokens by this factor


def length_groups(shapes: list[tuple[int, int]], slack: float = JOIN_SLACK) -> list[list[int]]:
    """Indices of tasks (``shapes`` = (rows, padded length) each) grouped for joint passes, shortest first: a task
    joins the current group while rows x longest length <= ``slack`` x the group's own tokens."""
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][1])
    groups: list[list[int]] = []
    rows = own = 0
    for i in order:
        n, t = shapes[i]
        if groups and (rows + n) * t <= slack * (own + n * t):
            groups[-1].append(i)
            rows, own = rows + n, own + n * t
        else:
            groups.append([i])
            rows, own = n, n * t
    return groups


def joint_forward(items: list[tuple[Head, dict, torch.Tensor | None]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``items`` = [(head, batch, prompt)] sharing one backbone; returns [(logits, features)] in the same order.

    Prompts are ``(L, d)`` or ``(B_i, L, d)`` with the same L for every item (or all None). Batches that cannot share
    a pass (multi-piece MLM labels of different lengths, multi-token causal labels) are run on their own.
    """
    if not items:
        return []
    heads = [h for h, _, _ in items]
    bb = heads[0].bb
    same = (heads[0].offset, heads[0].position, heads[0].use_tt)
    if any(h.bb is not bb or (h.offset, h.position, h.use_tt) != same for h in heads):
        raise ValueError("joint_forward needs heads on one backbone with the same prompt position")
    lengths = {p.shape[-2] for _, _, p in items if p is not None}
    if len(lengths) > 1 or (lengths and any(p is None for _, _, p in items)):
        raise ValueError(f"joint_forward needs one prompt length for every item, got {sorted(lengths)} (or None)")
    if not all(h.joinable(b) for h, b, _ in items):
        return [h.forward(b, p) for h, b, p in items]
    results: list = [None] * len(items)
    for group in length_groups([tuple(b["input_ids"].shape) for _, b, _ in items]):
        for i, r in zip(group, _one_pass([items[i] for i in group])):
            results[i] = r
    return results


def _one_pass(items: list[tuple[Head, dict, torch.Tensor | None]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One backbone pass for ``items`` (checked by :func:`joint_forward`), padded to their longest batch."""
    heads = [h for h, _, _ in items]
    bb = heads[0].bb
    lengths = {p.shape[-2] for _, _, p in items if p is not None}
    T = max(b["input_ids"].shape[1] for _, b, _ in items)
    pad_id = bb.tokenizer.pad_token_id
    ids = torch.cat([_pad_to(b["input_ids"], T, pad_id) for _, b, _ in items])
    am = torch.cat([_pad_to(b["attention_mask"], T, 0) for _, b, _ in items])
    tt = torch.cat([_pad_to(b["token_type_ids"], T, 0) for _, b, _ in items]) if heads[0].use_tt else None
    d = bb.hidden_size
    L = lengths.pop() if lengths else 0
    sizes = [b["input_ids"].shape[0] for _, b, _ in items]
    prompts = torch.cat([_per_example(p, n, L, d, bb.embeddings.weight) for (_, _, p), n in zip(items, sizes)])
    batch = {"input_ids": ids, "attention_mask": am, "token_type_ids": tt}
    if heads[0].position == "append":  # per-example offsets, each head's own (padding does not move them)
        batch["prompt_at"] = torch.cat([torch.as_tensor(h.prompt_at(b)) for h, b, _ in items])
    out = heads[0].encode_pass(batch, prompts if L else None)
    results, start = [], 0
    for (head, batch, prompt), n in zip(items, sizes):
        sl = slice(start, start + n)
        sub = Pass(out.hidden[sl], out.sp.rows(sl), out.logits[sl] if out.logits is not None else None)
        results.append(head.score(batch, sub, prompt))
        start += n
    return results
