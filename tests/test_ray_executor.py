"""The Ray executor of ``workbench benchmark`` and ``workbench fewshot`` (tiny model, toy data, a local Ray cluster of
2 CPUs): the rows of the local executor, a worker killed in the middle of a row, a row that fails twice, Ray missing,
an unreachable cluster.

Ray workers run the rows in other processes: what a test injects there goes through a worker setup hook
(:func:`arm_faults`, which reads the row to break from a file), since a monkeypatch in this process does not reach
them."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from test_benchmark import data_dir, stable, suite_dict, write_suite  # noqa: F401 (data_dir: a fixture)

from workbench.cli.main import main
from workbench.config import ConfigError, FewShotConfig, PromptConfig, TuneConfig
from workbench.engine.runs import RunError
from workbench.experiments import benchmark, fewshot
from workbench.experiments.executors import Executor, ray_session, schedule

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parent
FAULTS = "WORKBENCH_TEST_FAULTS"  # a folder: fault.json names the row to break and how


def arm_faults():
    """Ray worker setup: the row named in ``$WORKBENCH_TEST_FAULTS/fault.json`` kills its worker process the first
    time it runs (``"kill-once"``) or raises every time (``"raise"``)."""
    def armed(real, key_at):
        def run(*args, **kwargs):
            key = args[key_at]
            folder = Path(os.environ[FAULTS])
            fault = json.loads((folder / "fault.json").read_text()) if (folder / "fault.json").exists() else {}
            if list(key) == fault.get("row"):
                if fault["mode"] == "raise":
                    raise RuntimeError(f"injected failure in row {key}")
                if not (folder / "killed").exists():
                    (folder / "killed").write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)  # the worker dies in the middle of the row
            return real(*args, **kwargs)
        return run

    benchmark.run_row = armed(benchmark.run_row, 1)  # run_row(resolved, key, ...)
    fewshot.fewshot_row = armed(fewshot.fewshot_row, 2)  # fewshot_row(cfg, prep, key, ...)


@pytest.fixture(scope="module")
def faults(tiny, data_dir, tmp_path_factory):  # noqa: F811
    """A local Ray cluster (2 CPUs) whose workers see the toy data, a private meta-init cache, this folder on their
    path and the fault folder; shut down after the module. Yields the fault folder."""
    folder = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FAULTS, str(folder))
        mp.setenv("WORKBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": arm_faults})
        try:
            yield folder
        finally:
            ray.shutdown()


def metric_lines(out: Path) -> list[str]:
    """The dev evaluations of a benchmark, without their times, in a fixed order."""
    return sorted(json.dumps({**json.loads(x), "time": None}, sort_keys=True)
                  for x in (out / "metrics.jsonl").read_text().splitlines())


def one_cell(tiny) -> dict:
    return suite_dict(tiny, grid=[{"datasets": ["toy"], "k": [4]}])


# these run before the cluster fixture starts Ray in this process (a session already open is used as it is)
def test_ray_missing_names_the_extra(tiny, data_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    suite = write_suite(tmp_path / "suite.json", one_cell(tiny))
    with pytest.raises(ConfigError, match=r"pip install 'workbench\[ray\]'"):
        benchmark.run_benchmark(suite, tmp_path / "a", progress=False, executor=Executor("ray"))
    assert main(["benchmark", "--suite", str(suite), "--out", str(tmp_path / "b"), "--executor", "ray"]) == 2
    assert "workbench[ray]" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything is written


def test_an_unreachable_address_is_refused_by_name(tiny, data_dir, tmp_path, capsys):  # noqa: F811
    assert not ray.is_initialized()
    suite = write_suite(tmp_path / "suite.json", one_cell(tiny))
    with pytest.raises(ConfigError, match=r"cannot reach a Ray cluster at --ray-address '127\.0\.0\.1:9'"):
        benchmark.run_benchmark(suite, tmp_path / "a", progress=False, executor=Executor("ray", "127.0.0.1:9"))
    assert main(["benchmark", "--suite", str(suite), "--out", str(tmp_path / "b"), "--executor", "ray",
                 "--ray-address", "nonsense"]) == 2
    assert "--ray-address must be auto, HOST:PORT" in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_auto_without_a_cluster_is_a_config_error():
    class NoCluster:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            raise ConnectionError("Could not find any running Ray instance.")

    with pytest.raises(ConfigError, match=r"--ray-address 'auto'.*ray start --head"), ray_session(NoCluster(), "auto"):
        pass


def test_bad_resources_and_ray_options_without_ray_are_refused():
    with pytest.raises(ConfigError, match="--gpus-per-run must be a number >= 0"):
        Executor("ray", gpus_per_run=-1)
    with pytest.raises(ConfigError, match="--cpus-per-run must be a number > 0"):
        Executor("ray", cpus_per_run=0)
    with pytest.raises(ConfigError, match="need --executor ray"):
        Executor("local", address="auto")
    assert Executor("ray", address="").address is None


def test_each_meta_training_runs_once_before_the_rows_that_need_it():
    todo = [("a", 4, "random", 1), ("a", 4, "mpt-maml", 1), ("a", 4, "supmer", 1), ("a", 4, "supmer+psi", 1),
            ("a", 4, "mpt-maml", 2), ("a", 8, "mpt-maml", 1), ("b", 4, "mpt-maml", 1)]
    first, after = schedule(todo)
    assert first == [("a", 4, "mpt-maml", 1), ("a", 4, "supmer", 1), ("b", 4, "mpt-maml", 1), ("a", 4, "random", 1)]
    assert after == {("a", 4, "mpt-maml", 1): [("a", 4, "mpt-maml", 2), ("a", 8, "mpt-maml", 1)],
                     ("a", 4, "supmer", 1): [("a", 4, "supmer+psi", 1)], ("b", 4, "mpt-maml", 1): []}


def test_two_ray_workers_give_the_rows_of_the_local_executor(tiny, data_dir, faults, tmp_path):  # noqa: F811
    suite = write_suite(tmp_path / "suite.json", suite_dict(tiny))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker (--cpus-per-run 1): sums over other thread splits could differ
    try:
        local = benchmark.run_benchmark(suite, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert main(["benchmark", "--suite", str(suite), "--out", str(tmp_path / "ray"), "--quiet", "--executor", "ray",
                 "--cpus-per-run", "1"]) == 0  # the session the fixture opened is used as it is
    remote = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert stable(remote["rows"]) == stable(local["rows"])  # test accuracy (and every other figure) to the last digit
    assert len((tmp_path / "ray" / "rows.jsonl").read_text().splitlines()) == 16
    assert metric_lines(tmp_path / "ray") == metric_lines(tmp_path / "local")
    assert remote["backbone"] == local["backbone"] and remote["summary"] == local["summary"]
    assert (tmp_path / "ray" / "k4" / "adapters" / "toy" / "vocab" / "seed21" / "adapter_model.safetensors").is_file()


def test_a_killed_worker_is_retried_and_no_row_is_lost_or_duplicated(tiny, data_dir, faults, tmp_path):  # noqa: F811
    (faults / "fault.json").write_text(json.dumps({"row": ["toy", 4, "vocab", 21], "mode": "kill-once"}))
    try:
        benchmark.run_benchmark(write_suite(tmp_path / "s.json", one_cell(tiny)), tmp_path / "b", progress=False,
                                executor=Executor("ray"))
    finally:
        (faults / "fault.json").unlink()
    assert (faults / "killed").exists()  # the worker did die in the middle of that row
    keys = [benchmark.row_key(r) for r in benchmark.read_rows(tmp_path / "b" / "rows.jsonl")]
    assert len(keys) == len(set(keys)) == 8 and ("toy", 4, "vocab", 21) in keys
    assert not (tmp_path / "b" / "failed.jsonl").exists()


def test_a_row_failing_twice_is_recorded_and_the_grid_goes_on(tiny, data_dir, faults, tmp_path):  # noqa: F811
    suite, out = write_suite(tmp_path / "s.json", one_cell(tiny)), tmp_path / "b"
    (faults / "fault.json").write_text(json.dumps({"row": ["toy", 4, "random", 13], "mode": "raise"}))
    try:
        with pytest.raises(RunError, match=r"1 of 8 rows failed twice.*failed\.jsonl.*injected failure.*resume"):
            benchmark.run_benchmark(suite, out, progress=False, executor=Executor("ray"))
    finally:
        (faults / "fault.json").unlink()
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    assert [(f["method"], f["seed"], f["failed"], f["attempts"]) for f in failed] == [("random", 13, True, 2)]
    assert "injected failure" in failed[0]["error"]
    assert len(benchmark.read_rows(out / "rows.jsonl")) == 7 and not (out / "results.json").exists()
    res = benchmark.run_benchmark(suite, out, resume=True, progress=False, executor=Executor("ray"))
    assert len(res["rows"]) == len(benchmark.read_rows(out / "rows.jsonl")) == 8


def fewshot_config(tiny, out, methods=("zero-shot", "linear-probe", "random", "vocab")) -> FewShotConfig:
    cfg = FewShotConfig(datasets=["toy"], methods=list(methods), k=4, seeds=[13, 21], out=str(out),
                        prompt=PromptConfig(length=4), tune=TuneConfig(steps=4, eval_every=2, max_length=32, lr=0.05))
    cfg.backbone.name = tiny["bert-mlm"]
    return cfg


def eval_records(out: Path) -> list[str]:
    return sorted(json.dumps({**json.loads(x), "time": None, "wall_s": None}, sort_keys=True)
                  for x in (out / "metrics.jsonl").read_text().splitlines())


def test_fewshot_on_two_ray_workers_gives_the_rows_of_the_local_run(tiny, data_dir, faults, tmp_path):  # noqa: F811
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker (--cpus-per-run 1)
    try:
        local = fewshot.run_fewshot(fewshot_config(tiny, tmp_path / "local"), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert main(["fewshot", "--config", str(tmp_path / "local" / "config.json"), "--out", str(tmp_path / "ray"),
                 "--quiet", "--executor", "ray"]) == 0  # the session the fixture opened is used as it is
    remote = json.loads((tmp_path / "ray" / "results.json").read_text())
    drop = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert drop(remote["rows"]) == drop(local["rows"])  # same rows, same order, test accuracy to the last digit
    assert remote["summary"] == local["summary"] and remote["backbone"] == local["backbone"]
    assert remote["executor"]["kind"] == "ray" and local["executor"] == {"kind": "local"} and remote["failed"] == []
    assert eval_records(tmp_path / "ray") == eval_records(tmp_path / "local")
    assert (tmp_path / "ray" / "adapters" / "toy" / "vocab" / "seed21" / "adapter_model.safetensors").is_file()


def test_fewshot_keeps_the_finished_rows_and_fails_naming_a_row_that_failed_twice(tiny, data_dir, faults,  # noqa: F811
                                                                                   tmp_path):
    (faults / "fault.json").write_text(json.dumps({"row": ["toy", 4, "random", 13], "mode": "raise"}))
    try:
        with pytest.raises(RunError, match=r"1 of 4 rows failed twice.*failed\.jsonl.*injected failure.*run them"):
            fewshot.run_fewshot(fewshot_config(tiny, tmp_path / "f", ["zero-shot", "random"]), progress=False,
                                executor=Executor("ray"))
    finally:
        (faults / "fault.json").unlink()
    res = json.loads((tmp_path / "f" / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in res["rows"]] == [("zero-shot", 13), ("zero-shot", 21), ("random", 21)]
    assert res["failed"] == [["toy", 4, "random", 13]]
    assert "injected failure" in json.loads((tmp_path / "f" / "failed.jsonl").read_text())["error"]
