"""cli.metatrain."""
from __future__ import annotations

import json
import sys

from workbench.config import ConfigError, apply_overrides, from_dict
from workbench.engine.backbones import BackboneError
from workbench.engine.data import DataError
from workbench.engine.runs import RunError
from workbench.learn.meta import LEARNERS
from workbench.learn.metatrain import MetaTrainConfig, run_meta_training
from workbench.tasks.corpus import ClusterError
from workbench.tasks.labelled import CONFIGURATIONS


# ----------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers):
    p = subparsers.add_parser("meta-train", help="meta-train a soft prompt (MetaPT pseudo-tasks, MPT sources)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--method", help=f"meta-learner (registered: {', '.join(sorted(LEARNERS))})")
    p.add_argument("--source", help="task source: pseudo | labelled | another registered source")
    p.add_argument("--target", help="downstream dataset (decontamination, leave-one-out, pseudo-task format)")
    p.add_argument("--sources", help="labelled: leave-one-out | same-type | cross-type | pairs->single, or a "
                   "comma-separated list of datasets")
    p.add_argument("--backbone", help="minilm (default), a Hugging Face name, or a local path")
    p.add_argument("--steps", type=int, help="meta-steps")
    p.add_argument("--meta-batch", type=int)
    p.add_argument("--config", help="a config.json (e.g. of an earlier run) to start from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any MetaTrainConfig field, e.g. --set pseudo.features=lda (repeatable)")
    p.add_argument("--opt", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for a third-party source (goes to source_options)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in <out>.partial")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run (or interrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run_cli(args) -> int:
    try:
        cfg = MetaTrainConfig()
        if args.config:
            with open(args.config, encoding="utf-8") as fh:
                cfg = from_dict(MetaTrainConfig, json.load(fh))
        sets = [f"out={args.out}"]
        for flag, key in (("method", "method"), ("source", "source"), ("target", "target"),
                          ("backbone", "backbone.name"), ("steps", "meta_steps"), ("meta_batch", "meta_batch")):
            if getattr(args, flag) is not None:
                sets.append(f"{key}={getattr(args, flag)}")
        if args.sources:
            sets.append(f"labelled.sources={args.sources}" if args.sources in CONFIGURATIONS
                        else f"labelled.datasets={args.sources}")
        cfg = apply_overrides(cfg, sets + args.overrides)
        for item in args.options:
            if "=" not in item:
                raise ConfigError(f"--opt {item!r} must look like key=value")
            k, v = item.split("=", 1)
            cfg.source_options[k] = v
        res = run_meta_training(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    except (ConfigError, DataError, BackboneError, RunError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = res["final_val"]
    print(f"meta-validation after {res['steps']} steps: query acc {100 * v['acc_pre']:.1f}% before / "
          f"{100 * v['acc_post']:.1f}% after inner adaptation (loss {v['loss_pre']:.3f} / {v['loss_post']:.3f})")
    print(f"run directory: {res.get('out', args.out)}  ({res['wall_s']:.0f} s)")
    return 0
