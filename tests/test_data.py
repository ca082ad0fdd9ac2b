"""Tests for workbench.data: loading, validation errors, search path, holdout, k-shot splits, decontamination."""
import json
import os
import pathlib
from collections import Counter

import pytest

from workbench.engine import data as D
from workbench.engine import splits as S
from workbench.config import DEFAULT_SEEDS
from workbench.engine.data import DataError, Example

REAL = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not (REAL / "sst2" / "train.jsonl").is_file():
    REAL = pathlib.Path("/work/shared/data")
needs_real = pytest.mark.skipif(not (REAL / "sst2" / "train.jsonl").is_file(),
                                reason=f"real benchmark data not found at {REAL}")


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def make_folder(root, name, train, test, meta=None, dev=None):
    d = root / name
    write_jsonl(d / "train.jsonl", train)
    write_jsonl(d / "test.jsonl", test)
    if dev is not None:
        write_jsonl(d / "dev.jsonl", dev)
    if meta is not None:
        (d / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return d


def single_rows(n_per_class, n_classes=2, prefix="t"):
    return [{"text": f"{prefix} {c} {i}", "label": c} for i in range(n_per_class) for c in range(n_classes)]


# ------------------------------------------------------------------------------------------------ real data
@needs_real
def test_load_real_sst2_and_rte():
    sst = D.load_dataset(str(REAL / "sst2"), hub=False)
    meta = json.loads((REAL / "sst2" / "meta.json").read_text())
    assert sst.task == "single" and sst.labels == meta["labels"]
    assert len(sst.splits["train"]) == meta["n_train"] and len(sst.splits["test"]) == meta["n_test"]
    assert len(sst.splits["dev"]) == meta["n_dev"]
    assert sst.splits["train"][0].text_b is None and sst.splits["train"][0].text == sst.splits["train"][0].text_a
    rte = D.load_dataset("rte", search_path=[REAL], hub=False)
    meta = json.loads((REAL / "rte" / "meta.json").read_text())
    assert rte.task == "pair" and rte.labels == ["entailment", "not_entailment"] and "dev" not in rte.splits
    assert (len(rte.splits["train"]), len(rte.splits["test"])) == (meta["n_train"], meta["n_test"])
    assert all(e.text_b for e in rte.splits["test"])
    assert rte.describe()["class_counts"]["test"] == {"entailment": 146, "not_entailment": 131}
    h = sst.file_hashes()
    assert set(h) == {"train", "dev", "test"} and all(v.startswith("sha256:") and len(v) == 71 for v in h.values())
    assert "sst2" in D.list_datasets([REAL]) and "unlabeled" not in D.list_datasets([REAL])


@needs_real
def test_decontaminate_real_sst2_test_vs_mr_train():
    sst = D.load_dataset("sst2", search_path=[REAL], hub=False)
    mr = D.load_dataset("mr", search_path=[REAL], hub=False)
    kept, removed = S.decontaminate(mr.splits["train"], S.texts_of(sst.splits["test"]))
    assert removed > 600 and len(kept) + removed == len(mr.splits["train"])
    targets = {S.normalize_text(t) for t in S.texts_of(sst.splits["test"])}
    assert not any(S.normalize_text(e.text_a) in targets for e in kept)


@needs_real
def test_read_corpus_brown():
    rows = D.read_corpus("brown", search_path=[REAL], limit=50)
    assert len(rows) == 50 and set(rows[0]) == {"text", "doc", "para"} and rows[0]["doc"] == 0
    assert D.read_corpus("unlabeled/brown", search_path=[REAL], limit=3) == rows[:3]


# ------------------------------------------------------------------------------------------------ search path
def test_search_path_order_and_override(tmp_path, monkeypatch):
    env_dir, cwd = tmp_path / "env", tmp_path / "work"
    make_folder(env_dir, "toy", [{"text": "from env", "label": 0}], [{"text": "x", "label": 0}])
    make_folder(cwd / "data", "toy", [{"text": "from cwd", "label": 0}], [{"text": "x", "label": 0}])
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("WORKBENCH_DATA", os.pathsep.join([str(env_dir), str(tmp_path / "missing"), str(env_dir)]))
    path = D.data_search_path()
    assert path[:3] == [env_dir.resolve(), (cwd / "data").resolve(), (tmp_path / "shared" / "data").resolve()]
    assert len(path) == len(set(path)) and all(p.is_dir() for p in path)
    assert D.load_dataset("toy", hub=False).splits["train"][0].text == "from env"
    monkeypatch.delenv("WORKBENCH_DATA")
    assert D.data_search_path()[0] == (cwd / "data").resolve()
    assert D.load_dataset("toy", hub=False).splits["train"][0].text == "from cwd"
    assert "toy" in D.list_datasets()


def test_unknown_dataset_error_lists_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(a, "toy", single_rows(2), single_rows(1))
    b.mkdir()
    with pytest.raises(DataError) as ei:
        D.load_dataset("no_such_set", search_path=[a, b], hub=False)
    msg = str(ei.value)
    assert "no_such_set" in msg and str(a) in msg and str(b) in msg
    assert "hub" in msg.lower() and "hub=False" in msg and "toy" in msg


def test_hub_failure_reason_reported(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*a, **k):
        raise ConnectionError("offline")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="ConnectionError: offline"):
        D.load_dataset("glue/sst2", search_path=[tmp_path])


# ------------------------------------------------------------------------------------------------ validation
def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "ok", "label": 0}, "", '{"text": "bad", "label": 1', ])
    with pytest.raises(DataError, match=r"x\.jsonl:3: malformed JSON"):
        D.read_examples(p, None, None)
    p = write_jsonl(tmp_path / "y.jsonl", [{"text": "ok", "label": 0}, "[1, 2]"])
    with pytest.raises(DataError, match=r"y\.jsonl:2: expected a JSON object"):
        D.read_examples(p, None, None)
    p = write_jsonl(tmp_path / "z.jsonl", [{"text": "ok", "label": 0}, {"text": "no label"}])
    with pytest.raises(DataError, match=r"z\.jsonl:2: missing key.*label"):
        D.read_examples(p, None, None)


def test_label_outside_meta_labels(tmp_path):
    d = make_folder(tmp_path, "toy", [{"text": "a", "label": 0}, {"text": "b", "label": 2}], [{"text": "c", "label": 1}],
                    meta={"task": "single", "labels": ["neg", "pos"]})
    with pytest.raises(DataError, match=r"train\.jsonl:2: label 2 .*\['neg', 'pos'\]"):
        D.load_dataset(str(d), hub=False)
    p = write_jsonl(tmp_path / "f.jsonl", [{"text": "a", "label": "maybe"}])
    with pytest.raises(DataError, match=r"f\.jsonl:1: label 'maybe'"):
        D.read_examples(p, "single", ["neg", "pos"])
    p = write_jsonl(tmp_path / "g.jsonl", [{"text": "a", "label": "pos"}])
    assert D.read_examples(p, None, ["neg", "pos"])[0] == [Example("a", 1)]
    for bad in (True, 1.0, -1):
        p = write_jsonl(tmp_path / "h.jsonl", [{"text": "a", "label": bad}])
        with pytest.raises(DataError, match=r"h\.jsonl:1: label"):
            D.read_examples(p, None, ["neg", "pos"])


def test_meta_json_malformed_or_without_labels(tmp_path):
    d = make_folder(tmp_path, "m1", single_rows(1), single_rows(1), meta="{not json")
    with pytest.raises(DataError, match="meta.json"):
        D.load_dataset(str(d), hub=False)
    d = make_folder(tmp_path, "m2", single_rows(1), single_rows(1), meta={"task": "single"})
    with pytest.raises(DataError, match=r"meta\.json.*labels"):
        D.load_dataset(str(d), hub=False)


def test_empty_text(tmp_path):
    p = write_jsonl(tmp_path / "e.jsonl", [{"text": "fine", "label": 0}, {"text": "   ", "label": 1}])
    with pytest.raises(DataError, match=r"e\.jsonl:2: empty"):
        D.read_examples(p, None, None)
    p = write_jsonl(tmp_path / "p.jsonl", [{"text_a": "a", "text_b": "b", "label": 0},
                                           {"text_a": "a", "text_b": "\t", "label": 0}])
    with pytest.raises(DataError, match=r"p\.jsonl:2: empty.*text_b"):
        D.read_examples(p, None, None)


def test_pair_single_mismatch(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": "a", "label": 0}, {"text_a": "a", "text_b": "b", "label": 0}])
    with pytest.raises(DataError, match=r"s\.jsonl:2: sentence-pair row"):
        D.read_examples(p, None, None)
    p = write_jsonl(tmp_path / "q.jsonl", [{"text_a": "a", "text_b": "b", "label": 0}, {"text": "a", "label": 0}])
    with pytest.raises(DataError, match=r"q\.jsonl:2: single-sentence row"):
        D.read_examples(p, None, None)
    d = make_folder(tmp_path, "pairset", [{"text_a": "a", "text_b": "b", "label": 0}], [{"text": "c", "label": 0}])
    with pytest.raises(DataError, match=r"test\.jsonl:1: single-sentence row"):
        D.load_dataset(str(d), hub=False)
    d = make_folder(tmp_path, "declared", [{"text": "a", "label": 0}], [{"text": "c", "label": 0}],
                    meta={"task": "pair", "labels": ["x"]})
    with pytest.raises(DataError, match=r"train\.jsonl:1: single-sentence row.*meta\.json"):
        D.load_dataset(str(d), hub=False)


def test_inferred_task_and_labels(tmp_path):
    p = write_jsonl(tmp_path / "i.jsonl", [{"text_a": "a", "text_b": "b", "label": 3}, {"text_a": "c", "text_b": "d", "label": 0}])
    exs, task, labels = D.read_examples(p, None, None)
    assert task == "pair" and labels == ["0", "1", "2", "3"] and exs[0] == Example("a", 3, "b")
    p = write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    exs, task, labels = D.read_examples(p, None, None)
    assert task == "single" and labels == ["neg", "pos"] and [e.label for e in exs] == [1, 0]
    p = write_jsonl(tmp_path / "mix.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": 0}])
    with pytest.raises(DataError, match=r"mix\.jsonl:2"):
        D.read_examples(p, None, None)
    # without meta.json, labels are inferred over all splits of a folder
    d = make_folder(tmp_path, "nometa", [{"text": "a", "label": 0}], [{"text": "b", "label": 2}])
    ds = D.load_dataset(str(d), hub=False)
    assert ds.labels == ["0", "1", "2"] and ds.splits["test"][0].label == 2


def test_csv_with_label_names(tmp_path):
    d = tmp_path / "csvset"
    d.mkdir()
    (d / "train.csv").write_text('text,label\n"hello, world",pos\nbad film,neg\nok,1\n', encoding="utf-8")
    (d / "test.csv").write_text("text,label\nfine,pos\n", encoding="utf-8")
    (d / "meta.json").write_text(json.dumps({"task": "single", "labels": ["neg", "pos"]}))
    ds = D.load_dataset(str(d), hub=False)
    assert [(e.text, e.label) for e in ds.splits["train"]] == [("hello, world", 1), ("bad film", 0), ("ok", 1)]
    assert ds.files["train"].endswith("train.csv")
    (d / "test.csv").write_text("text,label\nfine,meh\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.csv:2: label 'meh'.*\['neg', 'pos'\]"):
        D.load_dataset(str(d), hub=False)
    p = tmp_path / "pairs.csv"
    p.write_text("text_a,text_b,label\na,b,yes\nc,d,no\ne,,no\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs\.csv:4: empty.*text_b"):
        D.read_examples(p, None, None)
    p.write_text("text_a,text_b,label\na,b,yes\nc,d,no\n", encoding="utf-8")
    exs, task, labels = D.read_examples(p, None, None)
    assert task == "pair" and labels == ["no", "yes"] and exs == [Example("a", 1, "b"), Example("c", 0, "d")]


def test_single_file_holdout_deterministic_and_stratified(tmp_path):
    rows = [{"text": f"a{i}", "label": 0} for i in range(50)] + [{"text": f"b{i}", "label": 1} for i in range(20)]
    p = write_jsonl(tmp_path / "one.jsonl", rows)
    ds1, ds2 = D.load_dataset(str(p), hub=False), D.load_dataset(str(p), hub=False)
    assert ds1.meta["test_holdout"] is True and ds1.name == "one"
    assert ds1.splits == ds2.splits
    assert Counter(e.label for e in ds1.splits["test"]) == {0: 10, 1: 4}
    assert len(ds1.splits["train"]) == 56
    assert not {e.text for e in ds1.splits["train"]} & {e.text for e in ds1.splits["test"]}
    assert [e.text for e in ds1.splits["test"]] != [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(4)]
    assert ds1.file_hashes()["train"] == ds1.file_hashes()["test"]


# ------------------------------------------------------------------------------------------------ k-shot
def toy_dataset(n_per_class=(40, 30, 25)):
    train = [Example(f"c{c} #{i}", c) for c, n in enumerate(n_per_class) for i in range(n)]
    test = [Example(f"test {c}", c) for c in range(len(n_per_class))]
    return D.Dataset("toy", "single", ["x", "y", "z"][:len(n_per_class)], {"train": train, "test": test}, "mem", {}, {})


def test_kshot_split_properties():
    ds = toy_dataset()
    s = S.kshot_split(ds, 8, 13)
    assert Counter(e.label for e in s.train) == {0: 8, 1: 8, 2: 8}
    assert Counter(e.label for e in s.dev) == {0: 8, 1: 8, 2: 8}
    assert not set(s.train) & set(s.dev) and len(set(s.train)) == 24
    assert set(s.train) | set(s.dev) <= set(ds.splits["train"]) and s.test == ds.splits["test"]
    assert [e.label for e in s.train] != sorted(e.label for e in s.train)  # shuffled across classes
    assert S.kshot_split(ds, 8, 13) == s
    assert S.kshot_split(ds, 8, 21).train != s.train
    assert s.as_dict() == {"dataset": "toy", "k": 8, "seed": 13, "n_train": 24, "n_dev": 24, "n_test": 3}
    assert len(DEFAULT_SEEDS) == 5


def test_kshot_ignores_dev_file():
    ds = toy_dataset((4, 4))
    ds.splits["dev"] = [Example("dev", 0), Example("dev", 1)]
    s = S.kshot_split(ds, 2, 42)
    assert all(e.text != "dev" for e in s.dev) and len(s.dev) == 4


def test_kshot_errors():
    ds = toy_dataset((40, 30, 7))
    with pytest.raises(DataError, match=r"'toy'.*class 'z' has 7.*2k = 8"):
        S.kshot_split(ds, 4, 13)
    with pytest.raises(DataError, match=r"class 'z' has no training examples"):
        S.kshot_split(toy_dataset((10, 10, 0)), 1, 13)
    for bad in (0, -1, 1.5):
        with pytest.raises(DataError, match="k must be"):
            S.kshot_split(ds, bad, 13)


# ------------------------------------------------------------------------------------------------ overlap
def test_normalize_and_decontaminate():
    assert S.normalize_text("It's GOOD -- très bien!") == "itsgoodtrèsbien"
    src = [Example("A great film!", 1), Example("a dull film", 0), Example("Premise.", 0, "Hypo thesis"),
           Example("x", 0, "y"), Example("...", 0), Example("unrelated", 1)]
    kept, n = S.decontaminate(src, ["a great  film", "hypothesis", "XY", "!!!"])
    assert n == 3 and kept == [src[1], src[4], src[5]]
    assert S.texts_of(src[2:4]) == ["Premise.", "Hypo thesis", "x", "y"]
    assert S.decontaminate(src, iter([])) == (src, 0)
    with pytest.raises(DataError):
        S.decontaminate(src, "a string")


# ------------------------------------------------------------------------------------------------ hub conversion
def test_from_hf_in_memory():
    H = pytest.importorskip("datasets")
    f = H.Features({"sentence": H.Value("string"), "label": H.ClassLabel(names=["neg", "pos"])})
    dd = H.DatasetDict(
        train=H.Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [0, 1, 1]}, features=f),
        validation=H.Dataset.from_dict({"sentence": ["d", "e"], "label": [0, 1]}, features=f),
        test=H.Dataset.from_dict({"sentence": ["x", "y"], "label": [-1, -1]}, features=f))
    ds = D.from_hf(dd, "glue/sst2")
    assert (ds.task, ds.labels, ds.source, ds.files) == ("single", ["neg", "pos"], "hf:glue/sst2", {})
    assert ds.splits["test"] == [Example("d", 0), Example("e", 1)] and "dev" not in ds.splits
    assert set(ds.file_hashes()) == {"train", "test"}
    fp = H.Features({"premise": H.Value("string"), "hypothesis": H.Value("string"),
                     "label": H.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    mk = lambda p, h, l: H.Dataset.from_dict({"premise": p, "hypothesis": h, "label": l}, features=fp)
    dd = H.DatasetDict(train=mk(["p1", "p2"], ["h1", "h2"], [2, -1]), validation=mk(["p3"], ["h3"], [1]),
                       test=mk(["p4", "p5"], ["h4", "h5"], [0, -1]))
    ds = D.from_hf(dd, "snli")
    assert ds.task == "pair" and ds.labels == ["entailment", "neutral", "contradiction"]
    assert ds.splits == {"train": [Example("p1", 2, "h1")], "test": [Example("p4", 0, "h4")],
                         "dev": [Example("p3", 1, "h3")]}
    # hub data hashes like the same rows written in the on-disk format
    assert ds.file_hashes()["train"].endswith(__import__("hashlib").sha256(
        (json.dumps({"text_a": "p1", "text_b": "h1", "label": 2}) + "\n").encode()).hexdigest())


# ------------------------------------------------------------------------------------------------ corpora
def test_read_corpus_txt_and_jsonl(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("first line\n\n  second  \n", encoding="utf-8")
    assert D.read_corpus(str(p)) == [{"text": "first line", "doc": None, "para": None},
                                     {"text": "second", "doc": None, "para": None}]
    assert len(D.read_corpus(str(p), limit=1)) == 1
    write_jsonl(tmp_path / "unlabeled" / "mini.jsonl", [{"doc": 0, "para": 0, "text": "s1"}, {"text": "s2"}])
    assert D.read_corpus("mini", search_path=[tmp_path])[1] == {"text": "s2", "doc": None, "para": None}
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "s1"}, {"doc": 1}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing key 'text'"):
        D.read_corpus(str(tmp_path / "bad.jsonl"))
    with pytest.raises(DataError, match=r"corpus 'nope' not found.*mini"):
        D.read_corpus("nope", search_path=[tmp_path])
    with pytest.raises(DataError, match="limit"):
        D.read_corpus(str(p), limit=0)
