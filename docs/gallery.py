"""Regenerate the figure gallery (docs/figures.md and docs/figures/*.png) from tiny runs of every notebook.

    python docs/gallery.py                 # everything: ~15 min on 2 CPU cores (offline MiniLM, real data)
    python docs/gallery.py --only 00 05    # some notebooks (04 reads 00's, 01's and 03's runs)

Each notebook runs under papermill with the small settings of ``PARAMS`` (interactive widgets off) in
``--work`` (default ``runs/gallery``); every plotly figure it displayed is written as a PNG (kaleido + Chromium) to
``docs/figures/<notebook>-<n>.png``, and docs/figures.md lists them under the notebook's section headings with each
figure's title. Notebook 05 reads a small benchmark run by this script first (``SUITE``).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import plotly.io as pio

from workbench.viz.output import static_export_available, to_image

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SUITE = {"name": "gallery", "description": "The gallery's benchmark: two datasets, two k, three inits, 3 seeds, "
         "40 tuning steps, 400 test examples. Too short to rank inits: it shows what notebook 05 draws.",
         "methods": ["zero-shot", "random", "vocab"], "grid": [{"datasets": ["sst2", "mr"], "k": [4, 16]}],
         "seeds": [13, 21, 42], "reference": "random", "test_limit": 400, "backbone": {"name": "minilm"},
         "prompt": {"length": 8}, "tune": {"steps": 40, "lr": 0.03, "eval_every": 10, "budgets": [10, 20]}}


def params(work: Path) -> dict[str, dict]:
    """The small settings of each notebook (names = its parameters cell)."""
    w = str(work)
    return {
        "00_quickstart": dict(dataset="sst2", methods=["zero-shot", "linear-probe", "random", "vocab"], k=16,
                              seeds=[13, 21, 42], steps=60, lr=0.03, prompt_length=8, test_limit=400, eval_every=5,
                              snapshot_every=10, out_dir=f"{w}/quickstart", interactive=False),
        "01_clustering": dict(limit=1200, n_clusters=8, n_clusters_sweep=[4, 8, 16], out_dir=f"{w}/clustering",
                              interactive=False),
        "02_meta_training": dict(method="fomaml", targets=["sst2"], meta_steps=30, meta_eval_every=10, seeds=[13, 21],
                                 tune_steps=40, prompt_length=8, similarity_steps=20, test_limit=400,
                                 out_dir=f"{w}/meta", interactive=False),
        "02b_supmer": dict(selfsup_limit=1500, meta_steps=12, ablations=["no-psi"], dg_targets=["mr"], seeds=[13, 21],
                           tune_steps=20, test_limit=300, prompt_length=8, out_dir=f"{w}/supmer", interactive=False),
        "03_bayesian_prompts": dict(iterations=200, record_every=20, steps=40, prompt_length=8, test_limit=400,
                                    out_dir=f"{w}/bayes", interactive=False),
        "04_embedding_space": dict(runs=[f"{w}/quickstart"], projection="pca", n_vocab=3000, n_examples=200,
                                   cluster_dir=f"{w}/clustering", bayes_dir=f"{w}/bayes", out_dir=f"{w}/explorer",
                                   interactive=False),
        "05_results": dict(bench_dir=f"{w}/bench", out_dir=f"{w}/results", interactive=False),
    }


def run_benchmark(work: Path) -> None:
    suite = work / "gallery-suite.json"
    bench = work / "bench"
    if (bench / "results.json").is_file() and suite.is_file() and json.loads(suite.read_text()) == SUITE:
        print(f"05_results: reusing the finished benchmark in {bench} (same suite)")
        return
    suite.write_text(json.dumps(SUITE, indent=1))
    shutil.rmtree(bench, ignore_errors=True)  # the gallery's own scratch run, rebuilt when its suite changes
    subprocess.run([sys.executable, "-m", "workbench", "benchmark", "--suite", str(suite), "--out",
                    str(work / "bench"), "--quiet"], check=True, cwd=REPO)


def figures_of(nb_path: Path) -> list[tuple[str, dict]]:
    """(section heading, plotly figure JSON) for every figure displayed by the executed notebook, in order."""
    nb, heading, found = nbformat.read(nb_path, as_version=4), "", []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heads = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            heading = heads[-1] if heads else heading
            continue
        for out in cell.get("outputs", []):
            fig = out.get("data", {}).get("application/vnd.plotly.v1+json")
            if fig is not None:
                found.append((heading, fig))
    return found


def write_gallery(executed: dict[str, Path], out_md: Path) -> int:
    img_dir = out_md.parent / "figures"
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Figure gallery\n\nEvery figure the notebooks draw, from tiny runs on the offline MiniLM backbone and the "
             "shared datasets (the settings are `params()` and `SUITE` in [`gallery.py`](gallery.py)), regenerated by "
             "one command: `make gallery` (`python docs/gallery.py`). Small runs: the numbers show what each view "
             "draws, not which init is better (see [results](results.md) for measured comparisons). In a notebook "
             "every figure is interactive (hover, zoom, sliders); these PNGs are its static copies, the ones "
             "`jupyter nbconvert --to html` shows. Headings are the notebook's sections; each caption is the "
             "figure's title.\n"]
    n = 0
    for name, path in executed.items():
        lines.append(f"\n## [{name}](../notebooks/{name}.ipynb)\n")
        for i, (heading, spec) in enumerate(figures_of(path), 1):
            fig = pio.from_json(json.dumps(spec))
            png = img_dir / f"{name}-{i:02d}.png"
            png.write_bytes(to_image(fig, "png", scale=1.0))
            title = re.sub(r"<[^>]+>", " ", fig.layout.title.text or "").strip()
            lines.append(f"**{heading}**: {title}\n\n![{title}](figures/{png.name})\n")
            n += 1
    out_md.write_text("\n".join(lines))
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/gallery", help="where the notebooks' runs and executed copies go")
    ap.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 00 05 (default: all)")
    ap.add_argument("--out", default=str(DOCS / "figures.md"))
    ap.add_argument("--no-run", action="store_true", help="redraw from the executed copies already in --work")
    args = ap.parse_args(argv)
    why = static_export_available()
    if why:
        sys.exit(f"error: the gallery needs PNG export: {why}")
    work = (REPO / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    todo = {k: v for k, v in params(work).items() if not args.only or k.split("_")[0] in args.only}
    if "05_results" in todo and not args.no_run:
        run_benchmark(work)
    executed = {name: work / f"{name}.ipynb" for name in todo}
    for name, p in todo.items():
        if args.no_run:
            continue
        t0 = time.time()
        papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(executed[name]), parameters=p,
                                   kernel_name="python3", cwd=str(REPO), progress_bar=False)
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    n = write_gallery(executed, Path(args.out))
    print(f"{n} figures -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
