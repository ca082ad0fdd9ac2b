"""One test-subsample function (``splits.subsample``): the benchmark's committed choice, used by every caller."""
from __future__ import annotations

import random

import pytest

from workbench.config import BackboneConfig, PromptConfig, TuneConfig
from workbench.engine.backbones import load_backbone
from workbench.engine.data import load_dataset
from workbench.engine.splits import subsample
from workbench.experiments import bayes_modes, benchmark, domain_gen
from workbench.methods.bayes import BayesConfig

LIMIT = 5


def old_benchmark_choice(test: list, limit):
    """``experiments/benchmark.py: _subsample`` as it made the committed leaderboard rows."""
    if limit is None or len(test) <= limit:
        return list(test)
    return [test[i] for i in sorted(random.Random(0).sample(range(len(test)), limit))]


@pytest.mark.parametrize("n", [0, 3, 16, 100, 2000])
@pytest.mark.parametrize("limit", [None, 1, 5, 16, 500])
def test_the_benchmarks_selection_is_unchanged(n, limit):
    items = [f"ex{i}" for i in range(n)]
    got = subsample(items, limit)
    assert got == old_benchmark_choice(items, limit) and got is not items
    assert len(got) == min(n, limit or n) and got == sorted(got, key=items.index)  # original order kept


def test_the_seed_changes_the_draw():
    items = list(range(100))
    assert subsample(items, 10, seed=0) == subsample(items, 10) != subsample(items, 10, seed=1)


def _keys(examples) -> list:
    return [(e.text_a, e.text_b, e.label) for e in examples]


def _spy(seen: dict, name: str, real, when):
    """``real`` (an evaluate/predict), recording under ``name`` the first examples it gets ``when(xs, prompt)``."""
    def call(head, xs, prompt, *a, **kw):
        if when(xs, prompt):
            seen.setdefault(name, _keys(xs))
        return real(head, xs, prompt, *a, **kw)
    return call


def test_every_caller_picks_the_same_test_examples(tiny, toy_data, tmp_path, monkeypatch):
    """The unprompted test pass of the benchmark and of a bayes run, and domain generalisation's in-domain test set,
    all hold ``subsample(test, LIMIT)``."""
    want = _keys(subsample(load_dataset("toy").splits["test"], LIMIT))
    assert len(want) == LIMIT
    seen: dict[str, list] = {}
    unprompted = lambda xs, prompt: prompt is None
    monkeypatch.setattr(benchmark, "evaluate", _spy(seen, "benchmark", benchmark.evaluate, unprompted))
    benchmark.run_benchmark({"name": "t", "methods": ["zero-shot"], "grid": [{"datasets": ["toy"], "k": [2]}],
                             "seeds": [13], "backbone": {"name": tiny["bert-mlm"]}, "tune": {"max_length": 32},
                             "test_limit": LIMIT}, tmp_path / "bench", progress=False)

    monkeypatch.setattr(bayes_modes, "predict", _spy(seen, "bayes", bayes_modes.predict, unprompted))
    tune = TuneConfig(steps=1, eval_every=1, max_length=32)
    bayes_modes.run_bayes(bayes_modes.BayesRunConfig(
        datasets=["toy"], k=2, seeds=[13], modes=["init"], baselines=["zero-shot"], test_limit=LIMIT,
        out=str(tmp_path / "bayes"), backbone=BackboneConfig(name=tiny["bert-mlm"]), prompt=PromptConfig(length=2),
        tune=tune, bayes=BayesConfig(iterations=5)), progress=False)

    monkeypatch.setattr(domain_gen, "evaluate", _spy(seen, "domain_gen", domain_gen.evaluate,
                                                     lambda xs, prompt: len(xs) == LIMIT))
    res = domain_gen.domain_generalisation(load_backbone(tiny["bert-mlm"]), methods=("random",), source="toy",
                                           targets=(), k=2, seeds=(13,), tune=tune, prompt=PromptConfig(length=2),
                                           test_limit=LIMIT, progress=False)
    assert [r["n_test"] for r in res["rows"]] == [LIMIT]
    assert seen == {"benchmark": want, "bayes": want, "domain_gen": want}
