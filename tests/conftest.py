"""Shared fixtures: tiny random models of every family (built from configs, loaded by path) and small datasets."""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

POS = ["great", "wonderful", "good", "okay"]
NEG = ["terrible", "awful", "bad", "boring"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """family -> path of a tiny random model saved with its tokenizer."""
    from tiny_models import FAMILIES, build_tiny
    return {f: str(build_tiny(f, tiny_dir)) for f in FAMILIES}


@pytest.fixture(scope="session")
def tiny_real(tmp_path_factory):
    """family -> path of a tiny random model (roberta-mlm, gpt2, t5, llama) whose tokenizer was trained on the
    shared Brown corpus: byte-level BPE (RoBERTa / GPT-2) or SentencePiece-style Unigram (T5 / Llama); built once
    per session (tiny_models.build_tiny_real)."""
    from tiny_models import REAL_FAMILIES, build_tiny_real
    corpus = SHARED_DATA / "unlabeled" / "brown.jsonl"
    if not corpus.is_file():
        pytest.skip(f"the shared corpus is not at {corpus}")
    out = tmp_path_factory.mktemp("tiny_real")
    return {f: str(build_tiny_real(f, out, corpus)) for f in REAL_FAMILIES}


def write_dataset(root: Path, name: str, n_per_class: int = 12, n_test: int = 16, pair: bool = False, seed: int = 0):
    """A small sentiment-like dataset in the shared JSONL format (words from the tiny vocabulary)."""
    rng = random.Random(seed)
    d = root / name
    d.mkdir(parents=True, exist_ok=True)

    def row(label):
        word = rng.choice(POS if label else NEG)
        text = f"the movie was {word} and the film is {rng.choice(['good', 'bad', 'okay'])}"
        if pair:
            return {"text_a": text, "text_b": f"it was {rng.choice(POS + NEG)}", "label": label}
        return {"text": text, "label": label}

    for split, n in (("train", n_per_class), ("test", n_test // 2)):
        rows = [row(c) for c in (0, 1) for _ in range(n)]
        rng.shuffle(rows)
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "meta.json").write_text(json.dumps({"name": name, "task": "pair" if pair else "single",
                                             "labels": ["negative", "positive"]}))
    return d


@pytest.fixture
def toy_data(tmp_path, monkeypatch):
    """A data folder with 'toy' (single) and 'toypair' (pair) on WORKBENCH_DATA."""
    root = tmp_path / "data"
    write_dataset(root, "toy")
    write_dataset(root, "toypair", pair=True)
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    return root


@pytest.fixture(scope="session")
def minilm():
    from workbench.engine.backbones import load_backbone
    return load_backbone("minilm")


def shared_data_or_skip():
    if not (SHARED_DATA / "sst2" / "train.jsonl").exists():
        pytest.skip(f"the shared datasets are not at {SHARED_DATA}")
    return SHARED_DATA


def check_committed_clean(path, names=None):
    """A notebook committed as the project wants it: python3 kernel, no outputs, one literal-only ``parameters`` cell
    (each line typed, commented; named ``names`` in order when given), no functions or classes defined in it."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "commit the notebook without outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    lines = [ln for ln in params[0].source.splitlines() if ln.strip()]
    if names is not None:
        assert [ln.split(":")[0] for ln in lines] == names
    assert all("#" in ln and " = " in ln for ln in lines), "each parameter is a typed, commented literal"
    assert not any(ln.lstrip().startswith(("def ", "class ")) for c in code for ln in c.source.splitlines())
    return lines


@pytest.fixture
def tiny_tuning(tiny, toy_data):
    """What a tuning test needs: a tiny BERT masked-LM head (prompt length 4), the toy k=4 split of seed 13 and a
    seeded random init."""
    import torch

    from workbench.config import PromptConfig, TaskConfig
    from workbench.engine.backbones import load_backbone
    from workbench.engine.data import load_dataset
    from workbench.engine.heads import make_head
    from workbench.engine.splits import kshot_split
    from workbench.engine.templates import resolve_format

    bb = load_backbone(tiny["bert-mlm"])
    ds = load_dataset("toy")
    head = make_head(bb, resolve_format(ds.name, ds.task, ds.labels, bb.family, TaskConfig()), TaskConfig(),
                     PromptConfig(length=4), 32)
    init = torch.randn(4, bb.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.3
    return head, kshot_split(ds, 4, 13), init


PLOTLY_MIME = "application/vnd.plotly.v1+json"


def check_export(executed, min_figures: int = 1, static: bool | None = None) -> int:
    """Export an executed notebook as ``jupyter nbconvert --to html`` does (nbconvert's HTMLExporter) and check that
    every plotly figure it displayed is in the page: one static ``<img src="data:image/png...">`` per figure, or, where
    static export (kaleido + Chromium) is unavailable (``static`` False), an interactive plotly div per figure; and
    that nothing was printed by accident (no cell's value as an ``execute_result``). Returns the number of figures
    (at least ``min_figures``)."""
    import nbformat
    from nbconvert import HTMLExporter

    from workbench.viz.output import static_export_available
    from workbench.viz.style import FONT

    static = static_export_available() is None if static is None else static
    nb = nbformat.read(str(executed), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    stray = [o["data"].get("text/plain") for o in outputs if o.get("output_type") == "execute_result"]
    assert not stray, f"a cell's last expression printed its value by accident: {stray}"  # display/show/print only
    figures = [o for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert len(figures) >= min_figures, f"{executed}: {len(figures)} figures displayed, expected >= {min_figures}"
    assert all("text/html" in o["data"] for o in figures), "a figure displayed without workbench.viz.output.show"
    for o in figures:  # one style: the workbench template and a title without a file path, in every figure
        layout = o["data"][PLOTLY_MIME]["layout"]
        font = layout.get("template", {}).get("layout", {}).get("font", {})
        assert font.get("family") == FONT, f"a figure outside the template: {layout.get('title')}"
        title = (layout.get("title") or {}).get("text") or ""
        assert title and "runs/" not in title and str(Path(executed).parent) not in title, title
    body, _ = HTMLExporter().from_notebook_node(nb)
    if static:
        assert all("image/png" in o["data"] for o in figures), "a figure without its static image"
        images = re.findall(r'<img[^>]*\ssrc="data:image/png;base64,', body)  # attributes come back sorted
        assert len(images) == len(figures), "a figure is missing from the HTML export"
    else:
        assert body.count('class="plotly-graph-div"') >= len(figures), "a figure is missing from the HTML export"
    return len(figures)


def check_saved_figure(path) -> None:
    """A figure written by ``workbench.viz.output.save_figure``: HTML that loads ``plotly.min.js`` from its folder."""
    path = Path(path)
    assert path.is_file() and (path.parent / "plotly.min.js").is_file(), path
    assert 'src="plotly.min.js"' in path.read_text(), path
