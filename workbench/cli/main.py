"""workbench (also python -m workbench): the command line for batch work.

Every subcommand takes ``--config FILE`` (e.g. an earlier run's config.json) and ``--set section.key=value`` for any
field of its config; its named options are generated from the same config fields. Errors in the input end the
command with exit code 2 and one ``error:`` line naming the file, line or parameter at fault.
"""
from __future__ import annotations

import argparse
import sys

from workbench.cli import bayes, benchmark, cluster, domain_gen, explore, metatrain, recipes, similarity
from workbench.cli.common import add_config_options, add_executor_options, add_recipe_options, add_run_options, \
    config_from_args, executor_from_args
from workbench.config import FewShotConfig, WorkbenchError
from workbench.engine import tracking
from workbench.engine.data import data_search_path, list_datasets
from workbench.experiments.fewshot import BASELINES, format_summary, run_fewshot
from workbench.learn.inits import list_inits

# Bad input (a file, a line or a parameter at fault) derives from WorkbenchError: one `error:` line and exit code
# 2, never a traceback. Anything else is a bug and keeps its traceback.

# Subcommands beyond fewshot/inits/datasets: (add_cli(subparsers) -> parser, run_cli(args) -> exit code), in the
# order `--help` lists them. Add a pair here to add a command.
COMMANDS = [(cluster.add_cli, cluster.run_cli), (benchmark.add_cli, benchmark.run_cli),
            (metatrain.add_cli, metatrain.run_cli), (bayes.add_cli, bayes.run_cli),
            (bayes.add_report_cli, bayes.run_report_cli), (similarity.add_cli, similarity.run_cli),
            (domain_gen.add_cli, domain_gen.run_cli), (explore.add_cli, explore.run_cli),
            (recipes.add_cli, recipes.run_cli)]

FEWSHOT_FLAGS = {
    ("--dataset", "--datasets"): "datasets", "--methods": "methods", "--k": "k", "--seeds": "seeds",
    "--out": "out", "--steps": "tune.steps", "--lr": "tune.lr", "--batch-size": "tune.batch_size",
    "--optimizer": "tune.optimizer", "--eval-every": "tune.eval_every", "--patience": "tune.patience",
    "--max-length": "tune.max_length", "--autocast": "tune.autocast", "--eval-autocast": "tune.eval_autocast",
    "--snapshot-every": "tune.snapshot_every", "--test-limit": "test_limit", "--backbone": "backbone.name",
    "--device": "backbone.device",
    "--prompt-length": "prompt.length", "--init-text": "prompt.init_text", "--init-path": "prompt.init_path",
    "--template": "task.template", "--verbalizer": "task.verbalizer", "--label-template": "task.label_template",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="command")
    f = sub.add_parser("fewshot", help="few-shot prompt tuning and baselines: datasets x methods x seeds",
                       description="Tune soft prompts on k-shot splits, select on dev, report test (mean ± std).")
    add_config_options(f, FewShotConfig, FEWSHOT_FLAGS)
    add_recipe_options(f, "fewshot")
    add_run_options(f)
    add_executor_options(f)
    f.set_defaults(_run=run_fewshot_cli)
    for add, run in COMMANDS:
        add(sub).set_defaults(_run=run)
    sub.add_parser("inits", help="list the registered prompt initialisations").set_defaults(_run=run_inits)
    d = sub.add_parser("datasets", help="list datasets found on the data search path")
    d.add_argument("--path", action="store_true", help="also print the search path")
    d.set_defaults(_run=run_datasets)
    return p


def fewshot_config(args) -> FewShotConfig:
    """Defaults, then --config, then the named options, then --set overrides; validated by the dataclasses."""
    return config_from_args(FewShotConfig, args)


def run_fewshot_cli(args) -> int:
    res = run_fewshot(fewshot_config(args), progress=not args.quiet, executor=executor_from_args(args))
    print(format_summary(res["summary"]))
    print(f"\nrun directory: {res['out']}  ({res['wall_s']:.0f} s)")
    return 0


def run_inits(args) -> int:
    print("baselines (also valid --methods): " + ", ".join(BASELINES))
    for name, desc in list_inits():
        print(f"{name:<14} {desc}")
    return 0


def run_datasets(args) -> int:
    if args.path:
        print("search path: " + " : ".join(str(p) for p in data_search_path()))
    print("\n".join(list_datasets()))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        tracking.configure(getattr(args, "tracker", "none"))
        return args._run(args)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
