"""One figure style (issue #15): accuracy in %, ranks from 1, a stable colour per init, human names, titles that say
what was measured on what (and no paths), integer ticks for counts, and figures that say when there is too little
data. Built from small synthetic results and run directories: no model, no training."""
from __future__ import annotations

import json
import random
import re

import pandas as pd
import pytest

from workbench.engine.stats import statistics, summarise
from workbench.experiments import similarity as S
from workbench.viz import benchmark as bp
from workbench.viz import meta, runs, supmer
from workbench.viz import similarity as VS
from workbench.viz.style import init_colour

METHODS = ("zero-shot", "linear-probe", "random", "vocab", "mpt-fomaml")
SEEDS = (13, 21, 42)


# ----------------------------------------------------------------------------------------------- inputs
def bench_results(datasets=("sst2", "mr"), ks=(4, 16), methods=METHODS, budgets=True) -> dict:
    """A benchmark results dict: accuracies around 0.70 (zero-shot 0.55), two labels (chance 50%), test n=500."""
    rng = random.Random(0)
    rows = []
    for ds in datasets:
        for k in ks:
            for m in methods:
                for s in SEEDS:
                    acc = 0.55 if m == "zero-shot" else 0.69 + 0.01 * methods.index(m) + 0.005 * rng.random()
                    row = {"dataset": ds, "k": k, "method": m, "seed": s, "test_acc": acc, "test_f1": acc - 0.01,
                           "dev_acc": acc}
                    if budgets and m not in ("zero-shot", "linear-probe"):
                        row["curve"] = [{"budget": b, "step": b, "test_acc": acc - 0.05 / (1 + b)} for b in (0, 2, 4)]
                    rows.append(row)
    return {"suite": {"seeds": list(SEEDS)}, "rows": rows, "summary": summarise(rows),
            "statistics": statistics(rows, "random"),
            "data": {ds: {"labels": ["negative", "positive"], "test_used": 500} for ds in datasets}}


def fewshot_run(path, methods=("zero-shot", "random", "file"), seeds=(13, 21)):
    """A fewshot run directory: metrics.jsonl (eval records of the tuned inits, rows) and results.json."""
    recs, rows = [], []
    for m in methods:
        for s in seeds:
            if m != "zero-shot":
                recs += [{"event": "eval", "dataset": "toy", "method": m, "seed": s, "step": st,
                          "dev_acc": 0.5 + 0.01 * st} for st in (0, 5, 10)]
            row = {"dataset": "toy", "method": m, "seed": s, "k": 4, "n_train": 8, "n_dev": 8, "n_test": 200,
                   "test_acc": 0.6 if m == "zero-shot" else 0.7 + 0.01 * s / 13, "test_f1": 0.6, "dev_acc": 0.62}
            rows.append(row)
            recs.append({"event": "row", **row})
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    results = {"rows": rows, "summary": summarise(rows), "data": {"toy": {"labels": ["negative", "positive"]}},
               "config": {"k": 4, "seeds": list(seeds)}}
    (path / "results.json").write_text(json.dumps(results))
    return path


def meta_run(path):
    recs = [{"event": "train", "step": s, "loss": 1.0 / s, "acc": 0.5, "gate": 0.4, "curriculum_s": 0.1 * s}
            for s in range(1, 8)]
    recs += [{"event": "val", "step": s, "loss_pre": 1.2, "loss_post": 1.0, "acc_pre": 0.5, "acc_post": 0.6}
             for s in (0, 4, 7)]
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (path / "config.json").write_text(json.dumps({"method": "fomaml", "source": "labelled", "target": "sst2"}))
    return path


def similarity_table(targets=("sst2", "mr"), update=0.3) -> pd.DataFrame:
    sim = pd.DataFrame([{"target": t, "source": s, "embed_cos": 0.2 + 0.1 * i, "update_cos_flat": update,
                         "n_removed": 0} for t in targets for i, s in enumerate(("subj", "agnews", "trec"))])
    rows = [{"dataset": t, "method": m, "seed": s, "test_acc": 0.6 + (0.05 if m == "mpt-fomaml" else 0) + 0.01 * j}
            for j, t in enumerate(targets) for m in ("random", "mpt-fomaml") for s in SEEDS]
    return S.join(sim, S.gains(rows, "mpt-fomaml"))


# ----------------------------------------------------------------------------------------------- helpers
def accuracy_values(fig) -> list[float]:
    return [float(v) for t in fig.data for v in (t.y if t.y is not None else []) if v is not None]


def assert_no_raw_names(fig):
    for t in fig.data:
        if t.showlegend is not False and t.name:
            assert "_" not in t.name, f"raw column name in the legend: {t.name!r}"


def assert_titled(fig, *words):
    text = fig.layout.title.text
    assert text and all(w in text for w in words), text
    assert "/" not in text and "\\" not in text, f"a path in the title: {text!r}"


def yaxes(fig):
    """The y axes in panel order (yaxis, yaxis2, ...)."""
    keys = [k for k in fig.layout if k.startswith("yaxis")]
    return [fig.layout[k] for k in sorted(keys, key=lambda k: int(k[5:] or 1))]


# ----------------------------------------------------------------------------------------------- benchmark
def test_benchmark_accuracy_in_percent_with_reference_lines_and_shared_y():
    res = bench_results()
    fig = bp.bars(res)
    vals = accuracy_values(fig)
    assert vals and min(vals) > 1 and max(vals) <= 100  # percent, not fractions
    assert "zero-shot" not in {t.name for t in fig.data}  # a reference line instead of a dot
    texts = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("zero-shot 55.0%") for t in texts) and any(t.startswith("chance 50.0%") for t in texts)
    ranges = [tuple(ax.range) for ax in yaxes(fig)]
    assert all(lo > 0 for lo, _ in ranges)  # not from 0
    assert ranges[0] == ranges[1] and ranges[2] == ranges[3]  # sst2 k=4 / k=16 share y; so do mr's
    assert len(set(tuple(r) for r in (ax.range for ax in yaxes(bp.bars(res, shared_y="all"))))) == 1
    assert_titled(fig, "sst2", "mr", "k=4,16", "3 seeds", "test n=500")
    assert all(ax.title.text == "test accuracy (%)" for ax in yaxes(fig)[:1])
    with pytest.raises(ValueError, match="shared_y"):
        bp.bars(res, shared_y="facet")


def test_k_curve_integer_k_ticks_and_too_little_data():
    res = bench_results()
    fig = bp.k_curve(res)
    assert list(fig.layout.xaxis.tickvals) == [4, 16] and all(float(v).is_integer() for v in fig.layout.xaxis.tickvals)
    assert min(accuracy_values(fig)) > 1 and fig.layout.xaxis.title.text == "examples per class (k)"
    assert_titled(fig, "sst2", "k=4,16", "3 seeds")
    assert_no_raw_names(fig)
    one_k = bp.k_curve(bench_results(ks=(16,)))
    assert not one_k.data and "single k" in one_k.layout.annotations[0].text  # says why there is no curve


def test_rank_axis_starts_at_one_best_first():
    res = bench_results()
    fig = bp.rank_plot(res)
    ax = fig.layout.xaxis
    assert ax.tick0 == 1 and 0.5 <= ax.range[0] < 1 and ax.range[1] >= len(METHODS)
    assert "1 = best" in ax.title.text and "1 = best" in fig.layout.title.text
    assert list(fig.data[0].y)[0] == res["statistics"]["ranks"][0]["method"]  # best on top (first of the order)
    assert min(fig.data[1].x) >= 1


def test_learning_curves_in_percent_with_integer_budget_ticks():
    fig = bp.learning_curves(bench_results())
    assert list(fig.layout.xaxis.ticktext) == ["0", "2", "4"]
    assert 1 < min(accuracy_values(fig)) and max(accuracy_values(fig)) <= 100
    assert_titled(fig, "sst2", "k=4,16")


def test_same_init_same_colour_in_different_figures(tmp_path):
    res = bench_results()
    colours = {}
    for fig in (bp.bars(res), bp.k_curve(res), bp.learning_curves(res),
                runs.summary_bars(fewshot_run(tmp_path / "fs", methods=("zero-shot", "random", "vocab")))):
        for t in fig.data:
            if t.name in ("random", "vocab"):
                c = t.marker.color if t.mode == "markers" else t.line.color
                colours.setdefault(t.name, set()).add(c)
    assert colours == {"random": {init_colour("random")}, "vocab": {init_colour("vocab")}}
    rank = bp.rank_plot(res).data[0]
    assert dict(zip(rank.y, rank.marker.color))["random"] == init_colour("random")


# ----------------------------------------------------------------------------------------------- runs
def test_run_figures_in_percent_with_display_names(tmp_path):
    run = fewshot_run(tmp_path / "fs")
    names = {"file": "mpt-fomaml"}
    bars = runs.summary_bars(run, names=names)
    assert [t.name for t in bars.data] == ["random", "mpt-fomaml"]  # the meta init is not called 'file'
    assert bars.data[1].marker.color == init_colour("mpt-fomaml")
    assert min(accuracy_values(bars)) > 1 and bars.layout.yaxis.range[0] > 0
    assert any(a.text.startswith("zero-shot 60.0%") for a in bars.layout.annotations)
    assert_titled(bars, "toy", "k=4", "2 seeds", "test n=200")
    curves = runs.dev_curves(run, names=names)
    assert {t.name for t in curves.data if t.showlegend is not False} == {"zero-shot", "random", "mpt-fomaml"}
    assert min(accuracy_values(curves)) >= 50 and curves.layout.yaxis.title.text == "dev accuracy (%)"
    ax = curves.layout.xaxis
    assert ax.tickformat == "d" and (ax.dtick is not None and ax.dtick >= 1 or all(float(v).is_integer() for v in ax.tickvals))
    assert_titled(curves, "toy", "k=4", "2 seeds")
    assert {t.name for t in runs.dev_curves(run).data if t.showlegend is not False} >= {"file"}  # names optional


# ----------------------------------------------------------------------------------------------- meta, supmer
def test_meta_curves_human_names_percent_and_integer_steps(tmp_path):
    fig = meta.meta_curves(meta_run(tmp_path / "meta"))
    names = {t.name for t in fig.data}
    assert "validation loss before adaptation" in names and "validation accuracy after adaptation" in names
    assert_no_raw_names(fig)
    acc = next(t for t in fig.data if t.name == "validation accuracy after adaptation")
    assert list(acc.y) == [60.0, 60.0, 60.0]  # percent
    assert fig.layout.xaxis.tickformat == "d" and fig.layout.xaxis.title.text == "meta-step"
    assert_titled(fig, "fomaml", "sst2")


def test_supmer_curriculum_integer_steps_and_empty_run(tmp_path):
    fig = supmer.curriculum_figure(meta_run(tmp_path / "meta"))
    assert {t.name for t in fig.data} == {"ψ gate c", "curriculum s"} and fig.layout.xaxis.tickformat == "d"
    assert_titled(fig, "SUPMER", "sst2")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.jsonl").write_text(json.dumps({"event": "train", "step": 1, "loss": 1}) + "\n")
    empty = supmer.curriculum_figure(tmp_path / "other")
    assert not empty.data and "no SUPMER gate" in empty.layout.annotations[0].text


# ----------------------------------------------------------------------------------------------- similarity
def test_similarity_scatter_in_points_with_human_axes():
    table = similarity_table()
    fig = VS.scatter(table, names={"mpt-fomaml": "meta-fomaml"})
    assert fig.layout.xaxis.title.text == "cosine of mean sentence embeddings"
    assert fig.layout.yaxis.title.text == "gain in test accuracy (points)"
    assert {t.name for t in fig.data} == {"sst2 · meta-fomaml", "mr · meta-fomaml"}
    assert_titled(fig, "sst2", "mr", "meta-fomaml", "3 seeds")
    assert not [a for a in fig.layout.annotations if "One target" in a.text]
    assert set(VS.similarity_figures(table)) == {"similarity_scatter", "similarity_scatter_prompts"}
    assert VS.similarity_figures(table.drop(columns=["gain_mean"])) == {}


def test_similarity_with_one_target_says_y_is_shared():
    fig = VS.scatter(similarity_table(targets=("sst2",)))
    assert len(set(fig.data[0].y)) == 1
    assert any("One target (sst2)" in a.text and "same for every source" in a.text for a in fig.layout.annotations)


def test_empty_prompt_scatter_says_why():
    table = similarity_table(update=float("nan"))
    info = {"sst2": {"config": {"k": 16, "tune": {"steps": 3, "eval_every": 5}},
                     "per_seed": [{"seed": 13, "source": s, "target_best_step": 0, "source_best_step": 3}
                                  for s in ("subj", "agnews", "trec")]}}
    fig = VS.scatter(table, "update_cos_flat", info=info)
    text = re.sub("<br>", " ", fig.layout.annotations[0].text)
    assert not fig.data and "best step 0" in text and "3 of 3" in text
    assert "3 steps" in text and "every 5" in text and "only steps 0 and 3" in text and "similarity_steps" in text
    partly = similarity_table()
    partly.loc[0, "update_cos_flat"] = float("nan")
    fig = VS.scatter(partly, "update_cos_flat")
    assert sum(len(t.x) for t in fig.data) == len(partly) - 1
    assert any("1 of 6" in a.text for a in fig.layout.annotations)


def test_point_labels_never_overlap():
    """Labels of points close together (the similarity scatter's sources at one gain) get distinct boxes."""
    import plotly.graph_objects as go

    from workbench.viz.style import _label_shifts, point_labels

    xs = [0.05, 0.055, 0.21, 0.25, 0.252, 0.255, 0.275, 0.5, 0.53, 0.86, 0.97]
    texts = ["snli", "qnli", "agnews", "mrpc", "rte", "yelp5", "sst5", "mpqa", "cola", "subj", "mr"]
    ys = [7.4] * len(xs)
    shifts = _label_shifts(xs, ys, texts, (700, 360))
    boxes = [((x - 0.05) / 0.92 * 700 - 3.5 * len(t), (x - 0.05) / 0.92 * 700 + 3.5 * len(t), s)
             for x, t, s in zip(xs, texts, shifts)]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[1] <= b[0] or b[1] <= a[0] or abs(a[2] - b[2]) >= 14, (a, b)
    assert len(set(shifts)) > 2  # crowded points needed more than one level above and below
    fig = go.Figure()
    point_labels(fig, xs, ys, texts)
    assert [a.text for a in fig.layout.annotations] == texts and [a.yshift for a in fig.layout.annotations] == shifts
