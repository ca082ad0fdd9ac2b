"""``workbench recipes [NAME]``: the papers' own settings as presets (``--recipe NAME`` on fewshot, meta-train,
bayes and benchmark); without a name the list, with one the recipe's values and where each comes from."""
from __future__ import annotations

from workbench.cli.benchmark import suite_key
from workbench.config import FewShotConfig, MetaTrainConfig
from workbench.config.recipes import Recipe, config_keys, load_recipe, recipe_names
from workbench.experiments.bayes_modes import BayesRunConfig


def command_keys() -> dict:
    """Command -> whether its configuration has a (dotted) key: the commands a recipe can configure."""
    return {"meta-train": config_keys(MetaTrainConfig).__contains__,
            "fewshot": config_keys(FewShotConfig).__contains__,
            "bayes": config_keys(BayesRunConfig).__contains__, "benchmark": suite_key}


def add_cli(sub):
    p = sub.add_parser("recipes", help="the papers' settings as presets for --recipe: list them, or show one",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="a recipe: print its values, each with its source")
    return p


def run_cli(args) -> int:
    if args.name:
        print(describe(load_recipe(args.name)))
        return 0
    for name in recipe_names():
        r = load_recipe(name)
        print(f"{name}  [{r.family}: {r.backbone}]  {r.paper}\n    commands: {', '.join(r.commands)}; scales: "
              f"{', '.join(['paper', *r.scales])}\n    {r.description}")
    print("\nworkbench recipes NAME: the values and their sources; use one with --recipe NAME [--scale smoke]")
    return 0


def describe(r: Recipe) -> str:
    """A recipe's values per command, each with its source (or UNCONFIRMED), then deviations and scales."""
    keys = command_keys()
    lines = [f"{r.name}: {r.paper}", r.description, f"family {r.family}, backbone {r.backbone}, sha256 {r.sha256[:16]}",
             ""]
    for command in r.commands:
        lines.append(f"{command} (workbench {command} --recipe {r.name}):")
        for key, value in r.paper_items(command, keys[command]).items():
            src = r.source(command, "backbone" if key == "backbone.name" else key) or ""
            tag = "UNCONFIRMED " if r.unconfirmed_at(command, key) else ""
            lines.append(f"  {key} = {value!r}\n      {tag}{src}".rstrip())
    if r.deviations:
        lines += ["", "deviations (not the paper's setting, or not expressible yet):"]
        lines += [f"  {key}: {why}" for key, why in r.deviations.items()]
    for scale, over in r.scales.items():
        lines += ["", f"--scale {scale} (sized for a machine, not the paper's):"]
        items = {**over.get("settings", {}), **{f"{c}:{k}": v for c, vals in over.get("commands", {}).items()
                                               for k, v in vals.items()}}
        lines += [f"  {key} = {value!r}" for key, value in items.items()]
    return "\n".join(lines)
