"""The meta-learning sections of the configuration: the meta-training loop (:class:`MetaConfig`) and the task
sources it draws episodes from: MetaPT's pseudo-tasks (:class:`PseudoConfig`), MPT's labelled sources
(:class:`LabelledConfig`), SUPMER's self-supervised tasks (:class:`SelfSupConfig`) and ψ and curriculum mixup
(:class:`SupmerConfig`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.config.base import DEFAULT_SEEDS, ConfigError, check_choices, check_positive, knob

TASK_TYPES = ("nsp", "nss", "scsp", "scss", "scc")  # SUPMER's self-supervised task types
LETTERS = "ABCDEFGHIJ"  # multiple-choice option letters (bounds selfsup.n_options)
CHOICE_TYPES = ("nss", "scss", "scc")  # the task types with options (selfsup.n_options, selfsup.options_per_type)


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
