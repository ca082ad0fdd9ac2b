"""Soft prompts: L trainable vectors spliced into the input embeddings, with the attention mask extended.

A prompt is a plain tensor: ``(L, d)`` shared by the batch, or ``(B, L, d)`` with one prompt per example (how a
meta-batch carries each task's adapted prompt through a single backbone pass). It is inserted after a leading
special token ([CLS], <s>, BOS) when the tokenizer adds one, else at position 0 (``position="prepend"`` always
puts it first, which is PEFT's layout).
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
    offset: int  # where the prompt starts
    length: int  # L (0 without a prompt)

    def shift(self, positions: torch.Tensor) -> torch.Tensor:
        """Map token positions of the unprompted input to positions in the spliced input."""
        return torch.where(positions >= self.offset, positions + self.length, positions)


def insert_position(tokenizer, position: str = "auto") -> int:
    """0 or 1: after a leading special token when the tokenizer adds one and ``position == "auto"``."""
    if position == "prepend":
        return 0
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    lead = {tokenizer.cls_token_id, tokenizer.bos_token_id} - {None}
    return 1 if ids and ids[0] in lead else 0


def splice(embeds: torch.Tensor, attention_mask: torch.Tensor, prompt: torch.Tensor | None, offset: int,
           token_type_ids: torch.Tensor | None = None) -> Spliced:
    """Insert ``prompt`` into token embeddings ``embeds`` (B, T, d) at ``offset``."""
    B, T, d = embeds.shape
    if prompt is None or prompt.shape[-2] == 0:
        return Spliced(embeds, attention_mask, token_type_ids, torch.zeros_like(attention_mask, dtype=torch.bool), 0, 0)
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(B, -1, -1)
    if prompt.shape[0] != B or prompt.shape[-1] != d:
        raise ValueError(f"prompt of shape {tuple(prompt.shape)} does not fit a batch of {B} with hidden size {d}")
    L = prompt.shape[1]
    prompt = prompt.to(dtype=embeds.dtype, device=embeds.device)
    embeds = torch.cat([embeds[:, :offset], prompt, embeds[:, offset:]], dim=1)
    ones = attention_mask.new_ones(B, L)
    mask = torch.cat([attention_mask[:, :offset], ones, attention_mask[:, offset:]], dim=1)
    if token_type_ids is not None:
        tt = token_type_ids
        token_type_ids = torch.cat([tt[:, :offset], tt.new_zeros(B, L), tt[:, offset:]], dim=1)
    pmask = torch.zeros(B, T + L, dtype=torch.bool, device=embeds.device)
    pmask[:, offset:offset + L] = True
    return Spliced(embeds, mask, token_type_ids, pmask, offset, L)


def expand_prompt(prompt: torch.Tensor | None, repeats: int) -> torch.Tensor | None:
    """Repeat per-example prompts when a head scores each example several times (one row per class)."""
    if prompt is None or prompt.dim() == 2 or repeats == 1:
        return prompt
    return prompt.repeat_interleave(repeats, dim=0)
