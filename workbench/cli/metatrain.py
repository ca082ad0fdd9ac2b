"""``workbench meta-train``: meta-train a soft prompt (MetaPT pseudo-tasks, MPT sources, SUPMER's tasks).

Data-parallel over N processes: ``torchrun --nproc-per-node N -m workbench meta-train ...`` (rank 0 reports)."""
from __future__ import annotations

import os

from workbench.cli.common import add_config_options, add_recipe_options, add_run_options, config_from_args
from workbench.config import ConfigError, MetaTrainConfig
from workbench.learn.metatrain import run_meta_training

FLAGS = {"--method": "method", "--source": "source", "--target": "target", "--backbone": "backbone.name",
         "--steps": "meta.steps", "--meta-batch": "meta.meta_batch", "--inner-steps": "meta.inner_steps",
         "--sources": "labelled.sources", "--source-datasets": "labelled.datasets", "--out": "out"}


def add_cli(subparsers):
    p = subparsers.add_parser("meta-train", help="meta-train a soft prompt (MetaPT pseudo-tasks, MPT sources)",
                              description=__doc__.split("\n\n")[0])
    add_config_options(p, MetaTrainConfig, FLAGS)
    add_recipe_options(p, "meta-train")
    p.add_argument("--opt", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for a third-party task source (goes to source_options)")
    add_run_options(p, resume=True)
    return p


def run_cli(args) -> int:
    cfg = config_from_args(MetaTrainConfig, args)
    for item in args.options:
        if "=" not in item:
            raise ConfigError(f"--opt {item!r} must look like key=value")
        k, v = item.split("=", 1)
        cfg.source_options[k] = v
    res = run_meta_training(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                            wait=args.wait)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    v = res["final_val"]
    print(f"meta-validation after {res['steps']} steps: query acc {100 * v['acc_pre']:.1f}% before / "
          f"{100 * v['acc_post']:.1f}% after inner adaptation (loss {v['loss_pre']:.3f} / {v['loss_post']:.3f})")
    if "budget" in res:  # runs written before the budget fields: not printed
        b = res["budget"]
        print(f"prompt written: step {res['selected_step']} (meta.select={res['select']}); {b['steps_run']} of "
              f"{b['steps']} meta-steps run{' (stopped early)' if res['stopped_early'] else ''}, {b['task_visits']} "
              f"task visits, {b['inner_steps']} inner {b['inner_optimizer']} steps")
    world = res.get("data_parallel", {}).get("world_size", 1)
    print(f"run directory: {res.get('out', cfg.out)}  ({res['wall_s']:.0f} s"
          + (f", {world} data-parallel processes)" if world > 1 else ")"))
    return 0
