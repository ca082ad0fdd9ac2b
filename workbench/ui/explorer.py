"""The explorer's ipywidgets panel for notebook 04: choose runs, init, seed, projection and view, then pick a point.

A point is selected by clicking it (the figure is shown as a plotly ``FigureWidget``, which in plotly 7 needs
``anywidget``; it is in requirements.txt) or with the ``point`` slider, which also works where ``anywidget`` is
missing: the prompt slot (token view: its nearest tokens with cosine) or the test example (sentence view: its text,
gold label and both predictions). Clicking any other point (a vocabulary token, another run's prompt vector, a
trajectory step, a label anchor) shows that point's hover text. Every figure comes from the same
:mod:`workbench.explore` functions the notebook calls; ipywidgets is imported inside :func:`explorer_panel`.
"""
from __future__ import annotations

import importlib.util

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go
from IPython.display import display

from workbench.config import WorkbenchError
from workbench.viz import explore
from workbench.viz.explore_data import (
    format_neighbours,
    load_prompt_runs,
    nearest_tokens,
)

VIEWS = ("token space", "trajectories", "sentence space")


def clickable_available() -> bool:
    """Whether plotly 7's ``FigureWidget`` can be built here (it is an ``anywidget``)."""
    return importlib.util.find_spec("anywidget") is not None


def clickable(fig, on_point):
    """``fig`` as a ``FigureWidget`` whose every trace calls ``on_point(trace, index)`` when a point is clicked, or
    ``fig`` unchanged when ``FigureWidget`` cannot be built (no ``anywidget``): ``(figure, clickable?)``."""
    if not clickable_available():
        return fig, False
    try:
        widget = go.FigureWidget(fig)
    except ImportError:  # a plotly whose FigureWidget needs something else missing here
        return fig, False
    for trace in widget.data:
        trace.on_click(lambda tr, points, _state: points.point_inds and on_point(tr, points.point_inds[0]))
    return widget, True


def _item(values, i):
    if values is None or isinstance(values, str):
        return values
    return values[i] if i < len(values) else None


def explorer_panel(run_dirs: list, dataset: str | None = None, projection: str = "pca", neighbours: int = 5,
                   n_vocab: int = 10000, n_examples: int = 200, cache_dir=None):
    """A VBox with ``.controls`` (name -> widget), ``.output`` (figure), ``.detail`` (the selected point) and
    ``.refresh()`` / ``.show_point()`` for scripting and tests."""


    runs = load_prompt_runs(run_dirs, dataset or None)
    style, layout = {"description_width": "80px"}, w.Layout(width="330px")
    run_names = list(dict.fromkeys(str(r.run) for r in runs))
    c = {
        "run": w.Dropdown(options=run_names, value=run_names[0], description="run", style=style, layout=layout),
        "init": w.Dropdown(description="init", style=style, layout=layout),
        "seed": w.Dropdown(description="seed", style=style, layout=layout),
        "projection": w.ToggleButtons(options=["pca", "umap"], value=projection, description="projection",
                                      style=style),
        "view": w.Dropdown(options=VIEWS, value=VIEWS[0], description="view", style=style, layout=layout),
        "point": w.IntSlider(value=0, min=0, max=0, description="point", style=style, layout=layout,
                             continuous_update=False),
    }
    output, detail, state = w.Output(), w.HTML(), {}
    panel_figure = {}  # the figure now on display (a FigureWidget when clicks work)

    def selected():
        return next(r for r in runs if str(r.run) == c["run"].value and r.method == c["init"].value
                    and r.seed == c["seed"].value)

    def sync_choices(_=None):
        mine = [r for r in runs if str(r.run) == c["run"].value]
        inits = list(dict.fromkeys(r.method for r in mine))
        if list(c["init"].options) != inits:
            c["init"].options = inits
        if c["init"].value not in inits:
            c["init"].value = inits[0]
        seeds = sorted({r.seed for r in mine if r.method == c["init"].value})
        if list(c["seed"].options) != seeds:
            c["seed"].options = seeds
        if c["seed"].value not in seeds:
            c["seed"].value = seeds[0]

    def refresh(_=None):
        try:
            r, view = selected(), c["view"].value
        except StopIteration:  # mid-update: init and seed options not yet consistent
            return
        output.clear_output()
        with output:
            try:
                if view == "sentence space":
                    f = explore.sentence_features(r.run, r.dataset, r.method, r.seed, n_examples)
                    state.update(kind="example", data=f)
                    c["point"].max = len(f["texts"]) - 1
                    fig = explore.sentence_space(r.run, r.dataset, r.method, r.seed, n_examples,
                                                 c["projection"].value, cache_dir=cache_dir)
                else:
                    fn = explore.token_space if view == "token space" else explore.trajectories
                    fig = fn([r.run], r.dataset, [r.method], projection=c["projection"].value, n_vocab=n_vocab,
                             neighbours=neighbours, cache_dir=cache_dir)
                    state.update(kind="slot", data=nearest_tokens(r.prompt, explore.backbone_for([r]), neighbours))
                    c["point"].max = r.prompt.shape[0] - 1
                panel_figure["figure"], _ = clickable(fig, on_point)
                fig = panel_figure["figure"]
                display(fig)
            except WorkbenchError as e:  # bad input only (a bug keeps its traceback): the reason, in the panel
                state.clear()
                print(f"{type(e).__name__}: {e}")
        show_point()

    def show_point(_=None):
        i = c["point"].value
        if state.get("kind") == "slot" and i < len(state["data"]):
            r = selected()
            detail.value = (f"<b>{r.method} seed {r.seed}, slot {i}</b>: nearest tokens "
                            f"{format_neighbours(state['data'][i])}")
        elif state.get("kind") == "example" and i < len(state["data"]["texts"]):
            f, labels = state["data"], state["data"]["labels"]
            detail.value = (f"<b>example {i}</b>: {f['texts'][i]}<br>gold <b>{labels[f['gold'][i]]}</b>; predicted "
                            f"without prompt {labels[f['plain']['pred'][i]]}, with prompt "
                            f"{labels[f['tuned']['pred'][i]]}")
        else:
            detail.value = ""

    def on_point(trace, i):
        """A clicked point: an example or this run's prompt slot moves the slider; anything else shows its hover."""
        r, data = selected(), _item(trace.customdata, i)
        if state.get("kind") == "example" and np.ndim(data) == 0 and data is not None:
            c["point"].value = int(data)  # sentence view: customdata = the example's index
            return
        if (state.get("kind") == "slot" and np.ndim(data) == 1 and len(data) == 5
                and (str(data[0]), data[2], int(data[3])) == (str(r.run), r.method, r.seed)):
            c["point"].value = int(data[4])  # token view: customdata = (run, dataset, init, seed, slot)
            return
        text = _item(trace.text, i)
        detail.value = f"<b>clicked</b> ({trace.name or 'point'} {i}): {text if text is not None else '(no text)'}"

    sync_choices()  # before the observers: building the panel draws once, in refresh() below
    c["run"].observe(lambda ch: (sync_choices(), refresh()), names="value")
    c["init"].observe(sync_choices, names="value")
    for name in ("seed", "projection", "view"):
        c[name].observe(refresh, names="value")
    c["point"].observe(show_point, names="value")
    how = "click a point, or use the slider" if clickable_available() else "select a point with the slider"
    panel = w.VBox([w.HTML(f"<b>Embedding-space explorer</b> ({how})"),
                    w.HBox([w.VBox([c["run"], c["init"], c["seed"], c["view"]]),
                            w.VBox([c["projection"], c["point"], detail])]), output])
    panel.controls, panel.output, panel.detail = c, output, detail
    panel.refresh, panel.show_point = refresh, show_point
    panel.figure = lambda: panel_figure.get("figure")  # the figure on display (FigureWidget when clickable)
    refresh()
    return panel
