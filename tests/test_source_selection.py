"""labelled.sources=auto: learnability filter, similarity ranking, the record of why each candidate was kept or
dropped, the target's test split never scored, bad knobs refused (tiny BERT, tiny synthetic datasets)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from test_tasks import COMMON, TOPICS, sentiment_rows, write_ds

from workbench.config import ConfigError, LabelledConfig, MetaConfig, MetaTrainConfig, apply_overrides
from workbench.engine.backbones import load_backbone
from workbench.engine.data import list_datasets, load_dataset
from workbench.engine.splits import kshot_split
from workbench.tasks import labelled, sources
from workbench.tasks.episodes import make_source
from workbench.tasks.labelled import resolve_sources


def topic_rows(n_per_class, seed=0):
    """Sports (0) vs tech (1) texts: learnable, and worded unlike the sentiment target."""
    rng, rows = random.Random(seed), []
    for c, topic in enumerate(("sport", "tech")):
        for i in range(n_per_class):
            words = [rng.choice(TOPICS[topic]) for _ in range(4)]
            rows.append({"text": " ".join(words[:2] + [COMMON[i % 15]] + words[2:]), "label": c})
    rng.shuffle(rows)
    return rows


def noise_rows(n_per_class, seed=0):
    """Sentiment-like texts whose labels are random: nothing to learn (however similar to the target)."""
    rng = random.Random(seed)
    rows = sentiment_rows(n_per_class, 600, seed=seed)
    labels = [r["label"] for r in rows]
    rng.shuffle(labels)
    return [{**r, "label": lab} for r, lab in zip(rows, labels)]


SENTINEL = "sentinel test text"


def only(monkeypatch, root):
    """Candidates only from ``root`` (the shared benchmark folder is on the search path too)."""
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    monkeypatch.setattr(labelled, "list_datasets", lambda: list_datasets([root]))
    sources._CACHE.clear()


@pytest.fixture
def auto_data(tmp_path, monkeypatch):
    """Target 'tgt' (its test texts are sentinels); candidates 'near' (the target's distribution), 'far' (topics),
    'noise' (random labels)."""
    root = tmp_path / "data"
    test = [{"text": f"{SENTINEL} {w} {i}", "label": int(w in ("great", "good"))}
            for i, w in enumerate(["great", "awful", "good", "bad"] * 4)]
    write_ds(root, "tgt", sentiment_rows(20, 0), test)
    write_ds(root, "near", sentiment_rows(20, 200, seed=1), sentiment_rows(6, 300, seed=1))
    write_ds(root, "far", topic_rows(20, seed=2), topic_rows(6, seed=3), labels=("sports", "tech"))
    write_ds(root, "noise", noise_rows(20, seed=4), noise_rows(6, seed=5))
    only(monkeypatch, root)
    return root


@pytest.fixture(scope="module")
def bert(tiny):
    return load_backbone(tiny["bert"])


def _cfg(**labelled):
    cfg = MetaTrainConfig(source="labelled", target="tgt", meta=MetaConfig(support=2, query=2, max_length=24))
    cfg.labelled = LabelledConfig(k=8, seeds=[1, 2], **labelled)
    return cfg


def test_auto_is_the_default_and_a_configuration():
    assert LabelledConfig().sources == "auto" and MetaTrainConfig().labelled.sources == "auto"
    avail = ["sst2", "sst5", "mr", "mpqa", "agnews", "rte"]
    assert resolve_sources("sst2", "auto", available=avail) == resolve_sources("sst2", "leave-one-out",
                                                                               available=avail)


def test_auto_drops_unlearnable_ranks_by_similarity_and_records_why(auto_data, bert):
    src = make_source("labelled", _cfg(auto_top=1), bert, target="tgt")
    d = json.loads(json.dumps(src.describe()))
    rec = {r["dataset"]: r for r in d["selection"]}
    assert d["configuration"] == "auto" and sorted(d["candidates"]) == ["far", "near", "noise"]
    assert set(rec) == {"far", "near", "noise"}
    for r in rec.values():
        assert set(r) >= {"dataset", "similarity", "bare_acc", "probe_acc", "chance", "kept", "reason"}
        assert r["chance"] == 0.5 and 32 <= r["n"] <= 40  # k=8 x 2 parts x 2 classes per seed, 2 seeds, 20 per class
    noise = rec["noise"]  # random labels: neither the bare model nor the probe beats chance
    assert not noise["kept"] and noise["reason"].startswith("dropped: not learnable")
    assert noise["bare_p"] >= 0.025 and noise["probe_p"] >= 0.025 and "rank" not in noise
    assert rec["near"]["similarity"] > rec["far"]["similarity"]  # the target's own distribution ranks first
    assert rec["near"]["kept"] and rec["near"]["rank"] == 1 and rec["near"]["reason"].startswith("kept: similarity")
    assert not rec["far"]["kept"] and rec["far"]["rank"] == 2 and "labelled.auto_top=1" in rec["far"]["reason"]
    assert d["sources"] == ["near"] and list(d["per_source"]) == ["near"] and d["n_tasks"] == 2
    assert [r["dataset"] for r in d["selection"]] == ["near", "far", "noise"]
    assert d["auto"]["top"] == 1 and d["auto"]["n_learnable"] == 2 and d["auto"]["wall_s"] >= 0
    assert {ep.info["source"] for ep in src.sample(np.random.default_rng(0), 4)} == {"near"}
    src3 = make_source("labelled", _cfg(auto_top=3), bert, target="tgt")  # more room: every learnable one
    assert src3.describe()["sources"] == ["near", "far"]


def test_auto_never_scores_the_target_test_split(auto_data, bert, monkeypatch):
    seen, real = [], sources._forward

    def spy(head, examples):
        seen.extend(e.text_a for e in examples)
        return real(head, examples)

    monkeypatch.setattr(sources, "_forward", spy)
    make_source("labelled", _cfg(), bert, target="tgt")
    tgt_train = {json.loads(line)["text"] for line in (auto_data / "tgt" / "train.jsonl").read_text().splitlines()}
    assert seen and not [t for t in seen if SENTINEL in t]
    tgt = load_dataset("tgt")
    train_parts = {e.text_a for s in (1, 2) for e in kshot_split(tgt, 8, s).train}
    dev_only = {e.text_a for s in (1, 2) for e in kshot_split(tgt, 8, s).dev} - train_parts
    assert set(seen) & tgt_train == train_parts and not set(seen) & dev_only  # its k-shot train parts, nothing more


def test_auto_keeps_decontamination(auto_data, bert):
    rows = [json.loads(line) for line in (auto_data / "tgt" / "test.jsonl").read_text().splitlines()]
    train = [json.loads(line) for line in (auto_data / "near" / "train.jsonl").read_text().splitlines()]
    write_ds(auto_data, "near", train + rows[:3], sentiment_rows(6, 300, seed=1))
    d = make_source("labelled", _cfg(), bert, target="tgt").describe()
    rec = {r["dataset"]: r for r in d["selection"]}
    assert rec["near"]["removed_train"] == 3 and d["per_source"]["near"]["removed_train"] == 3


def test_auto_refuses_when_nothing_is_learnable(tmp_path, monkeypatch, bert):
    root = tmp_path / "data"
    write_ds(root, "tgt", sentiment_rows(20, 0), sentiment_rows(4, 100))
    write_ds(root, "noise", noise_rows(20, seed=4), noise_rows(6, seed=5))
    only(monkeypatch, root)
    with pytest.raises(ConfigError, match="no candidate source beats chance.*noise"):
        make_source("labelled", _cfg(), bert, target="tgt")


def test_auto_bad_knobs_refused():
    for bad in (0, -2):
        with pytest.raises(ConfigError, match="labelled.auto_top"):
            LabelledConfig(auto_top=bad)
        with pytest.raises(ConfigError, match="labelled.auto_top"):
            apply_overrides(MetaTrainConfig(), [f"labelled.auto_top={bad}"])
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match="labelled.auto_alpha"):
            LabelledConfig(auto_alpha=bad)
