"""The benchmark: a declared grid (methods x (dataset, k) cells x seeds) run resumably into one directory.

``python -m workbench benchmark --suite benchmarks/suites/smoke.json [--out runs/bench-smoke] [--resume]``

A suite file is JSON (see :class:`Suite`): the backbone, the methods (baselines and registered inits; the literal
``"all"`` expands to every registered init at load time, minus ``exclude``), the grid of (datasets, k) blocks, the
seeds, the prompt/task/tune settings shared by every row, per-init config overrides (``init_options``), and an
optional ``test_limit`` (a fixed, labelled subsample of each test set), and optional Holm ``families`` (name -> inits;
see :mod:`workbench.engine.stats`). Unknown methods or datasets are refused with the known ones listed.

The benchmark directory holds ``suite.json`` (the resolved suite), ``rows.jsonl`` (one line per finished row, appended
and flushed as each row finishes), ``metrics.jsonl`` (dev evaluations), ``k<k>/adapters/<dataset>/<method>/seed<s>/``
(tuned prompts, PEFT format), and, once every row is done, ``results.json`` (rows, summary, statistics, environment,
data hashes) and ``leaderboard.md`` (:mod:`workbench.experiments.leaderboard`). After a crash or Ctrl-C, ``--resume`` skips the rows already in ``rows.jsonl``;
resuming with a suite that resolves differently is refused, naming the differing keys (``families`` excepted: they
change only the statistics, so resuming a finished benchmark with new families rewrites its results).

Rows reuse the harness: :func:`harness.prepare` (format, head, k-shot splits), :func:`harness._baseline` and
:func:`harness._prompt_tuning`. The unprompted test pass (features and logits) is computed once per dataset and
shared by zero-shot and the linear probe across seeds and k; evaluation is batched under ``torch.inference_mode``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from workbench.config import (
    BackboneConfig,
    ConfigError,
    FewShotConfig,
    apply_overrides,
    from_dict,
    knob,
    migrate,
    to_dict,
)
from workbench.engine import tracking
from workbench.engine.backbones import load_backbone, set_threads
from workbench.engine.data import list_datasets, load_dataset
from workbench.engine.progress import progress_bar
from workbench.engine.runs import RESULTS, RunError, atomic_write, environment, read_json, write_json
from workbench.engine.lock import RunLock
from workbench.engine.splits import subsample
from workbench.engine.stats import (
    check_families,
    statistics,
    summarise,
)
from workbench.experiments import fewshot as harness
from workbench.experiments.executors import FAILED, Executor, WorkerJob, failures, job_token
from workbench.experiments.fewshot import BASELINES, known_methods
from workbench.experiments.leaderboard import leaderboard_markdown
from workbench.learn.inits import INITS
from workbench.learn.tuner import evaluate

ROWS, SUITE = "rows.jsonl", "suite.json"
# per-init overrides may change how the init is built and tuned, not the backbone, data or head all methods share
INIT_OPTION_FORBIDDEN = ("backbone.", "task.", "prompt.length", "prompt.position", "prompt.pool_prompt",
                         "tune.max_length", "datasets", "methods", "k", "seeds", "out", "overwrite")
_FORBIDDEN_PREFIXES = tuple(x for x in INIT_OPTION_FORBIDDEN if x.endswith("."))


@dataclass
class Suite:
    name: str = "suite"
    description: str = ""
    methods: list = field(default_factory=lambda: ["zero-shot", "random"])  # baselines, init names, or "all"
    exclude: list = field(default_factory=list)  # removed after "all" is expanded (e.g. "file": needs a path)
    grid: list = field(default_factory=lambda: [{"datasets": ["sst2"], "k": [16]}])  # blocks of datasets x k
    seeds: list = field(default_factory=lambda: [13, 21, 42, 87, 100])
    reference: str = "random"  # the paired tests compare every init with this one
    test_limit: int | None = None  # None = full test sets; N = a fixed random subsample of N (seed 0), labelled
    init_options: dict = field(default_factory=dict)  # method -> {"prompt.init_text": "...", "tune.lr": 0.3}
    families: dict = knob({}, "Holm families: name -> [init, ...]; the paired tests are Holm-corrected within each "
                              "family, methods in none form the family 'other'; {} = one family over all comparisons")
    recipe: dict = knob({}, "the recipe the suite started from (--recipe): name, scale, sha256 of its file")
    # every other key of a suite is a section of FewShotConfig shared by all rows: backbone, prompt, task, tune,
    # meta (the meta inits' training), and any section added to FewShotConfig later


def config_sections() -> list[str]:
    """The nested-dataclass sections of FewShotConfig (backbone, prompt, task, tune, meta, ...)."""
    base = FewShotConfig()
    return [f.name for f in dataclasses.fields(FewShotConfig) if dataclasses.is_dataclass(getattr(base, f.name))]


def load_suite(path) -> dict:
    """Read, validate and resolve a suite file; return the resolved suite as a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    try:
        return resolve_suite(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve_suite(data: dict) -> dict:
    """Expand ``"all"``, check methods, datasets, grid, seeds and init options; return the resolved dict."""

    if not isinstance(data, dict):
        raise ConfigError("a suite is a JSON object")
    data = migrate(Suite, data)  # suite files written before a key was renamed (config.base.RENAMED)
    own = {f.name for f in dataclasses.fields(Suite)}
    sections = config_sections()
    unknown_keys = [k for k in data if k not in own and k not in sections]
    if unknown_keys:
        raise ConfigError(f"unknown config key {unknown_keys[0]!r}; known: {sorted(own | set(sections))}")
    suite = from_dict(Suite, {k: v for k, v in data.items() if k in own})
    shared = to_dict(from_dict(FewShotConfig, {k: v for k, v in data.items() if k in sections}))
    methods = []
    for m in suite.methods:
        methods += sorted(INITS) if m == "all" else [m]
    bad_ex = [m for m in suite.exclude if m not in INITS and m not in BASELINES]
    if bad_ex:
        raise ConfigError(f"exclude names unknown method(s) {bad_ex}; known: {known_methods()}")
    methods = [m for m in dict.fromkeys(methods) if m not in suite.exclude]
    unknown = [m for m in methods if m not in INITS and m not in BASELINES]
    if unknown:
        raise ConfigError(f"methods: unknown init(s) {unknown}; known: {known_methods()}")
    if not methods:
        raise ConfigError("methods: nothing left to run")
    if suite.reference not in INITS and suite.reference not in BASELINES:  # absent from methods: no paired tests
        raise ConfigError(f"reference: unknown method {suite.reference!r}; known: {known_methods()}")
    if not isinstance(suite.grid, list) or not suite.grid:
        raise ConfigError('grid must be a list of {"datasets": [...], "k": [...]} blocks')
    known_ds = list_datasets()
    cells = []
    for i, block in enumerate(suite.grid):
        if not isinstance(block, dict) or set(block) != {"datasets", "k"}:
            raise ConfigError(f'grid[{i}] must have exactly the keys "datasets" and "k", got {block!r}')
        ks = block["k"] if isinstance(block["k"], list) else [block["k"]]
        for ds in block["datasets"]:
            if ds not in known_ds and not Path(ds).exists():
                raise ConfigError(f"grid[{i}]: unknown dataset {ds!r}; known: {known_ds}")
            for k in ks:
                if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                    raise ConfigError(f"grid[{i}]: k must be integers >= 1, got {k!r}")
                if [ds, k] not in cells:
                    cells.append([ds, k])
    if not suite.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in suite.seeds):
        raise ConfigError(f"seeds must be a non-empty list of integers, got {suite.seeds!r}")
    if len(set(suite.seeds)) != len(suite.seeds):
        raise ConfigError(f"seeds has duplicates: {suite.seeds}")
    if suite.test_limit is not None and (not isinstance(suite.test_limit, int) or suite.test_limit < 1):
        raise ConfigError(f"test_limit must be null or an integer >= 1, got {suite.test_limit!r}")
    check_families(suite.families, methods, suite.reference)
    for m, opts in suite.init_options.items():
        if m not in methods:
            raise ConfigError(f"init_options names {m!r}, which is not among the methods {methods}")
        if m in BASELINES or not isinstance(opts, dict):
            raise ConfigError(f"init_options[{m!r}] must be an object of overrides for an init")
        bad = [key for key in opts if key in INIT_OPTION_FORBIDDEN or key.startswith(_FORBIDDEN_PREFIXES)]
        if bad:
            raise ConfigError(f"init_options[{m!r}]: {bad} cannot differ per init (shared by every method: "
                              f"{list(INIT_OPTION_FORBIDDEN)})")
    out = to_dict(suite)
    out.update({k: shared[k] for k in sections}, methods=methods, cells=cells)
    for m, opts in suite.init_options.items():
        apply_overrides(_fewshot(out, cells[0][0], cells[0][1]), _ov(opts))
    return out


def _ov(opts: dict) -> list[str]:
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={json.dumps(v)}" for k, v in opts.items()]


def _fewshot(resolved: dict, dataset: str, k: int, out: str = "unused") -> FewShotConfig:
    return from_dict(FewShotConfig, {"datasets": [dataset], "methods": resolved["methods"], "k": k,
                                     "seeds": resolved["seeds"], "out": out,
                                     **{name: resolved[name] for name in config_sections() if name in resolved}})


def _flatten(d, prefix="") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def suite_diff(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved suites (description, name and families, which change no
    row, excluded). A config field that one suite lacks (resolved by an older workbench, before the field existed)
    counts as its default value."""
    defaults = _flatten(to_dict(FewShotConfig()))
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in set(fa) | set(fb) if k.split(".")[0] not in ("description", "name", "families")
                  and fa.get(k, defaults.get(k)) != fb.get(k, defaults.get(k)))


def row_key(r: dict) -> tuple:
    return (r["dataset"], int(r["k"]), r["method"], int(r["seed"]))


def read_rows(path: Path) -> list[dict]:
    """Rows of ``rows.jsonl``; a torn last line (crash while writing) is dropped and the file rewritten."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows, good = [], True
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise RunError(f"{path}:{i + 1}: not valid JSON; the rows file is damaged") from None
            good = False
    if not good:
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


class _Log:
    """What harness._prompt_tuning needs of a RunDir: ``.path`` (adapters go below it) and ``.log``, which hands each
    record, stamped with the time and k, as one JSON line to ``emit``."""

    def __init__(self, root: Path, k: int, emit):
        self.path, self.k, self._emit = root / f"k{k}", k, emit

    def log(self, record: dict):
        self._emit(json.dumps({"time": round(time.time(), 3), "k": self.k, **record}, default=str))


def plan(resolved: dict) -> list[tuple]:
    """Every row key in run order: cell (dataset, k), then seed, then method."""
    return [(ds, k, m, s) for ds, k in resolved["cells"] for s in resolved["seeds"] for m in resolved["methods"]]


class RowCache:
    """What the rows one process runs share: the last few cells (dataset, k) it prepared (format, head, k-shot
    splits, test set) and each dataset's unprompted test pass (features and logits, shared by every k and seed)."""
    CELLS = 4  # a Ray worker may get rows of a few cells in turn; the local executor runs one cell after the other

    def __init__(self):
        self.cells, self.zero_shot = {}, {}

    def prepared(self, resolved: dict, ds_name: str, k: int, out: Path, backbone):
        """The prepared cell ``(ds_name, k)`` and its config, prepared on first use."""
        if (ds_name, k) not in self.cells:
            cfg = _fewshot(resolved, ds_name, k, str(out))
            prep = harness.prepare(cfg, backbone)[0]
            test = subsample(prep.dataset.splits["test"], resolved["test_limit"])
            for split in prep.splits.values():
                split.test = test
            if len(self.cells) >= self.CELLS:
                del self.cells[next(iter(self.cells))]
            self.cells[(ds_name, k)] = prep, cfg
        return self.cells[(ds_name, k)]

    def unprompted_test(self, ds_name: str, prep, cfg) -> dict:
        if ds_name not in self.zero_shot:
            test = next(iter(prep.splits.values())).test
            self.zero_shot[ds_name] = evaluate(prep.head, test, None, cfg.tune.eval_batch_size,
                                               cfg.tune.eval_precision, features=True)
        return self.zero_shot[ds_name]


def run_row(resolved: dict, key: tuple, out: Path, backbone, cache: RowCache, emit) -> dict:
    """Run the row ``key = (dataset, k, method, seed)`` in this process and return it; its dev evaluations go to
    ``emit`` (one JSON line each), its tuned prompt below ``out``. The same in every executor."""
    ds_name, k, method, seed = key
    prep, cfg = cache.prepared(resolved, ds_name, k, Path(out), backbone)
    split, t_row, c_row = prep.splits[seed], time.perf_counter(), time.process_time()
    base = {"dataset": prep.dataset.name, "k": k, "method": method, "seed": seed,
            "n_train": len(split.train), "n_dev": len(split.dev), "n_test": len(split.test),
            "n_test_full": len(prep.dataset.splits["test"])}
    if method in harness.BASELINES:
        row = harness._baseline(method, prep.head, split, cache.unprompted_test(ds_name, prep, cfg), cfg, seed)
    else:
        cfg_m = apply_overrides(cfg, _ov(resolved["init_options"].get(method, {})))
        row = harness._prompt_tuning(method, prep, split, seed, cfg_m, backbone, _Log(Path(out), k, emit), False,
                                     targets=[c[0] for c in resolved["cells"]])
    return {**base, **row, "wall_s": round(time.perf_counter() - t_row, 3),
            "cpu_s": round(time.process_time() - c_row, 3)}  # all threads: robust to a busy machine


def run_benchmark(suite, out, resume: bool = False, backbone=None, progress: bool = True, command: str | None = None,
                  wait: bool = False, executor: Executor | None = None) -> dict:
    """Run (or resume) the suite into ``out``; return the results dict (also written to ``results.json``). One
    process per directory: another process holding ``out`` is an error (or, ``wait``, waited for). ``executor``:
    where the rows run (default :class:`~workbench.experiments.executors.Executor` ``local``: here, in order)."""
    executor = executor or Executor()
    executor.check()
    with RunLock(out, wait=wait):
        return _run_benchmark(suite, out, resume, backbone, progress, command, executor)


def _open_dir(out: Path, resolved: dict, resume: bool):
    """Create the benchmark directory, or check that ``resume`` continues one started with the same suite."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not resume:
            raise RunError(f"benchmark directory {out} exists and is not empty; pass --resume to continue it or "
                           f"choose a new --out")
        if not (out / SUITE).is_file():
            raise RunError(f"{out} is not a benchmark directory (no {SUITE}); choose a new --out")
        old = read_json(out / SUITE)
        diff = suite_diff(old, resolved)
        if diff:
            raise ConfigError(f"cannot resume {out}: the suite differs from the one it was started with in {diff}; "
                              f"restore the suite or start a new directory with --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SUITE, resolved)


def _run_benchmark(suite, out, resume: bool, backbone, progress: bool, command: str | None,
                   executor: Executor) -> dict:
    resolved = load_suite(suite) if isinstance(suite, (str, Path)) else resolve_suite(suite)
    out = Path(out)
    _open_dir(out, resolved, resume)
    rows = read_rows(out / ROWS)
    done = {row_key(r) for r in rows}
    keys = plan(resolved)
    todo = [key for key in keys if key not in done]
    set_threads()
    t0 = time.perf_counter()
    if todo:
        bar = progress_bar(total=len(keys), initial=len(keys) - len(todo), desc=f"benchmark {resolved['name']}",
                           enabled=progress, unit="row")
        with open(out / ROWS, "a", encoding="utf-8") as rows_f, open(out / "metrics.jsonl", "a") as met_f:
            def emit(line: str):
                met_f.write(line + "\n")
                met_f.flush()
                tracking.track(out, json.loads(line))

            def on_row(row: dict, metric_lines=()):
                for line in metric_lines:
                    emit(line)
                rows_f.write(json.dumps(row, default=float) + "\n")
                rows_f.flush()
                rows.append(row)
                bar.update(1)

            if executor.kind == "local":
                backbone = backbone or load_backbone(from_dict(BackboneConfig, resolved["backbone"]))
                cache = RowCache()
                for key in todo:
                    bar.set_postfix_str(f"{key[0]} k={key[1]} {key[2]} s{key[3]}")
                    on_row(run_row(resolved, key, out, backbone, cache, emit))
            else:
                backbone, failed = executor.run(RowJob(resolved, str(out)), todo, on_row, out / FAILED, bar)
                if failed:
                    raise failures(failed, len(todo), out / FAILED, "resume the benchmark to retry them")
        bar.close()
        tracking.close(out)
    return finalize(out, resolved, rows, backbone, time.perf_counter() - t0, command)


class RowJob(WorkerJob):
    """The rows of one benchmark as a picklable job for remote workers: ``job(key)`` runs a row in the worker's
    process (preparing the cell on first use, then reusing it) and returns the row and its metric lines."""

    def __init__(self, resolved: dict, out: str):
        self.resolved, self.out = resolved, out
        super().__init__(resolved["backbone"], job_token(resolved, out))

    def _reset(self):
        super()._reset()
        self._cache = RowCache()

    def run_key(self, key: tuple, backbone) -> tuple[dict, list]:
        lines: list[str] = []
        return run_row(self.resolved, key, Path(self.out), backbone, self._cache, lines.append), lines


def finalize(out: Path, resolved: dict, rows: list[dict], backbone, session_s: float, command=None) -> dict:
    """Write ``results.json`` and ``leaderboard.md`` from the rows (all of them must be there)."""

    order = {key: i for i, key in enumerate(plan(resolved))}
    rows = sorted((r for r in rows if row_key(r) in order), key=lambda r: order[row_key(r)])
    missing = len(order) - len(rows)
    if missing:
        raise RunError(f"{out}: {missing} rows missing; resume the benchmark to finish them")
    data = {}
    for ds_name in dict.fromkeys(c[0] for c in resolved["cells"]):
        ds = load_dataset(ds_name)
        n_test = len(ds.splits["test"])
        data[ds_name] = {**ds.describe(), "file_hashes": ds.file_hashes(),
                         "test_used": min(n_test, resolved["test_limit"] or n_test), "test_full": n_test}
    prev = read_json(out / RESULTS) if (out / RESULTS).exists() else {}
    results = {
        "suite": resolved, "rows": rows, "summary": summarise(rows), "statistics": statistics(
            rows, resolved["reference"], families=resolved.get("families")),
        "environment": environment(backbone.device) if backbone is not None else prev.get("environment",
                                                                                         environment(None)),
        "backbone": backbone.describe() if backbone is not None else prev.get("backbone"),
        "data": data, "row_wall_s": round(sum(r["wall_s"] for r in rows), 2),
        "row_cpu_s": round(sum(r.get("cpu_s", 0.0) for r in rows), 2),
        "sessions": prev.get("sessions", []) + [{"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                                  "wall_s": round(session_s, 2), "command": command}],
    }
    curved = [r for r in rows if r.get("curve")]
    if curved:  # the learning curve's own comparisons: the untuned init, and the area under the curve
        results["curve_statistics"] = {key: statistics(curved, resolved["reference"], key, families=resolved.get(
            "families")) for key in ("init_test_acc", "curve_auc")}
    write_json(out / RESULTS, results)
    atomic_write(out / "leaderboard.md", leaderboard_markdown(results))
    results["out"] = str(out)
    return results
