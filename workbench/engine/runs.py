"""Run directories and prompt files.

A run writes ``config.json``, ``metrics.jsonl``, ``results.json`` and each tuned prompt as a PEFT prompt-tuning
adapter (``adapter_config.json`` + ``adapter_model.safetensors`` holding ``prompt_embeddings``), plus a sidecar
``workbench_prompt.json`` with what PEFT has no field for (insert position, provenance). Everything is written into a
hidden temporary directory next to the target and renamed into place at the end, so a failed run leaves nothing
half-written behind; an existing non-empty target is refused unless ``overwrite``; a target another process is
writing is refused (:mod:`workbench.engine.lock`).

Reading: :func:`read_run` is the one reader of a run directory (:class:`Run`: ``config``, ``results``, ``metrics``,
each parsed on first use); :func:`read_json` and :func:`read_jsonl` read one of its files. A missing or malformed
file is a :class:`RunError` naming the file and, for bad JSON, the line.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from safetensors.torch import save_file

from workbench._version import __version__
from workbench.engine import tracking
from workbench.engine.lock import RunLock
from workbench.config import WorkbenchError

CONFIG, METRICS, RESULTS = "config.json", "metrics.jsonl", "results.json"
PEFT_TASK_TYPES = {"encoder": "FEATURE_EXTRACTION", "mlm": "FEATURE_EXTRACTION", "seq2seq": "SEQ_2_SEQ_LM",
                   "causal": "CAUSAL_LM"}


class RunError(WorkbenchError, ValueError):
    """The output directory cannot be used, or a saved file is not what it should be."""


def atomic_write(path: str | Path, text: str):
    """Write a text file through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_out_dir(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise RunError(f"output directory {out} exists and is not empty; choose another --out or pass --overwrite")
    return out


class RunDir:
    """A run directory built in a temporary sibling and moved into place by :meth:`commit`.

    Use as a context manager: on an exception the temporary directory is removed and the target is untouched.
    """

    def __init__(self, out: str | Path, overwrite: bool = False, wait: bool = False):
        self._made = _missing_parents(Path(out))  # folders this run creates: removed again if it fails
        self.lock = RunLock(out, wait=wait)  # one process per run directory, from the check to the rename
        self.lock.acquire()
        try:
            self.final = check_out_dir(out, overwrite)
        except BaseException:
            self.lock.release()
            _remove_if_empty(self._made)
            raise
        self.overwrite = overwrite
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}.partial-"))
        self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")
        self.committed = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        elif not self.committed:
            self.commit()
        return False

    def log(self, record: dict):
        record = {"time": round(time.time(), 3), **record}
        self._metrics.write(json.dumps(record, default=_json_default) + "\n")
        self._metrics.flush()
        tracking.track(self.path, record)

    def write_json(self, name: str, obj):
        write_json(self.path / name, obj)

    def commit(self) -> Path:
        self._metrics.close()
        tracking.close(self.path)
        try:
            if self.final.exists():
                check_out_dir(self.final, self.overwrite)
                shutil.rmtree(self.final) if self.final.is_dir() else self.final.unlink()
            os.replace(self.path, self.final)
            self.committed = True
        finally:
            self.lock.release()
        return self.final

    def abort(self):
        self._metrics.close()
        tracking.close(self.path)
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock.release()
        _remove_if_empty(self._made)


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, deepest first."""
    missing, p = [], path.absolute().parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run created (deepest first), each only if nothing else was put in it."""
    for d in folders:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


# ----------------------------------------------------------------------------------------------- reading
def _text(file: Path, hint: str) -> str:
    if not file.is_file():
        raise RunError(f"{file}: no such file" + (f" ({hint})" if hint else ""))
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunError(f"{file}: not valid UTF-8") from None


def _object(text: str, file: Path, line: int = 0) -> dict:
    """``text`` (starting after line ``line`` of ``file``) as one JSON object."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"{file}:{line + e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{file}:{line + 1}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_json(file, hint: str = "") -> dict:
    """A JSON object file; ``hint`` ends the message when the file is missing."""
    file = Path(file)
    return _object(_text(file, hint), file)


def read_jsonl(file, hint: str = "") -> list[dict]:
    """The JSON objects of a JSON-lines file, one per non-blank line."""
    file = Path(file)
    return [_object(ln, file, i) for i, ln in enumerate(_text(file, hint).split("\n")) if ln.strip()]


@dataclass
class Run:
    """A run directory; ``config``, ``results`` and ``metrics`` (one dict per line) are parsed on first use."""

    path: Path
    hint: str = ""  # what the directory should be, for the messages about missing files

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def json(self, name: str) -> dict:
        return read_json(self.path / name, self.hint)

    def jsonl(self, name: str) -> list[dict]:
        return read_jsonl(self.path / name, self.hint)

    @cached_property
    def config(self) -> dict:
        return self.json(CONFIG)

    @cached_property
    def results(self) -> dict:
        return self.json(RESULTS)

    @cached_property
    def metrics(self) -> list[dict]:
        return self.jsonl(METRICS)


def read_run(path, hint: str = "") -> Run:
    """The run directory ``path`` (it must exist); ``hint`` (e.g. "expected a fewshot run's --out folder") ends the
    message about a missing directory or file."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run directory {path} does not exist" + (f" ({hint})" if hint else ""))
    return Run(path, hint)


# ----------------------------------------------------------------------------------------------- prompts
def save_prompt(directory: str | Path, prompt: torch.Tensor, backbone, extra: dict | None = None) -> Path:
    """Save ``prompt`` (L, d) as a PEFT prompt-tuning adapter that ``PeftModel.from_pretrained`` can load.

    ``extra["position"]`` (the ``prompt.position`` it was trained with) is written into the sidecar and into the
    safetensors metadata (``workbench_position``): PEFT has no field for it and always prepends, so a prompt trained
    with ``append`` (or ``auto`` after a [CLS]/<s>/BOS) reads differently under PEFT; :func:`load_prompt` returns it.
    """

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prompt = prompt.detach().float().cpu().contiguous()
    L, d = prompt.shape
    cfg = backbone.config
    task_type = PEFT_TASK_TYPES[backbone.family]
    adapter = {
        "peft_type": "PROMPT_TUNING", "task_type": task_type, "num_virtual_tokens": L, "token_dim": d,
        "num_transformer_submodules": 1,  # encoder-side prompt only (also for seq2seq)
        "num_attention_heads": getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None),
        "num_layers": getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None),
        "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_name_or_path": backbone.path,
        "tokenizer_kwargs": None, "base_model_name_or_path": backbone.path, "revision": None, "inference_mode": True,
        "auto_mapping": None, "modules_to_save": None,
    }
    tmp = directory / ".adapter_model.safetensors.tmp"
    position = (extra or {}).get("position")
    save_file({"prompt_embeddings": prompt}, str(tmp),
              metadata={"format": "pt", **({"workbench_position": position} if position else {})})
    os.replace(tmp, directory / "adapter_model.safetensors")
    write_json(directory / "adapter_config.json", adapter)
    write_json(directory / "workbench_prompt.json", {"shape": [L, d], "backbone": backbone.name,
                                                     "backbone_path": backbone.path, "family": backbone.family,
                                                     **(extra or {})})
    return directory


def load_prompt(path: str | Path) -> tuple[torch.Tensor, dict]:
    """Load a prompt from a PEFT adapter directory or a ``.safetensors`` file holding ``prompt_embeddings``; the
    metadata's ``position`` is the ``prompt.position`` it was saved with (None when not recorded)."""

    path = Path(path)
    file = path / "adapter_model.safetensors" if path.is_dir() else path
    if not file.exists():
        raise RunError(f"no saved prompt at {path} (expected a PEFT adapter directory or a .safetensors file)")
    if file.suffix != ".safetensors":
        raise RunError(f"{file}: prompts load from safetensors only")
    with safe_open(str(file), framework="pt") as f:
        keys = list(f.keys())
        if "prompt_embeddings" not in keys:
            raise RunError(f"{file} holds {keys}, not 'prompt_embeddings'")
        prompt = f.get_tensor("prompt_embeddings").float()
        position = (f.metadata() or {}).get("workbench_position")
    meta = {}
    d = file.parent
    if (d / "adapter_config.json").exists():
        meta["adapter_config"] = read_json(d / "adapter_config.json")
        n = meta["adapter_config"].get("num_virtual_tokens")
        if n and prompt.shape[0] == 2 * n:  # a PEFT seq2seq adapter: encoder rows come first
            prompt = prompt[:n]
    if (d / "workbench_prompt.json").exists():
        meta["workbench"] = read_json(d / "workbench_prompt.json")
        position = position or meta["workbench"].get("position")
    meta["position"] = position
    return prompt, meta


def environment(device: torch.device | None = None) -> dict:
    """Versions, machine and code revision to record with every result."""

    versions = {}
    for pkg in ("torch", "transformers", "peft", "numpy", "scikit-learn", "safetensors", "tokenizers", "datasets"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    info = {"workbench": __version__, "python": sys.version.split()[0], "packages": versions,
            "platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device) if device else None,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "git_commit": _git_commit()}
    return info


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs
        return None


SNAP_TENSORS, SNAP_JSON = "snapshots.safetensors", "snapshots.json"


# ----------------------------------------------------------------------------------------------- snapshots
def save_snapshots(directory, snapshots: list[dict], best_step: int | None = None) -> Path:
    """Write ``snapshots`` ({step, prompt (L, d), dev_acc, dev_loss} dicts, as in ``TuneResult.snapshots``)."""

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"step_{s['step']:07d}": torch.as_tensor(s["prompt"]).detach().float().cpu().contiguous()
               for s in snapshots}
    save_file(tensors, str(d / f".{SNAP_TENSORS}.tmp"), metadata={"format": "pt"})
    os.replace(d / f".{SNAP_TENSORS}.tmp", d / SNAP_TENSORS)
    write_json(d / SNAP_JSON, {"steps": [int(s["step"]) for s in snapshots],
                               "dev_acc": [float(s["dev_acc"]) for s in snapshots],
                               "dev_loss": [float(s["dev_loss"]) for s in snapshots], "best_step": best_step,
                               "tensors": SNAP_TENSORS, "key_format": "step_<7-digit step>"})
    return d


def load_snapshots(directory) -> dict | None:
    """{steps, prompts (S, L, d) float32, dev_acc, dev_loss, best_step} or None when the folder has no snapshots."""

    d = Path(directory)
    if not (d / SNAP_JSON).is_file():
        return None
    meta = read_json(d / SNAP_JSON)
    try:
        arrays = load_file(str(d / SNAP_TENSORS))
    except (OSError, ValueError) as e:
        raise RunError(f"{d}: unreadable snapshots ({type(e).__name__}: {e})") from None
    keys = [f"step_{s:07d}" for s in meta["steps"]]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise RunError(f"{d / SNAP_TENSORS}: tensors {missing[:3]} named in {SNAP_JSON} are missing")
    return {**meta, "prompts": np.stack([arrays[k].astype(np.float32) for k in keys])}
