"""Where a benchmark's rows run: ``local`` (this process, in plan order; the default, needs no Ray) or ``ray`` (Ray
workers on this machine or a cluster).

``workbench benchmark --suite S --executor ray [--ray-address auto] [--cpus-per-run 1] [--gpus-per-run 0.25]``

With Ray, each row is one task (``--cpus-per-run`` CPUs, as many torch threads, and ``--gpus-per-run`` GPUs, a
fraction for small backbones). A worker process loads the backbone once and keeps it, with the cell it prepared last
and each dataset's unprompted test pass, for the rows it runs next. Finished rows stream back to the driver, which
alone appends them to ``rows.jsonl`` (in completion order; rows are keyed, so ``--resume`` works as with ``local``)
and their dev evaluations to ``metrics.jsonl``, with a progress bar and its ETA. A meta init is trained once, by the
first due row of each (dataset, meta-training); the other rows needing it start when that row is done and reuse the
cached prompt (a shared ``WORKBENCH_CACHE`` and its lock keep two trainings of one init from running twice anyway). A
task whose worker dies, or that raises, is run once more; a row that fails twice goes to ``failed.jsonl`` with its
error, the grid goes on, and the run ends with an error naming the failures (``--resume`` retries them).

On a cluster, the data (``WORKBENCH_DATA``), the meta-init cache (``WORKBENCH_CACHE``) and ``--out`` (the workers
write the tuned prompts below it) must be on a path every machine shares; the driver passes ``WORKBENCH_DATA``,
``WORKBENCH_CACHE`` and the Hugging Face offline switches on to the workers when it connects.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.config import BackboneConfig, ConfigError, from_dict
from workbench.engine.backbones import load_backbone
from workbench.engine.runs import RunError
from workbench.learn.meta_inits import training_of

EXECUTORS = ("local", "ray")
RAY_EXTRA = "pip install 'workbench[ray]'"
SHARED_ENV = ("WORKBENCH_DATA", "WORKBENCH_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
FAILED = "failed.jsonl"  # rows that failed twice, with their errors
RETRIES = 1  # a row is tried at most twice
_JOBS: dict = {}  # in a Ray worker: job token -> the job, whose backbone and prepared cell the next rows reuse


@dataclass
class Executor:
    """Where the rows run and, for Ray, the cluster and each row's resources."""
    kind: str = "local"  # local | ray
    address: str | None = None  # ray: "auto" joins a running cluster, HOST:PORT a given one, None starts one here
    cpus_per_run: float = 1.0  # ray: CPUs (and torch threads) per row
    gpus_per_run: float = 0.0  # ray: GPUs per row, fractional to share one GPU between rows

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise ConfigError(f"--executor must be one of {list(EXECUTORS)}, got {self.kind!r}")
        if isinstance(self.cpus_per_run, bool) or not isinstance(self.cpus_per_run, (int, float)) or \
                self.cpus_per_run <= 0:
            raise ConfigError(f"--cpus-per-run must be a number > 0, got {self.cpus_per_run!r}")
        if isinstance(self.gpus_per_run, bool) or not isinstance(self.gpus_per_run, (int, float)) or \
                self.gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run must be a number >= 0, got {self.gpus_per_run!r}")
        if self.kind == "local" and (self.address or self.gpus_per_run or self.cpus_per_run != 1):
            raise ConfigError("--ray-address, --cpus-per-run and --gpus-per-run need --executor ray")
        if self.address in ("", "none", "local"):
            self.address = None

    def describe(self) -> dict:
        return {"kind": self.kind, **({"address": self.address, "cpus_per_run": self.cpus_per_run,
                                       "gpus_per_run": self.gpus_per_run} if self.kind == "ray" else {})}

    def check(self):
        """Refuse now, before anything is written, a missing Ray or a cluster address nothing listens on."""
        if self.kind == "ray":
            import_ray()
            if self.address not in (None, "auto"):
                check_reachable(self.address)

    def run(self, job, todo: list[tuple], on_row, failed_path: Path, bar) -> tuple[object, list[dict]]:
        """Run the rows ``todo`` of ``job`` (a :class:`WorkerJob`) on Ray; ``on_row(row, metric_records)`` for each
        finished row, in completion order. Returns what the results need of the backbone the workers loaded (None
        if no row finished) and the rows that failed twice (recorded in ``failed_path``; see :func:`failures`)."""
        ray = import_ray()
        with ray_session(ray, self.address):
            return _stream(ray, self, job, todo, on_row, Path(failed_path), bar)


class WorkerJob:
    """A picklable job for Ray workers: ``job(key)`` runs one row in the worker's process and returns the row, its
    metric records and the backbone's device and description. The backbone is loaded on a worker's first row and kept,
    with whatever :meth:`run_key` caches, for the rows that worker runs next (``token`` names the job there)."""

    def __init__(self, backbone: dict, token: str):
        self.backbone_config, self.token = backbone, token
        self._reset()

    def _reset(self):
        self._backbone, self._described = None, None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def run_key(self, key: tuple, backbone) -> tuple[dict, list]:
        """The row ``key`` and its metric records (JSON lines or dicts)."""
        raise NotImplementedError

    def __call__(self, key: tuple) -> dict:
        if self._backbone is None:
            self._backbone = load_backbone(from_dict(BackboneConfig, self.backbone_config))
            self._described = self._backbone.describe()  # hashes the weights: once per worker
        row, records = self.run_key(tuple(key), self._backbone)
        return {"row": row, "metrics": records, "device": str(self._backbone.device), "backbone": self._described}


def job_token(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def failures(failed: list[dict], total: int, failed_path: Path, then: str) -> RunError:
    """The error that ends a grid some of whose rows failed twice (``then``: what the user does next)."""
    return RunError(f"{len(failed)} of {total} rows failed twice, the others are done; errors in {failed_path}; "
                    f"first {failed[0]['key']}: {failed[0]['error'].strip().splitlines()[-1]}; {then}")


def import_ray():
    try:
        import ray  # optional extra: only --executor ray needs it
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


@contextmanager
def ray_session(ray, address: str | None):
    """Connect to the Ray cluster at ``address`` (None: start one on this machine) and disconnect at the end; a
    session already open in this process (a notebook, the tests) is used as it is and left open."""
    if ray.is_initialized():
        yield
        return
    if address not in (None, "auto"):
        check_reachable(address)
    env = {name: os.environ[name] for name in SHARED_ENV if name in os.environ}
    try:
        ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": env} if env else None)
    except ConnectionError as e:
        raise ConfigError(f"cannot reach a Ray cluster at --ray-address {address!r}: {e} (start one with "
                          f"`ray start --head`, or leave --ray-address out to start one on this machine)") from None
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0):
    """A clear error now for a ``HOST:PORT`` (or ``ray://HOST:PORT``) nothing listens on, where Ray would retry."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"cannot reach a Ray cluster at --ray-address {address!r} ({e}); start its head with "
                          f"`ray start --head` and give its address, or leave --ray-address out") from None


def schedule(todo: list[tuple]) -> tuple[list[tuple], dict]:
    """The rows that can start now (each meta init's first due row per dataset, which trains it, ahead of the
    rest) and, per such row, the rows of its dataset that need the same meta-training and start when it is done."""
    gates: dict[tuple, tuple] = {}
    free, after = [], {}
    for key in todo:
        training = training_of(key[2])
        if training is None:
            free.append(key)
        elif gates.setdefault((key[0], training), key) == key:
            after[key] = []
        else:
            after[gates[(key[0], training)]].append(key)
    return list(after) + free, after


def _stream(ray, ex: Executor, job, todo: list[tuple], on_row, failed_path: Path, bar):
    """Submit the rows, collect them as they finish, submit the rows that waited for a meta-training."""
    remote = ray.remote(_run_in_worker).options(num_cpus=ex.cpus_per_run, num_gpus=ex.gpus_per_run,
                                                max_retries=RETRIES, retry_exceptions=True)
    threads = max(1, int(ex.cpus_per_run))
    first, after = schedule(todo)
    pending = {}
    for key in first:
        pending[remote.remote(job, key, threads)] = key
    described, failed = None, []
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ref)
            try:
                res = ray.get(ref)
            except ray.exceptions.RayError as e:  # the task raised, or its worker died, twice
                failed.append(record_failure(failed_path, key, e))
                bar.update(1)
            else:
                on_row(res["row"], res["metrics"])
                described = described or RemoteBackbone(res["device"], res["backbone"])
            bar.set_postfix_str(f"{len(pending)} running or queued" + (f", {len(failed)} failed" if failed else ""))
            for nxt in after.pop(key, []):
                pending[remote.remote(job, nxt, threads)] = nxt
    finally:
        for ref in pending:  # interrupted: stop what still runs
            ray.cancel(ref, force=True)
    return described, failed


def _run_in_worker(job, key: tuple, threads: int) -> dict:
    """One row in a Ray worker; the worker keeps the job (backbone, prepared cell) for its next rows."""
    torch.set_num_threads(threads)
    return _JOBS.setdefault(job.token, job)(key)


def record_failure(path: Path, key: tuple, error: Exception) -> dict:
    """Append a row that failed twice to ``failed.jsonl`` (never to rows.jsonl: the statistics stay clean)."""
    rec = {"dataset": key[0], "k": key[1], "method": key[2], "seed": key[3], "failed": True, "attempts": RETRIES + 1,
           "error": str(error)[-4000:], "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    return {"key": key, "error": rec["error"] or type(error).__name__}


class RemoteBackbone:
    """What the results need of the backbone the workers loaded: its device and description."""

    def __init__(self, device: str, described: dict):
        self.device, self._described = device, described

    def describe(self) -> dict:
        return self._described
