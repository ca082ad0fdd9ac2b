"""Datasets for few-shot text classification: loading, validation, k-shot splits and decontamination.

On-disk format (see ``shared/data/README.md``): a folder ``<name>/`` with ``train.jsonl`` and ``test.jsonl``
(or ``.csv``), optional ``dev.jsonl`` and optional ``meta.json`` (``{"task": "single"|"pair", "labels": [...]}``).
Rows are ``{"text", "label"}`` (single sentence) or ``{"text_a", "text_b", "label"}`` (pair); ``label`` is an
index into ``meta["labels"]``. Every bad input raises :class:`DataError` naming the file and 1-based line (or the
parameter) at fault. Only the standard library is imported here; ``datasets`` is imported lazily for hub data.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import pathlib
import random
import warnings
from collections import Counter
from dataclasses import dataclass, field

from workbench.config import WorkbenchError

SPLITS = ("train", "dev", "test")
TASKS = ("single", "pair")
HOLDOUT_FRACTION = 0.2
_SINGLE_COLS = ("text", "sentence", "content", "review")
_PAIR_COLS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question", "sentence"),
              ("question1", "question2"), ("text_a", "text_b"))


class DataError(WorkbenchError, ValueError):
    """Bad input data or arguments; the message names the file and 1-based line, or the parameter, at fault."""


@dataclass(frozen=True)
class Example:
    """One labelled example; ``text_b`` is set only for sentence-pair tasks."""
    text_a: str
    label: int  # index into Dataset.labels (-1 only for unlabeled corpora)
    text_b: str | None = None

    @property
    def text(self) -> str:
        return self.text_a


@dataclass
class Dataset:
    """A loaded dataset: label names, splits ("train", "test", optionally "dev") and provenance."""
    name: str
    task: str  # "single" | "pair"
    labels: list[str]
    splits: dict[str, list[Example]]
    source: str  # resolved folder/file path, or "hf:<name>"
    files: dict[str, str] = field(default_factory=dict)  # split -> file it was read from (empty for hub)
    meta: dict = field(default_factory=dict)

    def file_hashes(self) -> dict[str, str]:
        """split -> ``"sha256:<hex>"`` of the file bytes; for hub data, of the canonical JSONL serialisation
        (``json.dumps(row, ensure_ascii=False) + "\\n"`` per example, the same bytes as the on-disk format)."""
        out = {}
        for split, exs in self.splits.items():
            h = hashlib.sha256()
            if split in self.files:
                with open(self.files[split], "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            else:
                for e in exs:
                    row = {"text": e.text_a} if e.text_b is None else {"text_a": e.text_a, "text_b": e.text_b}
                    h.update((json.dumps({**row, "label": e.label}, ensure_ascii=False) + "\n").encode("utf-8"))
            out[split] = "sha256:" + h.hexdigest()
        return out

    def describe(self) -> dict:
        """Summary: name, task, labels, source, split sizes and per-split class counts (by label name)."""
        counts = {s: Counter(e.label for e in x) for s, x in self.splits.items()}
        counts = {s: {name: c.get(i, 0) for i, name in enumerate(self.labels)} for s, c in counts.items()}
        return {"name": self.name, "task": self.task, "labels": list(self.labels), "source": self.source,
                "sizes": {s: len(x) for s, x in self.splits.items()}, "class_counts": counts}


# ----------------------------------------------------------------------------------------------- search path
def data_search_path() -> list[pathlib.Path]:
    """Folders searched for datasets, in order: each entry of ``$WORKBENCH_DATA`` (``os.pathsep``-separated),
    ``./data``, ``../shared/data`` (both relative to the cwd) and ``<repo root>/../shared/data``.
    Resolved, de-duplicated, and only those that exist."""
    cands = [pathlib.Path(p).expanduser() for p in os.environ.get("WORKBENCH_DATA", "").split(os.pathsep) if p]
    cwd, repo = pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parent.parent
    cands += [cwd / "data", cwd / ".." / "shared" / "data", repo / ".." / "shared" / "data"]
    resolved = [c.resolve() for c in cands]
    return [r for i, r in enumerate(resolved) if r.is_dir() and r not in resolved[:i]]


def _dirs(search_path) -> list[pathlib.Path]:
    return data_search_path() if search_path is None else [pathlib.Path(p).expanduser() for p in search_path]


def _split_file(folder: pathlib.Path, split: str) -> pathlib.Path | None:
    for ext in (".jsonl", ".csv"):  # .jsonl wins when both exist
        if (folder / f"{split}{ext}").is_file():
            return folder / f"{split}{ext}"
    return None


def list_datasets(search_path=None) -> list[str]:
    """Sorted names of dataset folders (those with a train.jsonl/train.csv) on the search path."""
    return sorted({p.name for d in _dirs(search_path) if d.is_dir() for p in d.iterdir()
                   if p.is_dir() and _split_file(p, "train")})


# ----------------------------------------------------------------------------------------------- reading files
def _rows(path: pathlib.Path):
    """Yield (line number, dict) from a .jsonl or .csv file; JSON/structure errors raise DataError."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                    if not line.strip():
                        continue
                    row = json.loads(line)
                except UnicodeDecodeError:
                    raise DataError(f"{path}:{n}: not valid UTF-8") from None
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                yield n, row
    elif suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            try:
                cols = reader.fieldnames or []
                if "label" not in cols or not ({"text", "text_a"} & set(cols)):
                    raise DataError(f"{path}:1: CSV header needs columns text|text_a[,text_b],label; got {cols}")
                for row in reader:
                    yield reader.line_num, {k: v for k, v in row.items() if k is not None}
            except (UnicodeDecodeError, csv.Error) as e:
                raise DataError(f"{path}:{reader.line_num + 1}: unreadable CSV ({e})") from None
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (expected .jsonl or .csv)")


def _read_raw(path, task: str | None, origin: str = "as given"):
    """Parse and validate texts; return ([(line, text_a, text_b, raw_label)], task). Labels are checked later.
    ``origin`` says where a given ``task`` came from (for error messages)."""
    path = pathlib.Path(path)
    if task is not None and task not in TASKS:
        raise DataError(f"task must be one of {TASKS}, got {task!r}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    is_csv, out = path.suffix.lower() == ".csv", []
    for n, row in _rows(path):
        where = f"{path}:{n}"
        tb = row.get("text_b")
        is_pair = ("text_b" in row) if is_csv else (tb is not None)  # a CSV with a text_b column is all pairs
        row_task = "pair" if is_pair else "single"
        if task is None:
            task, origin = row_task, f"inferred from line {n}"
        elif row_task != task:
            kind = "sentence-pair row (has text_b)" if is_pair else "single-sentence row (no text_b)"
            raise DataError(f"{where}: {kind} in a {task!r} task ({origin})")
        key_a = "text_a" if (task == "pair" or ("text" not in row and "text_a" in row)) else "text"
        missing = [k for k in (key_a, "label") if k not in row]
        if missing:
            raise DataError(f"{where}: missing key(s) {missing}; row has {sorted(row)}")
        for k in (key_a, "text_b") if is_pair else (key_a,):
            if not isinstance(row[k], str):
                raise DataError(f"{where}: {k!r} must be a string, got {type(row[k]).__name__}")
            if not row[k].strip():
                raise DataError(f"{where}: empty or whitespace-only {k!r}")
        lab = row["label"]
        if lab is None or (isinstance(lab, str) and not lab.strip()):
            raise DataError(f"{where}: missing label")
        if is_csv and isinstance(lab, str) and lab.strip().lstrip("-").isdigit():
            lab = (lab.strip(), int(lab))  # (as written, as int): a matching label name wins over the index
        out.append((n, row[key_a], tb if is_pair else None, lab))
    if not out:
        raise DataError(f"{path}: no examples")
    return out, task


def _infer_labels(raws: list[tuple[pathlib.Path, list]]) -> list[str]:
    """Label names from raw values: all ints -> ["0", ..., str(max)]; all strings -> sorted unique."""
    first, values = None, set()  # first = (kind, path, line) of the first label seen
    for path, rows in raws:
        for n, _, _, lab in rows:
            v = lab[1] if isinstance(lab, tuple) else lab
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise DataError(f"{path}:{n}: label must be an int or a label name, got {v!r}")
            kind = "an integer" if isinstance(v, int) else "a label name"
            if first is None:
                first = (kind, path, n)
            elif kind != first[0]:
                raise DataError(f"{path}:{n}: label {v!r} is {kind} but {first[1]}:{first[2]} has {first[0]}; "
                                "labels must be all integers or all label names")
            if isinstance(v, int) and v < 0:
                raise DataError(f"{path}:{n}: label {v} is negative")
            values.add(v)
    return [str(i) for i in range(max(values) + 1)] if first[0] == "an integer" else sorted(values)


def _resolve(path, rows, labels: list[str]) -> list[Example]:
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for n, a, b, lab in rows:
        if isinstance(lab, (tuple, str)):  # label name, or CSV digit string (as written, as int)
            i = index.get(lab[0], lab[1]) if isinstance(lab, tuple) else index.get(lab)
        else:
            i = lab if isinstance(lab, int) and not isinstance(lab, bool) else None
        if i is None or not 0 <= i < len(labels):
            raise DataError(f"{path}:{n}: label {lab[0] if isinstance(lab, tuple) else lab!r} is not a valid label; "
                            f"allowed: an int in 0..{len(labels) - 1} or one of {labels}")
        out.append(Example(a, i, b))
    return out


def read_examples(path, task: str | None = None, labels: list[str] | None = None
                  ) -> tuple[list[Example], str, list[str]]:
    """Read a .jsonl or .csv file of examples; return ``(examples, task, labels)``.

    ``task`` None: inferred from the first row (``text_b`` present -> "pair"). ``labels`` None: inferred
    (int labels -> ``["0", ..., str(max)]``; label-name strings -> sorted unique). CSV columns are
    ``text|text_a[,text_b],label`` and labels may be ints or label names (a matching name wins)."""
    rows, task = _read_raw(path, task)
    if labels is None:
        labels = _infer_labels([(pathlib.Path(path), rows)])
    return _resolve(path, rows, list(labels)), task, list(labels)


def _read_meta(folder: pathlib.Path) -> dict:
    p = folder / "meta.json"
    if not p.is_file():
        return {}
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: malformed meta.json ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{p}: meta.json must be a JSON object")
    labs = meta.get("labels")
    if not (isinstance(labs, list) and labs and all(isinstance(x, str) for x in labs) and len(set(labs)) == len(labs)):
        raise DataError(f"{p}: meta.json needs \"labels\": a non-empty list of distinct label-name strings")
    if meta.get("task") is not None and meta["task"] not in TASKS:
        raise DataError(f"{p}: meta.json \"task\" must be one of {TASKS}, got {meta['task']!r}")
    return meta


def _load_folder(folder: pathlib.Path) -> Dataset:
    folder = folder.resolve()
    files = {s: f for s in SPLITS if (f := _split_file(folder, s))}
    for s in ("train", "test"):
        if s not in files:
            raise DataError(f"{folder}: no {s}.jsonl or {s}.csv (a dataset folder needs train and test files)")
    meta = _read_meta(folder)
    task, origin = meta.get("task"), f"from {folder / 'meta.json'}"
    raws = {}
    for s, f in files.items():
        raws[s], task = _read_raw(f, task, origin)
        origin = origin if meta.get("task") else f"inferred from {files['train']}"
    labels = list(meta["labels"]) if meta else _infer_labels([(files[s], r) for s, r in raws.items()])
    splits = {s: _resolve(files[s], r, labels) for s, r in raws.items()}
    for s in splits:
        if isinstance(meta.get(f"n_{s}"), int) and meta[f"n_{s}"] != len(splits[s]):
            warnings.warn(f"{folder / 'meta.json'}: n_{s}={meta[f'n_{s}']} but {files[s]} has {len(splits[s])} rows")
    meta = dict(meta) if meta else {"name": folder.name, "task": task, "labels": labels, "inferred": True}
    return Dataset(folder.name, task, labels, splits, str(folder), {s: str(f) for s, f in files.items()}, meta)


def _holdout(examples: list[Example], n_labels: int) -> tuple[list[Example], list[Example]]:
    """Stratified 20% test holdout: per class (label order) shuffle its indices with one random.Random(0)
    and take round(0.2 * n) (at least 1 when n >= 2); both parts keep file order."""
    rng, test = random.Random(0), set()
    for c in range(n_labels):
        idx = [i for i, e in enumerate(examples) if e.label == c]
        rng.shuffle(idx)
        n = max(1, round(HOLDOUT_FRACTION * len(idx))) if len(idx) >= 2 else 0
        test.update(idx[:n])
    return ([e for i, e in enumerate(examples) if i not in test], [e for i, e in enumerate(examples) if i in test])


def _load_file(path: pathlib.Path) -> Dataset:
    path = path.resolve()
    exs, task, labels = read_examples(path)
    train, test = _holdout(exs, len(labels))
    meta = {"name": path.stem, "task": task, "labels": labels, "test_holdout": True, "holdout_fraction":
            HOLDOUT_FRACTION, "holdout_seed": 0, "n_train": len(train), "n_test": len(test), "inferred": True}
    return Dataset(path.stem, task, labels, {"train": train, "test": test}, str(path),
                   {"train": str(path), "test": str(path)}, meta)


# ----------------------------------------------------------------------------------------------- hub
def from_hf(dsdict, name: str) -> Dataset:
    """Convert a ``datasets.DatasetDict`` into a :class:`Dataset` (columns detected, label -1 rows dropped,
    test = "test" if it has labels >= 0 else "validation"; "validation" becomes dev when "test" is used)."""
    if "train" not in dsdict:
        raise DataError(f"hf:{name}: no 'train' split (splits: {list(dsdict)})")
    cols = list(dsdict["train"].column_names)
    pair = next((p for p in _PAIR_COLS if p[0] in cols and p[1] in cols), None)
    single = None if pair else next((c for c in _SINGLE_COLS if c in cols), None)
    if not (pair or single) or "label" not in cols:
        raise DataError(f"hf:{name}: cannot detect text/label columns in {cols} (need 'label' and one of "
                        f"{list(_SINGLE_COLS)} or a pair {[list(p) for p in _PAIR_COLS]})")
    has_labels = lambda s: s in dsdict and any(v is not None and v != -1 for v in dsdict[s]["label"])
    test = "test" if has_labels("test") else "validation" if has_labels("validation") else None
    if test is None:
        raise DataError(f"hf:{name}: neither 'test' nor 'validation' has labels (splits: {list(dsdict)})")
    chosen = {"train": "train", "test": test}
    if test == "test" and has_labels("validation"):
        chosen["dev"] = "validation"
    feat = dsdict["train"].features.get("label")
    if getattr(feat, "names", None):
        labels, index = list(feat.names), None
    else:
        vals = {v for s in chosen.values() for v in dsdict[s]["label"] if v is not None and v != -1}
        ordered = sorted(vals)
        labels, index = [str(v) for v in ordered], {v: i for i, v in enumerate(ordered)}
    splits, dropped = {}, {}
    for ours, theirs in chosen.items():
        d = dsdict[theirs]
        ta = d[pair[0] if pair else single]
        tb = d[pair[1]] if pair else [None] * len(ta)
        exs = []
        for a, b, lab in zip(ta, tb, d["label"]):
            if lab is None or lab == -1 or not isinstance(a, str) or not a.strip() or (
                    pair and (not isinstance(b, str) or not b.strip())):
                continue
            exs.append(Example(a, index[lab] if index is not None else int(lab), b if pair else None))
        splits[ours], dropped[ours] = exs, len(ta) - len(exs)
    task = "pair" if pair else "single"
    meta = {"name": name, "task": task, "labels": labels, "source": f"hf:{name}", "hf_splits": chosen,
            "columns": list(pair) if pair else [single], "dropped": dropped,
            **{f"n_{s}": len(x) for s, x in splits.items()}}
    return Dataset(name, task, labels, splits, f"hf:{name}", {}, meta)


def _hub_load(datasets, *args):
    """``datasets.load_dataset(*args)`` without its download and split-generation bars (in a notebook they would
    stay behind as widgets); the caller's setting is restored."""
    was_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(*args)
    finally:
        if was_on:
            datasets.enable_progress_bars()


def load_dataset(name_or_path: str, *, search_path=None, hub: bool = True) -> Dataset:
    """Load a dataset: (1) an existing local folder, or single .jsonl/.csv file (train; test = stratified 20%
    holdout, ``meta["test_holdout"] = True``); (2) a folder ``name`` on the search path; (3) the Hugging Face hub
    (``"glue/sst2"`` -> ``load_dataset("glue", "sst2")``) when ``hub`` and ``datasets`` imports."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise DataError(f"name_or_path must be a non-empty string, got {name_or_path!r}")
    name = str(name_or_path)
    p = pathlib.Path(name).expanduser()
    if p.is_dir():
        return _load_folder(p)
    if p.is_file():
        return _load_file(p)
    dirs = _dirs(search_path)
    for d in dirs:
        if (d / name).is_dir() and _split_file(d / name, "train"):
            return _load_folder(d / name)
    hub_note = "not tried (hub=False)"
    if hub:
        try:
            import datasets  # lazy: the optional `hub` extra
        except ImportError:
            hub_note = "not tried (the `datasets` package is not installed)"
        else:
            parts = name.split("/")
            try:
                return from_hf(_hub_load(datasets, *(parts if len(parts) == 2 else [name])), name)
            except DataError:
                raise
            except Exception as e:  # offline, unknown name, ...
                hub_note = f"tried and failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
    looked = "".join(f"\n  {d / name}" for d in dirs) or " (no data folders exist on the search path)"
    raise DataError(f"dataset {name!r} not found: not an existing path; looked for a dataset folder at:{looked}\n"
                    f"Hugging Face hub: {hub_note}.\nAvailable datasets: {', '.join(list_datasets(dirs)) or 'none'}"
                    " (set WORKBENCH_DATA to add data folders).")


# ----------------------------------------------------------------------------------------------- corpora
def find_corpus(name: str, search_path=None) -> pathlib.Path | None:
    """The file of corpus ``name``: an existing file, else the first of ``<dir>/<name>[.jsonl|.txt]`` and
    ``<dir>/unlabeled/<name>.jsonl|.txt`` over the search path; None when there is none."""
    p = pathlib.Path(name).expanduser()
    if p.is_file():
        return p
    for d in _dirs(search_path):
        for c in (d / name, d / f"{name}.jsonl", d / f"{name}.txt",
                  d / "unlabeled" / f"{name}.jsonl", d / "unlabeled" / f"{name}.txt"):
            if c.is_file():
                return c
    return None


def _corpus_file(name: str, search_path) -> pathlib.Path:
    found = find_corpus(name, search_path)
    if found is not None:
        return found
    dirs = _dirs(search_path)
    avail = sorted({f.stem for d in dirs for f in (d / "unlabeled").glob("*") if f.suffix in (".jsonl", ".txt")})
    raise DataError(f"corpus {name!r} not found: not an existing file; looked in "
                    f"{[str(d) for d in dirs] or '(no data folders on the search path)'} "
                    f"(as <dir>/{name}[.jsonl|.txt] and <dir>/unlabeled/{name}.jsonl|.txt); "
                    f"available: {', '.join(avail) or 'none'}")


def read_corpus(name_or_path: str, *, search_path=None, limit: int | None = None) -> list[dict]:
    """Read an unlabeled corpus: a .jsonl of ``{"text", "doc"?, "para"?}`` or a .txt (one text per non-empty
    line, doc/para None). A bare name ("brown", "unlabeled/brown") is looked up on the search path.
    Returns dicts with keys text, doc, para; at most ``limit`` of them."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive int or None, got {limit!r}")
    path = _corpus_file(str(name_or_path), search_path)
    out: list[dict] = []
    if path.suffix.lower() == ".txt":
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip() and (limit is None or len(out) < limit):
                        out.append({"text": line.strip(), "doc": None, "para": None})
        except UnicodeDecodeError:
            raise DataError(f"{path}: not valid UTF-8") from None
        return out
    if path.suffix.lower() != ".jsonl":
        raise DataError(f"{path}: unsupported corpus file type {path.suffix!r} (expected .jsonl or .txt)")
    for n, row in _rows(path):
        if limit is not None and len(out) >= limit:
            break
        t = row.get("text")
        if not isinstance(t, str) or not t.strip():
            problem = "missing key 'text'" if "text" not in row else "empty or non-string 'text'"
            raise DataError(f"{path}:{n}: {problem}")
        out.append({"text": t, "doc": row.get("doc"), "para": row.get("para")})
    return out
