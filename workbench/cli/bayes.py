"""cli.bayes."""
from __future__ import annotations

import json
import sys

from workbench.cli.common import _csv, _ints
from workbench.config import ConfigError, from_args
from workbench.engine.backbones import BackboneError
from workbench.engine.data import DataError
from workbench.engine.runs import RunError, atomic_write
from workbench.experiments.bayes_modes import BayesRunConfig, format_summary, run_bayes
from workbench.experiments.bayes_report import format_comparisons, load_runs, report
from workbench.learn.tuner import TuningError
from workbench.methods.bayes import BayesError
from workbench.methods.svgd import SVGDError

# ----------------------------------------------------------------------------------------------------------- CLI
_FLAT = {"datasets": "datasets", "k": "k", "seeds": "seeds", "modes": "modes", "baselines": "baselines",
         "ensemble_size": "ensemble_size", "test_limit": "test_limit", "out": "out", "overwrite": "overwrite",
         "steps": "tune.steps", "lr": "tune.lr", "batch_size": "tune.batch_size", "eval_every": "tune.eval_every",
         "patience": "tune.patience", "max_length": "tune.max_length", "backbone": "backbone.name",
         "device": "backbone.device", "prompt_length": "prompt.length", "features": "bayes.features",
         "components": "bayes.components", "covariance": "bayes.covariance", "reg_covar": "bayes.reg_covar",
         "pca_dim": "bayes.pca_dim", "density_data": "bayes.density_data", "n_particles": "bayes.n_particles",
         "iterations": "bayes.iterations", "step_size": "bayes.step_size", "subset": "bayes.subset"}


def add_cli(sub):
    p = sub.add_parser("bayes", help="BayesPrompt (GMM + SVGD prompt distributions): modes vs baselines, acc + ECE",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", "--datasets", dest="datasets", type=_csv)
    p.add_argument("--k", type=int)
    p.add_argument("--seeds", type=_ints)
    p.add_argument("--modes", type=_csv, help="init,resample,ensemble")
    p.add_argument("--baselines", type=_csv, help="zero-shot and/or registered inits (default zero-shot,random,vocab)")
    p.add_argument("--ensemble-size", type=int, help="R prompts at test (ensemble) and for dev selection")
    p.add_argument("--test-limit", type=int, help="evaluate on a seeded subset of this many test examples (smoke)")
    for flag, typ in (("--steps", int), ("--lr", float), ("--batch-size", int), ("--eval-every", int),
                      ("--patience", int), ("--max-length", int), ("--prompt-length", int), ("--components", int),
                      ("--reg-covar", float), ("--pca-dim", int), ("--n-particles", int), ("--iterations", int),
                      ("--step-size", float), ("--subset", int)):
        p.add_argument(flag, type=typ)
    p.add_argument("--features", choices=["embed", "encoder"])
    p.add_argument("--covariance", choices=["full", "diag"])
    p.add_argument("--density-data", choices=["kshot", "kshot+unlabeled"])
    p.add_argument("--backbone")
    p.add_argument("--device")
    p.add_argument("--config", help="a config.json of an earlier bayes run to start from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def bayes_config(args) -> BayesRunConfig:
    return from_args(BayesRunConfig, args, _FLAT)


def run_cli(args) -> int:
    try:
        res = run_bayes(bayes_config(args), progress=not args.quiet)
    except (ConfigError, DataError, BackboneError, RunError, TuningError, BayesError, SVGDError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(res["summary"]))
    if res["comparisons"]:
        print("\nBayesPrompt modes minus each baseline, paired over seeds (points; p: paired t-test):")
        print(format_comparisons(res["comparisons"]))
    print(f"\ndensity data: {res['density_setting']}\nrun directory: {res['out']}  ({res['wall_s']:.0f} s)")
    return 0


# ----------------------------------------------------------------------------------------------------------- CLI
def add_report_cli(sub):
    p = sub.add_parser("bayes-report", help="paired comparisons of BayesPrompt modes vs baselines over bayes runs",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories written by `python -m workbench bayes`")
    p.add_argument("--out", help="write the markdown report here (default: print it)")
    p.add_argument("--rows", help="also write the combined rows here, one JSON object per line")
    p.add_argument("--title", default="BayesPrompt modes against baselines")
    return p


def run_report_cli(args) -> int:
    try:
        rows, proto = load_runs(args.runs)
    except BayesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = report(rows, args.title, ["Runs:"] + proto)
    if args.rows:
        atomic_write(args.rows, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    if args.out:
        atomic_write(args.out, text)
        print(f"report: {args.out} ({len(rows)} rows)")
    else:
        print(text)
    return 0
