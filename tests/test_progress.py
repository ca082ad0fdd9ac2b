"""Quiet progress: one overall bar per command, nested bars that do not linger, no bars when output is redirected,
one finished text line per command in a saved notebook (no widgets), no model-loading bars, --quiet everywhere."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from workbench.cli.main import build_parser
from workbench.engine import progress
from workbench.engine.backbones import load_backbone
from workbench.engine.progress import progress_bar

ROOT = Path(__file__).resolve().parents[1]
LISTING_COMMANDS = {"inits", "datasets", "recipes"}  # print lists only: nothing to be quiet about
WIDGET = "application/vnd.jupyter.widget-view+json"


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: carriage returns, newlines and tqdm's cursor-up (ESC [ A) applied."""
    rows, r, c = [[]], 0, 0
    for token in re.findall(r"\x1b\[A|\r|\n|[^\r\n\x1b]+", text):
        if token == "\r":
            c = 0
        elif token == "\n":
            r, c = r + 1, 0
            rows.extend([] for _ in range(r + 1 - len(rows)))
        elif token == "\x1b[A":
            r = max(r - 1, 0)
        else:
            row = rows[r]
            row.extend(" " * (c - len(row)))
            row[c:c + len(token)] = list(token)
            c += len(token)
    lines = ["".join(row).rstrip() for row in rows]
    return [line for line in lines if line]


@pytest.fixture
def terminal(monkeypatch):
    """A function that makes stderr a (fake) terminal and returns it; call it in the test body (pytest's output
    capture sets sys.stderr again between a fixture's setup and the test). No overall bar is left from earlier."""
    monkeypatch.setattr(progress, "_open_overall", type(progress._open_overall)())

    def make():
        monkeypatch.setattr(sys, "stderr", FakeTTY())
        return sys.stderr
    return make


def test_terminal_nested_bars_vanish_and_the_overall_line_is_complete(terminal):
    tty = terminal()
    with progress_bar(total=3, desc="overall", unit="row") as bar:
        for _ in range(3):
            for _ in progress_bar(range(4), desc="inner", nested=True):
                pass
            for _ in progress_bar(range(2), desc="helper"):  # opened under an overall bar: nested
                pass
            bar.update(1)
    shown = screen(tty.getvalue())
    assert len(shown) == 1, shown
    assert shown[0].startswith("overall: 100%") and "3/3" in shown[0]
    assert "inner" in tty.getvalue() and "helper" in tty.getvalue()  # they were drawn, then erased


def test_a_bar_on_its_own_is_the_overall_bar(terminal):
    tty = terminal()
    for _ in progress_bar(range(5), desc="embed", unit="batch"):
        pass
    shown = screen(tty.getvalue())
    assert len(shown) == 1 and shown[0].startswith("embed: 100%") and "5/5" in shown[0]


def test_quiet_draws_nothing_in_a_terminal(terminal):
    tty = terminal()
    bar = progress_bar(total=2, desc="overall", enabled=False)
    bar.update(2)
    bar.set_postfix(loss="0.1")
    bar.close()
    assert list(progress_bar(range(3), enabled=False)) == [0, 1, 2]
    assert tty.getvalue() == ""


def test_no_bars_when_stderr_is_not_a_terminal(monkeypatch):
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    assert progress.display_mode() == "off"
    bar = progress_bar(total=3, desc="overall")
    assert list(progress_bar(range(3), desc="inner", nested=True)) == [0, 1, 2]
    bar.update(3)
    bar.close()
    assert bar.disable and fake.getvalue() == ""


def test_every_subcommand_takes_quiet():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        options = {o for a in parser._actions for o in a.option_strings}
        if name in LISTING_COMMANDS:
            assert "--quiet" not in options, name
        else:
            assert "--quiet" in options, name
            assert "--quiet" in parser.format_help(), name
    assert {"fewshot", "benchmark", "meta-train", "bayes", "bayes-report", "similarity", "cluster", "supmer-dg",
            "explore"} <= set(sub.choices)


def test_cli_with_redirected_output_writes_no_progress_lines(tiny, toy_data, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "workbench", "fewshot", "--dataset", "toy", "--backbone", tiny["bert-mlm"], "--k",
            "4", "--seeds", "13", "--methods", "zero-shot,random", "--steps", "4", "--eval-every", "2",
            "--prompt-length", "4", "--max-length", "32", "--out", str(out)]
    with open(tmp_path / "stdout.txt", "w") as so, open(tmp_path / "stderr.txt", "w") as se:
        rc = subprocess.run(argv, stdout=so, stderr=se, cwd=ROOT, env={**os.environ, "WORKBENCH_DATA": str(toy_data)},
                            timeout=600).returncode
    printed, errors = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    assert rc == 0, errors
    assert "run directory" in printed
    for text in (printed, errors):
        assert "%|" not in text and "\r" not in text and "Loading" not in text


def test_loading_a_model_draws_no_loading_bar(tiny, capfd):
    was = transformers.utils.logging.is_progress_bar_enabled()
    bb = load_backbone(tiny["bert-mlm"])
    err = capfd.readouterr().err
    assert bb.model is not None
    assert "Loading" not in err and "%|" not in err, err
    assert transformers.utils.logging.is_progress_bar_enabled() == was  # the caller's setting is restored


NOTEBOOK_CELLS = [
    """import time
from workbench.engine.progress import progress_bar
bar = progress_bar(total=3, desc="overall", unit="step")
for i in range(3):
    for _ in progress_bar(range(4), desc="inner", nested=True):
        time.sleep(0.05)
    for _ in progress_bar(range(2), desc="helper"):
        pass
    bar.update(1)
    time.sleep(0.3)
bar.close()""",
    """left = progress_bar(total=2, desc="left open")  # as a cell that raised mid-command would leave it
left.update(1)""",
    """for _ in progress_bar(range(4), desc="next command"):
    time.sleep(0.2)""",
]


def test_notebook_keeps_one_finished_text_line_per_command(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS])
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    nbformat.write(nb, tmp_path / "executed.ipynb")
    saved = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    outputs = [cell.outputs for cell in saved.cells]
    assert WIDGET not in (tmp_path / "executed.ipynb").read_text()
    first, last = outputs[0], outputs[2]
    for outs, desc, total in ((first, "overall", 3), (last, "next command", 4)):
        assert len(outs) == 1, outs
        assert outs[0].output_type == "display_data" and set(outs[0].data) == {"text/plain"}
        text = outs[0].data["text/plain"]
        assert text.startswith(f"{desc}: 100%") and f"{total}/{total}" in text and "\n" not in text
    assert "inner" not in str(outputs) and "helper" not in str(outputs)
