"""Configuration dataclasses: one per component, composed into a run config that round-trips through JSON.

Overrides use one syntax everywhere (CLI, notebooks, tests): ``"tune.lr=0.03"``, ``"prompt.length=10"``.
Values are parsed with ``ast.literal_eval`` when possible and checked against the field's current type; unknown
keys are an error that lists the known ones.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any



DEFAULT_SEEDS = (13, 21, 42, 87, 100)  # the seeds every command uses unless told otherwise (defined only here)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the parameter."""


@dataclass
class BackboneConfig:
    name: str = "minilm"  # "minilm" (offline default), a Hugging Face name, or a local path
    family: str | None = None  # None = read from the model config: encoder | mlm | seq2seq | causal
    attn: str = "auto"  # auto (sdpa, or eager when second_order) | eager | sdpa
    second_order: bool = False  # load so that gradients of gradients work (eager attention)
    dtype: str = "float32"  # weights dtype: float32 | bfloat16 | float16
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:1 ...
    trust_remote_code: bool = False  # never on unless the user asks
    revision: str | None = None  # hub revision (ignored for local paths)

    def __post_init__(self):
        _choice("backbone.family", self.family, (None, "encoder", "mlm", "seq2seq", "causal"))
        _choice("backbone.attn", self.attn, ("auto", "eager", "sdpa"))
        _choice("backbone.dtype", self.dtype, ("float32", "bfloat16", "float16"))


@dataclass
class PromptConfig:
    length: int = 20  # number of soft-prompt vectors L
    init: str = "random"  # default init for prompt tuning (methods name inits explicitly)
    init_text: str | None = None  # for the "text" init
    init_path: str | None = None  # for the "file" init: a saved prompt or PEFT adapter directory
    position: str = "auto"  # auto (after a leading [CLS]/<s>/BOS, else first) | prepend (always first, as PEFT)
    pool_prompt: bool = False  # similarity head: include prompt positions in the mean-pooled output
    vocab_top: int = 5000  # the "vocab" init samples among this many most frequent tokens

    def __post_init__(self):
        if self.length < 1:
            raise ConfigError(f"prompt.length must be >= 1, got {self.length}")
        _choice("prompt.position", self.position, ("auto", "prepend"))


@dataclass
class TaskConfig:
    template: str | None = None  # e.g. "{text} It was {mask}." ; None = preset for the dataset or generic default
    verbalizer: list[str] | None = None  # one label word (or phrase) per class, in label order
    label_template: str | None = None  # similarity head: text embedded as each class anchor, e.g. "It was {label}."
    temperature: float = 0.05  # similarity head: logits = cosine / temperature
    length_norm: str = "mean"  # multi-token label words: mean (per-token average) or sum of token log-probs

    def __post_init__(self):
        _choice("task.length_norm", self.length_norm, ("mean", "sum"))
        if self.temperature <= 0:
            raise ConfigError(f"task.temperature must be > 0, got {self.temperature}")


@dataclass
class TuneConfig:
    optimizer: str = "adamw"  # adamw | adafactor
    lr: float = 1e-2
    weight_decay: float = 0.0
    steps: int = 200  # maximum optimisation steps
    batch_size: int = 16
    max_length: int = 128  # tokens of rendered input text, prompt not counted
    eval_every: int = 10  # dev evaluation interval (steps); step 0 is always evaluated
    patience: int = 5  # early stop after this many dev evaluations without improvement; 0 = off
    grad_clip: float = 1.0  # max grad norm on the prompt; 0 = off
    autocast: str = "none"  # none | bf16 | fp16 (training and, unless eval_autocast says otherwise, evaluation)
    eval_autocast: str = "same"  # evaluation only: same (as autocast) | none | bf16 | fp16
    eval_batch_size: int = 64
    snapshot_every: int = 0  # keep the prompt (and its dev accuracy) every N steps and at step 0; 0 = off

    def __post_init__(self):
        if self.snapshot_every < 0:
            raise ConfigError(f"tune.snapshot_every must be >= 0 (0 = off), got {self.snapshot_every}")
        _choice("tune.optimizer", self.optimizer, ("adamw", "adafactor"))
        _choice("tune.autocast", self.autocast, ("none", "bf16", "fp16"))
        _choice("tune.eval_autocast", self.eval_autocast, ("same", "none", "bf16", "fp16"))
        for name in ("steps", "batch_size", "max_length", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tune.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"tune.lr must be > 0, got {self.lr}")

    @property
    def eval_precision(self) -> str:
        """The autocast mode of every evaluation (dev selection, test, ensembles)."""
        return self.autocast if self.eval_autocast == "same" else self.eval_autocast


@dataclass
class MetaConfig:
    """How the meta inits (metapt, mpt-maml, mpt-fomaml, mpt-reptile, multitask) meta-train their prompt when the
    harness asks for one (see ``workbench.metatrain``); trained once per configuration and target, then cached."""

    steps: int = 100  # meta-steps (outer updates)
    meta_batch: int = 4  # tasks per meta-step (one batched backbone pass)
    support: int = 2  # support examples per class (per cluster for pseudo-tasks)
    query: int = 2  # query examples per class
    inner_lr: float = 0.1  # SGD step size on the prompt in the inner loop
    inner_steps: int = 1
    optimizer: str = "adamw"  # outer optimizer: adam | adamw | adafactor
    lr: float = 3e-2  # outer learning rate
    schedule: str = "constant"  # constant | linear (decay to 0)
    max_length: int = 48  # tokens per text during meta-training
    sources: str = "leave-one-out"  # MPT/multitask: leave-one-out | same-type | cross-type | pairs->single
    source_datasets: list[str] = field(default_factory=list)  # explicit MPT source datasets (override `sources`)
    source_k: int = 16  # k-shot split size of each MPT source task
    multitask_source: str = "labelled"  # the multitask init's tasks: labelled | pseudo
    metapt_method: str = "fomaml"  # the metapt init's meta-learner: maml | fomaml | reptile | ...
    corpus: str = "brown"  # metapt: unlabeled corpus
    features: str = "tfidf"  # metapt clusters from: tfidf | lda | backbone
    n_clusters: int = 16
    n_way: int = 3
    label: str = "words"  # metapt cluster names: words | keywords | medoid
    template: str = "target"  # metapt task format: target | generic | a template string
    corpus_limit: int = 4000
    seed: int = 0
    cache: bool = True  # reuse a meta prompt trained with the same configuration ($WORKBENCH_CACHE/meta)

    def __post_init__(self):
        _choice("meta.optimizer", self.optimizer, ("adam", "adamw", "adafactor"))
        _choice("meta.schedule", self.schedule, ("constant", "linear"))
        _choice("meta.multitask_source", self.multitask_source, ("labelled", "pseudo"))
        for name in ("steps", "meta_batch", "support", "query", "max_length", "source_k", "n_clusters", "n_way"):
            if getattr(self, name) < 1:
                raise ConfigError(f"meta.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class FewShotConfig:
    datasets: list[str] = field(default_factory=lambda: ["sst2"])
    methods: list[str] = field(default_factory=lambda: ["zero-shot", "linear-probe", "random", "vocab"])
    k: int = 16  # examples per class for train, and again for dev
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    out: str = "runs/fewshot"
    overwrite: bool = False
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)  # used only by the meta inits

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if not self.seeds:
            raise ConfigError("seeds must name at least one seed")
        if not self.datasets:
            raise ConfigError("datasets must name at least one dataset")
        if not self.methods:
            raise ConfigError("methods must name at least one method")


def _choice(name: str, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {[a for a in allowed]}, got {value!r}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_json(cfg) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {where + key!r}; known: {sorted(fields)}")
        sub = _dataclass_type(cls, key)
        kwargs[key] = from_dict(sub, value, f"{where}{key}.") if sub is not None else value
    return cls(**kwargs)


def _dataclass_type(cls, name):
    default = next(f for f in dataclasses.fields(cls) if f.name == name)
    if default.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        obj = default.default_factory()
        if dataclasses.is_dataclass(obj):
            return type(obj)
    return None


def apply_overrides(cfg, overrides: list[str]):
    """Return a copy of ``cfg`` with ``"a.b=value"`` overrides applied (validated by the dataclasses again)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().lstrip("-").split(".")
        node, cls = data, type(cfg)
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config section {p!r} in override {item!r}")
            node, cls = node[p], _dataclass_type(cls, p)
        last = parts[-1]
        if last not in node:
            raise ConfigError(f"unknown config key {key!r} in override {item!r}; known here: {sorted(node)}")
        node[last] = _coerce(raw, node[last], key, _annotation(cls, last))
    return from_dict(type(cfg), data)


def from_args(cls, args, flat: dict[str, str]):
    """A ``cls`` config from parsed command-line ``args``: the defaults, then ``args.config`` (a JSON file, e.g. an
    earlier run's config.json), then the flags named in ``flat`` (argparse dest -> dotted key; unset flags skipped),
    then ``args.overrides`` (``--set key=value``); validated by the dataclasses."""
    cfg = cls()
    if getattr(args, "config", None):
        with open(args.config, encoding="utf-8") as fh:
            cfg = from_dict(cls, json.load(fh))
    data = to_dict(cfg)
    for arg, key in flat.items():
        value = getattr(args, arg, None)
        if value is None or value is False:
            continue
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return apply_overrides(from_dict(cls, data), getattr(args, "overrides", None) or [])


def _annotation(cls, name: str) -> str:
    """The field's type annotation as written (a string under ``from __future__ import annotations``)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None) if cls is not None else None
    return str(f.type) if f is not None else ""


def _coerce(raw: str, current: Any, key: str, annotation: str = ""):
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if current is None and annotation.startswith("list") and isinstance(value, (str, tuple)):
        current = []  # an unset list field (default None): parse the value as a list
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false", "1", "0"):
            return str(value).lower() in ("true", "1")
        raise ConfigError(f"{key} expects true/false, got {raw!r}")
    if isinstance(current, float) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(current, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(current, list) and isinstance(value, tuple):
        return list(value)
    if not isinstance(value, type(current)):
        raise ConfigError(f"{key} expects {type(current).__name__}, got {raw!r}")
    return value
