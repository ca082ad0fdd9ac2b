"""The registry of prompt initialisations.

An init is a function ``(InitContext) -> (prompt tensor (L, d), provenance dict)``. The tuner never knows which init
produced its starting point; the harness and the CLI only name registry entries. Later methods (meta-learned and
Bayesian inits) register here too, through :func:`register_init`.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from workbench.config import ConfigError, PromptConfig
from workbench.engine.backbones import Backbone
from workbench.engine.data import DataError, find_corpus, read_corpus
from workbench.engine.runs import load_prompt
from workbench.engine.templates import label_ids


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


def sample_frequent(ctx: InitContext, n: int) -> tuple[list[int], str]:
    """``n`` token ids drawn (seed ``ctx.seed``) from the ``prompt.vocab_top`` most frequent tokens, without
    replacement when the pool is large enough; and where the frequencies come from."""
    ranked, source = frequent_tokens(ctx.backbone)
    pool = ranked[: ctx.cfg.vocab_top]
    g = torch.Generator().manual_seed(ctx.seed)
    if len(pool) >= n:
        idx = torch.randperm(len(pool), generator=g)[:n]
    else:
        idx = torch.randint(len(pool), (n,), generator=g)
    return [pool[i] for i in idx.tolist()], source


def vocab_init(ctx: InitContext):
    ids, source = sample_frequent(ctx, ctx.length)
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
    # the label words' tokens as they stand in the template (as the head scores them); no {mask}: after a space
    template = ctx.fmt.template if "{mask}" in ctx.fmt.template else "{text} {mask}"
    ids = [i for w in ctx.fmt.verbalizer for i in label_ids(ctx.backbone.tokenizer, template, w)]
    return _rows(ctx.backbone, ids, ctx.length), {"words": ctx.fmt.verbalizer, "token_ids": ids}


def saved_prompt_path(path) -> Path:
    """Where the prompt at ``path`` is: ``path`` itself, or ``path/prompt`` when ``path`` is a ``meta-train`` run
    directory (it holds ``prompt/`` and, from SUPMER, ``psi/``)."""
    p = Path(path)
    if p.is_dir() and not (p / "adapter_model.safetensors").exists() and (p / "prompt").is_dir():
        return p / "prompt"
    return p


def file_init(ctx: InitContext):
    return saved_prompt(ctx.backbone, ctx.cfg)


def saved_prompt(bb: Backbone, cfg: PromptConfig) -> tuple[torch.Tensor, dict]:
    """The ``file`` init: the prompt saved at ``cfg.init_path`` or, when that is unset and the backbone was given as
    a PEFT prompt-tuning adapter, the adapter's prompt; refused unless its shape is (``cfg.length``, hidden size).
    Cheap, so callers check it before any training."""
    adapter = getattr(bb, "adapter", None)
    path = cfg.init_path or (adapter.path if adapter is not None else None)
    if not path:
        raise ConfigError("init 'file' needs prompt.init_path (CLI: --init-path runs/x/adapters/...) or a PEFT "
                          "prompt-tuning adapter as the backbone")
    prompt, meta = load_prompt(saved_prompt_path(path))
    want = (cfg.length, bb.hidden_size)
    if tuple(prompt.shape) != want:
        fix = f"; pass --prompt-length {prompt.shape[0]}" if prompt.shape[1] == bb.hidden_size else ""
        raise ConfigError(f"saved prompt {path} has shape {tuple(prompt.shape)} but backbone {bb.name!r} with "
                          f"prompt.length={cfg.length} needs {want}{fix}")
    warn_position(meta.get("position"), cfg.position, path)
    source = "prompt.init_path" if cfg.init_path else "the backbone adapter"
    return prompt, {"path": str(path), "source": source, "saved_meta": meta}


def warn_position(saved: str | None, used: str, where) -> None:
    """Warn when a saved prompt was trained at another ``prompt.position`` than the one it is used at (the position
    belongs to the run's config and is not carried over from the file)."""
    if saved is not None and saved != used:
        warnings.warn(f"{where}: prompt trained with prompt.position={saved!r} is used with prompt.position={used!r}; "
                      f"set --set prompt.position={saved} to use it where it was trained", stacklevel=3)


def name_text(name: str) -> str:
    """A task name as MPT reads it: "_" and "-" as spaces (``superglue-rte`` -> ``superglue rte``)."""
    return str(name).replace("_", " ").replace("-", " ")


def names_prompt(ctx: InitContext, names: list[str], init: str, knob: str) -> tuple[torch.Tensor, dict]:
    """MPT's init (``utils.py::getpromptembedding``): row i is the mean token embedding of ``names[i]``
    (:func:`name_text`), the remaining rows are embeddings of tokens sampled as the ``vocab`` init samples them.
    ``knob``: what sets the names (named in the error when the prompt is shorter than the list)."""
    if not names or len(names) > ctx.length:
        raise ConfigError(f"init {init!r} gives each task name one prompt row: {len(names)} names {names} but "
                          f"prompt.length={ctx.length}; set prompt.length (CLI --prompt-length) >= {len(names)} or "
                          f"name fewer tasks ({knob})")
    tok, table = ctx.backbone.tokenizer, _table(ctx.backbone)
    name_ids = [tok(name_text(n), add_special_tokens=False)["input_ids"] for n in names]
    empty = [n for n, ids in zip(names, name_ids) if not ids]
    if empty:
        raise ConfigError(f"init {init!r}: the task names {empty} tokenize to nothing")
    ids, source = sample_frequent(ctx, ctx.length - len(names))
    rows = [table[torch.tensor(i)].mean(0) for i in name_ids] + [table[i] for i in ids]
    return torch.stack(rows), {"names": list(names), "name_token_ids": name_ids, "token_ids": ids,
                               "frequency_source": source}


def target_name_init(ctx: InitContext):
    """MPT's PT baseline: the target's own name in row 0, frequent tokens after it."""
    if ctx.dataset is None:
        raise ConfigError("init 'target-name' needs a target dataset (its name is the first prompt row)")
    return names_prompt(ctx, [ctx.dataset.name], "target-name", "the target's own name")
