"""Task sources for meta-training: where the episodes (:class:`workbench.meta.Episode`) come from.

A *source* has ``.sample(rng: numpy.random.Generator, n_tasks, split="train") -> list[Episode]`` and ``.describe()
-> dict`` (JSON: sizes, decontamination counts, hashes). ``split="val"`` draws meta-validation episodes from data the
``"train"`` episodes never use; a source without a ``split`` keyword gets validation episodes from its training pool
(the loop records that). Sources are built by factories registered with :func:`register_source`:
``factory(cfg, backbone, target=None) -> source`` where ``cfg`` is a ``metatrain.MetaTrainConfig`` (its ``pseudo``,
``labelled`` and free-form ``source_options`` sections) and ``target`` the downstream dataset name or None.

Built in:

- ``pseudo`` (MetaPT): an unlabeled corpus clustered into K groups; an episode is N clusters (N-way) with k support
  and q query sentences each, labels 0..N-1 in a random order. How a cluster is *named* depends on the head family:
  the similarity head (encoder) embeds a label text per cluster (``label="keywords"``: its top TF-IDF keywords,
  ``corpus.pseudo_label_texts``; ``"medoid"``: its medoid sentence; ``"words"``: one keyword word), put through a
  label template; masked/seq2seq/causal LMs predict one label *word* per cluster (``corpus.pseudo_label_words``) at
  the mask of a template, i.e. a TaskFormat whose verbalizer is the cluster words. ``template="target"`` (default
  when a target is named) uses the target's own format, e.g. ``"{text} It was {mask}."`` / ``"It was {label}."``
  with the cluster word, so the prompt meets pseudo-tasks in the downstream format.
  Features (``pseudo.features``): ``backbone`` (K-means on the frozen model's sentence embeddings; measured: MiniLM
  already separates these, ~93% at step 0, so they teach little), ``tfidf`` (K-means on TF-IDF reduced by SVD) or
  ``lda`` (LDA topics over bag-of-words); both of the last two are features the backbone does not itself produce.
- ``labelled`` (MPT): a task is (dataset, k-shot split seed); support from the split's train part, query from its
  dev part (meta-validation: query from the source's test split). Each dataset keeps its own head and format.

Decontamination: every source text whose normalised form occurs in the target's test split or anywhere in its train
split (a superset of every k-shot draw, so one meta init serves all seeds) is dropped; counts go to ``describe()``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import ConfigError, PromptConfig, TaskConfig
from .data import Dataset, Example, decontaminate, kshot_split, list_datasets, load_dataset, normalize_text, texts_of
from .meta import Episode

# ----------------------------------------------------------------------------------------------- dataset types
TYPES = {"sst2": "sentiment", "sst5": "sentiment", "mr": "sentiment", "mpqa": "sentiment", "yelp5": "sentiment",
         "cr": "sentiment", "agnews": "topic", "subj": "subjectivity", "cola": "acceptability",
         "rte": "pair", "mrpc": "pair", "qnli": "pair", "snli": "pair"}
FAMILIES = [{"sst2", "sst5"}]  # the same sentences under other labels: never a source for one another
CONFIGURATIONS = {
    "leave-one-out": "every dataset on the data path except the target (and its family)",
    "same-type": "datasets of the target's type (e.g. other sentiment sets -> a sentiment target)",
    "cross-type": "datasets of every other type (e.g. non-sentiment -> sentiment)",
    "pairs->single": "the sentence-pair datasets",
}


def dataset_type(name: str) -> str:
    return TYPES.get(Path(str(name)).name.lower(), "unknown")


def family_of(name: str) -> set[str]:
    key = Path(str(name)).name.lower()
    return next((f for f in FAMILIES if key in f), {key})


def resolve_sources(target: str | None, configuration: str = "leave-one-out", datasets: list[str] | None = None,
                    available: list[str] | None = None) -> list[str]:
    """Source dataset names for ``target``: an explicit ``datasets`` list, or a named configuration over the
    datasets on the data path. A target (or a member of its family) among explicit sources is refused (leakage)."""
    fam = family_of(target) if target else set()
    if datasets:
        bad = [d for d in datasets if Path(str(d)).name.lower() in fam]
        if bad:
            raise ConfigError(f"target {target!r} is among its own sources {bad} (same dataset or family "
                              f"{sorted(fam)}): that leaks the target into meta-training")
        return list(datasets)
    if configuration not in CONFIGURATIONS:
        raise ConfigError(f"labelled.sources must be one of {sorted(CONFIGURATIONS)} (or set labelled.datasets), "
                          f"got {configuration!r}")
    pool = [d for d in (available if available is not None else list_datasets()) if d.lower() not in fam]
    ttype = dataset_type(target) if target else "unknown"
    pick = {"leave-one-out": lambda d: True, "same-type": lambda d: dataset_type(d) == ttype != "unknown",
            "cross-type": lambda d: dataset_type(d) not in (ttype, "unknown"),
            "pairs->single": lambda d: dataset_type(d) == "pair"}[configuration]
    out = [d for d in pool if pick(d)]
    if not out:
        raise ConfigError(f"source configuration {configuration!r} gives no datasets for target {target!r} "
                          f"(type {ttype}) among {pool}")
    return out


def target_texts(target: str | None) -> tuple[set[str], dict]:
    """Normalised texts of the target's test and train splits (what every source is decontaminated against)."""
    if not target:
        return set(), {}
    ds = load_dataset(target)
    exs = ds.splits["test"] + ds.splits["train"]
    norm = {normalize_text(t) for t in texts_of(exs)} - {""}
    return norm, {"name": ds.name, "n_texts": len(norm), "file_hashes": ds.file_hashes()}


def _clean(examples: list[Example], targets: set[str]) -> tuple[list[Example], int]:
    return decontaminate(examples, targets) if targets else (list(examples), 0)


def _per_class(rng, examples: list[Example], n_classes: int, n: int, what: str) -> list[Example]:
    by = [[e for e in examples if e.label == c] for c in range(n_classes)]
    if any(len(b) < n for b in by):
        raise ConfigError(f"{what}: needs {n} examples per class, has {[len(b) for b in by]}")
    out = [b[i] for b in by for i in rng.choice(len(b), n, replace=False)]
    return [out[i] for i in rng.permutation(len(out))]


# ----------------------------------------------------------------------------------------------- registry
SOURCES: dict[str, tuple[Callable, str]] = {}


def register_source(name: str, description: str = ""):
    """Register ``factory(cfg, backbone, target=None) -> source`` under ``name``."""
    def deco(factory):
        if name in SOURCES:
            raise ValueError(f"task source {name!r} is already registered")
        SOURCES[name] = (factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory
    return deco


def make_source(name: str, cfg, backbone, target: str | None = None):
    if name not in SOURCES:
        raise ConfigError(f"unknown task source {name!r}; registered: {sorted(SOURCES)}")
    return SOURCES[name][0](cfg, backbone, target=target)


@dataclass
class PseudoConfig:
    corpus: str = "brown"  # name on the data path or a .jsonl/.txt file
    clustering: str | None = None  # a saved `python -m workbench cluster` directory (overrides the options below)
    features: str = "tfidf"  # backbone (K-means on model embeddings) | tfidf (K-means on TF-IDF+SVD) | lda
    n_clusters: int = 16  # K
    limit: int = 4000  # seeded random sample of the corpus (texts with >= min_words words)
    min_words: int = 6
    n_way: int = 3  # N clusters per episode
    label: str = "words"  # how a cluster is named: words | keywords | medoid (the last two: similarity head only)
    template: str = "target"  # target (the target dataset's format) | generic | an explicit template string
    val_fraction: float = 0.2  # members of each cluster held out for meta-validation episodes
    svd_dims: int = 64  # tfidf features: TruncatedSVD dimensions

    def __post_init__(self):
        if self.features not in ("backbone", "tfidf", "lda"):
            raise ConfigError(f"pseudo.features must be backbone | tfidf | lda, got {self.features!r}")
        if self.label not in ("words", "keywords", "medoid"):
            raise ConfigError(f"pseudo.label must be words | keywords | medoid, got {self.label!r}")
        if self.n_way < 2:
            raise ConfigError(f"pseudo.n_way must be >= 2, got {self.n_way}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"pseudo.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass
class LabelledConfig:
    sources: str = "leave-one-out"  # leave-one-out | same-type | cross-type | pairs->single
    datasets: list[str] = field(default_factory=list)  # explicit source datasets (override `sources`)
    k: int = 16  # k-shot split size per class of each source task
    seeds: list[int] = field(default_factory=lambda: [13, 21, 42, 87, 100])  # one task per (dataset, seed)


class SubsetHead:
    """A head scoring only some of another head's classes (a pseudo-task's N clusters out of K): same backbone
    pass, logits restricted to ``cols`` (class i of the episode = column cols[i])."""

    def __init__(self, head, cols):
        self.head, self.cols, self.n_classes = head, torch.as_tensor(cols, device=head.bb.device), len(cols)

    def __getattr__(self, name):  # bb, offset, use_tt, batch, encode_pass, joinable, ...
        return getattr(self.head, name)

    def score(self, batch, out, prompt):
        logits, feats = self.head.score(batch, out, prompt)
        return logits[:, self.cols], feats

    def forward(self, batch, prompt):
        logits, feats = self.head.forward(batch, prompt)
        return logits[:, self.cols], feats


def _hash(obj) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _cluster_texts(texts, pc: PseudoConfig, seed: int, backbone, progress: bool):
    from . import corpus
    if pc.features == "backbone":
        feats = corpus.embed_texts(backbone, texts, progress=progress)
        return corpus.cluster(feats, texts, "kmeans", pc.n_clusters, seed)
    if pc.features == "lda":
        return corpus.cluster(None, texts, "lda", pc.n_clusters, seed, drop_empty=True)
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    X = TfidfVectorizer(stop_words="english", min_df=2, max_df=0.5, sublinear_tf=True).fit_transform(texts)
    dims = max(2, min(pc.svd_dims, X.shape[1] - 1, len(texts) - 1))
    feats = TruncatedSVD(dims, random_state=seed).fit_transform(X)
    return corpus.cluster(feats, texts, "kmeans", pc.n_clusters, seed)


class PseudoSource:
    """MetaPT pseudo-tasks from a clustered unlabeled corpus (see the module docstring)."""

    def __init__(self, clustering, texts: list[str], backbone, pc: PseudoConfig, support: int, query: int,
                 max_length: int, prompt_cfg: PromptConfig, target_fmt=None, task_cfg: TaskConfig | None = None,
                 seed: int = 0, info: dict | None = None):
        from .corpus import ClusterError, pseudo_label_texts, pseudo_label_words
        from .heads import make_head
        from .templates import SIMILARITY_TEMPLATES, TaskFormat, check_template
        self.pc, self.support, self.query, self.info = pc, support, query, dict(info or {})
        assign = np.asarray(clustering.assignments)
        if len(assign) != len(texts):
            raise ConfigError(f"clustering has {len(assign)} assignments but the corpus has {len(texts)} texts")
        sizes = np.bincount(assign, minlength=clustering.k)
        if (sizes == 0).any():
            raise ClusterError(f"cluster(s) {np.flatnonzero(sizes == 0).tolist()} of K={clustering.k} are empty; "
                               "recluster with a lower K (or drop empty clusters)")
        need = support + query
        if len(texts) < pc.n_way * need:
            raise ConfigError(f"the corpus has {len(texts)} texts, too few for {pc.n_way}-way episodes of "
                              f"{support}+{query} sentences per cluster ({pc.n_way * need} needed)")
        rng = np.random.default_rng(seed)
        self.members = {"train": {}, "val": {}}
        for c in range(clustering.k):
            idx = rng.permutation(np.flatnonzero(assign == c))
            n_val = int(round(len(idx) * pc.val_fraction))
            self.members["val"][c], self.members["train"][c] = idx[:n_val], idx[n_val:]
        self.eligible = {s: [c for c, m in self.members[s].items() if len(m) >= need] for s in ("train", "val")}
        if len(self.eligible["train"]) < pc.n_way:
            raise ConfigError(f"only {len(self.eligible['train'])} of K={clustering.k} clusters have >= {need} "
                              f"training sentences (k={support} support + q={query} query; sizes {sizes.tolist()}), "
                              f"fewer than pseudo.n_way={pc.n_way}: lower n_way/k/q/K or use a larger corpus")
        self.texts, self.clustering = texts, clustering
        family = backbone.family
        if pc.label != "words" and family != "encoder":
            raise ConfigError(f"pseudo.label={pc.label!r} names clusters by label texts, which only the similarity "
                              f"head (encoder) embeds; a {family} backbone predicts one word: use pseudo.label=words")
        words = pseudo_label_words(clustering)
        names = words if pc.label == "words" else pseudo_label_texts(clustering, pc.label)
        task_cfg = task_cfg or TaskConfig()
        if pc.template == "target" and target_fmt is not None:
            template, label_template = target_fmt.template, target_fmt.label_template
        elif pc.template in ("target", "generic"):
            template = SIMILARITY_TEMPLATES["single"] if family == "encoder" else "{text} This is {mask}."
            label_template = "{label}"
        else:
            template, label_template = pc.template, "{label}"
        if family == "encoder":
            template = SIMILARITY_TEMPLATES["single"]
        check_template(template, "single", family)
        fmt = TaskFormat(template, names, [label_template.replace("{label}", n) for n in names], None)
        self.fmt = fmt
        self.head = make_head(backbone, fmt, task_cfg, prompt_cfg, max_length)

    def sample(self, rng, n_tasks: int, split: str = "train") -> list[Episode]:
        if not self.eligible[split] or len(self.eligible[split]) < self.pc.n_way:
            raise ConfigError(f"pseudo source: only {len(self.eligible[split])} clusters have enough {split} "
                              f"sentences for {self.pc.n_way}-way episodes")
        eps = []
        for _ in range(n_tasks):
            cols = [int(c) for c in rng.choice(self.eligible[split], self.pc.n_way, replace=False)]
            sup, qry = [], []
            for lab, c in enumerate(cols):
                pick = rng.choice(self.members[split][c], self.support + self.query, replace=False)
                exs = [Example(self.texts[i], lab) for i in pick]
                sup, qry = sup + exs[:self.support], qry + exs[self.support:]
            sup = [sup[i] for i in rng.permutation(len(sup))]
            qry = [qry[i] for i in rng.permutation(len(qry))]
            eps.append(Episode(SubsetHead(self.head, cols), sup, qry, name="clusters:" + ",".join(map(str, cols)),
                               info={"source": "pseudo", "clusters": cols, "split": split}))
        return eps

    def describe(self) -> dict:
        c = self.clustering
        return {"source": "pseudo", **self.info, "features": self.pc.features, "k": c.k, "sizes": list(c.sizes),
                "n_way": self.pc.n_way, "support": self.support, "query": self.query,
                "eligible_clusters": self.eligible, "label": self.pc.label, "format": self.fmt.as_dict(),
                "keywords": [s.get("keywords", [])[:5] for s in c.summaries], "corpus": c.corpus,
                "texts_sha256": _hash(self.texts)}


def _target_format(target, backbone, task_cfg):
    from .templates import resolve_format
    ds = load_dataset(target)
    fmt = resolve_format(ds.name, ds.task, ds.labels, backbone.family, task_cfg)
    # the label template is not kept in TaskFormat: recover it from the first label text
    lt = fmt.label_texts[0].replace(fmt.verbalizer[0], "{label}", 1) if fmt.label_texts else "{label}"
    fmt.label_template = lt if "{label}" in lt else "{label}"
    return fmt


@register_source("pseudo", "MetaPT: N-way pseudo-tasks over clusters of an unlabeled corpus")
def _pseudo_factory(cfg, backbone, target=None, progress: bool = False):
    from .corpus import load_clustering
    from .data import read_corpus
    pc = cfg.pseudo
    targets, tinfo = target_texts(target)
    if pc.clustering:
        clustering = load_clustering(pc.clustering)
        rows = [json.loads(l) for l in open(Path(pc.clustering) / "assignments.jsonl", encoding="utf-8")]
        texts = [r["text"] for r in rows]
        keep = [i for i, t in enumerate(texts) if normalize_text(t) not in targets]
        removed = len(texts) - len(keep)
        clustering.assignments = np.asarray(clustering.assignments)[keep]
        texts = [texts[i] for i in keep]
        clustering.sizes = np.bincount(clustering.assignments, minlength=clustering.k).tolist()
        info = {"clustering": str(pc.clustering)}
    else:
        rows = [r["text"] for r in read_corpus(pc.corpus) if len(r["text"].split()) >= pc.min_words]
        n_read = len(rows)
        if pc.limit and len(rows) > pc.limit:
            rows = [rows[i] for i in sorted(np.random.default_rng(cfg.seed).choice(len(rows), pc.limit, False))]
        texts = [t for t in rows if normalize_text(t) not in targets]
        removed = len(rows) - len(texts)
        need = pc.n_way * (cfg.support + cfg.query)
        if len(texts) < max(pc.n_clusters, need):
            raise ConfigError(f"corpus {pc.corpus!r} has {len(texts)} usable texts, fewer than K="
                              f"{pc.n_clusters} clusters or {pc.n_way}-way x ({cfg.support}+{cfg.query}) = {need}")
        clustering = _cluster_texts(texts, pc, cfg.seed, backbone, progress)
        info = {"corpus": pc.corpus, "n_read": n_read}
    info.update({"target": tinfo, "decontamination": {"removed": removed, "kept": len(texts)}})
    fmt = _target_format(target, backbone, cfg.task) if target and pc.template == "target" else None
    return PseudoSource(clustering, texts, backbone, pc, cfg.support, cfg.query, cfg.max_length, cfg.prompt, fmt,
                        cfg.task, cfg.seed, info)


class LabelledSource:
    """MPT tasks: (dataset, k-shot split seed) with support from the split's train part, query from its dev part."""

    def __init__(self, datasets: list[Dataset], backbone, lc: LabelledConfig, support: int, query: int,
                 max_length: int, prompt_cfg: PromptConfig, task_cfg: TaskConfig, info: dict):
        from .heads import make_head
        from .templates import resolve_format
        if support > lc.k or query > lc.k:
            raise ConfigError(f"support ({support}) and query ({query}) per class must be <= labelled.k ({lc.k})")
        self.support, self.query, self.info = support, query, info
        self.heads, self.splits, self.datasets = {}, {}, {d.name: d for d in datasets}
        for ds in datasets:
            fmt = resolve_format(ds.name, ds.task, ds.labels, backbone.family, TaskConfig(
                temperature=task_cfg.temperature, length_norm=task_cfg.length_norm))
            self.heads[ds.name] = make_head(backbone, fmt, task_cfg, prompt_cfg, max_length)
            for s in lc.seeds:
                self.splits[(ds.name, s)] = kshot_split(ds, lc.k, s)
        self.tasks = sorted(self.splits)

    def sample(self, rng, n_tasks: int, split: str = "train") -> list[Episode]:
        eps = []
        for i in rng.choice(len(self.tasks), n_tasks, replace=n_tasks > len(self.tasks)):
            name, seed = self.tasks[int(i)]
            sp, head = self.splits[(name, seed)], self.heads[name]
            qpool = sp.dev if split == "train" else self.datasets[name].splits["test"]
            sup = _per_class(rng, sp.train, head.n_classes, self.support, f"{name} seed {seed} support")
            qry = _per_class(rng, qpool, head.n_classes, self.query, f"{name} seed {seed} query ({split})")
            eps.append(Episode(head, sup, qry, name=f"{name}/{seed}",
                               info={"source": name, "seed": seed, "type": dataset_type(name), "split": split}))
        return eps

    def describe(self) -> dict:
        return {"source": "labelled", **self.info, "support": self.support, "query": self.query,
                "n_tasks": len(self.tasks), "formats": {n: h.fmt.as_dict() for n, h in self.heads.items()}}


@register_source("labelled", "MPT: (dataset, k-shot seed) tasks from labelled source datasets")
def _labelled_factory(cfg, backbone, target=None, progress: bool = False):
    lc = cfg.labelled
    names = resolve_sources(target, lc.sources, lc.datasets)
    targets, tinfo = target_texts(target)
    datasets, per = [], {}
    for name in names:
        ds = load_dataset(name)
        if target and ds.name.lower() in family_of(target):
            raise ConfigError(f"target {target!r} is among its own sources ({name} resolves to {ds.name}): leakage")
        clean = {}
        for split in ("train", "test"):
            clean[split], removed = _clean(ds.splits[split], targets)
            per.setdefault(ds.name, {})[f"removed_{split}"] = removed
        per[ds.name].update({"type": dataset_type(ds.name), "n_train": len(clean["train"]),
                             "n_test": len(clean["test"]), "file_hashes": ds.file_hashes()})
        datasets.append(Dataset(ds.name, ds.task, ds.labels, clean, ds.source, ds.files, ds.meta))
    info = {"target": tinfo, "configuration": "explicit" if lc.datasets else lc.sources, "sources": names,
            "k": lc.k, "seeds": list(lc.seeds), "per_source": per}
    return LabelledSource(datasets, backbone, lc, cfg.support, cfg.query, cfg.max_length, cfg.prompt, cfg.task, info)
