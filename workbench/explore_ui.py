"""The explorer's ipywidgets panel for notebook 04: choose runs, init, seed, projection and view, then pick a point.

Clicking a point of a plotly figure needs ``FigureWidget``, which in plotly 7 rides on ``anywidget`` (not installed
here), so a point is selected with a slider instead: the prompt slot (token and trajectory views: its nearest tokens
with cosine) or the test example (sentence view: its text, gold label and both predictions). Every figure comes from
the same :mod:`workbench.explore` functions the notebook calls; ipywidgets is imported inside :func:`explorer_panel`.
"""
from __future__ import annotations

VIEWS = ("token space", "trajectories", "sentence space")


def explorer_panel(run_dirs: list, dataset: str | None = None, projection: str = "pca", neighbours: int = 5,
                   n_vocab: int = 10000, n_examples: int = 200, cache_dir=None):
    """A VBox with ``.controls`` (name -> widget), ``.output`` (figure), ``.detail`` (the selected point) and
    ``.refresh()`` / ``.show_point()`` for scripting and tests."""
    import ipywidgets as w
    from IPython.display import display

    from . import explore
    from .explore_data import format_neighbours, load_prompt_runs, nearest_tokens

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
                    display(explore.sentence_space(r.run, r.dataset, r.method, r.seed, n_examples,
                                                   c["projection"].value, cache_dir=cache_dir))
                else:
                    fn = explore.token_space if view == "token space" else explore.trajectories
                    display(fn([r.run], r.dataset, [r.method], projection=c["projection"].value, n_vocab=n_vocab,
                               neighbours=neighbours, cache_dir=cache_dir))
                    state.update(kind="slot", data=nearest_tokens(r.prompt, explore.backbone_for([r]), neighbours))
                    c["point"].max = r.prompt.shape[0] - 1
            except Exception as e:  # show the reason in the panel; the kernel stays usable
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

    sync_choices()  # before the observers: building the panel draws once, in refresh() below
    c["run"].observe(lambda ch: (sync_choices(), refresh()), names="value")
    c["init"].observe(sync_choices, names="value")
    for name in ("seed", "projection", "view"):
        c[name].observe(refresh, names="value")
    c["point"].observe(show_point, names="value")
    panel = w.VBox([w.HTML("<b>Embedding-space explorer</b> (select a point with the slider)"),
                    w.HBox([w.VBox([c["run"], c["init"], c["seed"], c["view"]]),
                            w.VBox([c["projection"], c["point"], detail])]), output])
    panel.controls, panel.output, panel.detail = c, output, detail
    panel.refresh, panel.show_point = refresh, show_point
    refresh()
    return panel
