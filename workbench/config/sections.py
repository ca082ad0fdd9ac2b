"""The configuration dataclasses: one section per component, one name per knob, composed into the run configs of
``fewshot`` (:class:`FewShotConfig`) and ``meta-train`` (:class:`MetaTrainConfig`). Every field carries its help text
(``knob``), from which the command line builds its options."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from workbench.config.base import DEFAULT_SEEDS, ConfigError, knob, literal, section

TASK_TYPES = ("nsp", "nss", "scsp", "scss", "scc")  # SUPMER's self-supervised task types
LETTERS = "ABCDEFGHIJ"  # multiple-choice option letters (bounds selfsup.n_options)
CHOICE_TYPES = ("nss", "scss", "scc")  # the task types with options (selfsup.n_options, selfsup.options_per_type)


def check_choices(cfg, prefix: str) -> None:
    """Refuse a value outside a field's declared ``choices``, naming ``prefix.field``."""
    for f in fields(cfg):
        allowed = f.metadata.get("choices")
        if allowed is not None and getattr(cfg, f.name) not in allowed:
            raise ConfigError(f"{prefix}.{f.name} must be one of {list(allowed)}, got {getattr(cfg, f.name)!r}")


def check_positive(cfg, prefix: str, names: tuple, minimum=1) -> None:
    for name in names:
        if getattr(cfg, name) < minimum:
            raise ConfigError(f"{prefix}.{name} must be >= {minimum}, got {getattr(cfg, name)}")


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
class MetaConfig:
    """The meta-training loop: the same section in ``meta-train``, in the meta inits of ``fewshot``/``benchmark``
    and in the notebooks."""

    steps: int = knob(100, "meta-steps (outer updates)")
    meta_batch: int = knob(4, "tasks per meta-step (one batched backbone pass)")
    support: int = knob(2, "support examples per class of a task (per cluster for pseudo-tasks; SUPMER's tasks: "
                        "selfsup.per_task_support)")
    query: int = knob(2, "query examples per class of a task (SUPMER's tasks: selfsup.per_task_query)")
    inner_lr: float = knob(0.1, "step size of the inner optimizer on the prompt")
    inner_steps: int = knob(0, "inner-loop steps on each task's support set; 0 = auto: 5 for reptile (one step would "
                            "make it joint training), 1 for the others")
    inner_optimizer: str = knob("sgd", "the inner loop's optimizer (maml, fomaml, reptile, meta-validation); adam: "
                                "bias-corrected, no weight decay, fresh state per task, like deployment's tuner",
                                ("sgd", "adam"))
    optimizer: str = knob("adamw", "outer optimizer", ("adam", "adamw", "adafactor"))
    lr: float = knob(3e-2, "outer learning rate")
    weight_decay: float = knob(0.0, "outer weight decay")
    schedule: str = knob("constant", "outer learning-rate schedule (linear: decay to 0)", ("constant", "linear"))
    grad_clip: float = knob(1.0, "max norm of the meta-gradient; 0 = off")
    max_length: int = knob(48, "tokens per text during meta-training")
    eval_every: int = knob(0, "meta-validation interval in steps; 0 = steps // 4 (step 0 and the last always)")
    patience: int = knob(0, "stop after this many meta-validations without a better query accuracy after "
                            "adaptation (ties: lower loss); 0 = off, the planned steps all run")
    select: str = knob("best", "the prompt written: best (on meta-validation, step 0 included) or last",
                       ("best", "last"))
    val_tasks: int = knob(8, "fixed meta-validation episodes")
    checkpoint_every: int = knob(0, "checkpoint interval in steps; 0 = steps // 4 (and the last step)")
    seed: int = knob(0, "seed of task sampling and of the starting prompt")
    batched: bool = knob(True, "one backbone pass per meta-batch (false: one per task; same math)")
    metapt_method: str = knob("fomaml", "the metapt init's meta-learner (a registered learner)")
    multitask_source: str = knob("labelled", "the multitask init's tasks", ("labelled", "pseudo"))
    cache: bool = knob(True, "meta inits: reuse a prompt trained with the same configuration ($WORKBENCH_CACHE/meta)")
    shared: bool = knob(True, "meta inits that do not depend on the target (supmer, supmer+psi; metapt when "
                        "pseudo.template is not 'target' and pseudo.tasks is clusters-as-classes): one training for every target dataset of the run, "
                        "decontaminated against the train and test texts of all of them")

    def __post_init__(self):
        check_choices(self, "meta")
        check_positive(self, "meta", ("steps", "meta_batch", "support", "query", "max_length", "val_tasks"))
        check_positive(self, "meta", ("inner_steps", "eval_every", "checkpoint_every", "patience"), minimum=0)
        if not (0 < self.inner_lr < math.inf and 0 < self.lr < math.inf):
            raise ConfigError(f"meta.inner_lr and meta.lr must be finite and > 0, got {self.inner_lr} and {self.lr}")

    @property
    def eval_interval(self) -> int:
        return self.eval_every or max(1, self.steps // 4)

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or max(1, self.steps // 4)


@dataclass
class PseudoConfig:
    """MetaPT's pseudo-tasks: an unlabeled corpus clustered into K groups, N clusters per episode."""

    corpus: str = knob("brown", "unlabeled corpus: a name on the data path or a .jsonl/.txt file")
    clustering: str | None = knob(None, "a saved `workbench cluster` directory (overrides the options below)")
    features: str = knob("tfidf", "cluster on: backbone embeddings (K-means), tfidf (K-means on TF-IDF+SVD), lda",
                         ("backbone", "tfidf", "lda"))
    n_clusters: int = knob(16, "K clusters")
    limit: int = knob(4000, "seeded random sample of the corpus (texts with >= min_words words)")
    min_words: int = knob(6, "shortest corpus text used")
    n_way: int = knob(3, "N clusters per episode")
    tasks: str = knob("clusters-as-classes", "episode construction: clusters-as-classes (N clusters are an "
                      "episode's N classes) | labels-within-clusters (MetaPT/PPT: one cluster is one task, its texts "
                      "pseudo-labelled in the target's label space by the backbone's zero-shot prediction)",
                      ("clusters-as-classes", "labels-within-clusters"))
    label: str = knob("words", "how a cluster is named (keywords, medoid: similarity head only)",
                      ("words", "keywords", "medoid"))
    template: str = knob("target", "task format: target (the target dataset's), generic, or a template string")
    val_fraction: float = knob(0.2, "members of each cluster held out for meta-validation episodes")
    svd_dims: int = knob(64, "tfidf features: TruncatedSVD dimensions")
    exclude: list[str] = knob([], "datasets whose train+test texts are never used (besides the target)")

    def __post_init__(self):
        check_choices(self, "pseudo")
        check_positive(self, "pseudo", ("n_way",), minimum=2)
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"pseudo.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass
class LabelledConfig:
    """MPT's labelled source tasks: one task per (source dataset, k-shot seed)."""

    sources: str = knob("auto", "auto (learnable sources most similar to the target) | leave-one-out | same-type | "
                                "cross-type | pairs->single")
    datasets: list[str] = knob([], "explicit source datasets (override `sources`)")
    k: int = knob(16, "k-shot split size per class of each source task")
    seeds: list[int] = knob(list(DEFAULT_SEEDS), "one task per (dataset, seed)")
    auto_top: int = knob(3, "sources=auto: keep this many learnable candidates, the most similar to the target")
    auto_alpha: float = knob(0.05, "sources=auto: a candidate is learnable when the bare model or a linear probe "
                                   "beats chance by a one-sided binomial test at auto_alpha/2 (Bonferroni over 2)")

    def __post_init__(self):
        check_positive(self, "labelled", ("k", "auto_top"))
        if not (isinstance(self.auto_alpha, (int, float)) and 0 < self.auto_alpha < 1):
            raise ConfigError(f"labelled.auto_alpha must be in (0, 1), got {self.auto_alpha!r}")


@dataclass
class SelfSupConfig:
    """SUPMER's five self-supervised task types over a clustered unlabeled corpus (the ``selfsup`` source)."""

    corpus: str = knob("brown", "unlabeled corpus: a name on the data path or a .jsonl/.txt file")
    types: list[str] = knob(list(TASK_TYPES), f"any subset of {', '.join(TASK_TYPES)}")
    n_clusters: int = knob(16, "K clusters of the corpus")
    cluster_method: str = knob("kmeans", "clustering of the corpus", ("kmeans", "lda"))
    limit: int | None = knob(4000, "seeded random sample of this many texts to cluster (None = all)")
    min_words: int = knob(4, "shortest corpus text used")
    per_task_support: int = knob(4, "support examples per task, labels balanced (the types differ in class count)")
    per_task_query: int = knob(4, "query examples per task (the augmentation set has as many)")
    n_options: int = knob(4, "options of multiple choice (nss, scss) and of centroid classification (scc)")
    options_per_type: dict = knob({}, "per-type option counts overriding n_options, e.g. {'nss': 6} (SUPMER/PPT: nss "
                                  "6, scss 4, scc 4); keys among nss, scss, scc; {} = n_options for every type")
    anchor_words: int = knob(30, "multiple choice: anchor cut to this many words")
    option_words: int = knob(15, "multiple choice: each option cut to this many words")
    val_fraction: float = knob(0.1, "documents held out for meta-validation episodes")
    skip_missing_docs: bool = knob(False, "adjacency types on a corpus without doc ids: drop them with a warning")
    exclude: list[str] = knob([], "datasets whose train+test texts are never used (besides the target)")

    def __post_init__(self):
        bad = [t for t in self.types if t not in TASK_TYPES]
        if bad or not self.types:
            raise ConfigError(f"selfsup.types must be a non-empty subset of {list(TASK_TYPES)}, got {self.types}")
        check_choices(self, "selfsup")
        check_positive(self, "selfsup", ("n_clusters", "n_options"), minimum=2)
        check_positive(self, "selfsup", ("per_task_support", "per_task_query"))
        if self.n_options > len(LETTERS):
            raise ConfigError(f"selfsup.n_options must be <= {len(LETTERS)}, got {self.n_options}")
        self._check_options_per_type()
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"selfsup.val_fraction must be in (0, 1), got {self.val_fraction}")


    def _check_options_per_type(self):
        per = self.options_per_type
        bad = [t for t in per if t not in CHOICE_TYPES]
        if bad:
            raise ConfigError(f"selfsup.options_per_type: {bad} have no options; its keys must be among "
                              f"{list(CHOICE_TYPES)}, got {per}")
        wrong = {t: n for t, n in per.items() if isinstance(n, bool) or not isinstance(n, int)
                 or not 2 <= n <= len(LETTERS)}
        if wrong:
            raise ConfigError(f"selfsup.options_per_type: option counts must be integers from 2 to {len(LETTERS)}, "
                              f"got {wrong}")

    def options(self, t: str) -> int:
        """The option count of task type ``t`` (``options_per_type``, else ``n_options``)."""
        return self.options_per_type.get(t, self.n_options)

    def options_knob(self, t: str) -> str:
        """The knob that sets type ``t``'s option count, with its value, for messages."""
        if t in self.options_per_type:
            return f"selfsup.options_per_type[{t!r}]={self.options_per_type[t]}"
        return f"selfsup.n_options={self.n_options}"


@dataclass
class SupmerConfig:
    """SUPMER's learner: the meta-gradient regulariser ψ and curriculum mixup."""

    psi: bool = knob(True, "learn and apply ψ in the inner step (false: the ablation without ψ)")
    mixup: bool = knob(True, "curriculum mixup on the query (false: plain cross-entropy)")
    rank: int = knob(32, "ψ low-rank width")
    layers: int = knob(2, "ψ residual low-rank layers")
    gate_hidden: int = knob(24, "ψ gate MLP width")
    norm: str = knob("global", "how T(g) is rescaled to g's magnitude (global: Frobenius)", ("global", "row"))
    psi_lr: float = knob(1e-3, "ψ's Adam learning rate")
    psi_clip: float = knob(1.0, "max gradient norm of ψ's parameters; 0 = off")
    gate_weight: float = knob(1.0, "weight of the gate regression")
    alpha: float = knob(1.0, "λ ~ Beta(alpha, alpha * (2^s - 1))")
    ema: float = knob(0.5, "curriculum EMA factor of s")
    seed: int = knob(0, "λ sampling seed")

    def __post_init__(self):
        check_choices(self, "supmer")
        check_positive(self, "supmer", ("rank", "gate_hidden"))
        check_positive(self, "supmer", ("layers",), minimum=0)


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
