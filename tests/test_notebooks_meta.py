"""Notebooks 01 (clustering) and 02 (meta-training) end to end under papermill on a tiny model and toy data, and the
figure/widget helpers they use (workbench.viz.clusters, workbench.viz.meta, workbench.ui.panels).

As in test_notebooks.py, the notebook kernel inherits WORKBENCH_DATA (the toy data) and WORKBENCH_CACHE; workbench
itself is installed (editable) in the kernel's environment.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import PLOTLY_MIME, check_committed_clean, check_export, check_saved_figure

papermill = pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
NB01 = REPO / "notebooks" / "01_clustering.ipynb"
NB02 = REPO / "notebooks" / "02_meta_training.ipynb"

GROUPS = {"a": "the movie was great and good and wonderful and fun".split(),
          "b": "news about world sports business tech article story summary".split(),
          "r": "i you he she we they me him her us them my your".split()}


def write_toy_brown(root: Path, n_per: int = 14, seed: int = 0) -> Path:
    """``<root>/unlabeled/brown.jsonl`` (+ meta.json with doc_files) whose docs fall into three 'genres'."""
    rng = random.Random(seed)
    d = root / "unlabeled"
    d.mkdir(parents=True, exist_ok=True)
    files, rows = [], []
    for g, words in GROUPS.items():
        for doc in range(2):
            files.append(f"c{g}{doc:02d}")
            for _ in range(n_per // 2):
                rows.append({"doc": len(files) - 1, "text": " ".join(rng.choice(words) for _ in range(7))})
    (d / "brown.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "meta.json").write_text(json.dumps([{"name": "brown", "doc_files": files}]))
    return d / "brown.jsonl"


def execute(nb: Path, tmp: Path, monkeypatch, data_dir: Path, **params) -> Path:
    monkeypatch.setenv("WORKBENCH_DATA", str(data_dir))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
    out = tmp / f"executed_{nb.stem}.ipynb"
    papermill.execute_notebook(str(nb), str(out), kernel_name="python3", parameters=params, cwd=str(tmp),
                               progress_bar=False, execution_timeout=300)
    return out


# ----------------------------------------------------------------------------------------------- notebook 01
NB01_PARAMS = ["corpus", "backbone", "method", "n_clusters", "limit", "seed", "drop_empty", "projection",
               "umap_neighbors", "n_clusters_sweep", "out_dir", "overwrite", "interactive"]


def test_nb01_committed_clean_and_parameterised():
    check_committed_clean(NB01, NB01_PARAMS)


def test_nb01_runs_on_a_toy_corpus(tiny, tmp_path, monkeypatch):
    write_toy_brown(tmp_path / "data")
    nb = execute(NB01, tmp_path, monkeypatch, tmp_path / "data", corpus="brown", backbone=tiny["bert"],
                 method="kmeans", n_clusters=3, limit=30, seed=1, projection="pca", n_clusters_sweep=[2, 4],
                 out_dir="runs/c", interactive=False)
    out = tmp_path / "runs" / "c"
    res = json.loads((out / "results.json").read_text())
    assert res["n_clusters"] == 3 and res["corpus"]["n"] == 30 and sum(res["sizes"]) == 30 and res["projection"] == "pca"
    d = res["diagnostics"]
    assert d["n_genres"] == 3 and 1 / 3 <= d["genre_purity"] <= 1 and 0 <= d["genre_nmi"] <= 1
    assert [r["k"] for r in res["n_clusters_sweep"]] == [2, 4] and all("genre_nmi" in r for r in res["n_clusters_sweep"])
    config = json.loads((out / "config.json").read_text())  # the run directory `workbench cluster` writes
    assert config["command"] == "cluster" and config["n_clusters"] == 3 and config["limit"] == 30
    from workbench.tasks.corpus import load_clustering
    c = load_clustering(out)
    assert c.k == 3 and len(c.assignments) == 30
    lines = (out / "assignments.jsonl").read_text().splitlines()
    assert [json.loads(ln)["cluster"] for ln in lines] == c.assignments.tolist()
    for name in ("cluster_map.html", "k_sweep.html"):
        check_saved_figure(out / name)
    assert "PapermillExecutionError" not in nb.read_text() and "purity" in nb.read_text()
    assert check_export(nb) == 2  # 01_clustering.ipynb: the map and the K sweep, each in the nbconvert HTML


def test_nb01_lda_with_k_panel(tiny, tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    write_toy_brown(tmp_path / "data")
    nb = execute(NB01, tmp_path, monkeypatch, tmp_path / "data", corpus="brown", backbone=tiny["bert"], method="lda",
                 n_clusters=3, limit=None, projection="pca", n_clusters_sweep=[], out_dir="runs/lda", interactive=True)
    res = json.loads((tmp_path / "runs" / "lda" / "results.json").read_text())
    assert res["method"] == "lda" and res["corpus"]["n"] == 42 and res["n_clusters_sweep"] is None
    assert not (tmp_path / "runs" / "lda" / "k_sweep.html").exists() and "no sweep over K" in nb.read_text()
    assert "application/vnd.jupyter.widget-view+json" in nb.read_text()  # the K panel was displayed


# ----------------------------------------------------------------------------------------------- metaviz helpers
def test_k_panel_clusters_again_and_saves(tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.ui.panels import k_panel
    rng = np.random.default_rng(0)
    feats = np.concatenate([np.eye(4)[c] + rng.normal(0, 0.05, size=(10, 4)) for c in range(3)])  # 3 directions
    texts = [f"{w} sentence number {i}" for i, w in enumerate(["alpha"] * 10 + ["beta"] * 10 + ["gamma"] * 10)]
    saved = []
    panel = k_panel(feats, texts, feats[:, :2], k=3, genres=["a"] * 10 + ["b"] * 10 + ["c"] * 10,
                    on_result=saved.append)
    panel.button.click()
    assert "K=3" in panel.children[2].value and "purity 1.000" in panel.children[2].value
    panel.slider.value = 2
    panel.button.click()
    assert sorted(panel.results) == [2, 3] and [c.k for c in saved] == [3, 2]
    assert np.bincount(panel.results[3].assignments).tolist() == [10, 10, 10]
    assert "K=2" in panel.children[2].value and "purity 1.000" not in panel.children[2].value
    panel.slider.value = 40  # more clusters than texts: an error line, not an exception
    panel.button.click()
    assert "failed" in panel.children[2].value and not panel.button.disabled


def test_cluster_map_and_projection():
    from workbench.tasks.corpus import cluster
    from workbench.viz.clusters import cluster_map, cluster_table, project_2d
    rng = np.random.default_rng(1)
    feats = np.concatenate([rng.normal(c, 0.05, size=(8, 6)) for c in (-1, 1)])
    texts = [f"text {i} " + "word " * 60 for i in range(16)]
    c = cluster(feats, texts, k=2, seed=0)
    xy = project_2d(feats, "pca")
    assert xy.shape == (16, 2)
    fig = cluster_map(xy, texts, c, genres=["a"] * 8 + ["k"] * 8)
    assert len(fig.data) == 2 and sum(len(t.x) for t in fig.data) == 16
    tr = fig.data[0]
    assert "genre" in tr.hovertemplate and tr.customdata[0][1] in ("press: reportage", "fiction: general")
    assert "<br>" in tr.customdata[0][0] and len(tr.customdata[0][0]) < 300  # long texts wrapped and shortened
    assert list(cluster_table(c)["size"]) == [8, 8]
    with pytest.raises(ValueError, match="projection"):
        project_2d(feats, "tsne")
    with pytest.raises(ValueError, match="do not match"):
        cluster_map(xy[:3], texts, c)


def test_meta_curves_from_metrics(tmp_path):
    from workbench.viz.meta import meta_curves
    recs = [{"event": "train", "step": s, "loss": 1.0 / s, "acc": 0.5} for s in (1, 2, 3)] + \
           [{"event": "val", "step": s, "loss": 2.0 / s, "acc": 0.4 + s / 10} for s in (2, 3)] + [{"event": "done"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    fig = meta_curves(tmp_path)
    names = sorted(t.name for t in fig.data)
    assert names == ["train acc", "train loss", "val acc", "val loss"]
    val_loss = next(t for t in fig.data if t.name == "val loss")
    assert list(val_loss.x) == [2, 3] and list(val_loss.y) == [1.0, 2 / 3]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        meta_curves(tmp_path / "bad")
    with pytest.raises(ValueError, match="missing does not exist"):  # engine.runs.RunError, a ValueError
        meta_curves(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="metrics.jsonl: no such file"):
        meta_curves(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------- notebook 02
NB02_PARAMS = ["method", "source", "labelled_sources", "labelled_datasets", "targets", "backbone", "pseudo_corpus",
               "pseudo_features", "pseudo_n_clusters", "labelled_k", "meta_steps", "meta_batch", "meta_eval_every", "k",
               "seeds", "tune_steps", "tune_eval_every", "tune_snapshot_every", "prompt_length", "tune_max_length",
               "test_limit", "similarity", "similarity_steps", "out_dir", "overwrite", "interactive"]


def write_distinct(root: Path, name: str, topic: bool = False, n_per_class: int = 8, n_test: int = 4, seed: int = 0,
                   shared=()):
    """A labelled dataset whose texts are all distinct (a numbered token each); ``shared`` texts are appended to
    train with label 0 (to be found by decontamination)."""
    rng = random.Random(seed)
    words = (GROUPS["b"], GROUPS["r"]) if topic else (["terrible", "awful", "bad", "boring"], ["great", "good", "fun"])
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_per_class), ("test", n_test)):
        rows = [{"text": f"it was {rng.choice(words[c])} and {rng.choice(words[c])} {name}{split}{i}", "label": c}
                for i in range(n) for c in (0, 1)]
        rows += [{"text": t, "label": 0} for t in (shared if split == "train" else ())]
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "meta.json").write_text(json.dumps({"name": name, "task": "single", "labels": ["negative", "positive"]}))
    return d


def test_nb02_committed_clean_and_parameterised():
    check_committed_clean(NB02, NB02_PARAMS)


def test_nb02_meta_trains_compares_and_scatters(tiny, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_distinct(data, "toy", seed=1)
    leaked = [json.loads(ln)["text"] for ln in (data / "toy" / "test.jsonl").read_text().splitlines()[:2]]
    write_distinct(data, "srca", seed=2, shared=leaked)
    write_distinct(data, "srcb", topic=True, seed=3)
    write_toy_brown(data)  # the vocab init counts token frequencies in "brown": the toy one is quick
    # explicit sources: a named configuration (leave-one-out) would also take the shared datasets on the search path
    nb = execute(NB02, tmp_path, monkeypatch, data, method="fomaml", source="labelled",
                 labelled_datasets=["srca", "srcb"], targets=["toy"], backbone=tiny["bert"], labelled_k=2, meta_steps=2,
                 meta_batch=2, meta_eval_every=1, k=2, seeds=[13, 21], tune_steps=2, tune_eval_every=1,
                 tune_snapshot_every=1, prompt_length=2, tune_max_length=24, test_limit=6, similarity=True,
                 similarity_steps=2, out_dir="runs/m", overwrite=True, interactive=True)
    out = tmp_path / "runs" / "m"
    res = json.loads((out / "results.json").read_text())
    meta = res["meta_runs"]["toy"]
    assert meta["steps"] == 2 and sorted(meta["source"]["per_source"]) == ["srca", "srcb"]
    assert meta["source"]["per_source"]["srca"]["removed_train"] == 2  # leaked target texts dropped before training
    assert (out / "meta" / "toy" / "prompt" / "adapter_model.safetensors").is_file()
    recs = [json.loads(ln) for ln in (out / "meta" / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["event"] == "train"] == [1, 2]
    assert [r["step"] for r in recs if r["event"] == "val"] == [0, 1, 2]  # meta_eval_every=1 -> meta.eval_every
    config = json.loads((out / "meta" / "toy" / "config.json").read_text())
    assert config["meta"]["steps"] == 2 and config["labelled"]["k"] == 2
    assert config["labelled"]["datasets"] == ["srca", "srcb"]
    assert sorted({r["method"] for r in res["rows"]}) == ["meta-fomaml", "random", "vocab"]
    assert len(res["rows"]) == 6 and {r["seed"] for r in res["rows"]} == {13, 21}
    assert all(r["n_test"] == 6 for r in res["rows"]) and res["fewshot_config"]["tune"]["eval_every"] == 1
    assert (out / "fewshot" / "toy" / "adapters" / "toy" / "random" / "seed13" / "snapshots.json").is_file()
    by = {(r["method"], r["seed"]): r["test_acc"] for r in res["rows"]}
    g = {(x["baseline"]): x for x in res["gains"]}
    assert set(g) == {"random", "vocab"} and g["random"]["n"] == 2
    assert g["random"]["diffs"] == pytest.approx([by[("meta-fomaml", s)] - by[("random", s)] for s in (13, 21)])
    sim = {r["source"]: r for r in res["similarity"]}
    assert set(sim) == {"srca", "srcb"} and sim["srca"]["n_removed"] == 2 and sim["srcb"]["n_removed"] == 0
    assert all(-1 <= sim[s]["embed_cos"] <= 1 and sim[s]["gain_mean"] == g["random"]["gain_mean"] for s in sim)
    for name in ("meta_curves_toy.html", "downstream_toy.html", "similarity_scatter.html",
                 "similarity_scatter_prompts.html"):
        check_saved_figure(out / name)
    assert (out / "similarity.csv").is_file() and (out / "fewshot" / "toy" / "results.json").is_file()
    text = nb.read_text()
    assert "PapermillExecutionError" not in text and "meta-fomaml" in text and "one target" in text
    assert check_export(nb) == 3  # 02_meta_training.ipynb: curves, downstream dots, similarity scatter
    figures = [json.dumps(o["data"][PLOTLY_MIME]["data"]) for c in nbformat.read(nb, as_version=4).cells
               for o in c.get("outputs", []) if PLOTLY_MIME in o.get("data", {})]
    assert all('"file"' not in f for f in figures) and any('"meta-fomaml"' in f for f in figures)  # named init
    assert "application/vnd.jupyter.widget-view+json" in nb.read_text()  # the interactive widgets were displayed


def test_nb02_metapt_on_pseudo_tasks(tiny, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_distinct(data, "toy", seed=1)
    corpus = write_toy_brown(data, n_per=40)  # 120 texts: 3 clusters with enough held-out sentences for validation
    with corpus.open("a") as f:  # a corpus sentence that is also a target test text: removed before clustering
        leaked = json.loads((data / "toy" / "test.jsonl").read_text().splitlines()[0])["text"]
        f.write(json.dumps({"doc": 0, "text": leaked}) + "\n")
    nb = execute(NB02, tmp_path, monkeypatch, data, method="reptile", source="pseudo", targets=["toy"],
            backbone=tiny["bert"], pseudo_corpus="brown", pseudo_features="tfidf", pseudo_n_clusters=3, meta_steps=2,
            meta_batch=2, k=2, seeds=[13], tune_steps=2, prompt_length=2, tune_max_length=24, similarity=True,
            out_dir="runs/p", overwrite=True, interactive=False)
    out = tmp_path / "runs" / "p"
    res = json.loads((out / "results.json").read_text())
    src = res["meta_runs"]["toy"]["source"]
    assert src["source"] == "pseudo" and src["k"] == 3 and src["decontamination"]["removed"] == 1
    assert sorted({r["method"] for r in res["rows"]}) == ["meta-reptile", "random", "vocab"]
    assert res["similarity"] is None and not (out / "similarity_scatter.html").exists()  # labelled sources only
    assert (out / "meta_curves_toy.html").is_file() and (out / "downstream_toy.html").is_file()
    assert "labelled sources only" in nb.read_text()  # the skipped view says why
