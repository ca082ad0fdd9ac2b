"""Recipes (``--recipe NAME``, ``workbench recipes``): every committed recipe validates (each value applies to its
command's configuration, each has a source or is listed as unconfirmed, its family matches its backbone), the
precedence defaults < recipe < --config < named options < --set, the errors, and every recipe end to end at smoke
scale on a tiny model of its own family."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, shared_data_or_skip
from test_supmer_corpus import write_corpus as write_doc_corpus
from test_tasks import sentiment_rows, write_ds
from test_tasks import write_corpus as write_topic_corpus

from workbench.cli.main import build_parser, fewshot_config, main
from workbench.cli.recipes import command_keys
from workbench.config import FewShotConfig, MetaTrainConfig
from workbench.config.recipes import RECIPE_DIR, apply_values, check_recipe, config_keys, load_recipe, nested, \
    recipe_names
from workbench.experiments.bayes_modes import BayesRunConfig
from workbench.experiments.benchmark import resolve_suite

CONFIGS = {"fewshot": FewShotConfig, "meta-train": MetaTrainConfig, "bayes": BayesRunConfig}
TINY = {"t5": "t5", "roberta": "roberta-mlm", "gpt2": "gpt2", "llama": "llama"}  # recipe family -> tiny model key
REQUIRED = {"supmer-t5-base", "mpt-t5-large", "metapt-t5-large", "bayesprompt-roberta-large", "pt-roberta", "pt-t5",
            "pt-gpt2", "pt-llama"}


def test_the_recipes_are_shipped_in_the_package():
    assert REQUIRED <= set(recipe_names())
    assert RECIPE_DIR.parent.name == "workbench"


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_validates(name, monkeypatch):
    """Sources, unconfirmed keys, family, and every value of every command at every scale through the configs."""
    monkeypatch.setenv("WORKBENCH_DATA", str(shared_data_or_skip()))
    recipe = load_recipe(name)
    assert check_recipe(recipe, command_keys()) == []
    assert recipe.family in TINY, "a family the end-to-end test has a tiny model for"
    for command in recipe.commands:
        for scale in ("paper", "smoke"):
            if command == "benchmark":
                resolve_suite({"name": name, **nested(recipe.values(command, scale, command_keys()[command]))})
            else:
                cls = CONFIGS[command]
                apply_values(cls(), recipe.values(command, scale, config_keys(cls).__contains__))
    pending = [k for k, why in recipe.deviations.items() if why.startswith("pending knob")]
    assert all(k not in recipe.paper_items(c, command_keys()[c]) for k in pending for c in recipe.commands)


def test_the_check_catches_an_unsourced_value_a_wrong_family_and_a_stale_source():
    r = load_recipe("pt-t5")
    bad = dataclasses.replace(r, sources={**{k: v for k, v in r.sources.items() if k != "tune.lr"}, "nope": "x"},
                              family="gpt2")
    problems = "\n".join(check_recipe(bad, command_keys()))
    assert "tune.lr has no source" in problems and "not of family 'gpt2'" in problems and "'nope'" in problems
    unverified = dataclasses.replace(r, sources={**r.sources, "tune.lr": "a recollection, UNVERIFIED"})
    assert any("UNVERIFIED" in p for p in check_recipe(unverified, command_keys()))


def test_precedence_defaults_recipe_config_options_set(tmp_path):
    recipe = load_recipe("pt-t5")
    parse = build_parser().parse_args
    cfg = fewshot_config(parse(["fewshot", "--recipe", "pt-t5"]))
    assert (cfg.backbone.name, cfg.prompt.length, cfg.tune.lr, cfg.tune.batch_size) == ("t5-base", 100, 0.01, 8)
    assert cfg.tune.eval_every == FewShotConfig().tune.eval_every  # a key the recipe leaves alone: the default
    assert cfg.recipe == {"name": "pt-t5", "scale": "paper",
                          "sha256": hashlib.sha256((RECIPE_DIR / "pt-t5.json").read_bytes()).hexdigest()}
    assert recipe.sha256 == cfg.recipe["sha256"]
    partial = tmp_path / "c.json"
    partial.write_text(json.dumps({"tune": {"batch_size": 3, "lr": 0.2}, "prompt": {"length": 10}}))
    cfg = fewshot_config(parse(["fewshot", "--recipe", "pt-t5", "--config", str(partial), "--lr", "0.3",
                                "--set", "prompt.length=12", "--backbone", "other"]))
    assert (cfg.tune.batch_size, cfg.tune.lr, cfg.prompt.length, cfg.backbone.name) == (3, 0.3, 12, "other")
    assert cfg.tune.steps == 200 and cfg.prompt.position == "prepend"  # recipe values the file does not hold
    smoke = fewshot_config(parse(["fewshot", "--recipe", "pt-t5", "--scale", "smoke", "--set", "tune.steps=3"]))
    assert (smoke.prompt.length, smoke.tune.steps, smoke.tune.lr, smoke.recipe["scale"]) == (4, 3, 0.01, "smoke")
    assert fewshot_config(parse(["fewshot"])).recipe == {}  # no recipe: the defaults, nothing recorded


def _one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "Loading weights" not in line]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def test_unknown_recipe_wrong_command_and_scale_without_recipe(capsys, tmp_path):
    assert main(["fewshot", "--recipe", "nope", "--out", str(tmp_path / "r")]) == 2
    err = _one_error(capsys)
    assert "unknown recipe 'nope'" in err and all(n in err for n in REQUIRED)
    assert main(["meta-train", "--recipe", "pt-t5", "--out", str(tmp_path / "r")]) == 2
    assert "is not for 'meta-train'" in _one_error(capsys)
    assert main(["benchmark", "--recipe", "bayesprompt-roberta-large", "--scale", "smoke", "--set", "seeds=[]"]) == 2
    assert "seeds" in _one_error(capsys)
    assert main(["fewshot", "--scale", "smoke", "--out", str(tmp_path / "r")]) == 2
    assert "--scale needs --recipe" in _one_error(capsys)
    assert main(["benchmark"]) == 2
    assert "--suite FILE or --recipe NAME" in _one_error(capsys)
    assert not (tmp_path / "r").exists()


def test_recipes_command_lists_and_shows(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in REQUIRED) and "SUPMER" in out and "scales: paper, smoke" in out
    assert main(["recipes", "supmer-t5-base"]) == 0
    out = capsys.readouterr().out
    assert "meta.lr = 0.1\n      methods.md §1.4 [CODE]" in out and "UNCONFIRMED" in out
    assert "deviations (not the paper" in out and "--scale smoke" in out and "meta-train (workbench meta-train" in out
    for name in recipe_names():  # every recipe prints, with every value of every command
        assert main(["recipes", name]) == 0
        assert capsys.readouterr().out.count(" = ") >= len(load_recipe(name).settings)
    assert main(["recipes", "nope"]) == 2
    assert "unknown recipe" in _one_error(capsys)


# ------------------------------------------------------------------------------- end to end at smoke scale
@pytest.fixture
def smoke_data(tmp_path, monkeypatch):
    """A target 'toy', two labelled sources, a topic corpus (MetaPT) and a corpus with document ids (SUPMER)."""
    root = tmp_path / "data"
    for name, offset, seed in (("toy", 0, 0), ("srca", 200, 1), ("srcb", 400, 2)):
        write_ds(root, name, sentiment_rows(20, offset, seed=seed), sentiment_rows(8, offset + 100, seed=seed))
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return {"topics": write_topic_corpus(tmp_path / "topics.txt"), "docs": write_doc_corpus(tmp_path / "docs.jsonl")}


@pytest.fixture(scope="module")
def tiny_family(request):
    """recipe family -> a tiny model of that family: realistic tokenizers (tiny_real) where they exist."""
    models = request.getfixturevalue("tiny_real" if (SHARED_DATA / "unlabeled" / "brown.jsonl").is_file() else "tiny")
    return {family: models[key] for family, key in TINY.items()}


def _runs(name: str, corpora: dict) -> list[list[str]]:
    """The commands a recipe is run with at smoke scale (the data options only: the recipe sets the rest)."""
    data = {"meta-train": ["--target", "toy"], "fewshot": ["--dataset", "toy"], "bayes": ["--dataset", "toy"],
            "benchmark": ["--set", 'grid=[{"datasets": ["toy"], "k": [4]}]']}
    if name.startswith("supmer"):  # the meta-training run, and the fewshot run that trains and uses the init
        for command in ("meta-train", "fewshot"):
            data[command] += ["--set", f"selfsup.corpus={corpora['docs']}", "--set", "selfsup.val_fraction=0.3"]
    if name.startswith("metapt"):
        data["meta-train"] += ["--set", f"pseudo.corpus={corpora['topics']}"]
    first = next(c for c in ("meta-train", "bayes", "fewshot") if c in load_recipe(name).commands)
    more = {"pt-gpt2": "benchmark", "supmer-t5-base": "fewshot"}.get(name)
    return [[first, *data[first]]] + ([[more, *data[more]]] if more else [])


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_runs_at_smoke_scale_on_a_tiny_model_of_its_family(name, smoke_data, tiny_family, tmp_path):
    recipe = load_recipe(name)
    path = tiny_family[recipe.family]
    assert json.loads((Path(path) / "config.json").read_text())["model_type"] == recipe.family
    for command, *data in _runs(name, smoke_data):
        out = tmp_path / command
        backbone = ["--set", f"backbone.name={path}"] if command == "benchmark" else ["--backbone", path]
        assert main([command, "--recipe", name, "--scale", "smoke", *backbone, *data, "--out", str(out),
                     "--quiet"]) == 0
        written = json.loads((out / ("suite.json" if command == "benchmark" else "config.json")).read_text())
        assert written["recipe"] == load_recipe(name).record("smoke")
        results = json.loads((out / "results.json").read_text())
        if command == "fewshot":  # every method of the recipe ran
            methods = recipe.values("fewshot", "smoke", config_keys(FewShotConfig).__contains__)["methods"]
            assert {r["method"] for r in results["rows"]} == set(methods)


def test_benchmark_precedence_recipe_suite_file_set(tmp_path):
    """benchmark: the recipe's suite, then the keys of --suite FILE, then --set; the suite records the recipe."""
    from workbench.cli.benchmark import suite_from_args
    partial = tmp_path / "s.json"
    partial.write_text(json.dumps({"seeds": [1, 2], "tune": {"lr": 0.2}}))
    args = build_parser().parse_args(["benchmark", "--recipe", "pt-t5", "--suite", str(partial),
                                      "--set", "tune.lr=0.3", "--set", "name=mine"])
    data, name = suite_from_args(args)
    assert (data["seeds"], data["tune"]["lr"], data["tune"]["batch_size"], name) == ([1, 2], 0.3, 8, "mine")
    assert data["backbone"]["name"] == "t5-base" and data["recipe"] == load_recipe("pt-t5").record("paper")
    data, name = suite_from_args(build_parser().parse_args(["benchmark", "--recipe", "pt-t5", "--scale", "smoke"]))
    assert name == "pt-t5-smoke" and data["prompt"]["length"] == 4 and data["grid"][0]["k"] == [4]
