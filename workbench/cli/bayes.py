"""``workbench bayes`` (BayesPrompt modes against baselines, accuracy and ECE) and ``workbench bayes-report`` (one
markdown report over several bayes runs)."""
from __future__ import annotations

import json

from workbench.cli.common import add_config_options, add_quiet_option, add_recipe_options, add_run_options, \
    config_from_args
from workbench.config import BayesReportConfig
from workbench.engine.runs import atomic_write
from workbench.experiments.bayes_modes import BayesRunConfig, format_summary, run_bayes
from workbench.experiments.bayes_report import format_comparisons, load_runs, report

FLAGS = {("--dataset", "--datasets"): "datasets", "--k": "k", "--seeds": "seeds", "--modes": "modes",
         "--baselines": "baselines", "--ensemble-size": "ensemble_size", "--test-limit": "test_limit",
         "--steps": "tune.steps", "--lr": "tune.lr", "--batch-size": "tune.batch_size",
         "--eval-every": "tune.eval_every", "--patience": "tune.patience", "--max-length": "tune.max_length",
         "--backbone": "backbone.name", "--device": "backbone.device", "--prompt-length": "prompt.length",
         "--features": "bayes.features", "--components": "bayes.components", "--covariance": "bayes.covariance",
         "--reg-covar": "bayes.reg_covar", "--pca-dim": "bayes.pca_dim", "--density-data": "bayes.density_data",
         "--n-particles": "bayes.n_particles", "--iterations": "bayes.iterations", "--step-size": "bayes.step_size",
         "--subset": "bayes.subset", "--out": "out"}
REPORT_FLAGS = {"--runs": "runs", "--out": "out", "--rows": "rows", "--title": "title"}


def add_cli(sub):
    p = sub.add_parser("bayes", help="BayesPrompt (GMM + SVGD prompt distributions): modes vs baselines, acc + ECE",
                       description=__doc__.split("\n\n")[0])
    add_config_options(p, BayesRunConfig, FLAGS)
    add_recipe_options(p, "bayes")
    add_run_options(p)
    return p


def bayes_config(args) -> BayesRunConfig:
    return config_from_args(BayesRunConfig, args)


def run_cli(args) -> int:
    res = run_bayes(bayes_config(args), progress=not args.quiet)
    print(format_summary(res["summary"]))
    if res["comparisons"]:
        print("\nBayesPrompt modes minus each baseline, paired over seeds (points; p: paired t-test):")
        print(format_comparisons(res["comparisons"]))
    print(f"\ndensity data: {res['density_setting']}\nrun directory: {res['out']}  ({res['wall_s']:.0f} s)")
    return 0


def add_report_cli(sub):
    p = sub.add_parser("bayes-report", help="paired comparisons of BayesPrompt modes vs baselines over bayes runs",
                       description="One markdown report over several `bayes` runs: each mode minus each baseline.")
    add_config_options(p, BayesReportConfig, REPORT_FLAGS)
    add_quiet_option(p, "no progress bars (this command draws none; accepted like on every command)")
    return p


def run_report_cli(args) -> int:
    cfg = config_from_args(BayesReportConfig, args)
    rows, proto = load_runs(cfg.runs)
    text = report(rows, cfg.title, ["Runs:"] + proto)
    if cfg.rows:
        atomic_write(cfg.rows, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    if cfg.out:
        atomic_write(cfg.out, text)
        print(f"report: {cfg.out} ({len(rows)} rows)")
    else:
        print(text)
    return 0
