"""Notebooks a researcher can share: every figure survives ``jupyter nbconvert --to html``, and a wrong parameter is
one clear line before anything loads.

The export itself is checked by :func:`conftest.check_export` inside the tests that already execute each notebook
(no notebook runs twice for it); :func:`test_every_notebook_is_exported_by_its_test` makes sure none is left out.
The parameter checks (``workbench.ui.params``) are tested here without papermill, and once through papermill on
notebook 00 (the kernel stops at the check cell: no model, no output directory).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import PLOTLY_MIME, check_committed_clean, check_export

from workbench.config import WorkbenchError
from workbench.ui.params import NOTEBOOKS, Knob, Own, ParameterError, check_parameters, check_value

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
ALL = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))


def parameters_of(stem: str) -> dict:
    """The committed defaults of a notebook's parameters cell, as the kernel would see them."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, {}, values)  # literal assignments only (check_committed_clean)
    return {k: v for k, v in values.items() if not k.startswith("__")}  # not __annotations__


# ----------------------------------------------------------------------------------------------- export
def test_every_notebook_is_exported_by_its_test():
    """Each notebook's executing test calls check_export on its executed copy (the export test, without a rerun)."""
    sources = [p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != Path(__file__).name]
    for stem in ALL:
        assert any(f"{stem}.ipynb" in s and "check_export(" in s for s in sources), f"{stem}: no export check"


def test_check_export_counts_static_images_or_interactive_divs(tmp_path):
    """The export check on a notebook whose outputs come from show(): one figure, one image (or div) in the HTML; a
    figure displayed without show (plotly JSON only) is refused."""
    go = pytest.importorskip("plotly.graph_objects")
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from workbench.viz.output import bundle, static_export_available
    from workbench.viz.style import styled

    fig = styled(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), title="Dev accuracy · toy, k=4")
    path = tmp_path / "one.ipynb"
    for static in (False, True) if static_export_available() is None else (False,):
        data, meta = bundle(fig, static=static)
        nb = new_notebook(cells=[new_code_cell("show(fig)", outputs=[new_output("display_data", data=data,
                                                                                metadata=meta)])])
        nbformat.write(nb, path)
        assert check_export(path, static=static) == 1
    nb.cells[0].outputs = [new_output("display_data", data={PLOTLY_MIME: data[PLOTLY_MIME]})]
    nbformat.write(nb, path)
    with pytest.raises(AssertionError, match="without workbench.viz.output.show"):
        check_export(path, static=False)
    plain, _ = bundle(go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout_title_text="x"), static=False)
    nb.cells[0].outputs = [new_output("display_data", data=plain)]
    nbformat.write(nb, path)
    with pytest.raises(AssertionError, match="outside the template"):  # plotly's default look, not the workbench's
        check_export(path, static=False)


# ----------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("stem", ALL)
def test_spec_lists_the_parameters_cell_and_its_defaults_pass(stem):
    lines = check_committed_clean(NOTEBOOK_DIR / f"{stem}.ipynb")
    assert [ln.split(":")[0] for ln in lines] == list(parameters_of(stem)) and set(NOTEBOOKS[stem]) == set(
        parameters_of(stem)), f"{stem}: NOTEBOOKS[{stem!r}] must list exactly the parameters cell"
    check_parameters(stem, parameters_of(stem))
    nb = nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    after = code[[i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])][0] + 1]
    assert f'check_parameters("{stem}", globals())' in after.source  # first thing after the parameters


# ----------------------------------------------------------------------------------------------- messages
def one_line(stem: str, **bad) -> str:
    with pytest.raises(ParameterError) as err:
        check_parameters(stem, {**parameters_of(stem), **bad})
    lines = err.value._render_traceback_()
    assert len(lines) == 1 and "\n" not in lines[0] and isinstance(err.value, WorkbenchError)
    return lines[0]


def test_a_scalar_where_a_list_is_declared_gives_the_yaml_syntax():
    assert one_line("00_quickstart", methods="random") == (
        "ParameterError: methods must be a list of str, got 'random'; with papermill pass lists as YAML: "
        "-y '{methods: [random]}'")
    assert "seeds must be a list of int, got 13" in one_line("00_quickstart", seeds=13)
    assert "-y '{seeds: [13]}'" in one_line("00_quickstart", seeds=13)
    assert "-y '{methods: [random, vocab]}'" in one_line("00_quickstart", methods="random,vocab")
    assert "dg_targets must be a list of str" in one_line("02b_supmer", dg_targets="mr")


def test_unknown_names_and_choices_are_named():
    msg = one_line("00_quickstart", methods=["random", "randon"])
    assert msg.startswith("ParameterError: methods: unknown name(s) ['randon']; known: [") and "'vocab'" in msg
    assert "method: unknown name(s) ['fomam']" in one_line("02_meta_training", method="fomam")
    assert "pseudo_features must be one of ['backbone', 'tfidf', 'lda'], got 'bert'" in one_line(
        "02_meta_training", pseudo_features="bert")
    assert "types: unknown name(s) ['nspx']" in one_line("02b_supmer", types=["nsp", "nspx"])
    assert "ablations must be one of ['no-psi', 'no-mixup'], got 'no-gate'" in one_line("02b_supmer",
                                                                                       ablations=["no-gate"])
    assert "mode must be one of" in one_line("03_bayesian_prompts", mode="sample")
    assert "projection must be one of ['umap', 'pca'], got 'tsne'" in one_line("04_embedding_space", projection="tsne")


def test_wrong_scalar_types_give_the_p_syntax():
    assert one_line("00_quickstart", k="16") == "ParameterError: k must be int, got '16' (str); with papermill: -p k 16"
    assert "steps must be int, got 2.5 (float)" in one_line("00_quickstart", steps=2.5)
    assert "overwrite must be bool, got 'yes' (str)" in one_line("00_quickstart", overwrite="yes")
    assert "k must be int, got True (bool)" in one_line("00_quickstart", k=True)  # a bool is not a count
    assert "(None: -p test_limit None)" in one_line("00_quickstart", test_limit="all")
    assert "interactive must be bool" in one_line("05_results", interactive=1)


def test_what_is_accepted():
    base = parameters_of("00_quickstart")
    check_parameters("00_quickstart", {**base, "lr": 1, "seeds": (13, 21), "test_limit": 50})  # int for float; tuple
    check_parameters("01_clustering", {**parameters_of("01_clustering"), "limit": None})
    check_parameters("04_embedding_space", {**parameters_of("04_embedding_space"), "dataset": "sst2", "seed": 13})
    check_value("x", ["a"], Own(list[str]))
    with pytest.raises(ParameterError, match="parameter steps is missing"):
        check_parameters("00_quickstart", {k: v for k, v in base.items() if k != "steps"})
    check_parameters("00_quickstart", {**base, "In": [""], "Out": {}, "_": None, "nbformat": nbformat, "Path": Path})


def test_a_misspelled_parameter_is_named():
    base = parameters_of("00_quickstart")
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['test_limt'\] \(misspelled\?\)"):
        check_parameters("00_quickstart", {**base, "test_limt": 100})


def test_types_come_from_the_config_fields():
    """The spec names fields, not types: the annotation and the choices are read from the dataclasses."""
    from workbench.config import FewShotConfig, TuneConfig
    from workbench.ui.params import _spec_of

    assert _spec_of(Knob(FewShotConfig, "seeds"))[0] == list[int]
    assert _spec_of(Knob(FewShotConfig, "datasets", item=True))[0] is str
    tp, choices, _, default = _spec_of(Knob(FewShotConfig, "tune.optimizer"))
    assert tp is str and choices == TuneConfig.__dataclass_fields__["optimizer"].metadata["choices"]
    assert default == "adamw"
    assert all(isinstance(s, (Knob, Own)) for spec in NOTEBOOKS.values() for s in spec.values())
    for stem, spec in NOTEBOOKS.items():  # every field path resolves
        for name, s in spec.items():
            _spec_of(s)


def test_test_limit_is_a_fewshot_field():
    from workbench.config import ConfigError, FewShotConfig

    assert FewShotConfig().test_limit is None and FewShotConfig(test_limit=50).test_limit == 50
    for bad in (0, True, "50"):
        with pytest.raises(ConfigError, match="test_limit"):
            FewShotConfig(test_limit=bad)


# ----------------------------------------------------------------------------------------------- through papermill
@pytest.mark.parametrize("bad, words", [({"methods": "random"}, ["methods must be a list", "-y '{methods: [random]}'"]),
                                        ({"seeds": 13}, ["seeds must be a list of int, got 13", "-y '{seeds: [13]}'"])])
def test_bad_parameters_stop_notebook_00_in_one_line(bad, words, tmp_path):
    papermill = pytest.importorskip("papermill")
    params = {"backbone": "no/such-model", "out_dir": "runs/qs", **bad}  # a model is never looked for
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(NOTEBOOK_DIR / "00_quickstart.ipynb"), str(tmp_path / "out.ipynb"),
                                   kernel_name="python3", parameters=params, cwd=str(tmp_path), progress_bar=False,
                                   execution_timeout=120)
    e = err.value
    assert e.ename == "ParameterError" and len(e.traceback) == 1
    text = str(e)
    assert all(w in text for w in words) and "Traceback" not in text and "workbench/" not in text
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    failed = next(c for c in executed.cells if any(o.get("output_type") == "error" for o in c.get("outputs", [])))
    assert failed.id == "check-parameters"  # the cell after the parameters: nothing loaded before it
    assert not (tmp_path / "runs").exists()  # nothing left behind
