"""learn.checkpoints."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from workbench.engine.runs import RunError, write_json


# ----------------------------------------------------------------------------------------------- checkpoints
def _pack(obj, key: str, tensors: dict):
    """JSON-able form of nested state; tensors go to ``tensors`` under their path."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return {"__state_dict__": _pack(obj.state_dict(), key, tensors)}
    if isinstance(obj, dict):
        return {"__items__": [[_pack(k, f"{key}.k{i}", tensors), _pack(v, f"{key}.{i}", tensors)]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise RunError(f"cannot checkpoint a {type(obj).__name__} ({key}); learner state must be tensors, modules, "
                   "optimizers or JSON values")


def _unpack(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__state_dict__" in obj:
            return _unpack(obj["__state_dict__"], tensors)
        if "__items__" in obj:
            return {_unpack(k, tensors): _unpack(v, tensors) for k, v in obj["__items__"]}
        if "__list__" in obj:
            out = [_unpack(v, tensors) for v in obj["__list__"]]
            return tuple(out) if obj["tuple"] else out
    return obj


def save_checkpoint(work: Path, step: int, P, opt, rng, state, extra: dict | None = None) -> Path:
    """Checkpoint ``step``: P, the optimizer, both RNGs, the learner's ``state`` and the loop's ``extra`` (e.g. the
    best-on-meta-validation prompt); only the newest checkpoint is kept."""
    tensors: dict = {}
    blob = {"step": step, "P": _pack(P.data, "P", tensors), "optimizer": _pack(opt.state_dict(), "opt", tensors),
            "numpy_rng": rng.bit_generator.state, "torch_rng": _pack(torch.get_rng_state(), "torch_rng", tensors),
            "state": _pack(dict(state or {}), "state", tensors), "extra": _pack(dict(extra or {}), "extra", tensors)}
    final = work / "checkpoints" / f"step-{step:06d}"
    tmp = work / "checkpoints" / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": "pt"})
    write_json(tmp / "state.json", blob)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in (work / "checkpoints").glob("step-*"):  # keep only the newest
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(work: Path) -> Path | None:
    found = sorted((work / "checkpoints").glob("step-*")) if (work / "checkpoints").is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path, P, opt, rng, state, extra: dict | None = None) -> int:
    """Restore a checkpoint into P, ``opt``, ``rng``, ``state`` and ``extra`` (updated in place); returns its step."""
    tensors = load_file(str(path / "state.safetensors"))
    blob = json.loads((path / "state.json").read_text(encoding="utf-8"))
    with torch.no_grad():
        P.copy_(_unpack(blob["P"], tensors))
    opt.load_state_dict(_unpack(blob["optimizer"], tensors))
    rng.bit_generator.state = blob["numpy_rng"]
    torch.set_rng_state(_unpack(blob["torch_rng"], tensors))
    for key, value in _unpack(blob["state"], tensors).items():
        cur = (state or {}).get(key)
        if hasattr(cur, "load_state_dict"):
            cur.load_state_dict(value)
        elif isinstance(cur, torch.Tensor):
            with torch.no_grad():
                cur.copy_(value)
        else:
            state[key] = value
    if extra is not None:
        extra.update(_unpack(blob.get("extra", {"__items__": []}), tensors))
    return int(blob["step"])
