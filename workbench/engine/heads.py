"""Heads: class logits for a batch of examples under a soft prompt, one implementation per backbone family.

Every head turns examples into tensors (:meth:`Head.batch`) and returns ``(logits, features)`` for given prompts
(:meth:`Head.forward`): ``logits`` is ``(B, C)`` over the dataset's classes, ``features`` is ``(B, d)``, the mean of
the last hidden states over the real input tokens (prompt positions excluded unless ``pool_prompt``), which the
linear probe and the visualisations use.

Multi-token label words are scored exactly, never by their first piece:

- masked LM: a label of n pieces is predicted at n consecutive mask tokens; its score is the mean (or sum, with
  ``length_norm="sum"``) over pieces of log p(piece_j | input with n masks). Labels are grouped by piece count, one
  forward pass per distinct count.
- seq2seq: each label is a decoder target (after the sentinel for T5); its score is the mean (or sum) of the
  teacher-forced log-probabilities of its pieces. The encoder runs once; the decoder runs once per (example, class).
- causal LM: each label is a continuation of the context; its score is the mean (or sum) of the log-probabilities
  of its pieces given the context and the earlier pieces. When every label is one piece this is a single forward pass
  over the context; otherwise one pass per (example, class).

The class logits are these scores; cross-entropy over them renormalises over the classes only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workbench.config import ConfigError, PromptConfig, TaskConfig
from workbench.engine.backbones import Backbone
from workbench.engine.prompts import (Spliced, append_offsets, expand_prompt, insert_position, splice,
                                      trailing_specials)
from workbench.engine.templates import TaskFormat, label_ids, render, truncate_texts

_MLM_HEAD_ATTRS = ("cls", "lm_head")  # modules mapping hidden states to vocabulary logits, transform included


@dataclass
class Pass:
    """The output of one backbone pass: last hidden states, the spliced inputs, and (rarely) full vocab logits."""

    hidden: torch.Tensor
    sp: Spliced
    logits: torch.Tensor | None = None


def make_head(backbone: Backbone, fmt: TaskFormat, task_cfg: TaskConfig, prompt_cfg: PromptConfig,
              max_length: int) -> "Head":
    cls = {"encoder": SimilarityHead, "mlm": MLMHead, "seq2seq": Seq2SeqHead, "causal": CausalHead}[backbone.family]
    return cls(backbone, fmt, task_cfg, prompt_cfg, max_length)


class Head:
    family = ""

    def __init__(self, backbone: Backbone, fmt: TaskFormat, task_cfg: TaskConfig, prompt_cfg: PromptConfig,
                 max_length: int):
        self.bb, self.fmt, self.cfg, self.max_length = backbone, fmt, task_cfg, max_length
        self.tok = backbone.tokenizer
        self.position = prompt_cfg.position
        self.offset = insert_position(self.tok, prompt_cfg.position)
        self.trailing = trailing_specials(self.tok)
        self.pool_prompt = prompt_cfg.pool_prompt
        self.use_tt = "token_type_ids" in getattr(self.tok, "model_input_names", []) and \
            getattr(backbone.config, "type_vocab_size", 2) > 1
        self.n_classes = len(fmt.verbalizer)
        self._budget: dict[str, int] = {}

    # ----- inputs -------------------------------------------------------------------------------------------------
    def check_prompt_length(self, length: int):
        """Refuse a prompt that together with max_length exceeds the model's positions (names both numbers)."""
        limit = self.bb.max_positions
        extra = self.extra_positions()
        if limit is not None and length + self.max_length + extra > limit:
            raise ConfigError(f"prompt.length ({length}) + tune.max_length ({self.max_length})"
                              f"{f' + label tokens ({extra})' if extra else ''} = {length + self.max_length + extra} "
                              f"exceeds the {limit} positions of backbone {self.bb.name!r}")

    def extra_positions(self) -> int:
        return 0

    def mask_string(self, n: int = 1) -> str:
        return ""

    def template(self) -> str:
        return self.fmt.template

    def encode(self, ex, n: int = 1) -> dict:
        """Token ids (with special tokens) of one example rendered through the template, truncated to max_length."""
        mask = self.mask_string(n)
        template = self.template()
        if mask not in self._budget:
            empty = self.tok(*render(template, "", "" if ex.text_b is not None else None, mask),
                             add_special_tokens=True)["input_ids"]
            self._budget[mask] = self.max_length - len(empty)
        a, b = truncate_texts(self.tok, ex.text_a, ex.text_b, self._budget[mask])
        enc = self.tok(*render(template, a, b, mask), add_special_tokens=True, return_token_type_ids=self.use_tt)
        return {"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids")}

    def pad(self, encs: list[dict]) -> dict:
        T = max(len(e["input_ids"]) for e in encs)
        pad_id = self.tok.pad_token_id
        ids = torch.full((len(encs), T), pad_id, dtype=torch.long)
        am = torch.zeros(len(encs), T, dtype=torch.long)
        tt = torch.zeros(len(encs), T, dtype=torch.long) if self.use_tt else None
        for i, e in enumerate(encs):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            am[i, :n] = 1
            if tt is not None and e.get("token_type_ids") is not None:
                tt[i, :n] = torch.tensor(e["token_type_ids"])
        dev = self.bb.device
        return {"input_ids": ids.to(dev), "attention_mask": am.to(dev), "token_type_ids": tt.to(dev) if tt is not None else None}

    def prompt_at(self, batch: dict) -> int | torch.Tensor:
        """Where the prompt goes: ``self.offset`` for the batch, or (B,) per example with ``position="append"``
        (``batch["prompt_at"]`` when the head set it, else after each row's last real token, before its trailing
        special token)."""
        if self.position != "append":
            return self.offset
        if "prompt_at" in batch:
            return batch["prompt_at"]
        return append_offsets(batch["attention_mask"], self.trailing)

    def spliced(self, batch: dict, prompt) -> Spliced:
        return splice(self.bb.embed(batch["input_ids"]), batch["attention_mask"], prompt, self.prompt_at(batch),
                      batch["token_type_ids"])

    def pool(self, hidden: torch.Tensor, sp: Spliced) -> torch.Tensor:
        keep = sp.attention_mask.bool() if self.pool_prompt else (sp.attention_mask.bool() & ~sp.prompt_mask)
        w = keep.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)

    def label_pieces(self) -> list[list[int]]:
        """Token ids of each label word as tokenised in the template's context (``templates.label_ids``): with a
        leading space when the template has one before {mask}, without a word-start marker when it has none."""
        out = []
        for word in self.fmt.verbalizer:
            ids = label_ids(self.tok, self.fmt.template, word)
            if not ids:
                raise ConfigError(f"label word {word!r} tokenizes to nothing for backbone {self.bb.name!r}")
            out.append(ids)
        return out

    def reduce(self, logp: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-sequence label score from per-piece log-probs (mean or sum over valid pieces)."""
        s = (logp * valid).sum(-1)
        return s / valid.sum(-1).clamp_min(1) if self.cfg.length_norm == "mean" else s

    def batch(self, examples) -> dict:
        """Tensors for ``examples``; the keys input_ids/attention_mask/token_type_ids feed the backbone pass."""
        raise NotImplementedError

    def encode_pass(self, batch: dict, prompt) -> Pass:
        """The one backbone pass (the encoder for seq2seq) over a batch, with the prompt spliced in."""
        sp = self.spliced(batch, prompt)
        kw = {"token_type_ids": sp.token_type_ids} if sp.token_type_ids is not None else {}
        if self.family == "seq2seq":
            h = self.bb.model.get_encoder()(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask)
            return Pass(h.last_hidden_state, sp)
        if self.family == "causal":
            kw["use_cache"] = False
        if self.family == "mlm" and getattr(self, "lm", None) is None:  # unknown MLM head layout: full forward
            out = self.bb.model(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask,
                                output_hidden_states=True, **kw)
            return Pass(out.hidden_states[-1], sp, out.logits)
        model = self.bb.model if self.family == "encoder" else self.bb.model.base_model
        h = model(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask, **kw).last_hidden_state
        return Pass(h, sp)

    def score(self, batch: dict, out: Pass, prompt) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, C) and pooled features (B, d) from the backbone pass."""
        raise NotImplementedError

    def joinable(self, batch: dict) -> bool:
        """Whether this batch can share one backbone pass with other heads' batches (see ``joint.py``)."""
        return True

    def forward(self, batch: dict, prompt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score(batch, self.encode_pass(batch, prompt), prompt)


class SimilarityHead(Head):
    """Encoder without LM head: cosine between the pooled input and each label text's embedding, / temperature."""

    family = "encoder"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        enc = [self.tok(t, add_special_tokens=True, truncation=True, max_length=self.max_length)
               for t in self.fmt.label_texts]
        batch = self.pad([{"input_ids": e["input_ids"], "token_type_ids": None} for e in enc])
        with torch.no_grad():
            out = self.encode_pass(batch, None)
            feats = self.pool(out.hidden, out.sp)
        self.anchors = F.normalize(feats.float(), dim=-1)  # (C, d), fixed: label texts carry no prompt

    def batch(self, examples) -> dict:
        return self.pad([self.encode(ex) for ex in examples])

    def score(self, batch, out, prompt):
        feats = self.pool(out.hidden, out.sp)
        logits = F.normalize(feats.float(), dim=-1) @ self.anchors.T / self.cfg.temperature
        return logits, feats


class MLMHead(Head):
    """Masked LM: verbalizer log-probabilities at the mask position(s)."""

    family = "mlm"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        if self.tok.mask_token_id is None:
            raise ConfigError(f"backbone {self.bb.name!r} is a masked LM but its tokenizer has no mask token")
        self.pieces = self.label_pieces()
        self.lengths = sorted({len(p) for p in self.pieces})
        m = self.bb.model
        self.lm = next((getattr(m, a) for a in _MLM_HEAD_ATTRS if hasattr(m, a)), None)

    def mask_string(self, n=1):
        return self.tok.mask_token * n

    def batch(self, examples):
        groups = {}
        for n in self.lengths:
            b = self.pad([self.encode(ex, n) for ex in examples])
            pos = (b["input_ids"] == self.tok.mask_token_id).nonzero()[:, 1].view(len(examples), -1)
            b["mask_pos"] = pos[:, :n]
            groups[n] = b
        if len(groups) == 1:  # the common case: every label word is one piece (or all have the same count)
            return {**groups[self.lengths[0]], "n": self.lengths[0]}
        return {"groups": groups, "size": len(examples)}

    def joinable(self, batch):
        return "groups" not in batch

    def forward(self, batch, prompt):
        if "groups" not in batch:
            return super().forward(batch, prompt)
        scored = {n: self.score({**b, "n": n}, self.encode_pass(b, prompt), prompt) for n, b in batch["groups"].items()}
        logits = torch.stack([scored[len(p)][0][:, c] for c, p in enumerate(self.pieces)], dim=1)
        return logits, scored[self.lengths[0]][1]

    def score(self, batch, out, prompt):
        n = batch["n"]
        pos = out.sp.shift(batch["mask_pos"])  # (B, n)
        B = pos.shape[0]
        rows = torch.arange(B, device=pos.device).unsqueeze(1)
        vocab_logits = self.lm(out.hidden[rows, pos]) if out.logits is None else out.logits[rows, pos]
        logp = vocab_logits.float().log_softmax(-1)  # (B, n, V)
        cols = []  # classes whose label has another piece count are scored in that count's pass (NaN here)
        for piece in self.pieces:
            if len(piece) == n:
                ids = torch.tensor(piece, device=logp.device)
                lp = logp.gather(-1, ids.view(1, n, 1).expand(B, n, 1)).squeeze(-1)
                cols.append(self.reduce(lp, torch.ones_like(lp)))
            else:
                cols.append(torch.full((B,), float("nan"), device=logp.device))
        return torch.stack(cols, dim=1), self.pool(out.hidden, out.sp)


class Seq2SeqHead(Head):
    """Encoder-decoder: teacher-forced log-likelihood of each label word at the decoder."""

    family = "seq2seq"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        vocab = self.tok.get_vocab()
        self.sentinel = "<extra_id_0>" if "<extra_id_0>" in vocab else (self.tok.mask_token or "")
        prefix = [vocab[self.sentinel]] if self.sentinel == "<extra_id_0>" else []
        pieces = self.label_pieces()
        L = max(len(prefix) + len(p) for p in pieces)
        self.target = torch.full((self.n_classes, L), self.tok.pad_token_id, dtype=torch.long)
        self.valid = torch.zeros(self.n_classes, L)
        for c, p in enumerate(pieces):
            seq = prefix + p
            self.target[c, :len(seq)] = torch.tensor(seq)
            self.valid[c, len(prefix):len(seq)] = 1.0  # score the label pieces, not the sentinel
        start = self.bb.config.decoder_start_token_id
        start = self.tok.pad_token_id if start is None else start
        self.dec_in = torch.cat([torch.full((self.n_classes, 1), start), self.target[:, :-1]], dim=1)
        self.target, self.valid, self.dec_in = (t.to(self.bb.device) for t in (self.target, self.valid, self.dec_in))

    def mask_string(self, n=1):
        return self.sentinel

    def batch(self, examples):
        return self.pad([self.encode(ex) for ex in examples])

    def score(self, batch, out, prompt):
        h, sp = out.hidden, out.sp
        B, C = h.shape[0], self.n_classes
        h_rep = h.repeat_interleave(C, dim=0)
        am_rep = sp.attention_mask.repeat_interleave(C, dim=0)
        dec = self.bb.model(encoder_outputs=(h_rep,), attention_mask=am_rep, decoder_input_ids=self.dec_in.repeat(B, 1),
                            use_cache=False)
        logp = dec.logits.float().log_softmax(-1).gather(-1, self.target.repeat(B, 1).unsqueeze(-1)).squeeze(-1)
        return self.reduce(logp, self.valid.repeat(B, 1)).view(B, C), self.pool(h, sp)


class CausalHead(Head):
    """Decoder-only LM: log-likelihood of each label word as the continuation of the templated context."""

    family = "causal"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        t = self.fmt.template
        self.context_template = t[: t.index("{mask}")].rstrip()
        self.pieces = self.label_pieces()
        self.single = all(len(p) == 1 for p in self.pieces)
        self.out_emb = self.bb.model.get_output_embeddings()

    def template(self):
        return self.context_template

    def extra_positions(self):
        return 0 if self.single else max(len(p) for p in self.pieces)

    def batch(self, examples):
        encs = [self.encode(ex) for ex in examples]
        b = self.pad(encs)
        b["last"] = b["attention_mask"].sum(1) - 1
        if not self.single:  # one sequence per (example, class): context followed by the label pieces
            rows = [{"input_ids": e["input_ids"] + p, "token_type_ids": None} for e in encs for p in self.pieces]
            b["expanded"] = self.pad(rows)
            # append: the prompt goes between the context and the label pieces, where it goes in the context alone
            b["expanded"]["prompt_at"] = append_offsets(b["attention_mask"], self.trailing).repeat_interleave(
                len(self.pieces))
        return b

    def joinable(self, batch):
        return self.single

    def score(self, batch, out, prompt):
        h, sp = out.hidden, out.sp
        B, C = h.shape[0], self.n_classes
        feats = self.pool(h, sp)
        if self.single:
            last = sp.predictor(batch["last"])
            logp = self.out_emb(h[torch.arange(B, device=h.device), last]).float().log_softmax(-1)
            ids = torch.tensor([p[0] for p in self.pieces], device=logp.device)
            return logp[:, ids], feats
        ox = self.encode_pass(batch["expanded"], expand_prompt(prompt, C))
        hx, spx = ox.hidden, ox.sp
        n = max(len(p) for p in self.pieces)
        ctx_len = batch["last"].repeat_interleave(C) + 1  # tokens before the label
        j = torch.arange(n, device=h.device)
        pred_pos = spx.predictor(ctx_len.unsqueeze(1) - 1 + j).clamp(max=hx.shape[1] - 1)  # hidden predicting piece j
        pad = torch.tensor([p + [p[-1]] * (n - len(p)) for p in self.pieces], device=h.device).repeat(B, 1)
        valid = torch.tensor([[1.0] * len(p) + [0.0] * (n - len(p)) for p in self.pieces], device=h.device).repeat(B, 1)
        rows = torch.arange(B * C, device=h.device).unsqueeze(1)
        logp = self.out_emb(hx[rows, pred_pos]).float().log_softmax(-1).gather(-1, pad.unsqueeze(-1)).squeeze(-1)
        return self.reduce(logp, valid).view(B, C), feats
