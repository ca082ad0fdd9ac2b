"""``workbench supmer-dg``: SUPMER's domain generalisation (tune on one sentiment domain, test on the others)."""
from __future__ import annotations

from workbench.cli.common import add_config_options, add_run_options, config_from_args
from workbench.config import DomainGenConfig, to_dict
from workbench.engine.backbones import load_backbone, set_threads
from workbench.engine.runs import RunDir, environment
from workbench.experiments.domain_gen import domain_generalisation

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
    with RunDir(cfg.out, cfg.overwrite) as run:
        set_threads()
        bb = load_backbone(cfg.backbone)
        res = domain_generalisation(bb, cfg.methods, cfg.source, cfg.targets, cfg.k, cfg.seeds, cfg.tune, cfg.prompt,
                                    max_test=cfg.test_limit, meta_run=cfg.meta_run, progress=not args.quiet, run=run)
        run.write_json("config.json", {"command": "supmer-dg", **to_dict(cfg)})
        run.write_json("results.json", {**{k: v for k, v in res.items() if k != "table"},
                                        "table": res["table"].to_dict(), "environment": environment(bb.device),
                                        "backbone": bb.describe()})
        res["table"].to_csv(run.path / "table.csv")
    print(res["table"].to_string())
    print(f"overlap: {res['overlap']}\nrun directory: {cfg.out}  ({res['wall_s']:.0f} s)")
    return 0
