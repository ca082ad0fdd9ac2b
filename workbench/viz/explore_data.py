"""What the embedding-space explorer reads: learned prompts (and their snapshots) from run directories, the frozen
backbone's vocabulary, and nearest tokens by cosine. Pure readers; the figures are in :mod:`workbench.explore`.

A prompt run is one ``adapters/<dataset>/<method>/seed<s>/`` folder of a run directory (written by the harness or by
any method that saves prompts with :func:`workbench.runs.save_prompt`); its test accuracy comes from the run's
``results.json`` row. Snapshots (``tune.snapshot_every`` > 0) sit next to the adapter: ``snapshots.safetensors``
(one float32 tensor ``step_<step>`` of shape (L, d) per snapshot) and ``snapshots.json`` (steps, dev accuracy and
loss per step, the best step).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.config import BackboneConfig, WorkbenchError
from workbench.engine.backbones import BackboneError, load_backbone
from workbench.engine.runs import RESULTS, load_prompt, load_snapshots, read_run
from workbench.learn.inits import frequent_tokens

_BACKBONES: dict[str, object] = {}


class ExploreError(WorkbenchError, ValueError):
    """A run directory cannot be explored as asked; the message names the directory, file or parameter."""


# ----------------------------------------------------------------------------------------------- prompt runs
@dataclass
class PromptRun:
    """One learned prompt: where it came from, the prompt (L, d), its accuracies and (maybe) its snapshots."""

    run: Path
    dataset: str
    method: str  # the init (or the method that produced the prompt)
    seed: int
    prompt: np.ndarray
    backbone: str  # as the run named it
    backbone_path: str  # the resolved path: the identity of the embedding space
    family: str
    dev_acc: float | None
    test_acc: float | None
    best_step: int | None
    adapter: Path
    snapshots: dict | None
    k: int | None = None  # examples per class of the run's split (results.json), when known
    n_test: int | None = None  # the full test set's size (results.json), when known

    @property
    def label(self) -> str:
        return f"{self.method} s{self.seed}"


def load_prompt_runs(run_dirs, dataset: str | None = None, methods=None, seeds=None) -> list[PromptRun]:
    """Every learned prompt in ``run_dirs`` (one path or a list), optionally filtered by dataset, methods, seeds.

    A run directory that holds no prompt at all (a baseline-only run, a cluster run, a wrong path) is an error that
    names it; so is a filter that leaves nothing.
    """

    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    if not dirs:
        raise ExploreError("run_dirs is empty: name at least one run directory")
    out = []
    for run in map(Path, dirs):
        if not run.is_dir():
            raise ExploreError(f"run directory {run} does not exist")
        files = sorted((run / "adapters").glob("*/*/seed*/adapter_model.safetensors"))
        if not files:
            raise ExploreError(f"run directory {run} holds no learned prompts (no adapters/<dataset>/<method>/"
                               f"seed<s>/adapter_model.safetensors); baseline-only runs have none")
        rows = result_rows(run)
        for f in files:
            prompt, meta = load_prompt(f.parent)
            wb = meta.get("workbench", {})
            ds, method, seed = f.parent.parent.parent.name, f.parent.parent.name, int(f.parent.name[4:])
            out.append(PromptRun(
                run=run, dataset=wb.get("dataset", ds), method=wb.get("method", method), seed=int(wb.get("seed", seed)),
                prompt=prompt.numpy().astype(np.float32), backbone=wb.get("backbone", "?"),
                backbone_path=str(wb.get("backbone_path") or meta.get("adapter_config", {}).get(
                    "base_model_name_or_path", "?")),
                family=wb.get("family", "?"), dev_acc=wb.get("dev_acc"),
                test_acc=rows.get((ds, method, seed), {}).get("test_acc"), best_step=wb.get("best_step"),
                adapter=f.parent, snapshots=load_snapshots(f.parent), k=rows.get((ds, method, seed), {}).get("k"),
                n_test=rows.get((ds, method, seed), {}).get("n_test")))
    keep = [r for r in out if (dataset is None or r.dataset == dataset) and (not methods or r.method in methods)
            and (not seeds or r.seed in seeds)]
    if not keep:
        have = sorted({(r.dataset, r.method, r.seed) for r in out})
        raise ExploreError(f"no prompt matches dataset={dataset!r} methods={methods} seeds={seeds}; the runs hold "
                           f"(dataset, method, seed) = {have}")
    return keep


def result_rows(run: Path) -> dict:
    """(dataset, method, seed) -> the run's ``results.json`` row (test accuracy, k, test size); {} without results."""
    r = read_run(run)
    rows = r.results.get("rows", []) if r.has(RESULTS) else []
    return {(r["dataset"], r["method"], int(r["seed"])): r for r in rows if "seed" in r}


def _test_accuracies(run: Path) -> dict:
    return {key: row.get("test_acc") for key, row in result_rows(run).items()}


def check_one_backbone(runs: list[PromptRun]) -> str:
    """The one backbone path of ``runs``; prompts of different backbones live in different embedding spaces."""
    spaces: dict[str, list[str]] = {}
    for r in runs:
        spaces.setdefault(r.backbone_path, []).append(f"{r.run}:{r.dataset}/{r.method}/seed{r.seed}")
    if len(spaces) > 1:
        detail = "; ".join(f"{bb} <- {v[0]}{f' (+{len(v) - 1} more)' if len(v) > 1 else ''}"
                           for bb, v in spaces.items())
        raise ExploreError(f"the runs mix {len(spaces)} backbones, i.e. different embedding spaces, which cannot share "
                           f"one map: {detail}. Explore one backbone at a time.")
    dims = {r.prompt.shape[1] for r in runs}
    if len(dims) > 1:
        raise ExploreError(f"prompts of widths {sorted(dims)} cannot share one map")
    return next(iter(spaces))


def backbone_for(runs: list[PromptRun], backbone=None):
    """The frozen backbone the prompts were tuned on (loaded once per path, on CPU), or ``backbone`` if given."""
    path = check_one_backbone(runs)
    if backbone is not None:
        if str(backbone.path) != path:
            raise ExploreError(f"the prompts were tuned on backbone {path}, not on the given {backbone.path}")
        return backbone
    if path not in _BACKBONES:
        try:
            _BACKBONES[path] = load_backbone(BackboneConfig(name=path, device="cpu"))
        except (BackboneError, OSError) as e:
            raise ExploreError(f"cannot load backbone {path} named by {runs[0].adapter}: {e}") from None
    return _BACKBONES[path]


# ----------------------------------------------------------------------------------------------- vocabulary
def vocab_sample(bb, n: int) -> tuple[list[int], list[str], np.ndarray]:
    """The ``n`` most frequent tokens (``inits.frequent_tokens``): ids, strings and embedding rows (n, d)."""

    ranked, _ = frequent_tokens(bb)
    ids = ranked[: int(n)]
    if not ids:
        raise ExploreError(f"backbone {bb.name!r} has no ordinary tokens to sample")
    table = bb.embeddings.weight.detach().float().cpu().numpy()
    return ids, bb.tokenizer.convert_ids_to_tokens(ids), table[ids]


def nearest_tokens(vectors: np.ndarray, bb, k: int = 5) -> list[list[tuple[str, float]]]:
    """For each row of ``vectors`` (n, d): its ``k`` nearest vocabulary tokens by cosine (special tokens excluded)."""
    table = bb.embeddings.weight.detach().float().cpu().numpy()
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    special = list(set(bb.tokenizer.all_special_ids))
    v = np.asarray(vectors, dtype=np.float32).reshape(-1, table.shape[1])
    cos = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)) @ unit.T
    cos[:, special] = -np.inf
    k = min(k, cos.shape[1] - len(special))
    top = np.argpartition(-cos, k - 1, axis=1)[:, :k]
    out = []
    for row, idx in zip(cos, top):
        idx = idx[np.argsort(-row[idx])]
        out.append(list(zip(bb.tokenizer.convert_ids_to_tokens(idx.tolist()), row[idx].astype(float).tolist())))
    return out


def short_name(name) -> str:
    """A backbone, corpus or folder name fit for a figure title: the last part of a path, else the name itself."""
    text = str(name).rstrip("/" + os.sep)
    return Path(text).name if ("/" in text or os.sep in text) else text


def format_neighbours(nn: list[tuple[str, float]]) -> str:
    return ", ".join(f"{t} ({c:.2f})" for t, c in nn)
