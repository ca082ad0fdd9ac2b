"""cli.domain_gen."""
from __future__ import annotations

from workbench.config import ConfigError, PromptConfig, TuneConfig
from workbench.engine.backbones import BackboneError, load_backbone, set_threads
from workbench.engine.data import DataError
from workbench.engine.runs import RunDir, RunError, environment
from workbench.experiments.domain_gen import domain_generalisation


def add_cli(subparsers):
    """``python -m workbench supmer-dg``: the domain-generalisation table as a run directory."""
    p = subparsers.add_parser("supmer-dg", help="SUPMER domain generalisation: tune on one sentiment domain, test on "
                              "the others", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="random,supmer,supmer+psi", help="inits, comma-separated")
    p.add_argument("--source", default="sst2")
    p.add_argument("--targets", default="mr,mpqa,yelp5")
    p.add_argument("--meta-run", help="a `meta-train --method supmer` run whose prompt/ψ the supmer inits use "
                   "(default: train or load the cached one)")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--seeds", default="13,21,42,87,100")
    p.add_argument("--steps", type=int, default=200, help="tuning steps")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--prompt-length", type=int, default=20)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-test", type=int, help="cap on each test set (seeded subsample)")
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def run_cli(args) -> int:
    import sys
    csv = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    try:
        seeds = [int(x) for x in csv(args.seeds)]
        tune = TuneConfig(steps=args.steps, lr=args.lr, max_length=args.max_length)
        prompt = PromptConfig(length=args.prompt_length)
        with RunDir(args.out, args.overwrite) as run:
            set_threads()
            bb = load_backbone(args.backbone)
            res = domain_generalisation(bb, csv(args.methods), args.source, csv(args.targets), args.k, seeds, tune,
                                        prompt, max_test=args.max_test, meta_run=args.meta_run,
                                        progress=not args.quiet, run=run)
            run.write_json("config.json", {"command": "supmer-dg", **vars(args) | {"_run": None}})
            run.write_json("results.json", {**{k: v for k, v in res.items() if k != "table"},
                                            "table": res["table"].to_dict(), "environment": environment(bb.device),
                                            "backbone": bb.describe()})
            res["table"].to_csv(run.path / "table.csv")
    except (ConfigError, DataError, BackboneError, RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res["table"].to_string())
    print(f"overlap: {res['overlap']}\nrun directory: {args.out}  ({res['wall_s']:.0f} s)")
    return 0
