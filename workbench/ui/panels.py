"""ui.panels."""
from __future__ import annotations

import ipywidgets as w
from IPython.display import display

from workbench.config import WorkbenchError
from workbench.tasks.corpus import cluster, nmi, purity
from workbench.viz.clusters import cluster_map, cluster_table


# ----------------------------------------------------------------------------------------------- widget
def k_panel(features, texts, xy, method: str = "kmeans", k: int = 16, seed: int = 0, genres=None,
            k_range=(2, 64), on_result=None):
    """An ipywidgets panel: a K slider and a "Cluster" button; each click clusters the given features again
    (no re-embedding), then shows the map, the keyword table and genre purity/NMI. ``on_result(clustering)`` is
    called with each new clustering (e.g. to save it). Returns the VBox with ``.slider``, ``.button``, ``.output``
    and ``.results`` (K -> Clustering) for scripting and tests."""

    slider = w.IntSlider(value=int(k), min=k_range[0], max=max(k_range[1], int(k)), description="K",
                         continuous_update=False)
    button, status, output = w.Button(description="Cluster", button_style="primary"), w.HTML(), w.Output()

    def run(_=None):
        button.disabled = True
        output.clear_output()
        with output:
            try:
                c = cluster(features, texts, method=method, k=int(slider.value), seed=seed, drop_empty=method == "lda")
                panel.results[int(slider.value)] = c
                diag = (f" genre purity {purity(c.assignments, genres):.3f}, NMI {nmi(c.assignments, genres):.3f}"
                        if genres is not None and any(genres) else "")
                status.value = f"K={slider.value}: {c.k} clusters, sizes {min(c.sizes)}–{max(c.sizes)}.{diag}"
                if on_result:
                    on_result(c)
                display(cluster_map(xy, texts, c, genres))
                display(cluster_table(c))
            except WorkbenchError as e:  # bad input only (a bug keeps its traceback): one line in the panel; the kernel stays usable
                status.value = f"<b style='color:#b00'>failed:</b> {type(e).__name__}: {e}"
            finally:
                button.disabled = False

    button.on_click(run)
    panel = w.VBox([w.HTML(f"<b>Choose K</b> ({method}, {len(texts)} texts)"), w.HBox([slider, button]), status,
                    output])
    panel.slider, panel.button, panel.output, panel.results = slider, button, output, {}
    return panel


def dropdown_view(options, render, description: str = "show", value=None):
    """An ipywidgets panel: a dropdown over ``options`` (a list, or a dict label -> value) and an output area that
    shows ``render(value)`` (a figure, a table, anything ``display`` takes; None: nothing) for the chosen option,
    again on every change. Returns the VBox with ``.dropdown`` and ``.output`` for scripting and tests."""

    dropdown = w.Dropdown(options=options, description=description,
                          **({"value": value} if value is not None else {}))
    output = w.Output()

    def show(_=None):
        output.clear_output(wait=True)
        with output:
            shown = render(dropdown.value)
            if shown is not None:
                display(shown)

    dropdown.observe(show, names="value")
    show()
    panel = w.VBox([dropdown, output])
    panel.dropdown, panel.output = dropdown, output
    return panel
