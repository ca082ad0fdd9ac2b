"""Figures that survive sharing: shown in a notebook with a static copy beside the interactive one, saved as HTML
that shares one local plotly.js per folder, optionally as PNG/SVG.

- :func:`show` displays a figure as a bundle: the plotly JSON (interactive in JupyterLab, whose plotly renderer
  shows the PNG until the pointer enters the figure; VS Code; nteract) and,
  for viewers that cannot run plotly (``jupyter nbconvert --to html``, GitHub's notebook view), a static PNG as
  ``image/png`` and as the ``text/html`` ``<img>``. Static images need kaleido and a Chromium-based browser
  (Debian's ``chromium``; ``BROWSER_PATH`` picks another); without them ``text/html`` is the interactive figure with
  plotly.js embedded once per kernel, so an nbconvert export still shows every figure (GitHub does not run it).
- :func:`save_figure` writes ``name.html`` that loads ``plotly.min.js`` from the same folder (written once per folder,
  offline, no CDN), and ``name.png`` / ``name.svg`` on request. Every file goes through a temporary file and a rename.
"""
from __future__ import annotations

import base64
import html
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import plotly
import plotly.io as pio
from plotly.offline import get_plotlyjs

from workbench.config import WorkbenchError
from workbench.engine.runs import atomic_write

PLOTLY_JS = "plotly.min.js"
IMAGE_FORMATS = ("png", "svg")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_state = {"server": False, "plotlyjs_shown": False}


def static_export_available() -> str | None:
    """None when PNG/SVG export works here, else the reason (what to install)."""
    if importlib.util.find_spec("kaleido") is None:
        return "kaleido is not installed (pip install 'kaleido>=1')"
    if not (os.environ.get("BROWSER_PATH") or any(shutil.which(b) for b in BROWSERS)):
        return ("no Chromium-based browser found for kaleido (apt-get install chromium, or set BROWSER_PATH to "
                "Chrome/Chromium)")
    return None


def _size(fig) -> tuple[int, int]:
    return int(fig.layout.width or 900), int(fig.layout.height or 500)


def to_image(fig, fmt: str = "png", scale: float = 2.0) -> bytes:
    """The figure as PNG or SVG bytes through kaleido (one browser kept open per process)."""
    if fmt not in IMAGE_FORMATS:
        raise WorkbenchError(f"image format {fmt!r}: expected one of {', '.join(IMAGE_FORMATS)}")
    why = static_export_available()
    if why:
        raise WorkbenchError(f"cannot write a {fmt.upper()} figure: {why}")
    if not _state["server"]:
        import kaleido  # optional dependency: imported only when a static image is asked for

        kaleido.start_sync_server(silence_warnings=True)
        _state["server"] = True
    width, height = _size(fig)
    with warnings.catch_warnings():  # plotly passes browser options that a running kaleido server ignores
        warnings.filterwarnings("ignore", message="The kopts argument is ignored", category=UserWarning)
        return pio.to_image(fig, format=fmt, width=width, height=height, scale=scale)


def _title(fig) -> str:
    t = fig.layout.title.text if fig.layout.title else None
    return t or "figure"


def bundle(fig, static: bool | None = None) -> tuple[dict, dict]:
    """The display data of ``fig`` (mimetype -> content, metadata): plotly JSON + static PNG, or + interactive HTML."""
    static = static_export_available() is None if static is None else static
    title = _title(fig)
    data = {"application/vnd.plotly.v1+json": json.loads(fig.to_json()) | {"config": {"responsive": True}},
            "text/plain": f"<figure: {title}>"}
    meta = {}
    if static:
        png = base64.b64encode(to_image(fig, "png", scale=1.5)).decode()
        width, _ = _size(fig)
        data["image/png"] = png
        meta["image/png"] = {"width": width}
        data["text/html"] = (f'<img src="data:image/png;base64,{png}" width="{width}" alt="{html.escape(title)}" '
                             f'title="{html.escape(title)}"/>')
    else:
        first = not _state["plotlyjs_shown"]
        data["text/html"] = fig.to_html(include_plotlyjs=first, full_html=False, config={"responsive": True})
        _state["plotlyjs_shown"] = True
    return data, meta


def show(fig, static: bool | None = None) -> None:
    """Display ``fig`` in a notebook so that it survives nbconvert and GitHub (see the module text)."""
    from IPython.display import display  # the notebook client's dependency; absent from a bare CLI install

    data, meta = bundle(fig, static)
    display(data, metadata=meta, raw=True)


def _write_plotlyjs(folder: Path) -> None:
    js = folder / PLOTLY_JS
    stamp = f"/* plotly.js for plotly.py {plotly.__version__} */\n"
    if js.is_file():
        with js.open() as f:
            if f.readline() == stamp:
                return
    atomic_write(js, stamp + get_plotlyjs())


def save_figure(fig, path, images=()) -> Path:
    """Write ``fig`` as ``path`` (HTML loading ``plotly.min.js`` from its folder) and as ``path`` with each suffix of
    ``images`` ("png", "svg"). Returns the HTML path."""
    path = Path(path)
    bad = [f for f in images if f not in IMAGE_FORMATS]
    if bad:
        raise WorkbenchError(f"images={list(images)}: unknown format(s) {bad}; expected any of {list(IMAGE_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_plotlyjs(path.parent)
    atomic_write(path, fig.to_html(include_plotlyjs="directory", full_html=True, config={"responsive": True}))
    for fmt in images:
        data = to_image(fig, fmt)
        target = path.with_suffix(f".{fmt}")
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return path
