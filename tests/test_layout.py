"""The package's structure: folders are layers that import only the layers below them, no import cycles (imports
inside functions counted), internal imports at module top, one registration site, every subcommand configurable the
same way, and configs written by earlier versions still load."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from workbench.cli.main import build_parser, main
from workbench.config import ConfigError, FewShotConfig, MetaTrainConfig, apply_overrides, from_dict

PKG = Path(__file__).resolve().parents[1] / "workbench"
LAYERS = ["_version", "config", "engine", "tasks", "learn", "methods", "experiments", "viz", "ui", "cli"]


def _imports():
    """(module, imported workbench module, inside a function?) for every internal import of the package."""
    out = []
    for path in PKG.rglob("*.py"):
        mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
        inner = {id(n) for f in funcs for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                out.append((mod, "<relative>", id(node) in inner))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbench"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    is_module = (PKG.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or \
                        (PKG.parent / sub.replace(".", "/") / "__init__.py").is_file()
                    target = sub if is_module else node.module
                    out.append((mod, target, id(node) in inner))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_layers_import_only_layers_below_and_only_at_module_top():
    imports = _imports()
    assert not [i for i in imports if i[1] == "<relative>"], "use absolute imports"
    assert not [i for i in imports if i[2]], "internal imports inside functions hide the structure"
    upward = [(m, t) for m, t, _ in imports if _layer(m) not in ("<root>", "__main__")
              and LAYERS.index(_layer(t)) > LAYERS.index(_layer(m))]
    assert not upward, f"imports from a layer above: {upward}"


def test_no_import_cycles():
    graph: dict[str, set] = {}
    for m, t, _ in _imports():
        graph.setdefault(m, set()).add(t)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack + [node, nxt])}")
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [])


def test_one_registration_site():
    calls = {}
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("register_init", "register_learner",
                                                                                   "register_source"):
                calls.setdefault(path.relative_to(PKG).as_posix(), 0)
                calls[path.relative_to(PKG).as_posix()] += 1
    assert set(calls) == {"methods/catalog.py"}, calls


def test_every_subcommand_takes_config_and_set():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        if name in ("inits", "datasets", "recipes"):  # listings
            continue
        opts = {o for a in p._actions for o in a.option_strings}
        assert "--set" in opts and ("--config" in opts or "--suite" in opts), name


def test_options_come_from_the_config_fields(capsys):
    with pytest.raises(SystemExit):
        main(["fewshot", "--help"])
    out = capsys.readouterr().out
    assert "[tune.lr]" in out and "{adamw,adafactor,adafactor-relative}" in out  # help, choices from the field


def test_old_configs_load_and_old_keys_are_refused_by_name():
    old_fewshot = {"k": 4, "meta": {"steps": 3, "source_k": 8, "sources": "same-type", "n_clusters": 5,
                                     "corpus_limit": 100}}
    cfg = from_dict(FewShotConfig, old_fewshot)
    assert (cfg.meta.steps, cfg.labelled.k, cfg.labelled.sources) == (3, 8, "same-type")
    assert (cfg.pseudo.n_clusters, cfg.pseudo.limit) == (5, 100)
    old_meta = {"method": "reptile", "meta_steps": 7, "support": 3, "inner_steps": 2, "checkpoint_every": 5}
    mcfg = from_dict(MetaTrainConfig, old_meta)
    assert (mcfg.meta.steps, mcfg.meta.support, mcfg.meta.inner_steps, mcfg.meta.checkpoint_every) == (7, 3, 2, 5)
    old_supmer = {"method": "supmer", "source": "selfsup", "support": 4,
                  "source_options": {"supmer.psi": "false", "types": ["scc"], "k_support": 6, "max_length": 40,
                                     "third_party": 1}}
    scfg = from_dict(MetaTrainConfig, old_supmer)
    assert scfg.supmer.psi is False and scfg.selfsup.types == ["scc"] and scfg.selfsup.per_task_support == 6
    assert scfg.source_options == {"third_party": 1} and scfg.meta.support == 4
    with pytest.raises(ConfigError, match="'meta.source_k' was renamed to 'labelled.k'"):
        apply_overrides(FewShotConfig(), ["meta.source_k=4"])
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(FewShotConfig, {"meta": {"no_such_knob": 1}})


def test_negative_inner_steps_are_refused_and_zero_is_auto(tmp_path):
    with pytest.raises(ConfigError, match="meta.inner_steps must be >= 0"):
        from_dict(MetaTrainConfig, {"method": "reptile", "meta": {"inner_steps": -1}})
    assert from_dict(MetaTrainConfig, {"method": "reptile", "inner_steps": 0}).meta.inner_steps == 0  # 0 = auto
    cfg = tmp_path / "old.json"
    cfg.write_text(json.dumps({"method": "reptile", "inner_steps": -1}))
    assert main(["meta-train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
