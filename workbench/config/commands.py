"""Configs of the commands that are not runs of the few-shot harness or of meta-training: ``cluster``,
``supmer-dg`` and ``explore``. Same sections and knob names as everywhere else."""
from __future__ import annotations

from dataclasses import dataclass, field

from workbench.config.base import DEFAULT_SEEDS, ConfigError, check_choices, check_positive, knob, section
from workbench.config.sections import BackboneConfig, PromptConfig, TaskConfig, TuneConfig


@dataclass
class ClusterConfig:
    """``cluster``: embed an unlabeled corpus and cluster it into auxiliary tasks."""

    corpus: str = knob("brown", "corpus name on the data search path, or a .jsonl/.txt file")
    method: str = knob("kmeans", "clustering", ("kmeans", "lda"))
    n_clusters: int = knob(16, "number of clusters K")
    seed: int = knob(0, "clustering (and limit sampling) seed")
    limit: int | None = knob(None, "random sample of at most N texts (after min_words)")
    min_words: int = knob(4, "drop texts with fewer words")
    max_length: int = knob(128, "tokens per text")
    batch_size: int = knob(64, "texts per forward pass")
    cache_dir: str | None = knob(None, "embedding cache (default $WORKBENCH_CACHE or ~/.cache/workbench)")
    drop_empty: bool = knob(False, "drop empty clusters (LDA) instead of failing")
    backbone: BackboneConfig = section(BackboneConfig, "the frozen model")
    out: str = knob("runs/cluster", "run directory")
    overwrite: bool = knob(False, "replace an existing run directory")

    def __post_init__(self):
        check_choices(self, "cluster")
        check_positive(self, "cluster", ("n_clusters", "max_length", "batch_size"))


@dataclass
class DomainGenConfig:
    """``supmer-dg``: tune on one sentiment domain with each init, test on the others."""

    methods: list[str] = knob(["random", "supmer", "supmer+psi"], "registered inits")
    source: str = knob("sst2", "the dataset the prompts are tuned on")
    targets: list[str] = knob(["mr", "mpqa", "yelp5"], "datasets the tuned prompts are tested on")
    meta_run: str | None = knob(None, "a `meta-train --method supmer` run whose prompt/ψ the supmer inits use")
    k: int = knob(16, "examples per class for train, and again for dev")
    seeds: list[int] = knob(list(DEFAULT_SEEDS), "k-shot split and init seeds")
    test_limit: int | None = knob(None, "cap on each test set (the seeded test subsample)")
    backbone: BackboneConfig = section(BackboneConfig, "the frozen model")
    prompt: PromptConfig = section(PromptConfig, "the soft prompt")
    tune: TuneConfig = section(TuneConfig, "downstream prompt tuning")
    out: str = knob("runs/supmer-dg", "run directory")
    overwrite: bool = knob(False, "replace an existing run directory")

    def __post_init__(self):
        check_positive(self, "supmer-dg", ("k",))


@dataclass
class ExploreConfig:
    """``explore``: the embedding-space explorer's figures from run directories."""

    runs: list[str] = knob([], "run directories with learned prompts")
    dataset: str | None = knob(None, "only this dataset's prompts")
    projection: str = knob("umap", "2-D projection", ("umap", "pca"))
    neighbours: int = knob(5, "nearest tokens per prompt vector")
    n_vocab: int = knob(10000, "frequent tokens in the token map")
    method: str | None = knob(None, "init whose prompt the sentence view uses (default: the first found)")
    seed: int | None = knob(None, "seed of that prompt (default: the first found)")
    n_examples: int = knob(200, "test examples in the sentence view")
    match: str = knob("aligned", "slot matching of the prompt-similarity view", ("aligned", "hungarian"))
    cluster_dir: str | None = knob(None, "a `cluster` run to draw with the target data")
    bayes_dir: str | None = knob(None, "a `bayes` run (or saved distribution) whose particles to draw")
    out: str = knob("runs/explore", "folder for the HTML files and nearest_words.csv")
    images: list[str] = knob([], "also write each figure as these images: png and/or svg (kaleido + Chromium)")

    def __post_init__(self):
        check_choices(self, "explore")
        bad = [f for f in self.images if f not in ("png", "svg")]
        if bad:
            raise ConfigError(f"explore.images: unknown format(s) {bad}; expected any of ['png', 'svg']")


@dataclass
class BayesReportConfig:
    """``bayes-report``: one markdown report over several ``bayes`` runs."""

    runs: list[str] = knob([], "run directories written by `workbench bayes`")
    out: str | None = knob(None, "write the markdown report here (default: print it)")
    rows: str | None = knob(None, "also write the combined rows here, one JSON object per line")
    title: str = knob("BayesPrompt modes against baselines", "the report's title")


@dataclass
class SimilarityConfig:
    """``similarity``: how alike is each target to its sources (mean embeddings, tuned per-task prompts), and does
    that predict a meta init's gain (read from fewshot/benchmark run directories)?"""

    targets: list[str] = knob([], "target datasets")
    sources: str = knob("leave-one-out", "leave-one-out | same-type | cross-type | pairs->single, or datasets (a,b)")
    runs: list[str] = knob([], "fewshot or benchmark run directories whose rows give each target's gain")
    method: str | None = knob(None, "the meta init whose gain over `baseline` is read from those runs")
    baseline: str = knob("random", "the init the gain is measured against")
    k: int = knob(16, "examples per class of each task's k-shot train split (and again for dev)")
    seeds: list[int] = knob([13], "one prompt per task per seed, cosines averaged")
    n_texts: int = knob(256, "train texts per dataset (seeded sample) for the mean embedding")
    embed_max_length: int = knob(128, "tokens per text for the embedding")
    prompts: bool = knob(True, "also tune per-task prompts (false: embedding similarity only, much faster)")
    init: str = knob("random", "the shared init every task's prompt starts from (a registered init)")
    decontaminate: str = knob("all", "drop source texts in the target's test + k-shot splits, or in every target "
                              "split (what meta-training does)", ("test+fewshot", "all"))
    backbone: BackboneConfig = section(BackboneConfig, "the frozen model")
    prompt: PromptConfig = section(PromptConfig, "the per-task prompts")
    task: TaskConfig = section(TaskConfig, "templates and label words")
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(steps=50, patience=0),
                             metadata={"help": "tuning of the per-task prompts"})
    out: str = knob("runs/similarity", "run directory")
    overwrite: bool = knob(False, "replace an existing run directory")

    def __post_init__(self):
        check_choices(self, "similarity")
        check_positive(self, "similarity", ("k", "n_texts"))
        if not self.seeds:
            raise ConfigError("similarity.seeds must name at least one seed")
