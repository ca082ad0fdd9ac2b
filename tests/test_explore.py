"""Prompt snapshots, the embedding-space explorer and notebook 04, on one small run of a tiny model (toy data).

One module-scoped run (bert-mlm, inits random + vocab, two seeds, snapshots every 3 steps) feeds every view; the
checks recompute what the figures claim (distances, accuracies, nearest tokens) independently from the saved files.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from workbench.viz.output import static_export_available

from conftest import write_dataset
from workbench.cli.main import main

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "04_embedding_space.ipynb"
SEEDS, INITS, L = (13, 21), ("random", "vocab"), 4


def fewshot(tiny, out, *extra):
    return ["fewshot", "--dataset", "toy", "--backbone", tiny["bert-mlm"], "--k", "4", "--seeds", "13,21",
            "--steps", "6", "--eval-every", "2", "--prompt-length", str(L), "--max-length", "32", "--out", str(out),
            "--quiet", *extra]


@pytest.fixture(scope="module")
def env(tiny, tmp_path_factory):
    """The toy data on WORKBENCH_DATA and a run with snapshots (plus its twin without) for the whole module."""
    tmp = tmp_path_factory.mktemp("explore")
    write_dataset(tmp / "data", "toy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_DATA", str(tmp / "data"))
        mp.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
        run = tmp / "runs" / "snap"
        assert main(fewshot(tiny, run, "--methods", "zero-shot,random,vocab", "--snapshot-every", "3")) == 0
        yield {"tmp": tmp, "run": run}


def _rows(run):
    return {(r["method"], r["seed"]): r for r in json.loads((run / "results.json").read_text())["rows"]}


def test_snapshots_record_the_trajectory_without_changing_selection(env, tiny):
    from workbench.engine.runs import load_snapshots
    from workbench.engine.runs import load_prompt

    run = env["run"]
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for method in INITS:
        for seed in SEEDS:
            d = run / "adapters" / "toy" / method / f"seed{seed}"
            snap = load_snapshots(d)
            assert snap["steps"] == [0, 3, 6] and snap["prompts"].shape == (3, L, 32)
            final, meta = load_prompt(d)
            assert snap["best_step"] == meta["workbench"]["best_step"]
            if snap["best_step"] in snap["steps"]:  # the snapshot at the best step is the saved prompt
                np.testing.assert_array_equal(snap["prompts"][snap["steps"].index(snap["best_step"])], final.numpy())
            logged = {e["step"]: e["dev_acc"] for e in evals
                      if e["event"] == "eval" and e["method"] == method and e["seed"] == seed}
            assert 3 not in logged  # the extra dev pass at a non-evaluation step is not logged ...
            assert snap["dev_acc"][0] == logged[0] and snap["dev_acc"][2] == logged[6]
    vocab = json.loads((run / "adapters/toy/vocab/seed13/workbench_prompt.json").read_text())["provenance"]
    from safetensors.numpy import load_file
    table = load_file(str(Path(tiny["bert-mlm"]) / "model.safetensors"))
    emb = next(v for k, v in table.items() if k.endswith("word_embeddings.weight"))
    np.testing.assert_allclose(load_snapshots(run / "adapters/toy/vocab/seed13")["prompts"][0],
                               emb[vocab["token_ids"]], atol=1e-6)  # step 0 is the init itself

    plain = env["tmp"] / "runs" / "plain"  # ... and selection is the same without snapshots
    assert main(fewshot(tiny, plain, "--methods", "random", "--seeds", "13")) == 0
    assert not (plain / "adapters/toy/random/seed13/snapshots.json").exists()
    a, b = _rows(run)[("random", 13)], _rows(plain)[("random", 13)]
    assert (a["best_step"], a["dev_acc"], a["test_acc"]) == (b["best_step"], b["dev_acc"], b["test_acc"])
    np.testing.assert_array_equal(load_prompt(run / "adapters/toy/random/seed13")[0],
                                  load_prompt(plain / "adapters/toy/random/seed13")[0])


def test_snapshot_flag_and_config():
    from workbench.cli.main import build_parser, fewshot_config
    from workbench.config import ConfigError, TuneConfig

    args = build_parser().parse_args(["fewshot", "--snapshot-every", "5"])
    assert fewshot_config(args).tune.snapshot_every == 5 and TuneConfig().snapshot_every == 0
    with pytest.raises(ConfigError, match="snapshot_every"):
        TuneConfig(snapshot_every=-1)


def test_token_space_places_every_prompt_vector_with_its_neighbours(env):
    from workbench.viz import explore

    fig = explore.token_space(env["run"], projection="pca", neighbours=3)
    vocab, prompts = fig.data[0], fig.data[1:]
    assert len(prompts) == len(INITS) * len(SEEDS) and sum(len(t.x) for t in prompts) == len(INITS) * len(SEEDS) * L
    assert [t.name for t in prompts if t.showlegend] == list(INITS)  # coloured by init, one legend entry each
    hover = prompts[0].text[1]
    assert "slot 1" in hover and "init random" in hover and "seed 13" in hover
    assert hover.split("nearest: ")[1].count(" (") == 3  # three neighbours, each with its cosine
    assert len(vocab.x) == fig.layout.meta["n_vocab"] > 100 and all(vocab.text)

    bb = explore.backbone_for(explore.load_prompt_runs(env["run"]))
    ids, toks, rows = explore.vocab_sample(bb, 20)
    nn = explore.nearest_tokens(rows, bb, k=5)  # a vocabulary row's nearest token is itself, at cosine 1
    assert [n[0][0] for n in nn] == toks and all(abs(n[0][1] - 1) < 1e-5 for n in nn)
    assert all(n[i][1] >= n[i + 1][1] for n in nn for i in range(4))

    from workbench.viz.projection import fit_projection
    proj = fit_projection(rows, "pca")
    np.testing.assert_allclose(proj.place(rows), proj.coords, atol=1e-5)  # PCA places points exactly
    from sklearn.decomposition import PCA
    ref = PCA(2).fit_transform(rows)
    np.testing.assert_allclose(np.abs(proj.coords), np.abs(ref), atol=1e-4)  # the same axes, up to sign


def test_umap_map_is_fitted_once_and_cached_without_pickle(tmp_path):
    from workbench.viz.projection import fit_projection

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    x = (np.repeat(centres, 20, axis=0) + rng.normal(size=(60, 16))).astype(np.float32)  # three clusters
    a = fit_projection(x, "umap", seed=0, cache_dir=tmp_path)
    b = fit_projection(x, "umap", seed=0, cache_dir=tmp_path)
    assert (a.info["cache"], b.info["cache"]) == ("miss", "hit") and b.info["fit_s"] < 1.0
    np.testing.assert_array_equal(a.coords, b.coords)
    files = list((tmp_path / "explore").iterdir())
    assert [f.suffix for f in files] == [".safetensors"]
    c = fit_projection(x[:50], "umap", seed=0, cache_dir=tmp_path)  # other inputs: another entry
    assert c.info["cache"] == "miss" and len(list((tmp_path / "explore").iterdir())) == 2
    from workbench.viz.projection import cosine_knn
    idx, dist = cosine_knn(x, 5, chunk=16)  # the exact neighbour graph UMAP is given, checked against brute force
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = np.argsort(-(u @ u.T), axis=1)[:, :5]
    assert (idx == ref).all() and np.allclose(dist, 1 - np.take_along_axis(u @ u.T, ref, 1), atol=1e-5)
    new = (centres + rng.normal(size=(3, 16))).astype(np.float32)  # unseen points, one per cluster
    mids = np.stack([a.coords[20 * i:20 * (i + 1)].mean(0) for i in range(3)])
    placed = a.place(new)
    assert [int(np.argmin(np.linalg.norm(mids - p, axis=1))) for p in placed] == [0, 1, 2]


def test_trajectories_and_distances_match_the_saved_prompts(env):
    from workbench.viz import explore
    from workbench.engine.runs import load_snapshots
    from workbench.engine.runs import load_prompt

    fig = explore.trajectories(env["run"], projection="pca")
    paths = fig.data[1:]
    assert len(paths) == len(INITS) * len(SEEDS) * L  # one line per slot
    assert all("step 0" in p.text[0] and "best on dev" in p.text[-1] for p in paths)
    df = explore.distances(env["run"])
    rows = _rows(env["run"])
    for r in df.itertuples():
        d = env["run"] / "adapters/toy" / r.method / f"seed{r.seed}"
        init, final = load_snapshots(d)["prompts"][0], load_prompt(d)[0].numpy()
        assert r.l2 == pytest.approx(np.sqrt(((final - init) ** 2).sum()), rel=1e-5)
        cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(init, final)]
        assert r.cosine == pytest.approx(1 - np.mean(cos), abs=1e-6)
        assert r.test_acc == rows[(r.method, r.seed)]["test_acc"]
        assert (r.l2 > 0) == (r.best_step > 0)
    scatter = explore.distance_vs_accuracy(env["run"])
    assert sum(len(t.x) for t in scatter.data) == 2 * len(df) and "test acc" in scatter.data[0].text[0]


def test_prompt_similarity_matching(env):
    from workbench.viz import explore

    rng = np.random.default_rng(0)
    p = rng.normal(size=(5, 8))
    perm = p[[3, 0, 4, 1, 2]]
    aligned = explore.similarity_matrix([p, perm], "aligned")
    hung = explore.similarity_matrix([p, perm], "hungarian")
    assert hung[0, 1] == pytest.approx(1.0) and aligned[0, 1] < 0.9 and np.allclose(aligned, aligned.T)
    fig = explore.prompt_similarity(env["run"], match="hungarian")
    z = np.array(fig.data[0].z)
    assert z.shape == (4, 4) and np.allclose(np.diag(z), 1) and "Hungarian" in fig.data[0].hovertemplate
    table = explore.nearest_words_table(env["run"], neighbours=2)
    assert len(table) == 4 * L and table["nearest"].str.count(r"\(").eq(2).all()
    with pytest.raises(explore.ExploreError, match="aligned"):
        explore.similarity_matrix([p, p], "best")


def test_sentence_space_reproduces_the_run_accuracies(env):
    from workbench.viz import explore

    fig = explore.sentence_space(env["run"], method="vocab", seed=21, n_examples=None)
    rows, meta = _rows(env["run"]), fig.layout.meta
    assert meta["acc_plain"] == pytest.approx(rows[("zero-shot", 13)]["test_acc"])  # no prompt = zero-shot
    assert meta["acc_tuned"] == pytest.approx(rows[("vocab", 21)]["test_acc"])  # tuned prompt = the run's test acc
    anchors = [t for t in fig.data if t.name == "label anchors"]  # one per panel, one star per class
    assert len(anchors) == 2 and all(len(t.x) == 2 and len(t.text) == 2 for t in anchors)
    assert list(anchors[0].x) == list(anchors[1].x)  # one shared projection: the anchors sit still
    points = [t for t in fig.data if t.name != "label anchors"]
    assert sum(len(t.x) for t in points) == 2 * 16
    wrong = [t for t in points if "wrong" in t.name]
    assert all(t.marker.symbol == "x" for t in wrong) and all("gold" in s for t in points for s in t.text)


def test_sentence_space_of_the_similarity_head_uses_label_text_anchors(env, tiny):
    from workbench.viz import explore

    run = env["tmp"] / "runs" / "encoder"
    assert main(["fewshot", "--dataset", "toy", "--backbone", tiny["bert"], "--k", "4", "--seeds", "13", "--steps", "2",
                 "--prompt-length", "2", "--max-length", "32", "--out", str(run), "--quiet", "--methods",
                 "zero-shot,vocab"]) == 0
    fig = explore.sentence_space(run, n_examples=None)
    rows = _rows(run)
    assert fig.layout.meta["acc_tuned"] == pytest.approx(rows[("vocab", 13)]["test_acc"])
    assert fig.layout.meta["acc_plain"] == pytest.approx(rows[("zero-shot", 13)]["test_acc"])
    anchors = next(t for t in fig.data if t.name == "label anchors")
    assert len(anchors.x) == 2 and "label-text embeddings" in fig.layout.title.text


def test_corpus_space_draws_clusters_with_the_target_data(env, tiny):
    from workbench.viz import explore

    src = env["tmp"] / "corpus.txt"
    src.write_text("\n".join(f"the {w} movie was {v} and good" for w in ("film", "plot", "cast", "story", "book")
                             for v in ("great", "bad", "boring")) + "\n")
    out = env["tmp"] / "runs" / "clusters"
    assert main(["cluster", "--corpus", str(src), "--n-clusters", "3", "--backbone", tiny["bert"], "--out", str(out),
                 "--quiet", "--cache-dir", str(env["tmp"] / "cache")]) == 0
    fig = explore.corpus_space(out, "toy", n_target=10)
    centroids = next(t for t in fig.data if t.name.startswith("cluster centroids"))
    assert len(centroids.x) == 3 and "keywords" in centroids.hovertemplate
    corpus = [t for t in fig.data if t.name.startswith("cluster ") and t.name[8].isdigit()]
    assert sum(len(t.x) for t in corpus) == 15
    assert sum(len(t.x) for t in fig.data if t.name.startswith("toy test")) == 10
    with pytest.raises(explore.ExploreError, match="not a cluster run"):
        explore.corpus_space(env["run"], "toy")


def test_particles_space_draws_svgd_moves(tmp_path):
    bayes = pytest.importorskip("workbench.methods.bayes")
    import torch
    from workbench.viz import explore

    g = torch.Generator().manual_seed(0)
    data = torch.randn(8, 6, generator=g, dtype=torch.float64)
    start = torch.randn(5, 6, generator=g, dtype=torch.float64)
    dist = bayes.Distribution(torch.tensor([0.5, 0.5]), torch.randn(2, 6, generator=g, dtype=torch.float64),
                              torch.ones(2, 6, dtype=torch.float64), "diag", None, None, data, start, start * 0.5,
                              {"backbone": "tiny", "feature_dim": 6})
    dist.save(tmp_path / "bayes-run" / "distributions" / "toy" / "seed13")
    fig = explore.particles_space(tmp_path / "bayes-run", dataset="toy")
    by_name = {t.name: t for t in fig.data}
    assert len(by_name["target data (density fit)"].x) == 8 and len(by_name["GMM component means"].x) == 2
    assert len(by_name["particles (start)"].x) == len(by_name["particles (end)"].x) == 5
    assert len(by_name["SVGD moves"].x) == 3 * 5  # one segment per particle
    with pytest.raises(explore.ExploreError, match="no saved BayesPrompt distribution"):
        explore.particles_space(tmp_path / "bayes-run", dataset="sst2")


def test_bad_inputs_name_the_culprit(env, tmp_path):
    from workbench.viz import explore

    empty = tmp_path / "baseline-only"
    shutil.copytree(env["run"], empty)
    shutil.rmtree(empty / "adapters")
    with pytest.raises(explore.ExploreError, match=f"{empty}.*holds no learned prompts"):
        explore.token_space(empty, projection="pca")
    other = tmp_path / "other-backbone"  # the same run, claiming another backbone
    shutil.copytree(env["run"], other)
    for f in other.glob("adapters/*/*/*/workbench_prompt.json"):
        f.write_text(json.dumps({**json.loads(f.read_text()), "backbone_path": "/models/another"}))
    with pytest.raises(explore.ExploreError, match="different embedding spaces"):
        explore.token_space([env["run"], other], projection="pca")
    with pytest.raises(explore.ExploreError, match="--snapshot-every"):
        explore.trajectories(_without_snapshots(env["run"], tmp_path), projection="pca")
    with pytest.raises(explore.ExploreError, match="no prompt matches"):
        explore.token_space(env["run"], methods=["maml"], projection="pca")
    with pytest.raises(explore.ExploreError, match="projection"):
        explore.token_space(env["run"], projection="tsne")


def _without_snapshots(run, tmp_path):
    out = tmp_path / "nosnap"
    shutil.copytree(run, out)
    for f in out.glob("adapters/*/*/*/snapshots.*"):
        f.unlink()
    return out


def _explore_cli(argv):
    from workbench.cli.main import main
    return main(argv)


def test_explore_command_writes_html_and_fails_cleanly(env, tmp_path, capsys):
    out = tmp_path / "figs"
    assert _explore_cli(["explore", "--runs", str(env["run"]), "--out", str(out), "--projection", "pca",
                         "--method", "random", "--seed", "21", "--n-examples", "8"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"token_space.html", "trajectories.html", "distance_vs_accuracy.html", "prompt_similarity.html",
                     "sentence_space.html", "nearest_words.csv", "plotly.min.js"}  # one plotly.js for all figures
    assert _explore_cli(["explore", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "nope" in err[-1] and not (tmp_path / "x").exists()
    assert _explore_cli(["explore", "--runs", str(env["run"]), "--out", str(tmp_path / "y"), "--images", "png,gif"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "explore.images" in err[-1] and "gif" in err[-1] and not (tmp_path / "y").exists()


@pytest.mark.skipif(static_export_available() is not None, reason=f"no static export: {static_export_available()}")
def test_explore_command_writes_images_on_request(env, tmp_path):
    out = tmp_path / "figs"
    assert _explore_cli(["explore", "--runs", str(env["run"]), "--out", str(out), "--projection", "pca",
                         "--method", "random", "--seed", "21", "--n-examples", "8", "--images", "png"]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(p.name.replace(".html", ".png") for p in out.glob("*.html"))
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_write_html(env, tmp_path):
    from workbench.viz import explore

    figs = {"sim": explore.prompt_similarity(env["run"]), "dist": explore.distance_vs_accuracy(env["run"])}
    paths = explore.write_html(figs, tmp_path / "figs")
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["dist.html", "plotly.min.js", "sim.html"]
    js = (tmp_path / "figs" / "plotly.min.js").stat().st_size
    assert js > 1_000_000 and all(p.stat().st_size < js / 10 for p in paths.values())  # plotly.js once, shared
    assert all('src="plotly.min.js"' in p.read_text() for p in paths.values())


# ----------------------------------------------------------------------------------------------- notebook 04
def test_notebook_is_committed_clean_and_parameterised():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert nb.metadata.kernelspec.name == "python3"
    assert all(c.outputs == [] and c.execution_count is None for c in code), "commit the notebook without outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    lines = [ln for ln in params[0].source.splitlines() if ln.strip()]
    assert [ln.split(":")[0] for ln in lines] == ["runs", "dataset", "projection", "neighbours", "n_vocab",
                                                  "method", "seed", "n_examples", "match", "cluster_dir", "bayes_dir",
                                                  "out_dir", "interactive"]
    assert all("#" in ln and " = " in ln and ln.count("=") == 1 for ln in lines), "typed, commented literals"
    assert not any(ln.lstrip().startswith(("def ", "class ")) for c in code for ln in c.source.splitlines())


def test_notebook_runs_headlessly_and_writes_the_figures(env, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    pytest.importorskip("ipywidgets")
    params = dict(runs=[str(env["run"])], projection="pca", n_examples=16, method="random", seed=13,
                  match="hungarian", cluster_dir=str(env["tmp"] / "runs" / "clusters")
                  if (env["tmp"] / "runs" / "clusters").exists() else "", out_dir="explorer", interactive=True)
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), kernel_name="python3", parameters=params, cwd=str(tmp_path),
                               progress_bar=False, execution_timeout=300)
    summary = json.loads((tmp_path / "explorer" / "explorer.json").read_text())
    expected = {"token_space", "trajectories", "distance_vs_accuracy", "prompt_similarity", "sentence_space"}
    assert summary["token_space"]["projection"] == "pca"
    if params["cluster_dir"]:
        expected.add("corpus_space")
    assert set(summary["figures"]) == expected
    figures = [tmp_path / p for p in summary["figures"].values()]  # relative to cwd
    assert all(p.is_file() and 'src="plotly.min.js"' in p.read_text() for p in figures)  # one shared plotly.js
    assert (tmp_path / "explorer" / "plotly.min.js").stat().st_size > 1_000_000
    words = (tmp_path / "explorer" / "nearest_words.csv").read_text().splitlines()
    assert len(words) == 1 + len(INITS) * len(SEEDS) * L
    text = out.read_text()
    assert "application/vnd.jupyter.widget-view+json" in text  # the explorer panel was displayed
    assert '"output_type": "error"' not in text
    from conftest import check_export
    assert check_export(out) == len(expected)  # 04_embedding_space.ipynb: each figure in the nbconvert HTML


def test_explorer_panel_selects_points(env):
    pytest.importorskip("ipywidgets")
    from workbench.ui.explorer import explorer_panel

    panel = explorer_panel([str(env["run"])], projection="pca", n_examples=16)
    c = panel.controls
    assert c["init"].options == INITS and c["seed"].options == SEEDS
    c["point"].value = 2
    assert "slot 2" in panel.detail.value and "nearest tokens" in panel.detail.value
    c["view"].value = "sentence space"
    c["point"].value = 5
    assert "example 5" in panel.detail.value and "gold" in panel.detail.value
    c["view"].value = "token space"
    c["init"].value = "vocab"
    c["point"].value = 1
    assert "vocab seed 13, slot 1" in panel.detail.value


def test_explorer_panel_click_selects_points(env):
    pytest.importorskip("anywidget")
    from plotly.callbacks import Points

    from workbench.ui.explorer import explorer_panel

    def click(fig, trace_index, point):
        fig.data[trace_index]._dispatch_on_click(
            Points(point_inds=[point], xs=[0.0], ys=[0.0], trace_name="", trace_index=trace_index), None)

    panel = explorer_panel([str(env["run"])], projection="pca", n_examples=16)
    c, fig = panel.controls, panel.figure()
    assert type(fig).__name__ == "FigureWidget"
    # token view: trace 0 is the vocabulary; a prompt trace of the selected init and seed moves the slider
    mine = next(i for i, t in enumerate(fig.data) if t.customdata is not None and np.ndim(t.customdata) == 2
                and t.customdata[0][2] == c["init"].value and int(t.customdata[0][3]) == c["seed"].value)
    click(fig, mine, 3)
    assert c["point"].value == 3 and "slot 3" in panel.detail.value
    click(fig, 0, 7)  # a vocabulary token: its hover text
    assert panel.detail.value.startswith("<b>clicked</b>") and str(fig.data[0].text[7]) in panel.detail.value
    c["view"].value = "sentence space"
    fig = panel.figure()
    ex = next(i for i, t in enumerate(fig.data) if t.customdata is not None and np.ndim(t.customdata) == 1
              and len(t.customdata) > 1)
    click(fig, ex, 1)
    want = int(fig.data[ex].customdata[1])
    assert c["point"].value == want and f"example {want}" in panel.detail.value
