"""Corpus clustering for MetaPT: embeddings (+ cache), K-means / LDA, summaries, files, pseudo-labels, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.cli.main import main

from workbench.tasks import corpus as C
from workbench.engine.backbones import load_backbone
from workbench.tasks.corpus import ClusterError, cluster

SPORT = "football goal match team player coach league score stadium referee".split()
COOK = "recipe oven flour butter sugar bake kitchen dough salt pepper".split()


def blobs(n_per=30, k=3, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 5
    truth = np.repeat(np.arange(k), n_per)
    feats = centers[truth] + rng.normal(size=(k * n_per, d)) * 0.1
    texts = [f"topic{t} word{t} item{i} common" for i, t in enumerate(truth)]
    return feats, texts, truth


def two_topics(n_per=40, seed=0):
    rng = np.random.default_rng(seed)
    texts, truth = [], []
    for i in range(2 * n_per):
        vocab = SPORT if i % 2 == 0 else COOK
        texts.append(" ".join(rng.choice(vocab, size=8)))
        truth.append(i % 2)
    return texts, np.array(truth)


@pytest.fixture(scope="module")
def bert(tiny):
    return load_backbone(tiny["bert"])


# ----------------------------------------------------------------------------------------------- embeddings
def test_embed_shape_normalised_and_order_independent(bert, tmp_path):
    texts = ["the movie was great", "bad", "it was a very long and boring film about the world", "good fun"]
    f = C.embed_texts(bert, texts, batch_size=2, cache_dir=False, progress=False)
    assert f.shape == (4, bert.hidden_size) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    one = C.embed_texts(bert, texts[2:3], cache_dir=False, progress=False)  # padding/sorting does not change rows
    np.testing.assert_allclose(one[0], f[2], atol=1e-5)


@pytest.mark.parametrize("family", ["t5", "gpt2", "bert-mlm"])
def test_embed_other_families(tiny, family):
    bb = load_backbone(tiny[family])
    f = C.embed_texts(bb, ["the movie was great", "it was bad and boring"], cache_dir=False, progress=False)
    assert f.shape == (2, bb.hidden_size) and np.isfinite(f).all()


def test_cache_hit_skips_model(bert, tmp_path, monkeypatch):
    texts = ["the film was great", "the movie was awful", "a good story"]
    calls = []
    real = C._encode_batches
    monkeypatch.setattr(C, "_encode_batches", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = C.embed_texts(bert, texts, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1 and len(list((tmp_path / "embeddings").glob("*.npy"))) == 1
    assert not list((tmp_path / "embeddings").glob("*.tmp"))

    def boom(*a, **k):
        raise AssertionError("the model ran on a cache hit")
    monkeypatch.setattr(C, "_encode_batches", boom)
    hook = bert.model.register_forward_pre_hook(lambda *a: boom())
    try:
        np.testing.assert_array_equal(C.embed_texts(bert, texts, cache_dir=tmp_path, progress=False), first)
        monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))  # the default cache dir follows $WORKBENCH_CACHE
        np.testing.assert_array_equal(C.embed_texts(bert, texts, progress=False), first)
    finally:
        hook.remove()
    # another max_length or other texts -> another key (a miss would run the model)
    assert C.embedding_cache_key(bert, texts, 64) != C.embedding_cache_key(bert, texts, 128)
    assert C.embedding_cache_key(bert, texts[:2], 128) != C.embedding_cache_key(bert, texts, 128)


# ----------------------------------------------------------------------------------------------- clustering
def test_kmeans_recovers_blobs():
    feats, texts, truth = blobs()
    res = cluster(feats, texts, "kmeans", k=3, seed=0)
    assert res.k == 3 and sorted(res.sizes) == [30, 30, 30] and res.assignments.dtype == np.int64
    assert C.purity(res.assignments, truth) == pytest.approx(1.0)
    assert C.nmi(res.assignments, truth) == pytest.approx(1.0)
    assert res.centroids.shape == (3, 16)
    for s in res.summaries:
        members = np.flatnonzero(res.assignments == s["id"])
        assert s["medoid"]["index"] in members and s["medoid"]["text"] == texts[s["medoid"]["index"]]
        assert len(s["examples"]) == 3 and all(e in [texts[i] for i in members] for e in s["examples"])
        member_words = {w for i in members for w in texts[i].split()}
        assert s["keywords"] and set(s["keywords"]) <= member_words
        t = truth[members[0]]
        assert {f"topic{t}", f"word{t}"} <= set(s["keywords"]) and "common" not in s["keywords"]


def test_lda_separates_two_topics():
    texts, truth = two_topics()
    res = cluster(None, texts, "lda", k=2, seed=0)
    assert C.purity(res.assignments, truth) >= 0.95
    for s in res.summaries:
        vocab = SPORT if truth[s["medoid"]["index"]] == 0 else COOK
        assert set(s["keywords"][:5]) <= set(vocab)
    feats = np.eye(2)[truth] + 0.01  # with features, centroids live in feature space
    assert cluster(feats, texts, "lda", k=2, seed=0).centroids.shape == (2, 2)


def test_keywords_skip_contraction_fragments():
    texts = ["I'll say we don't want the rocket's engine"] * 5 + ["you'll bake the bread and don't burn it"] * 5
    feats = np.repeat(np.eye(2), 5, axis=0)
    kws = {w for s in cluster(feats, texts, k=2).summaries for w in s["keywords"]}
    assert {"rocket", "engine", "bake", "bread"} <= kws and not kws & {"ll", "don", "t", "s"}


def test_errors():
    feats, texts, _ = blobs(n_per=2, k=2)
    with pytest.raises(ClusterError, match=r"4 texts.*k=10"):
        cluster(feats, texts, k=10)
    with pytest.raises(ClusterError, match="k must be"):
        cluster(feats, texts, k=1)
    with pytest.raises(ClusterError, match="method"):
        cluster(feats, texts, "dbscan", k=2)
    with pytest.raises(ClusterError, match="shape"):
        cluster(feats[:3], texts, k=2)


def test_empty_lda_topic_error_and_drop_empty():
    texts = ["football goal match team"] * 10 + ["recipe oven flour butter"] * 10  # 2 word profiles, 4 topics
    with pytest.raises(ClusterError, match=r"cluster\(s\) \[\d.*empty.*lower k.*drop_empty"):
        cluster(None, texts, "lda", k=4, seed=0)
    res = cluster(None, texts, "lda", k=4, seed=0, drop_empty=True)
    assert res.dropped and res.k == 2 and res.params["k_requested"] == 4
    assert C.purity(res.assignments, [0] * 10 + [1] * 10) == 1.0
    assert sorted(set(res.assignments.tolist())) == list(range(res.k)) and min(res.sizes) > 0
    assert len(res.summaries) == res.centroids.shape[0] == res.k


# ----------------------------------------------------------------------------------------------- files, labels
def test_save_load_round_trip(tmp_path):
    feats, texts, _ = blobs()
    res = cluster(feats, texts, k=3, seed=1)
    C.save_clustering(res, tmp_path / "c")
    back = C.load_clustering(tmp_path / "c")
    np.testing.assert_array_equal(back.assignments, res.assignments)
    np.testing.assert_array_equal(back.centroids, res.centroids)
    assert (back.method, back.k, back.seed, back.sizes, back.summaries, back.corpus) == \
        (res.method, res.k, res.seed, res.sizes, res.summaries, res.corpus)
    assert not list((tmp_path / "c").glob("*.tmp"))
    (tmp_path / "c" / "clusters.safetensors").unlink()
    with pytest.raises(ClusterError, match="clusters.safetensors"):
        C.load_clustering(tmp_path / "c")
    bad = cluster(feats, texts, k=4, seed=1)  # a tensors file that does not fit the json
    C.save_clustering(bad, tmp_path / "bad")
    (tmp_path / "bad" / "clusters.json").write_text((tmp_path / "c" / "clusters.json").read_text())
    with pytest.raises(ClusterError, match=r"clusters.safetensors.*centroids"):
        C.load_clustering(tmp_path / "bad")


def test_pseudo_labels():
    feats, texts, _ = blobs(k=4)
    res = cluster(feats, texts, k=4, seed=0)
    labels = C.pseudo_label_texts(res)
    assert len(set(labels)) == 4 and all(len(lab.split(", ")) == 3 for lab in labels)
    med = C.pseudo_label_texts(res, mode="medoid")
    assert med == [s["medoid"]["text"] for s in res.summaries]
    words = C.pseudo_label_words(res)
    assert len(set(words)) == 4 and all(w.isalpha() and " " not in w for w in words)
    for w, s in zip(words, res.summaries):
        assert w in s["keywords"] or w in s["medoid"]["text"].lower()
    long = dict(res.summaries[0], medoid={"index": 0, "text": " ".join(["word"] * 40)})
    res.summaries[0] = long
    assert C.pseudo_label_texts(res, mode="medoid")[0] == " ".join(["word"] * 20)


def test_purity_and_genres():
    assert C.purity([0, 0, 1, 1], ["a", "a", "b", "a"]) == 0.75
    assert C.purity([0, 0, 1, 1], ["a", "", "b", "b"]) == 1.0  # unknown labels ignored
    assert C.nmi([0, 0, 1, 1], ["x", "x", "y", "y"]) == pytest.approx(1.0)
    g = C.brown_genres([0, 499, None, 10**6])
    if g[0]:  # the shared Brown metadata is present
        assert g[:2] == ["a", "r"] and g[2:] == ["", ""]
    assert C.brown_genres([0, 1], search_path=[]) == ["", ""]


# ----------------------------------------------------------------------------------------------- CLI
def test_run_cli_end_to_end(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    rows = [{"text": f"the movie was {w} and the film is {v}", "doc": i % 3} for i, (w, v) in
            enumerate((w, v) for w in ["great", "awful", "good", "boring", "fun"] for v in ["good", "bad", "okay"])]
    rows += [{"text": "too short"}, {"text": "bad"}]
    src = tmp_path / "tinycorpus.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    argv = ["cluster", "--corpus", str(src), "--n-clusters", "3", "--backbone", tiny["bert"], "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"config.json", "clusters.json", "clusters.safetensors",
                                               "assignments.jsonl"}
    lines = [json.loads(x) for x in (out / "assignments.jsonl").read_text().splitlines()]
    assert len(lines) == 15 and set(lines[0]) == {"index", "doc", "cluster", "text"}
    assert json.loads((out / "config.json").read_text())["n_clusters"] == 3
    res = C.load_clustering(out)
    assert res.k == 3 and res.corpus["n"] == 15 and res.backbone["path"] == tiny["bert"]
    assert [x["cluster"] for x in lines] == res.assignments.tolist()
    assert "keywords" in capsys.readouterr().out
    assert main(argv) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--method", "kmeans", "--seed", "1"]) == 0
    assert main(argv[:-3] + ["--n-clusters", "99", "--out", str(tmp_path / "r2")]) == 2
    assert "fewer than k=99" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_minilm_on_brown(minilm, tmp_path):
    """~200 real Brown sentences through MiniLM: clusters are non-trivial and the cache works."""
    from conftest import SHARED_DATA
    if not (SHARED_DATA / "unlabeled" / "brown.jsonl").exists():
        pytest.skip("Brown is not in the shared data")
    texts, docs, feats, res = C.cluster_corpus(minilm, "brown", "kmeans", k=4, limit=200, cache_dir=tmp_path,
                                               progress=False)
    assert len(texts) == 200 and feats.shape == (200, 384) and all(len(t.split()) >= 4 for t in texts)
    assert res.k == 4 and min(res.sizes) > 0 and res.diagnostics["n_genres"] > 3
    assert 0 < res.diagnostics["genre_nmi"] < 1
    again = C.embed_texts(minilm, texts, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again, feats)
