"""Task similarity (MPT analysis): cosines, decontamination records, gains from harness rows, the join, the scatter."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from workbench.experiments import similarity as S
from workbench.config import PromptConfig, TuneConfig
from workbench.engine.data import Dataset, Example
from workbench.viz import similarity as VS

POS = ["great", "wonderful", "good", "excellent", "amazing", "lovely", "fun", "brilliant"]
NEG = ["terrible", "awful", "bad", "boring", "horrible", "dull", "poor", "stupid"]
TOPICS = ["world", "sports", "business", "tech"]


def make_ds(name, n_per_class=10, seed=0, topic=False, n_test=8, extra_train=()):
    """A dataset with distinct texts (an index word makes each text unique; unknown words map to [UNK])."""
    rng = random.Random(seed)
    labels = TOPICS if topic else ["negative", "positive"]

    def text(c, i, split):
        if topic:
            return f"news about {labels[c]} and {rng.choice(TOPICS)} {split}{seed}x{i}"
        return f"the movie was {rng.choice(POS if c else NEG)} and {rng.choice(POS + NEG)} {split}{seed}x{i}"
    splits = {sp: [Example(text(c, i, sp), c) for i in range(n) for c in range(len(labels))]
              for sp, n in (("train", n_per_class), ("test", n_test))}
    splits["train"] += list(extra_train)
    return Dataset(name=name, task="single", labels=labels, splits=splits, source="memory")


def fast_cfg(**kw):
    return S.SimilarityConfig(k=2, seeds=[13], n_texts=16, embed_max_length=16, prompt=PromptConfig(length=2),
                              tune=TuneConfig(steps=4, eval_every=2, batch_size=4, lr=0.3, patience=0, max_length=16),
                              **kw)


@pytest.fixture(scope="module")
def bert(tiny):
    from workbench.engine.backbones import load_backbone
    return load_backbone(tiny["bert"])


def test_cosine_and_prompt_cosines():
    rng = np.random.default_rng(0)
    a, init = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    c = S.prompt_cosines(a, a.copy(), init)
    assert all(v == pytest.approx(1.0) for v in c.values())
    c = S.prompt_cosines(init + 2 * (a - init), a, init)  # same update direction, twice as long
    assert c["update_cos_flat"] == pytest.approx(1.0) and c["update_cos_slots"] == pytest.approx(1.0)
    assert c["prompt_cos_flat"] < 1.0
    c = S.prompt_cosines(init + (a - init), init - (a - init), init)  # opposite updates
    assert c["update_cos_flat"] == pytest.approx(-1.0)
    # slot means ignore which slot moved: swapping the slots of an update keeps update_cos_slots at 1
    d = a - init
    c = S.prompt_cosines(init + d, init + d[::-1], init)
    assert c["update_cos_slots"] == pytest.approx(1.0) and c["update_cos_flat"] < 1.0
    assert np.isnan(S.prompt_cosines(init, a, init)["update_cos_flat"])  # a task that kept its init
    with pytest.raises(S.SimilarityError, match="shape"):
        S.prompt_cosines(a, a[:2], init)


def test_identical_tasks_have_similarity_one(bert):
    """Two datasets with the same examples under different names: same embedding, same tuned prompt."""
    cfg = fast_cfg()
    a, b = make_ds("alpha"), make_ds("beta")
    ea = S.mean_embedding(bert, S.sample_texts(a, 16, 13), 16, cache_dir=False)
    eb = S.mean_embedding(bert, S.sample_texts(b, 16, 13), 16, cache_dir=False)
    assert S.cosine(ea, eb) == pytest.approx(1.0, abs=1e-6)
    pa, pb = S.tune_task_prompt(bert, a, cfg, 13), S.tune_task_prompt(bert, b, cfg, 13)
    assert torch_equal(pa["init"], pb["init"])
    assert pa["best_step"] > 0, "the tuned prompt moved away from its init (else the update cosines are NaN)"
    cos = S.prompt_cosines(pa["prompt"], pb["prompt"], pa["init"])
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in cos.values()), cos
    other = S.tune_task_prompt(bert, make_ds("gamma", seed=5, topic=True), cfg, 13)
    assert S.prompt_cosines(pa["prompt"], other["prompt"], pa["init"])["update_cos_flat"] < 0.999


def torch_equal(x, y):
    return bool((x == y).all())


def test_decontamination_counts_and_leakage():
    target = make_ds("tgt", seed=1)
    leaked = [target.splits["test"][0], Example(target.splits["test"][1].text_a.upper() + " !", 1)]  # normalised
    source = make_ds("src", seed=2, extra_train=leaked)
    clean = make_ds("clean", seed=3)
    (s1, s2), recs = S.decontaminate_sources(target, [source, clean], k=2, seeds=[13])
    assert [r["n_removed"] for r in recs] == [2, 0]
    assert recs[0]["n_train_before"] == len(source.splits["train"])
    assert recs[0]["n_train_after"] == len(s1.splits["train"])
    assert len(s1.splits["train"]) == len(source.splits["train"]) - 2 and s2.splits["train"] == clean.splits["train"]
    assert source.splits["train"][-1] in leaked  # the input dataset is not modified
    # a source text equal to one of the target's few-shot examples is removed too; one in the unused train is not
    from workbench.engine.splits import kshot_split
    sp = kshot_split(target, 2, 13)
    unused = next(e for e in target.splits["train"] if e not in sp.train + sp.dev)
    src = make_ds("src2", seed=4, extra_train=[sp.train[0], unused])
    _, recs = S.decontaminate_sources(target, [src], k=2, seeds=[13])
    assert recs[0]["n_removed"] == 1
    _, recs = S.decontaminate_sources(target, [src], k=2, seeds=[13], against="all")
    assert recs[0]["n_removed"] == 2
    with pytest.raises(S.SimilarityError, match="leakage"):
        S.decontaminate_sources(target, [source, make_ds("tgt", seed=9)], k=2, seeds=[13])
    with pytest.raises(S.SimilarityError, match="family"):
        S.decontaminate_sources(make_ds("sst2", seed=1), [make_ds("sst5", seed=2)], k=2, seeds=[13])


def test_task_similarity_table(bert):
    target = make_ds("tgt", seed=1)
    near = make_ds("near", seed=2, extra_train=[target.splits["test"][0]])
    far = make_ds("far", seed=3, topic=True)
    table, info = S.task_similarity(bert, target, [near, far], fast_cfg(), cache_dir=False, progress=False)
    assert list(table["source"]) == ["near", "far"] and set(table["target"]) == {"tgt"}
    assert list(table["n_removed"]) == [1, 0] and [r["n_removed"] for r in info["decontamination"]] == [1, 0]
    assert set(S.SIM_COLUMNS) <= set(table.columns)
    assert table[list(S.SIM_COLUMNS)].abs().le(1 + 1e-9).all().all()
    assert len(info["per_seed"]) == 2 and info["config"]["k"] == 2
    emb_only, _ = S.task_similarity(bert, target, [near, far], fast_cfg(prompts=False), cache_dir=False, progress=False)
    np.testing.assert_allclose(emb_only["embed_cos"], table["embed_cos"])
    assert "prompt_cos_flat" not in emb_only
    with pytest.raises(S.SimilarityError, match="leakage"):
        S.task_similarity(bert, target, [target], fast_cfg(), cache_dir=False, progress=False)


def rows_fixture():
    """Harness-like rows: two targets, a meta method, random and vocab; seed 87 has no random row for sst2."""
    acc = {("sst2", "mpt-maml"): {13: 0.80, 21: 0.70, 87: 0.9}, ("sst2", "random"): {13: 0.60, 21: 0.65},
           ("mr", "mpt-maml"): {13: 0.55}, ("mr", "random"): {13: 0.60}, ("mr", "vocab"): {13: 0.58}}
    return [{"dataset": d, "method": m, "seed": s, "test_acc": v} for (d, m), vs in acc.items() for s, v in vs.items()]


def test_gains_are_paired_per_seed(tmp_path):
    g = S.gains({"rows": rows_fixture()}, "mpt-maml")
    sst = g[g["target"] == "sst2"].iloc[0]
    assert sst["seeds"] == [13, 21] and sst["n"] == 2  # seed 87 has no random partner
    np.testing.assert_allclose(sst["diffs"], [0.20, 0.05])
    assert sst["gain_mean"] == pytest.approx(0.125) and sst["gain_std"] == pytest.approx(np.std([0.2, 0.05], ddof=1))
    assert sst["method_mean"] == pytest.approx(0.75) and sst["baseline_mean"] == pytest.approx(0.625)
    mr = g[g["target"] == "mr"].iloc[0]
    assert mr["gain_mean"] == pytest.approx(-0.05) and mr["gain_std"] == 0.0
    gv = S.gains(rows_fixture(), ["mpt-maml"], baseline="vocab")
    assert list(gv["target"]) == ["mr"] and gv["gain_mean"].iloc[0] == pytest.approx(-0.03)
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows_fixture()}))
    pd.testing.assert_frame_equal(S.gains(tmp_path, "mpt-maml"), g)  # run directory
    with pytest.raises(S.SimilarityError, match="no dataset has seeds"):
        S.gains(rows_fixture(), "metapt")
    with pytest.raises(S.SimilarityError, match="two rows"):
        S.gains(rows_fixture() + rows_fixture()[:1], "mpt-maml")
    with pytest.raises(S.SimilarityError, match="results.json"):
        S.gains(tmp_path / "nothing", "mpt-maml")


def test_join_scatter_and_files(tmp_path):
    sim = pd.DataFrame([{"target": "sst2", "source": "mr", "embed_cos": 0.9, "n_removed": 3},
                        {"target": "sst2", "source": "agnews", "embed_cos": 0.2, "n_removed": 0},
                        {"target": "mr", "source": "subj", "embed_cos": 0.5, "n_removed": 1},
                        {"target": "cola", "source": "subj", "embed_cos": 0.4, "n_removed": 0}])
    g = S.gains(rows_fixture(), "mpt-maml")
    t = S.join(sim, g)
    assert len(t) == 3 and "cola" not in set(t["target"])  # no gain for cola
    assert t.set_index("source").loc["agnews", "gain_mean"] == pytest.approx(0.125)
    assert t.set_index("source").loc["subj", "gain_mean"] == pytest.approx(-0.05)
    fig = VS.scatter(t)
    assert sorted(tr.name for tr in fig.data) == ["mr · mpt-maml", "sst2 · mpt-maml"]
    sst = next(tr for tr in fig.data if tr.name.startswith("sst2"))
    assert list(sst.x) == [0.9, 0.2] and list(sst.y) == pytest.approx([12.5, 12.5])
    assert "source %{customdata[0]}" in sst.hovertemplate and sst.customdata[1][0] == "agnews"
    assert "+20.0, +5.0" in sst.customdata[0][3]
    assert "Spearman" in fig.layout.title.text
    with pytest.raises(S.SimilarityError, match="no column"):
        VS.scatter(t, x="nope")
    with pytest.raises(S.SimilarityError, match="cola"):
        S.join(sim[sim["target"] == "cola"], g)
    out = S.write_outputs(tmp_path / "sim", t, {"note": "x"})
    assert not list(out.glob("*.html"))  # figures are the viz layer's (workbench.viz.similarity)
    with pytest.raises(S.SimilarityError, match="save_figure"):
        S.write_outputs(tmp_path / "sim2", t, figures={"similarity_scatter": fig})
    back = json.loads((out / "similarity.json").read_text())
    assert len(back["rows"]) == 3 and back["info"] == {"note": "x"}
    assert pd.read_csv(out / "similarity.csv")["source"].tolist() == list(t["source"])


def write_jsonl_dataset(root, ds):
    d = root / ds.name
    d.mkdir(parents=True)
    for split, exs in ds.splits.items():
        (d / f"{split}.jsonl").write_text("".join(json.dumps({"text": e.text_a, "label": e.label}) + "\n" for e in exs))
    (d / "meta.json").write_text(json.dumps({"name": ds.name, "task": "single", "labels": ds.labels}))


def test_cli_writes_table_and_scatter(tiny, tmp_path, monkeypatch, capsys):
    from workbench.cli.main import main
    target = make_ds("tgt", seed=1)
    near = make_ds("near", seed=2, extra_train=target.splits["test"][:3])
    for ds in (target, near, make_ds("far", seed=3, topic=True)):
        write_jsonl_dataset(tmp_path / "data", ds)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))  # the embedding cache stays in tmp
    rows = [{"dataset": "tgt", "method": m, "seed": s, "test_acc": v}
            for m, s, v in [("mpt-fomaml", 13, 0.7), ("mpt-fomaml", 21, 0.6), ("random", 13, 0.5), ("random", 21, 0.6)]]
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "results.json").write_text(json.dumps({"rows": rows}))
    args = ["similarity", "--targets", "tgt", "--sources", "near,far", "--backbone", tiny["bert"], "--k", "2",
            "--n-texts", "8", "--no-prompts", "--runs", str(tmp_path / "fs"), "--method", "mpt-fomaml",
            "--out", str(tmp_path / "sim"), "--quiet"]
    assert main(args) == 0
    out = tmp_path / "sim"
    table = pd.read_csv(out / "similarity.csv")
    assert list(table["source"]) == ["near", "far"] and list(table["n_removed"]) == [3, 0]
    assert table["gain_mean"].tolist() == pytest.approx([0.1, 0.1])
    assert (out / "similarity_scatter.html").is_file() and (out / "config.json").is_file()
    assert "near" in capsys.readouterr().out
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.npy"))) == 3  # one cached embedding per dataset
    assert main(args) == 2  # the output exists: refused, one error line
    leak = [a if a != "near,far" else "tgt,far" for a in args]
    assert main([a if a != str(out) else str(tmp_path / "x") for a in leak]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "leak" in err and not (tmp_path / "x").exists()
