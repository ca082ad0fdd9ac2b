"""Experiment tracking: the events a run writes to ``metrics.jsonl``, mirrored live to TensorBoard (``--tracker``).

Off by default (``none``). ``--tracker tensorboard`` (``pip install tensorboard``) writes event files into
``<run directory>/tensorboard/`` while the run is being built, so they move into place with it: ``tensorboard
--logdir runs`` shows dev curves (per dataset, method and seed), meta-training and meta-validation curves and SVGD
diagnostics, live. ``metrics.jsonl`` stays the record; the tracker only mirrors it.

Like ``logging``, the tracker is configured once per process (:func:`configure`, by the command line) and every run
directory the process writes reports to it through :func:`track` and :func:`close`: the run functions need no extra
argument. A record's tag is its identifying fields and then the metric, ``eval/sst2/random/seed13/lr0.01/dev_acc``; its
step is the record's ``step`` (or ``iteration``), else a count of the records with that tag.
"""
from __future__ import annotations

from pathlib import Path

from workbench.config import ConfigError

TRACKERS = ("none", "tensorboard")
TRACKER_EXTRA = "pip install tensorboard"
ID_FIELDS = ("event", "dataset", "k", "method", "mode", "seed", "fold")  # what names a curve, in tag order
GRID_FIELD = "lr"  # names a curve only in the tuner's dev evaluations (a learning-rate grid's member); else a metric
STEP_FIELDS = ("step", "iteration")
SKIP = {"time", "wall_s", "cpu_s", "n_train", "n_dev", "n_test"}

_state = {"kind": "none", "writers": {}}


def configure(kind: str) -> None:
    """Choose this process's tracker; ``tensorboard`` without the package is refused here, before any run starts."""
    if kind not in TRACKERS:
        raise ConfigError(f"--tracker must be one of {list(TRACKERS)}, got {kind!r}")
    if kind == "tensorboard":
        _summary_writer()
    _state["kind"] = kind


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch's writer needs the tensorboard package
        raise ConfigError(f"--tracker tensorboard needs TensorBoard ({TRACKER_EXTRA}): {e}") from None
    return SummaryWriter


def id_fields(record: dict) -> tuple[str, ...]:
    return ID_FIELDS + ((GRID_FIELD,) if record.get("event") == "eval" else ())


def tag_of(record: dict, metric: str) -> str:
    parts = []
    for f in id_fields(record):
        v = record.get(f)
        if v is None or isinstance(v, (dict, list)):
            continue
        parts.append(f"{f}{v}" if f in ("seed", "k", "lr", "fold") else str(v))
    return "/".join(parts + [metric])


def scalars(record: dict) -> dict[str, float]:
    """The record's numeric metrics (not its identifying fields, step or bookkeeping) by tag."""
    ids = id_fields(record)
    return {tag_of(record, key): float(v) for key, v in record.items()
            if key not in SKIP and key not in ids and key not in STEP_FIELDS and not isinstance(v, bool)
            and isinstance(v, (int, float))}


def track(directory, record: dict) -> None:
    """Mirror one ``metrics.jsonl`` record of the run being written in ``directory`` (no-op with ``none``)."""
    if _state["kind"] == "none":
        return
    key = str(Path(directory))
    entry = _state["writers"].get(key)
    if entry is None:
        entry = _state["writers"][key] = {"writer": _summary_writer()(log_dir=str(Path(key) / "tensorboard")),
                                          "counts": {}}
    step = next((record[f] for f in STEP_FIELDS if isinstance(record.get(f), int)), None)
    for tag, value in scalars(record).items():
        n = entry["counts"][tag] = entry["counts"].get(tag, -1) + 1
        entry["writer"].add_scalar(tag, value, global_step=n if step is None else step,
                                   walltime=record.get("time"))


def close(directory) -> None:
    """Flush and close the writer of ``directory`` (before the run directory is renamed into place)."""
    entry = _state["writers"].pop(str(Path(directory)), None)
    if entry is not None:
        entry["writer"].close()
