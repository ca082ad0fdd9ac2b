"""A small ipywidgets panel for the quickstart notebook: pick dataset, methods, k, steps and lr, press Run.

The panel calls the same function as the notebook and the CLI (:func:`workbench.harness.run_fewshot`), each time into
a fresh run directory next to the notebook's ``out_dir``, then shows the summary table and the dev-curve figure.
ipywidgets is imported inside :func:`quickstart_panel`, so ``import workbench`` works without it.
"""
from __future__ import annotations

import time
from pathlib import Path

import ipywidgets as w
from IPython.display import display

from workbench.config import BackboneConfig, FewShotConfig, PromptConfig, TuneConfig, WorkbenchError
from workbench.engine.data import list_datasets
from workbench.experiments.fewshot import known_methods, run_fewshot
from workbench.viz.output import show
from workbench.viz.runs import dev_curves, summary_table

DEFAULTS = {"dataset": "sst2", "backbone": "minilm", "methods": ["zero-shot", "linear-probe", "random", "vocab"],
            "k": 16, "seeds": [13, 21, 42], "steps": 200, "lr": 0.01, "eval_every": 5, "snapshot_every": 0,
            "prompt_length": 20, "max_length": 128, "test_limit": None, "out_dir": "runs/quickstart"}


def fresh_out_dir(out_dir: str) -> Path:
    """``<out_dir>-ui-<timestamp>`` (with a counter if taken): a new run directory per click, never overwritten."""
    base = Path(out_dir)
    stem = base.with_name(f"{base.name}-ui-{time.strftime('%Y%m%d-%H%M%S')}")
    path, i = stem, 1
    while path.exists():
        path, i = stem.with_name(f"{stem.name}-{i}"), i + 1
    return path


def make_config(p: dict, out: str | Path) -> FewShotConfig:
    """The run config from the panel's (or the notebook's) parameters; ConfigError names a bad value."""
    p = {**DEFAULTS, **p}
    tune = TuneConfig(steps=int(p["steps"]), lr=float(p["lr"]), eval_every=int(p["eval_every"]),
                      snapshot_every=int(p["snapshot_every"]), max_length=int(p["max_length"]))
    return FewShotConfig(datasets=[p["dataset"]], methods=list(p["methods"]), k=int(p["k"]),
                         seeds=[int(s) for s in p["seeds"]], test_limit=p["test_limit"], out=str(out), overwrite=False,
                         backbone=BackboneConfig(name=p["backbone"]),
                         prompt=PromptConfig(length=int(p["prompt_length"])), tune=tune)


def quickstart_panel(defaults: dict, run_fn=None):
    """An ipywidgets panel initialised from ``defaults`` (the notebook's parameters; missing keys use DEFAULTS).

    ``run_fn(cfg) -> results`` defaults to ``run_fewshot``. The returned VBox has ``.controls`` (name -> widget),
    ``.run_button``, ``.output`` and ``.runs`` (the run directories written so far) for scripting and tests.
    """
    p = {**DEFAULTS, **(defaults or {})}
    run_fn = run_fn or (lambda cfg: run_fewshot(cfg, progress=True))
    datasets = list_datasets()
    if p["dataset"] not in datasets:  # a local folder or a hub name: offer it too
        datasets = [p["dataset"], *datasets]
    methods = known_methods()
    chosen = [m for m in p["methods"] if m in methods] or methods[:1]
    style, layout = {"description_width": "90px"}, w.Layout(width="320px")
    controls = {
        "dataset": w.Dropdown(options=datasets, value=p["dataset"], description="dataset", style=style, layout=layout),
        "methods": w.SelectMultiple(options=methods, value=chosen, rows=min(len(methods), 7), description="methods",
                                    style=style, layout=layout),
        "k": w.BoundedIntText(value=int(p["k"]), min=1, max=4096, description="k (per class)", style=style,
                              layout=layout),
        "steps": w.BoundedIntText(value=int(p["steps"]), min=1, max=100_000, description="steps", style=style,
                                  layout=layout),
        "lr": w.BoundedFloatText(value=float(p["lr"]), min=1e-6, max=10.0, step=1e-3, description="lr", style=style,
                                 layout=layout),
    }
    button = w.Button(description="Run", button_style="primary", icon="play", tooltip="run_fewshot with these values")
    status = w.HTML(value=f"<i>backbone {p['backbone']}, seeds {list(p['seeds'])}, prompt length "
                          f"{p['prompt_length']}; each run writes a new folder next to {p['out_dir']}</i>")
    output = w.Output()

    def on_run(_=None):
        values = {**p, **{name: c.value for name, c in controls.items()}}
        out = fresh_out_dir(p["out_dir"])
        button.disabled = True
        output.clear_output()
        with output:
            try:
                if not values["methods"]:
                    raise ValueError("choose at least one method")
                status.value = f"running into <code>{out}</code> ..."
                results = run_fn(make_config(values, out))
                run_dir = results.get("out", str(out))
                panel.runs.append(run_dir)
                status.value = f"done in {results.get('wall_s', 0):.1f} s: <code>{run_dir}</code>"
                display(summary_table(run_dir).round(1))
                show(dev_curves(run_dir))
            except WorkbenchError as e:  # bad input only (a bug keeps its traceback): one line, the kernel stays usable
                status.value = f"<b style='color:#b00'>failed:</b> {type(e).__name__}: {e}"
                print(f"{type(e).__name__}: {e}")
            finally:
                button.disabled = False

    button.on_click(on_run)
    panel = w.VBox([w.HTML("<b>Few-shot quickstart</b>"), *controls.values(), w.HBox([button, status]), output])
    panel.controls, panel.run_button, panel.output, panel.runs = controls, button, output, []
    return panel
