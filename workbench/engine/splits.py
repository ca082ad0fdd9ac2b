"""Few-shot splits and cross-dataset overlap: :func:`kshot_split` (k train + k dev examples per class by seed, the
full test split), :func:`subsample` (a seeded subset of a test split, for smoke runs and capped test sets) and
:func:`decontaminate` (drop source examples whose normalised text occurs in a target's texts).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable

from workbench.engine.data import DataError, Dataset, Example


# ----------------------------------------------------------------------------------------------- few-shot
@dataclass
class FewShotSplit:
    """A k-shot draw: ``train`` and ``dev`` (k per class each, disjoint, both from the train split) and the
    full test split."""
    dataset: str
    k: int
    seed: int
    train: list[Example]
    dev: list[Example]
    test: list[Example]

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "k": self.k, "seed": self.seed, "n_train": len(self.train),
                "n_dev": len(self.dev), "n_test": len(self.test)}


def kshot_split(ds: Dataset, k: int, seed: int) -> FewShotSplit:
    """Draw k train + k dev examples per class from ``ds.splits["train"]`` (never from a dev file).

    Per class c (label order): its train indices in file order are shuffled with ``random.Random(f"{seed}-{c}")``;
    the first k go to train, the next k to dev. Train and dev are then each shuffled with a fresh
    ``random.Random(seed)``. Test is the full test split."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DataError(f"k must be an int >= 1, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed must be an int, got {seed!r}")
    train_all = ds.splits["train"]
    by_class: dict[int, list[int]] = {c: [] for c in range(len(ds.labels))}
    for i, e in enumerate(train_all):
        by_class.setdefault(e.label, []).append(i)
    name = lambda c: ds.labels[c] if 0 <= c < len(ds.labels) else str(c)
    problems = [f"class {name(c)!r} has " + (f"{len(idx)} training examples" if idx else "no training examples")
                for c, idx in by_class.items() if len(idx) < 2 * k]
    if problems:
        raise DataError(f"dataset {ds.name!r}: " + "; ".join(problems) +
                        f"; {k}-shot needs 2k = {2 * k} per class (k for train + k for dev)")
    tr, dv = [], []
    for c, idx in by_class.items():
        random.Random(f"{seed}-{c}").shuffle(idx)
        tr, dv = tr + idx[:k], dv + idx[k:2 * k]
    random.Random(seed).shuffle(tr)
    random.Random(seed).shuffle(dv)
    return FewShotSplit(ds.name, k, seed, [train_all[i] for i in tr], [train_all[i] for i in dv],
                        list(ds.splits["test"]))


def subsample(examples: list, limit: int | None, seed: int = 0) -> list:
    """At most ``limit`` of ``examples`` (all of them, as a new list, when ``limit`` is None or not below their
    number): the indices drawn by ``random.Random(seed).sample``, kept in their original order. The benchmark's
    ``test_limit``, the bayes runs' ``test_limit`` and domain generalisation's ``test_limit`` all use it."""
    if limit is None or len(examples) <= limit:
        return list(examples)
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), limit))]


# ----------------------------------------------------------------------------------------------- overlap
def normalize_text(s: str) -> str:
    """Case-folded alphanumerics only (unicode-aware), everything else dropped: "It's GOOD!" -> "itsgood"."""
    return "".join(ch for ch in s.casefold() if ch.isalnum())


def texts_of(examples) -> list[str]:
    """text_a and (when present) text_b of each example, in order."""
    return [t for e in examples for t in (e.text_a, e.text_b) if t is not None]


def decontaminate(source: list[Example], target_texts: Iterable[str]) -> tuple[list[Example], int]:
    """Drop each source example whose normalised text_a, text_b or text_a+text_b occurs among the normalised
    target texts (texts that normalise to "" are ignored). Returns ``(kept, n_removed)``."""
    if isinstance(target_texts, str):
        raise DataError("target_texts must be an iterable of strings, not a single string")
    targets = {normalize_text(t) for t in target_texts} - {""}

    def keys(e: Example) -> set[str]:
        a = normalize_text(e.text_a)
        return {a} if e.text_b is None else {a, normalize_text(e.text_b), a + normalize_text(e.text_b)}
    kept = [e for e in source if not keys(e) & targets]
    return kept, len(source) - len(kept)
