"""JupyterLab in a real browser: the quickstart notebook run by headless Chromium, as a user would run it.

Starts JupyterLab on 127.0.0.1 (a free port, a random token, settings and runtime files in a temporary folder),
opens a copy of ``notebooks/00_quickstart.ipynb`` whose parameters cell points at a tiny model and toy data, runs
all cells through JupyterLab's own "run all cells" command, and checks in the page that no cell shows an error, that
plotly's renderer shows each figure's static copy, that the interactive figure is drawn (an SVG inside
``.js-plotly-plot``) when the pointer enters it, and that the ipywidgets panel rendered (interactive=True).
Screenshots go to ``test-artifacts/jupyterlab.png`` (the figure) and ``test-artifacts/jupyterlab-widgets.png``.
Then every figure the notebook saved as HTML is opened from disk (file://, offline: the folder's shared plotly.min.js),
screenshotted to ``test-artifacts/saved-<name>.png`` and checked not to be blank.

The browser is Debian's ``chromium`` with its ``chromedriver`` (``apt-get install chromium chromium-driver``),
driven by Selenium with explicit paths, so nothing is downloaded. Without them the test is skipped, saying why.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import write_dataset

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT = 120  # seconds for the whole notebook in the page (tiny model: ~10-30 s on 2 cores)


def _browser() -> tuple[str, str]:
    chrome = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("no Chromium + chromedriver on this machine (install with: apt-get install -y chromium "
                    "chromium-driver); the browser test needs a real browser")
    return chrome, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook_copy(tmp: Path, tiny_model: str) -> Path:
    """00_quickstart.ipynb with a cell of overrides for a tiny run after its parameters cell (the rest unchanged)."""
    nb = json.loads((REPO / "notebooks" / "00_quickstart.ipynb").read_text())
    params = dict(dataset="toy", backbone=tiny_model, methods=["zero-shot", "linear-probe", "random"], k=4, seeds=[13],
                  steps=4, lr=0.01, prompt_length=4, max_length=32, out_dir="runs/quickstart", overwrite=True,
                  interactive=True)
    at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
    injected = {"cell_type": "code", "id": "injected-parameters", "metadata": {"tags": ["injected-parameters"]},
                "execution_count": None, "outputs": [],
                "source": "\n".join(f"{k} = {v!r}" for k, v in params.items())}  # as papermill injects them
    nb["cells"].insert(at + 1, injected)
    path = tmp / "quickstart.ipynb"
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture
def lab(tiny, tmp_path):
    """A JupyterLab server serving ``tmp_path``; yields (base url, token, notebook name)."""
    chrome, driver = _browser()
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    pytest.importorskip("jupyterlab")
    write_dataset(tmp_path / "data", "toy")
    nb = _notebook_copy(tmp_path, tiny["bert-mlm"])
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)  # render every cell (no windowing), so off-screen outputs exist in the page
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)  # no "get notified about Jupyter news?" toast over the screenshot
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "WORKBENCH_DATA": str(tmp_path / "data"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
           "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells and read their outputs
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "notebook": nb.name, "chrome": chrome, "driver": driver, "root": tmp_path}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


_STATE_JS = """
const app = window.jupyterapp; const w = app && app.shell.currentWidget;
if (!w || !w.content || !w.sessionContext) { return null; }
const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
const cells = w.content.widgets.filter(c => c.model.type === 'code');
return {kernel: kernel ? kernel.status : 'none', n: cells.length,
        done: cells.filter(c => c.model.executionCount !== null).length,
        running: Array.from(document.querySelectorAll('.jp-InputPrompt')).filter(
                 p => p.textContent.includes('*')).length,
        errors: cells.map((c, i) => [i, c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                                          .map(o => o.ename + ': ' + o.evalue)]).filter(e => e[1].length)};
"""


def test_quickstart_runs_in_jupyterlab_in_chromium(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = lab["chrome"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=lab["driver"]), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"{lab['base']}/lab/tree/{lab['notebook']}?token={lab['token']}")
        state = _wait(driver, lambda s: s and s["kernel"] == "idle", 60, "the notebook to open with an idle kernel")
        driver.execute_script("return window.jupyterapp.commands.execute('notebook:run-all-cells')")
        state = _wait(driver, lambda s: s and s["done"] == s["n"] and s["running"] == 0 and s["kernel"] == "idle",
                      TIMEOUT, "all cells to finish")
        assert state["errors"] == [], f"cells with errors: {state['errors']}"
        dom_errors = driver.execute_script(
            "return document.querySelectorAll('[data-mime-type=\"application/vnd.jupyter.error\"]').length")
        assert dom_errors == 0
        statics = _wait_js(driver, "return document.querySelectorAll('.jp-RenderedPlotly "
                                   "img.plot-img[src^=\"data:image/png\"]').length", 30,
                           "the figures' static copies (plotly's JupyterLab renderer shows them first)")
        assert statics >= 2  # the notebook shows dev curves and test accuracy
        first = driver.find_element(By.CSS_SELECTOR, ".jp-RenderedPlotly img.plot-img")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", first)
        ActionChains(driver).move_to_element(first).perform()  # the pointer enters: the interactive figure is drawn
        plots = _wait_js(driver, "return document.querySelectorAll('.js-plotly-plot .main-svg').length", 30,
                         "the interactive plotly figure to render")
        assert plots >= 1
        ARTIFACTS.mkdir(exist_ok=True)
        driver.execute_script("document.querySelector('.js-plotly-plot').scrollIntoView({block: 'center'})")
        time.sleep(0.5)
        driver.save_screenshot(str(ARTIFACTS / "jupyterlab.png"))
        n_widgets = _wait_js(driver, "return Array.from(document.querySelectorAll('.jp-OutputArea-output "
                                     ".widget-button')).filter(b => b.textContent.includes('Run')).length", 30,
                             "the ipywidgets panel (its Run button) to render")
        assert n_widgets == 1
        driver.execute_script("Array.from(document.querySelectorAll('.widget-button')).find("
                              "b => b.textContent.includes('Run')).scrollIntoView({block: 'center'})")
        time.sleep(0.5)
        driver.save_screenshot(str(ARTIFACTS / "jupyterlab-widgets.png"))
        assert (ARTIFACTS / "jupyterlab.png").stat().st_size > 10_000
        _screenshot_saved_figures(driver, lab["root"] / "runs" / "quickstart")
    finally:
        driver.quit()


def _screenshot_saved_figures(driver, run_dir: Path) -> None:
    """Open each HTML figure the notebook saved (file://, offline: plotly.min.js from the same folder), wait for
    plotly to draw it, screenshot it, and check the picture is not blank (many non-white pixels, several colours)."""
    from PIL import Image

    pages = sorted(p for p in run_dir.glob("*.html"))
    assert len(pages) >= 2, f"expected at least two saved figures in {run_dir}, found {[p.name for p in pages]}"
    assert (run_dir / "plotly.min.js").is_file()
    for page in pages:
        driver.get(page.as_uri())
        _wait_js(driver, "return document.querySelectorAll('.js-plotly-plot .main-svg').length", 30,
                 f"plotly to draw {page.name}")
        time.sleep(0.5)
        shot = ARTIFACTS / f"saved-{page.stem}.png"
        driver.save_screenshot(str(shot))
        img = Image.open(shot).convert("RGB").resize((350, 250))
        pixels = list(img.getdata())
        ink = sum(1 for r, g, b in pixels if min(r, g, b) < 200) / len(pixels)
        colours = len({(r // 32, g // 32, b // 32) for r, g, b in pixels})
        assert ink > 0.01 and colours >= 4, f"{shot} looks blank: {ink:.3%} non-white pixels, {colours} colour bins"


def _wait(driver, ok, timeout, what):
    deadline, state = time.time() + timeout, None
    while time.time() < deadline:
        state = driver.execute_script(_STATE_JS)
        if ok(state):
            return state
        if state and state.get("errors"):
            return state  # fail fast with the error text
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}; last state {state}")


def _wait_js(driver, script, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
