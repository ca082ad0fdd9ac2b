"""``python -m workbench``: the command line for batch work.

Subcommands: ``fewshot`` (the few-shot harness), ``inits`` (registered initialisations), ``datasets`` (what the data
search path holds). Any config field can also be set with ``--set section.key=value`` (e.g. ``--set tune.lr=0.03``).
Errors in the input end the command with exit code 2 and one line naming the culprit.
"""
from __future__ import annotations

import argparse
import sys

from workbench.cli import (
    bayes,
    benchmark,
    cluster,
    domain_gen,
    explore,
    metatrain,
    similarity,
)
from workbench.cli.common import _csv, _ints
from workbench.config import ConfigError, FewShotConfig, from_args
from workbench.engine.backbones import BackboneError
from workbench.engine.data import DataError, data_search_path, list_datasets
from workbench.engine.runs import RunError
from workbench.experiments.fewshot import BASELINES, format_summary, run_fewshot
from workbench.learn.inits import list_inits
from workbench.learn.tuner import TuningError

# Subcommands beyond fewshot/inits/datasets: (add_cli(subparsers) -> parser, run_cli(args) -> exit code), one pair per
# command, in the order `--help` lists them. Add a pair here to add a command.
COMMANDS = [(cluster.add_cli, cluster.run_cli), (benchmark.add_cli, benchmark.run_cli),
            (metatrain.add_cli, metatrain.run_cli), (bayes.add_cli, bayes.run_cli),
            (bayes.add_report_cli, bayes.run_report_cli), (similarity.add_cli, similarity.run_cli),
            (domain_gen.add_cli, domain_gen.run_cli), (explore.add_cli, explore.run_cli)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="command")

    f = sub.add_parser("fewshot", help="few-shot prompt tuning and baselines: datasets x methods x seeds",
                       description="Tune soft prompts on k-shot splits, select on dev, report test (mean ± std).")
    f.add_argument("--dataset", "--datasets", dest="datasets", type=_csv, help="name(s) or path(s), comma-separated")
    f.add_argument("--methods", type=_csv, help="zero-shot, linear-probe and/or registered inits (see `inits`)")
    f.add_argument("--k", type=int, help="examples per class (train; dev has as many)")
    f.add_argument("--seeds", type=_ints, help="comma-separated split/init seeds (default 13,21,42,87,100)")
    f.add_argument("--steps", type=int, help="maximum tuning steps")
    f.add_argument("--lr", type=float)
    f.add_argument("--batch-size", type=int)
    f.add_argument("--optimizer", choices=["adamw", "adafactor"])
    f.add_argument("--eval-every", type=int)
    f.add_argument("--patience", type=int, help="early stop after N dev evaluations without gain (0 = off)")
    f.add_argument("--max-length", type=int)
    f.add_argument("--autocast", choices=["none", "bf16", "fp16"])
    f.add_argument("--eval-autocast", choices=["same", "none", "bf16", "fp16"],
                   help="evaluation only (dev selection and test); default: the same as --autocast")
    f.add_argument("--snapshot-every", type=int, help="save the prompt every N steps (and the init); 0 = off")
    f.add_argument("--backbone", help="minilm (default), a Hugging Face name, or a local path")
    f.add_argument("--device", help="auto | cpu | cuda")
    f.add_argument("--prompt-length", type=int)
    f.add_argument("--init-text", help="text for the 'text' init")
    f.add_argument("--init-path", help="saved prompt for the 'file' init")
    f.add_argument("--template", help="e.g. '{text} It was {mask}.'")
    f.add_argument("--verbalizer", type=_csv, help="label words in label order, comma-separated")
    f.add_argument("--label-template", help="similarity head anchor text, e.g. 'It was {label}.'")
    f.add_argument("--config", help="a config.json (e.g. from an earlier run) to start from")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set prompt.pool_prompt=true (repeatable)")
    f.add_argument("--out", help="run directory (refused if it exists and is not empty)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    f.add_argument("--quiet", action="store_true", help="no progress bars")

    for add, run in COMMANDS:
        add(sub).set_defaults(_run=run)

    sub.add_parser("inits", help="list the registered prompt initialisations")
    d = sub.add_parser("datasets", help="list datasets found on the data search path")
    d.add_argument("--path", action="store_true", help="also print the search path")
    return p


_FLAT = {"datasets": "datasets", "methods": "methods", "k": "k", "seeds": "seeds", "out": "out",
         "overwrite": "overwrite", "steps": "tune.steps", "lr": "tune.lr", "batch_size": "tune.batch_size",
         "optimizer": "tune.optimizer", "eval_every": "tune.eval_every", "patience": "tune.patience",
         "max_length": "tune.max_length", "autocast": "tune.autocast", "eval_autocast": "tune.eval_autocast",
         "backbone": "backbone.name",
         "device": "backbone.device", "prompt_length": "prompt.length", "init_text": "prompt.init_text",
         "init_path": "prompt.init_path", "template": "task.template", "verbalizer": "task.verbalizer",
         "label_template": "task.label_template", "snapshot_every": "tune.snapshot_every"}


def fewshot_config(args) -> FewShotConfig:
    """Defaults, then --config, then the named flags, then --set overrides; validated by the dataclasses."""
    return from_args(FewShotConfig, args, _FLAT)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_run", None) is not None:
        return args._run(args)
    try:
        if args.command == "inits":
            print("baselines (also valid --methods): " + ", ".join(BASELINES))
            for name, desc in list_inits():
                print(f"{name:<14} {desc}")
            return 0
        if args.command == "datasets":
            if args.path:
                print("search path: " + " : ".join(str(p) for p in data_search_path()))
            print("\n".join(list_datasets()))
            return 0
        if args.command == "fewshot":
            cfg = fewshot_config(args)
            res = run_fewshot(cfg, progress=not args.quiet)
            print(format_summary(res["summary"]))
            print(f"\nrun directory: {res['out']}  ({res['wall_s']:.0f} s)")
            return 0
    except (ConfigError, DataError, BackboneError, RunError, TuningError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
