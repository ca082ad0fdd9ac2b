"""Figures that survive sharing (workbench.viz.output): the notebook bundle, HTML sharing one plotly.js per folder,
PNG/SVG through kaleido, and the errors when a static format cannot be written."""
from __future__ import annotations

import os

import plotly.graph_objects as go
import pytest

from workbench.config import WorkbenchError
from workbench.viz import output, style

STATIC = output.static_export_available()
needs_static = pytest.mark.skipif(STATIC is not None, reason=f"static export unavailable: {STATIC}")


def _fig(name="random"):
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[60.0, 70.5, 65.0], name=name))
    return style.styled(fig, title=style.title("Dev accuracy", "toy", 4, [13, 21], 200), x="step", y="accuracy (%)")


def test_saved_figures_share_one_plotly_js_per_folder(tmp_path):
    a = output.save_figure(_fig(), tmp_path / "a.html")
    js = tmp_path / output.PLOTLY_JS
    first = js.stat().st_mtime_ns
    b = output.save_figure(_fig("vocab"), tmp_path / "b.html")
    assert js.stat().st_mtime_ns == first  # written once, not again for the second figure
    assert js.stat().st_size > 1_000_000  # the whole library, offline
    for page in (a, b):
        text = page.read_text()
        assert '<script charset="utf-8" src="plotly.min.js"></script>' in text
        assert page.stat().st_size < 100_000  # the figure only: no embedded copy of plotly.js
        assert "cdn.plot.ly" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html", output.PLOTLY_JS]  # no temporaries


def test_a_plotly_js_from_another_version_is_replaced(tmp_path):
    (tmp_path / output.PLOTLY_JS).write_text("/* plotly.js for plotly.py 0.0.1 */\nold")
    output.save_figure(_fig(), tmp_path / "a.html")
    head = (tmp_path / output.PLOTLY_JS).read_text()[:200]
    assert "0.0.1" not in head and output.plotly.__version__ in head


def test_unknown_image_format_is_refused_before_writing(tmp_path):
    with pytest.raises(WorkbenchError, match=r"images=\['jpg'\].*png"):
        output.save_figure(_fig(), tmp_path / "a.html", images=("jpg",))
    assert not any(tmp_path.iterdir())


def test_static_export_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on the path
    why = output.static_export_available()
    assert why is not None and ("chromium" in why or "kaleido" in why)
    with pytest.raises(WorkbenchError, match="cannot write a PNG figure"):
        output.to_image(_fig(), "png")


def test_fallback_bundle_embeds_plotly_js_once_per_kernel(monkeypatch):
    monkeypatch.setitem(output._state, "plotlyjs_shown", False)
    first, _ = output.bundle(_fig(), static=False)
    second, _ = output.bundle(_fig("vocab"), static=False)
    assert "image/png" not in first
    assert len(first["text/html"]) > 1_000_000 > len(second["text/html"])  # the library once, then figures only
    assert "Plotly.newPlot" in second["text/html"]
    assert first["application/vnd.plotly.v1+json"]["data"][0]["name"] == "random"


@needs_static
def test_static_bundle_and_image_files(tmp_path):
    data, meta = output.bundle(_fig(), static=True)
    assert set(data) == {"application/vnd.plotly.v1+json", "image/png", "text/html", "text/plain"}
    assert data["text/html"].startswith('<img src="data:image/png;base64,') and data["image/png"] in data["text/html"]
    assert meta["image/png"]["width"] == 900
    html = output.save_figure(_fig(), tmp_path / "f.html", images=("png", "svg"))
    png, svg = html.with_suffix(".png").read_bytes(), html.with_suffix(".svg").read_text()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert "<svg" in svg and "Dev accuracy" in svg
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
