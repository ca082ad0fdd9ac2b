"""GPU readiness in one command: run the benchmark scripts and the CUDA tests on a CUDA machine, then one summary.

    python benchmarks/gpu_check.py [--out runs/gpu-check] [--peak-tflops 989] [--quick]      (or: make gpu-check)

Steps (each a subprocess with its own time limit; a failing step is recorded and the next one runs):
1. ``throughput``: one prompt-tuning step of MiniLM in fp32 and bf16 autocast (batch 64), achieved TFLOP/s and MFU
   against ``--peak-tflops`` (the GPU's nominal bf16 dense peak; guessed from the device name when not given);
2. ``meta_step``: the batched meta-step against the per-task loop at meta-batch 16 (``meta_throughput.py``);
3. ``svgd_cuda`` / ``svgd_cpu``: SVGD (256 particles x 384 dims) on CUDA and on the CPU, and their ratio;
4. ``grid``: the learning-rate grid tuned in one pass against one rate at a time (``grid_tuning.py``, G = 4);
5. ``cuda_tests``: the tests that need CUDA (``pytest -k cuda``);
6. ``smoke``: the smoke suite (``benchmarks/suites/smoke.json``) end to end on the GPU.
Everything runs offline with the bundled MiniLM. Each step's full output is kept in ``<out>/<step>.log``; the summary
(the key figures, each step's status and seconds, the GPU and the versions) is printed and written to
``<out>/summary.json``. ``--quick`` shrinks every step (a check of this script itself, e.g. on a CPU machine: the
figures are then not GPU figures). The last line is ``gpu_check=<steps ok>/<steps run>``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def steps(args) -> list[tuple[str, list[str], int]]:
    """(name, command, time limit in seconds) of every step."""
    py, quick = sys.executable, args.quick
    out = Path(args.out)
    peak = ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
    svgd = ["--iterations", "50" if quick else "1000"]
    return [
        ("throughput", [py, str(HERE / "throughput.py"), "--batch", "8" if quick else "64", "--repeats",
                        "2" if quick else "20", *peak], 600),
        ("meta_step", [py, str(HERE / "meta_throughput.py"), "--sizes", "1,2" if quick else "1,4,16",
                       "--repeats", "1" if quick else "3"], 900),
        ("svgd_cuda", [py, str(HERE / "svgd.py"), "--device", "cuda", *svgd], 600),
        ("svgd_cpu", [py, str(HERE / "svgd.py"), "--device", "cpu", *svgd], 900),
        ("grid", [py, str(HERE / "grid_tuning.py"), "--steps", "4" if quick else "30", "--pass-repeats",
                  "1" if quick else "6"], 900),
        ("cuda_tests", [py, "-m", "pytest", "-q", "-k", "cuda", str(HERE.parent / "tests")], 1200),
        ("smoke", [sys.executable, "-m", "workbench", "benchmark", "--suite", str(HERE / "suites" / "smoke.json"),
                   "--out", str(out / "bench-smoke"), "--quiet",
                   *(["--set", "tune.steps=4", "--set", "seeds=[13]", "--set", "test_limit=50"] if quick else [])],
         1800),
    ]


KEYS = {"throughput": ("bf16_step_tflops", "bf16_mfu", "tuning_step_fraction_of_peak", "bf16_matmul_peak_gflops"),
        "meta_step": ("batched_over_loop_at_16", "batched_over_loop_at_2"), "svgd_cuda": ("svgd_cached_s",),
        "svgd_cpu": ("svgd_cached_s",), "grid": ("grid_batched_over_sequential",), "cuda_tests": (), "smoke": ()}


def figures(name: str, text: str) -> dict:
    """The ``key=value`` figures a step printed (the names in KEYS), plus pytest's pass/skip/fail counts."""
    found = {}
    for key in KEYS[name]:
        m = re.findall(rf"\b{key}=([-+0-9.eE]+)", text)
        if m:
            found[key] = float(m[-1])
    if name == "cuda_tests":
        for word in ("passed", "skipped", "failed", "deselected"):
            m = re.search(rf"(\d+) {word}", text)
            found[word] = int(m.group(1)) if m else 0
    return found


def run_step(name: str, cmd: list[str], limit: int, out: Path) -> dict:
    t0 = time.perf_counter()
    log = out / f"{name}.log"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=HERE.parent)
        text, status = proc.stdout + proc.stderr, "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        status = f"timed out after {limit} s"
    log.write_text(" ".join(cmd) + "\n\n" + text, encoding="utf-8")
    res = {"status": status, "seconds": round(time.perf_counter() - t0, 1), **figures(name, text)}
    if name == "cuda_tests" and status == "ok" and res.get("passed", 0) == 0:
        res["status"] = "no CUDA test ran"
    print(f"{name:>11}: {res['status']:<20} {res['seconds']:>7.1f} s  "
          + " ".join(f"{k}={v}" for k, v in res.items() if k not in ("status", "seconds")), flush=True)
    return res


def device_info() -> dict:
    import torch
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(name=p.name, memory_gib=round(p.total_memory / 2 ** 30, 1), devices=torch.cuda.device_count())
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/gpu-check")
    ap.add_argument("--peak-tflops", type=float, default=None, help="nominal bf16 dense peak of the GPU (TFLOP/s)")
    ap.add_argument("--quick", action="store_true", help="shrink every step (a check of this script, not figures)")
    ap.add_argument("--only", default="", help="comma-separated step names to run (default: all)")
    args = ap.parse_args(argv)
    info = device_info()
    if not info["cuda_available"] and not args.quick:
        raise SystemExit("gpu_check: no CUDA device visible to torch; on a CPU machine only --quick runs")
    if args.peak_tflops is None and info.get("name"):
        args.peak_tflops = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in info["name"]), None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "bench-smoke").exists():
        raise SystemExit(f"gpu_check: {out}/bench-smoke exists (the smoke suite needs a new directory); use a new --out")
    print(f"device: {info}; nominal bf16 peak: {args.peak_tflops} TFLOP/s", flush=True)
    wanted = {s for s in args.only.split(",") if s}
    results = {}
    for name, cmd, limit in steps(args):
        if wanted and name not in wanted:
            continue
        if name == "svgd_cuda" and not info["cuda_available"]:
            results[name] = {"status": "skipped: no CUDA"}
            continue
        results[name] = run_step(name, cmd, limit, out)
    cuda, cpu = results.get("svgd_cuda", {}), results.get("svgd_cpu", {})
    if "svgd_cached_s" in cuda and "svgd_cached_s" in cpu:
        results["svgd_cpu_over_cuda"] = round(cpu["svgd_cached_s"] / cuda["svgd_cached_s"], 2)
    summary = {"device": info, "peak_tflops": args.peak_tflops, "quick": args.quick, "steps": results,
               "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cpus": os.cpu_count()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    ran = [r for k, r in results.items() if isinstance(r, dict) and not r["status"].startswith("skipped")]
    print(json.dumps(summary, indent=1))
    print(f"gpu_check={sum(r['status'] == 'ok' for r in ran)}/{len(ran)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
