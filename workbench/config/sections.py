"""The configuration dataclasses: one section per component (the meta-learning sections are in
:mod:`~workbench.config.meta`), one name per knob, composed into the run configs of ``fewshot``
(:class:`FewShotConfig`) and ``meta-train`` (:class:`MetaTrainConfig`). Every field carries its help text
(``knob``), from which the command line builds its options."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from workbench.config.base import DEFAULT_SEEDS, ConfigError, check_choices, check_positive, knob, literal, section
from workbench.config.meta import LabelledConfig, MetaConfig, PseudoConfig, SelfSupConfig, SupmerConfig



@dataclass
class BackboneConfig:
    name: str = knob("minilm", "minilm (the offline default), a Hugging Face name (offline: from the HF cache), a "
                     "local path, or a PEFT prompt-tuning adapter folder (its base model; its prompt is the 'file' init)")
    family: str | None = knob(None, "None = read from the model config", (None, "encoder", "mlm", "seq2seq", "causal"))
    attn: str = knob("auto", "attention kernel; auto = sdpa, or eager when second_order", ("auto", "eager", "sdpa"))
    second_order: bool = knob(False, "load so that gradients of gradients work (eager attention)")
    dtype: str = knob("float32", "weights dtype", ("float32", "bfloat16", "float16"))
    device: str = knob("auto", "auto (cuda when present) | cpu | cuda | cuda:1 ...")
    trust_remote_code: bool = knob(False, "never on unless the user asks")
    revision: str | None = knob(None, "hub revision (ignored for local paths)")

    def __post_init__(self):
        check_choices(self, "backbone")


@dataclass
class PromptConfig:
    length: int = knob(20, "number of soft-prompt vectors L")
    init: str = knob("random", "default init (methods name inits explicitly)")
    init_text: str | None = knob(None, "text of the 'text' init")
    init_path: str | None = knob(None, "the 'file' init: a saved prompt or PEFT adapter directory")
    position: str = knob("auto", "auto: after a leading [CLS]/<s>/BOS, else first; prepend: always first (PEFT); "
                         "append: after each example's input, before a trailing [SEP]/</s> (MPT; causal LMs: "
                         "between the context and the label)", ("auto", "prepend", "append"))
    pool_prompt: bool = knob(False, "similarity head: include prompt positions in the mean-pooled output")
    vocab_top: int = knob(5000, "the 'vocab' init samples among this many most frequent tokens")

    def __post_init__(self):
        check_positive(self, "prompt", ("length",))
        check_choices(self, "prompt")


@dataclass
class TaskConfig:
    template: str | None = knob(None, "e.g. '{text} It was {mask}.'; None = the dataset's preset or a generic one")
    verbalizer: list[str] | None = knob(None, "one label word (or phrase) per class, in label order")
    label_template: str | None = knob(None, "similarity head: text embedded as each class anchor, e.g. 'It was {label}.'")
    temperature: float = knob(0.05, "similarity head: logits = cosine / temperature")
    length_norm: str = knob("mean", "multi-token label words: mean or sum of token log-probs", ("mean", "sum"))

    def __post_init__(self):
        check_choices(self, "task")
        if self.temperature <= 0:
            raise ConfigError(f"task.temperature must be > 0, got {self.temperature}")


@dataclass
class TuneConfig:
    optimizer: str = knob("adamw", "optimizer of the prompt; adafactor-relative: Adafactor's own relative step size "
                          "(lr=None, relative_step, scale_parameter, warmup_init=false), tune.lr unused",
                          ("adamw", "adafactor", "adafactor-relative"))
    lr: float = knob(1e-2, "learning rate (unused by adafactor-relative and when tune.lr_grid is set)")
    lr_grid: list[float] = knob([], "fewshot: tune these learning rates together (one backbone pass per step for all) "
                                "and keep the best on dev; [] = off (tune.lr)")
    schedule: str = knob("constant", "learning-rate schedule after the warm-up (linear: decay to 0 at tune.steps)",
                         ("constant", "linear"))
    warmup_steps: int = knob(0, "linear warm-up of the learning rate from 0 over this many steps; 0 = off")
    weight_decay: float = knob(0.0, "weight decay of the prompt")
    steps: int = knob(200, "maximum optimisation steps")
    batch_size: int = knob(16, "training batch size")
    max_length: int = knob(128, "tokens of the rendered input text (prompt not counted)")
    eval_every: int = knob(5, "dev evaluation interval in steps (step 0 is always evaluated)")
    patience: int = knob(10, "early stop after this many dev evaluations without gain; 0 = off")
    grad_clip: float = knob(1.0, "max gradient norm of the prompt; 0 = off")
    autocast: str = knob("none", "autocast for training (and evaluation unless eval_autocast says otherwise)",
                         ("none", "bf16", "fp16"))
    eval_autocast: str = knob("same", "evaluation only (dev selection, test, ensembles)", ("same", "none", "bf16", "fp16"))
    eval_batch_size: int = knob(64, "evaluation batch size")
    snapshot_every: int = knob(0, "keep the prompt every N steps and at step 0; 0 = off")
    budgets: list[int] = knob([], "fewshot learning curve: step budgets B (each <= tune.steps); the test accuracy of the "
                              "init (step 0) and of the prompt selected within each budget and at tune.steps, and "
                              "the area under that curve; [] = off")
    selection: str = knob("dev", "how the learning rate and step are chosen: dev (the k-per-class dev split) or cv "
                          "(tune.cv_folds-fold cross-validation over train+dev, then one run on all of it)",
                          ("dev", "cv"))
    cv_folds: int = knob(4, "tune.selection=cv: folds (stratified, seeded; at most the examples per class)")
    select_metric: str = knob("acc", "the dev score that selects the step and the learning rate (dev and cv) and drives "
                              "early stopping: acc (accuracy) or macro_f1 (macro-averaged F1, MPT's metric for "
                              "classification); ties: lower dev loss", ("acc", "macro_f1"))

    def __post_init__(self):
        check_choices(self, "tune")
        check_positive(self, "tune", ("steps", "batch_size", "max_length", "eval_every", "eval_batch_size"))
        check_positive(self, "tune", ("snapshot_every", "patience"), minimum=0)
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"tune.lr must be finite and > 0, got {self.lr}")
        self._check_schedule()
        self._check_lr_grid()
        self._check_budgets()

    def _check_budgets(self):
        b = self.budgets
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in b):
            raise ConfigError(f"tune.budgets must list step counts >= 1, got {b}")
        if b and max(b) > self.steps:
            raise ConfigError(f"tune.budgets: budget {max(b)} is longer than the run (tune.steps = {self.steps}); "
                              f"raise tune.steps or drop the budget")
        if len(set(b)) != len(b):
            raise ConfigError(f"tune.budgets lists a budget twice: {b}")
        if self.cv_folds < 2:
            raise ConfigError(f"tune.cv_folds must be >= 2, got {self.cv_folds}")

    def _check_schedule(self):
        if not 0 <= self.warmup_steps < self.steps:
            raise ConfigError(f"tune.warmup_steps must be >= 0 and < tune.steps ({self.steps}), "
                              f"got {self.warmup_steps}")
        if self.optimizer == "adafactor-relative" and (self.schedule != "constant" or self.warmup_steps):
            raise ConfigError(f"tune.optimizer 'adafactor-relative' sets its own step size: leave tune.schedule "
                              f"'constant' and tune.warmup_steps 0 (got {self.schedule!r}, {self.warmup_steps})")

    def _check_lr_grid(self):
        grid = self.lr_grid
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf for v in grid):
            raise ConfigError(f"tune.lr_grid must list finite learning rates > 0, got {grid}")
        if len(set(grid)) != len(grid):
            raise ConfigError(f"tune.lr_grid lists a learning rate twice: {grid}")
        if grid and self.optimizer == "adafactor-relative":
            raise ConfigError("tune.lr_grid needs an optimizer that uses tune.lr; 'adafactor-relative' does not")

    @property
    def eval_precision(self) -> str:
        """The autocast mode of every evaluation (dev selection, test, ensembles)."""
        return self.autocast if self.eval_autocast == "same" else self.eval_autocast


@dataclass
class BayesConfig:
    """BayesPrompt: a Gaussian mixture over target-domain features, SVGD particles, prompt slots from particles."""

    features: str = knob("embed", "embed: mean input-word embeddings; encoder: mean-pooled states",
                         ("embed", "encoder"))
    components: int = knob(0, "GMM components; 0 = number of classes")
    covariance: str = knob("full", "GMM covariance", ("full", "diag"))
    reg_covar: float = knob(0.1, "added to the covariance diagonals, relative to the mean per-dimension variance")
    pca_dim: int = knob(0, "fit the GMM and run SVGD in a PCA space of this size, below the feature dimension; "
                           "0 = auto: min(points, particles) // 8, at least 2, at most points - 1 (32 k-shot "
                           "examples -> 4); the discarded directions keep each particle's source example's residual")
    density_data: str = knob("kshot", "kshot (strict) | kshot+unlabeled (adds the dataset's other train texts)",
                             ("kshot", "kshot+unlabeled"))
    unlabeled_limit: int = knob(2000, "at most this many extra unlabeled texts (seeded sample)")
    n_particles: int = knob(0, "0 = one particle per k-shot train example")
    iterations: int = knob(1000, "SVGD iterations")
    step_size: float = knob(0.01, "SVGD step, relative to sqrt(mean per-dimension variance) of the fitted data")
    alpha: float = knob(0.9, "AdaGrad momentum of the squared-gradient history")
    log_every: int = knob(10, "SVGD diagnostics (mean log-density, KSD) interval")
    record_every: int = knob(0, "keep particle snapshots every N iterations; 0 = off")
    subset: int = knob(1, "particles averaged per prompt slot; 1 = one particle per slot (keeps their spread); "
                          "0 = number of classes (the original's rule: slots shrink toward the particle mean)")
    offset_scale: float = knob(1.0, "resample/ensemble: scale of the particle offsets added to the base prompt")
    max_length: int = knob(128, "tokens per example when computing features")
    device: str = knob("auto", "SVGD device: auto (the backbone's) | cpu | cuda")

    def __post_init__(self):
        check_choices(self, "bayes")
        check_positive(self, "bayes", ("components", "pca_dim", "n_particles", "subset", "log_every", "record_every",
                                       "unlabeled_limit"), minimum=0)
        check_positive(self, "bayes", ("iterations",))
        for name in ("step_size", "offset_scale", "max_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"bayes.{name} must be > 0, got {getattr(self, name)}")
        if self.reg_covar < 0:
            raise ConfigError(f"bayes.reg_covar must be >= 0, got {self.reg_covar}")
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"bayes.alpha must be in [0, 1), got {self.alpha}")


@dataclass
class FewShotConfig:
    """``fewshot``: datasets x methods x seeds. The method sections (meta, pseudo, labelled, selfsup, supmer, bayes)
    configure the inits that need them; the same sections configure ``meta-train``."""

    datasets: list[str] = knob(["sst2"], "dataset names on the search path, folders, files, or hub names")
    methods: list[str] = knob(["zero-shot", "linear-probe", "random", "vocab"], "baselines and/or registered inits")
    k: int = knob(16, "examples per class for train, and again for dev")
    seeds: list[int] = knob(list(DEFAULT_SEEDS), "k-shot split and init seeds")
    test_limit: int | None = knob(None, "cap on each test set for a quick look (a seeded subsample, the same for "
                                  "every seed and method); None = the full test set")
    out: str = knob("runs/fewshot", "run directory")
    overwrite: bool = knob(False, "replace an existing run directory")
    backbone: BackboneConfig = section(BackboneConfig, "the frozen model")
    prompt: PromptConfig = section(PromptConfig, "the soft prompt")
    task: TaskConfig = section(TaskConfig, "templates and label words")
    tune: TuneConfig = section(TuneConfig, "downstream prompt tuning")
    meta: MetaConfig = section(MetaConfig, "meta-training of the meta inits")
    pseudo: PseudoConfig = section(PseudoConfig, "MetaPT pseudo-tasks (metapt, multitask with pseudo tasks)")
    labelled: LabelledConfig = section(LabelledConfig, "MPT labelled sources (mpt-*, multitask)")
    selfsup: SelfSupConfig = section(SelfSupConfig, "SUPMER's self-supervised tasks (supmer, supmer+psi)")
    supmer: SupmerConfig = section(SupmerConfig, "SUPMER's learner (supmer, supmer+psi)")
    bayes: BayesConfig = section(BayesConfig, "BayesPrompt's distribution (bayes)")
    recipe: dict = knob({}, "the recipe the run started from (--recipe): name, scale, sha256 of its file; {} = none")

    def __post_init__(self):
        check_positive(self, "fewshot", ("k",))
        if self.test_limit is not None and (isinstance(self.test_limit, bool) or not isinstance(self.test_limit, int)
                                            or self.test_limit < 1):
            raise ConfigError(f"test_limit must be None or an integer >= 1, got {self.test_limit!r}")
        for name in ("seeds", "datasets", "methods"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must name at least one {name[:-1]}")


@dataclass
class MetaTrainConfig:
    """``meta-train``: a prompt meta-trained by a registered learner over a registered task source."""

    method: str = knob("fomaml", "a registered meta-learner: maml | fomaml | reptile | multitask | supmer ...")
    source: str = knob("pseudo", "a registered task source: pseudo | labelled | selfsup ...")
    target: str | None = knob(None, "downstream dataset: decontamination, leave-one-out, the pseudo-task format")
    backbone: BackboneConfig = section(BackboneConfig, "the frozen model")
    prompt: PromptConfig = section(PromptConfig, "the soft prompt (init = the starting point of P)")
    task: TaskConfig = section(TaskConfig, "templates and label words of the target")
    meta: MetaConfig = section(MetaConfig, "the meta-training loop")
    pseudo: PseudoConfig = section(PseudoConfig, "source pseudo: MetaPT pseudo-tasks")
    labelled: LabelledConfig = section(LabelledConfig, "source labelled: MPT labelled sources")
    selfsup: SelfSupConfig = section(SelfSupConfig, "source selfsup: SUPMER's self-supervised tasks")
    supmer: SupmerConfig = section(SupmerConfig, "learner supmer: ψ and curriculum mixup")
    source_options: dict = knob({}, "free-form options for third-party task sources")
    out: str = knob("runs/meta", "run directory")
    recipe: dict = knob({}, "the recipe the run started from (--recipe): name, scale, sha256 of its file; {} = none")

    @staticmethod
    def migrate_old(data: dict) -> None:
        """Move SUPMER's options out of ``source_options``, where they lived before the ``selfsup`` and ``supmer``
        sections existed (``supmer.<field>``; SelfSupConfig fields of a ``selfsup`` run, ``k_support``/``k_query``
        now ``per_task_*``, ``max_length``/``seed`` now ``meta.*``), in place; other keys stay."""
        opts = data.get("source_options")
        if not isinstance(opts, dict):
            return
        selfsup = {f.name for f in fields(SelfSupConfig)}
        renamed = {"k_support": "per_task_support", "k_query": "per_task_query"}
        for key in list(opts):  # old values may be command-line strings ("false", "6", "nsp,scc")
            if key.startswith("supmer."):
                data.setdefault("supmer", {}).setdefault(key.split(".", 1)[1], literal(opts.pop(key)))
            elif data.get("source") == "selfsup" and key in ("max_length", "seed"):
                data.setdefault("meta", {}).setdefault(key, literal(opts.pop(key)))
            elif data.get("source") == "selfsup" and renamed.get(key, key) in selfsup:
                value = literal(opts.pop(key))
                if key in ("types", "exclude") and isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                data.setdefault("selfsup", {}).setdefault(renamed.get(key, key), value)

    def __post_init__(self):
        if self.method == "supmer" and self.meta.inner_optimizer != "sgd":
            raise ConfigError(f"meta.inner_optimizer={self.meta.inner_optimizer!r} does not apply to method 'supmer' "
                              "(its inner step is its own, P - inner_lr * psi(g)): leave it at 'sgd'")
