"""``workbench supmer-dg``: SUPMER's domain generalisation (tune on one sentiment domain, test on the others)."""
from __future__ import annotations

from workbench.cli.common import add_config_options, add_run_options, config_from_args
from workbench.config import DomainGenConfig
from workbench.experiments.walkthroughs import domain_gen_run

FLAGS = {"--methods": "methods", "--source": "source", "--targets": "targets", "--meta-run": "meta_run", "--k": "k",
         "--seeds": "seeds", "--test-limit": "test_limit", "--steps": "tune.steps", "--lr": "tune.lr",
         "--max-length": "tune.max_length", "--prompt-length": "prompt.length", "--backbone": "backbone.name",
         "--out": "out"}


def add_cli(subparsers):
    p = subparsers.add_parser("supmer-dg", help="SUPMER domain generalisation: tune on one sentiment domain, test on "
                              "the others", description=__doc__.split("\n\n")[0])
    add_config_options(p, DomainGenConfig, FLAGS)
    add_run_options(p)
    return p


def run_cli(args) -> int:
    cfg = config_from_args(DomainGenConfig, args)
    res = domain_gen_run(cfg, progress=not args.quiet)
    print(res["table"].to_string())
    print(f"overlap: {res['overlap']}\nrun directory: {cfg.out}  ({res['wall_s']:.0f} s)")
    return 0
