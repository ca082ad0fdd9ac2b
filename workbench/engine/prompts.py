"""Soft prompts: L trainable vectors spliced into the input embeddings, with the attention mask extended.

A prompt is a plain tensor: ``(L, d)`` shared by the batch, or ``(B, L, d)`` with one prompt per example (how a
meta-batch carries each task's adapted prompt through a single backbone pass). It is inserted after a leading
special token ([CLS], <s>, BOS) when the tokenizer adds one, else at position 0 (``position="prepend"`` always
puts it first, which is PEFT's layout). ``position="append"`` (MPT's layout) puts it after each example's last real
input token, before a trailing special token ([SEP], </s>) when the tokenizer adds one: the offset then differs per
example of a padded batch, and :class:`Spliced` carries one offset per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Spliced:
    """Model inputs after inserting the prompt."""

    inputs_embeds: torch.Tensor  # (B, T+L, d)
    attention_mask: torch.Tensor  # (B, T+L)
    token_type_ids: torch.Tensor | None
    prompt_mask: torch.Tensor  # (B, T+L) bool, True at prompt positions
    offset: int | torch.Tensor  # where the prompt starts: one int for the batch, or (B,) per example (append)
    length: int  # L (0 without a prompt)

    def shift(self, positions: torch.Tensor) -> torch.Tensor:
        """Map token positions (B,) or (B, n) of the unprompted input to positions in the spliced input."""
        off = self.offset
        if torch.is_tensor(off):
            off = off.view(-1, *[1] * (positions.dim() - 1))
        return torch.where(positions >= off, positions + self.length, positions)

    def predictor(self, positions: torch.Tensor) -> torch.Tensor:
        """Spliced position of the hidden state that predicts the token following unprompted position ``positions``
        (causal LMs). It is ``shift(p + 1) - 1``: with the prompt appended after the context, the last prompt
        vector precedes the label, so it is the one that predicts it."""
        return self.shift(positions + 1) - 1

    def rows(self, sl: slice) -> "Spliced":
        """The rows ``sl`` of the batch."""
        tt = self.token_type_ids[sl] if self.token_type_ids is not None else None
        off = self.offset[sl] if torch.is_tensor(self.offset) else self.offset
        return Spliced(self.inputs_embeds[sl], self.attention_mask[sl], tt, self.prompt_mask[sl], off, self.length)


def insert_position(tokenizer, position: str = "auto") -> int:
    """0 or 1: after a leading special token when the tokenizer adds one and ``position == "auto"`` (0 for
    ``append``, whose offsets are per example: :func:`append_offsets`)."""
    if position in ("prepend", "append"):
        return 0
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    lead = {tokenizer.cls_token_id, tokenizer.bos_token_id} - {None}
    return 1 if ids and ids[0] in lead else 0


def trailing_specials(tokenizer) -> int:
    """1 when the tokenizer ends every sequence with a special token ([SEP], </s>), else 0."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return 1 if ids and ids[-1] in set(tokenizer.all_special_ids) else 0


def append_offsets(attention_mask: torch.Tensor, trailing: int) -> torch.Tensor:
    """(B,) per-example offsets of ``position="append"``: after the last real token of each (right-padded) row,
    before its ``trailing`` special tokens."""
    return (attention_mask.sum(1) - trailing).clamp_min(0)


def splice(embeds: torch.Tensor, attention_mask: torch.Tensor, prompt: torch.Tensor | None,
           offset: int | torch.Tensor, token_type_ids: torch.Tensor | None = None) -> Spliced:
    """Insert ``prompt`` into token embeddings ``embeds`` (B, T, d) at ``offset`` (an int, or (B,) per example)."""
    B, T, d = embeds.shape
    if prompt is None or prompt.shape[-2] == 0:
        return Spliced(embeds, attention_mask, token_type_ids, torch.zeros_like(attention_mask, dtype=torch.bool), 0, 0)
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(B, -1, -1)
    if prompt.shape[0] != B or prompt.shape[-1] != d:
        raise ValueError(f"prompt of shape {tuple(prompt.shape)} does not fit a batch of {B} with hidden size {d}")
    L = prompt.shape[1]
    prompt = prompt.to(dtype=embeds.dtype, device=embeds.device)
    if torch.is_tensor(offset):
        return _splice_rows(embeds, attention_mask, prompt, offset.to(embeds.device), token_type_ids)
    embeds = torch.cat([embeds[:, :offset], prompt, embeds[:, offset:]], dim=1)
    ones = attention_mask.new_ones(B, L)
    mask = torch.cat([attention_mask[:, :offset], ones, attention_mask[:, offset:]], dim=1)
    if token_type_ids is not None:
        tt = token_type_ids
        token_type_ids = torch.cat([tt[:, :offset], tt.new_zeros(B, L), tt[:, offset:]], dim=1)
    pmask = torch.zeros(B, T + L, dtype=torch.bool, device=embeds.device)
    pmask[:, offset:offset + L] = True
    return Spliced(embeds, mask, token_type_ids, pmask, offset, L)


def _splice_rows(embeds, attention_mask, prompt, offset, token_type_ids) -> Spliced:
    """:func:`splice` with one offset per row: a gather from the tokens and the prompt. The prompt's token type is
    that of the token before it (0 at position 0)."""
    B, T, d = embeds.shape
    L = prompt.shape[1]
    pos = torch.arange(T + L, device=embeds.device).unsqueeze(0)
    off = offset.view(B, 1)
    pmask = (pos >= off) & (pos < off + L)
    src = torch.where(pos < off, pos, pos - L).clamp(0, T - 1)  # token read at each spliced position
    tok = embeds.gather(1, src.unsqueeze(-1).expand(B, T + L, d))
    pro = prompt.gather(1, (pos - off).clamp(0, L - 1).unsqueeze(-1).expand(B, T + L, d))
    out = torch.where(pmask.unsqueeze(-1), pro, tok)
    mask = torch.where(pmask, torch.ones_like(src), attention_mask.gather(1, src)).to(attention_mask.dtype)
    if token_type_ids is not None:
        before = token_type_ids.gather(1, (off - 1).clamp_min(0)) * (off > 0)
        token_type_ids = torch.where(pmask, before.expand(B, T + L), token_type_ids.gather(1, src))
    return Spliced(out, mask, token_type_ids, pmask, offset, L)


def expand_prompt(prompt: torch.Tensor | None, repeats: int) -> torch.Tensor | None:
    """Repeat per-example prompts when a head scores each example several times (one row per class)."""
    if prompt is None or prompt.dim() == 2 or repeats == 1:
        return prompt
    return prompt.repeat_interleave(repeats, dim=0)
