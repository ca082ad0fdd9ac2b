"""A tiny clustered corpus for the SUPMER tests (words from the tiny models' vocabulary, four topics, documents and
paragraphs like Brown's ``{"doc", "para", "text"}`` lines), and a check that it reads as such a corpus."""
from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "film": "movie film actor actors plot script scene scenes director character cast acting ending performance show",
    "market": "stock price market company business government country president data computer software internet phone",
    "sport": "game team player season win won lost sports goes first last high low two three",
    "life": "life people man woman child day days year years time work kind love happy sad",
}


def write_corpus(path, n_docs: int = 24, paras: int = 3, sents: int = 4, seed: int = 0, docs: bool = True) -> Path:
    """``n_docs`` documents cycling over the topics, ``paras`` x ``sents`` sentences each; ``docs=False`` writes
    lines without doc/para ids (a corpus adjacency tasks cannot use)."""
    rng, lines, names = random.Random(seed), [], list(TOPICS)
    for d in range(n_docs):
        words = TOPICS[names[d % len(names)]].split()
        for p in range(paras):
            for _ in range(sents):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(6, 12))) + " ."
                lines.append({"doc": d, "para": p, "text": text} if docs else {"text": text})
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


def test_corpus_reads_with_document_ids(tmp_path):
    from workbench.engine.data import read_corpus
    rows = read_corpus(str(write_corpus(tmp_path / "c.jsonl", n_docs=4)))
    assert len(rows) == 4 * 3 * 4 and rows[0]["doc"] == 0 and rows[-1]["doc"] == 3
    assert read_corpus(str(write_corpus(tmp_path / "n.jsonl", n_docs=2, docs=False)))[0]["doc"] is None
