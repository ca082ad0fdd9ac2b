"""tasks.episodes."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

import torch

from workbench.config import ConfigError
from workbench.engine.data import Example, load_dataset
from workbench.engine.splits import decontaminate, normalize_text, texts_of


def target_texts(target: str | None) -> tuple[set[str], dict]:
    """Normalised texts of the target's test and train splits (what every source is decontaminated against)."""
    if not target:
        return set(), {}
    ds = load_dataset(target)
    exs = ds.splits["test"] + ds.splits["train"]
    norm = {normalize_text(t) for t in texts_of(exs)} - {""}
    return norm, {"name": ds.name, "n_texts": len(norm), "file_hashes": ds.file_hashes()}


def excluded_texts(target: str | None, exclude=()) -> tuple[set[str], dict]:
    """:func:`target_texts` of ``target`` together with those of every dataset in ``exclude`` (a corpus source's
    ``exclude`` knob): what a corpus source never uses; the info describes the target."""
    texts, info = target_texts(target)
    for name in exclude:
        texts |= target_texts(name)[0]
    return texts, info


def _clean(examples: list[Example], targets: set[str]) -> tuple[list[Example], int]:
    return decontaminate(examples, targets) if targets else (list(examples), 0)


def _per_class(rng, examples: list[Example], n_classes: int, n: int, what: str) -> list[Example]:
    by = [[e for e in examples if e.label == c] for c in range(n_classes)]
    if any(len(b) < n for b in by):
        raise ConfigError(f"{what}: needs {n} examples per class, has {[len(b) for b in by]}")
    out = [b[i] for b in by for i in rng.choice(len(b), n, replace=False)]
    return [out[i] for i in rng.permutation(len(out))]


# ----------------------------------------------------------------------------------------------- registry
SOURCES: dict[str, tuple[Callable, str]] = {}


def register_source(name: str, description: str = ""):
    """Register ``factory(cfg, backbone, target=None) -> source`` under ``name``."""
    def deco(factory):
        if name in SOURCES:
            raise ValueError(f"task source {name!r} is already registered")
        SOURCES[name] = (factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory
    return deco


def make_source(name: str, cfg, backbone, target: str | None = None):
    if name not in SOURCES:
        raise ConfigError(f"unknown task source {name!r}; registered: {sorted(SOURCES)}")
    return SOURCES[name][0](cfg, backbone, target=target)


class SubsetHead:
    """A head scoring only some of another head's classes (a pseudo-task's N clusters out of K): same backbone
    pass, logits restricted to ``cols`` (class i of the episode = column cols[i])."""

    def __init__(self, head, cols):
        self.head, self.cols, self.n_classes = head, torch.as_tensor(cols, device=head.bb.device), len(cols)

    def __getattr__(self, name):  # bb, offset, use_tt, batch, encode_pass, joinable, ...
        return getattr(self.head, name)

    def score(self, batch, out, prompt):
        logits, feats = self.head.score(batch, out, prompt)
        return logits[:, self.cols], feats

    def forward(self, batch, prompt):
        logits, feats = self.head.forward(batch, prompt)
        return logits[:, self.cols], feats


def _hash(obj) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@dataclass
class Episode:
    """One task: a head (its label space and template), support and query examples."""

    head: object
    support: list
    query: list
    name: str = ""
    aug: list | None = None  # an augmentation query set from another cluster (SUPMER's curriculum mixup)
    info: dict = field(default_factory=dict)  # task metadata: source dataset, cluster ids, task type, ...

    def batch(self, which: str) -> tuple[dict, torch.Tensor]:
        exs = self.support if which == "support" else self.query if which == "query" else self.support + self.query
        return self.head.batch(exs), torch.tensor([e.label for e in exs], device=self.head.bb.device)
