"""The registry of prompt initialisations.

An init is a function ``(InitContext) -> (prompt tensor (L, d), provenance dict)``. The tuner never knows which init
produced its starting point; the harness and the CLI only name registry entries. Later methods (meta-learned and
Bayesian inits) register here too, through :func:`register_init`.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

from workbench.config import ConfigError, PromptConfig
from workbench.engine.backbones import Backbone
from workbench.engine.data import DataError, find_corpus, read_corpus
from workbench.engine.runs import load_prompt


@dataclass
class InitContext:
    backbone: Backbone
    cfg: PromptConfig
    seed: int
    fmt: object | None = None  # templates.TaskFormat of the target dataset, when there is one
    dataset: object | None = None  # data.Dataset
    split: object | None = None  # data.FewShotSplit
    extras: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.cfg.length


@dataclass
class InitSpec:
    name: str
    fn: Callable[[InitContext], tuple[torch.Tensor, dict]]
    description: str
    # optional ``grad_hook(provenance, head) -> hook | None``: a rewrite of every prompt gradient during downstream
    # tuning that the init asks for (SUPMER's frozen ψ); callers pass the hook to ``tuner.tune_prompt``
    grad_hook: Callable | None = None


INITS: dict[str, InitSpec] = {}


def register_init(name: str, description: str, grad_hook: Callable | None = None):
    def deco(fn):
        if name in INITS:
            raise ValueError(f"init {name!r} is already registered")
        INITS[name] = InitSpec(name, fn, description, grad_hook)
        return fn
    return deco


def downstream_grad_hook(name: str, provenance: dict, head):
    """The gradient hook init ``name`` asks downstream tuning to apply (None for most inits)."""
    spec = INITS.get(name)
    return spec.grad_hook(provenance, head) if spec is not None and spec.grad_hook is not None else None


def list_inits() -> list[tuple[str, str]]:
    return [(s.name, s.description) for s in INITS.values()]


def make_prompt(name: str, ctx: InitContext) -> tuple[torch.Tensor, dict]:
    if name not in INITS:
        raise ConfigError(f"unknown init {name!r}; registered: {sorted(INITS)}")
    prompt, prov = INITS[name].fn(ctx)
    d = ctx.backbone.hidden_size
    if prompt.shape != (ctx.length, d):
        raise ConfigError(f"init {name!r} produced a prompt of shape {tuple(prompt.shape)}, expected ({ctx.length}, {d})")
    return prompt.detach().float().cpu().clone(), {"init": name, **prov}


def _table(bb: Backbone) -> torch.Tensor:
    return bb.embeddings.weight.detach().float().cpu()


def _rows(bb: Backbone, ids: list[int], length: int) -> torch.Tensor:
    ids = [ids[i % len(ids)] for i in range(length)]  # repeat / truncate to L
    return _table(bb)[torch.tensor(ids)]


_FREQ_CACHE: dict[str, tuple[list[int], str]] = {}
_SPECIAL = re.compile(r"^(\[.*\]|<.*>|<\|.*\|>)$")


def frequent_tokens(bb: Backbone, limit_lines: int = 20000) -> tuple[list[int], str]:
    """Token ids by descending frequency in the unlabeled corpus ("brown" on the data path) or, when there is no such
    corpus, in vocab order (BPE and sentencepiece vocabularies are roughly frequency-ordered); special/unused tokens
    excluded. A brown corpus that cannot be read is an error (DataError naming the file and line), not a fallback."""
    if bb.path not in _FREQ_CACHE:
        corpus = find_corpus("brown")
        _FREQ_CACHE[bb.path] = _vocab_order(bb.tokenizer) if corpus is None else \
            _corpus_order(bb.tokenizer, corpus, limit_lines)
    return _FREQ_CACHE[bb.path]


def _corpus_order(tok, corpus, limit_lines: int) -> tuple[list[int], str]:
    lines = [r["text"] for r in read_corpus(str(corpus), limit=limit_lines)]
    if not lines:
        raise DataError(f"{corpus}: the corpus holds no texts")
    counts = Counter(i for ids in tok(lines, add_special_tokens=False)["input_ids"] for i in ids)
    specials = set(tok.all_special_ids)
    return [i for i, _ in counts.most_common() if i not in specials], f"brown ({len(lines)} lines)"


def _vocab_order(tok) -> tuple[list[int], str]:
    specials = set(tok.all_special_ids)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return [i for t, i in vocab if i not in specials and not _SPECIAL.match(t)], "vocab-order"


def random_init(ctx: InitContext):
    g = torch.Generator().manual_seed(ctx.seed)
    std = _table(ctx.backbone).std().item()
    return torch.randn(ctx.length, ctx.backbone.hidden_size, generator=g) * std, {"std": std}


def vocab_init(ctx: InitContext):
    ranked, source = frequent_tokens(ctx.backbone)
    pool = ranked[: ctx.cfg.vocab_top]
    g = torch.Generator().manual_seed(ctx.seed)
    if len(pool) >= ctx.length:
        idx = torch.randperm(len(pool), generator=g)[: ctx.length]
    else:
        idx = torch.randint(len(pool), (ctx.length,), generator=g)
    ids = [pool[i] for i in idx.tolist()]
    return _rows(ctx.backbone, ids, ctx.length), {"token_ids": ids, "frequency_source": source}


def text_init(ctx: InitContext):
    text = ctx.cfg.init_text
    if not text or not text.strip():
        raise ConfigError("init 'text' needs prompt.init_text (CLI: --init-text 'Classify the sentiment')")
    ids = ctx.backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"prompt.init_text {text!r} tokenizes to nothing")
    return _rows(ctx.backbone, ids, ctx.length), {"text": text, "token_ids": ids}


def labels_init(ctx: InitContext):
    if ctx.fmt is None:
        raise ConfigError("init 'labels' needs a target dataset (its label words)")
    tok = ctx.backbone.tokenizer
    ids = [i for w in ctx.fmt.verbalizer for i in tok(" " + w, add_special_tokens=False)["input_ids"]]
    return _rows(ctx.backbone, ids, ctx.length), {"words": ctx.fmt.verbalizer, "token_ids": ids}


def file_init(ctx: InitContext):
    if not ctx.cfg.init_path:
        raise ConfigError("init 'file' needs prompt.init_path (CLI: --init-path runs/x/adapters/...)")
    prompt, meta = load_prompt(ctx.cfg.init_path)
    want = (ctx.length, ctx.backbone.hidden_size)
    if tuple(prompt.shape) != want:
        raise ConfigError(f"saved prompt {ctx.cfg.init_path} has shape {tuple(prompt.shape)} but backbone "
                          f"{ctx.backbone.name!r} with prompt.length={ctx.length} needs {want}")
    return prompt, {"path": str(ctx.cfg.init_path), "saved_meta": meta}
