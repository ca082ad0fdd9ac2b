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
  ``labelled.sources="auto"`` (default) scores every leave-one-out candidate for learnability and similarity to the
  target and keeps the best ``labelled.auto_top`` (:mod:`workbench.tasks.sources`); why each candidate was kept
  or dropped is in ``describe()["selection"]``.

Decontamination: every source text whose normalised form occurs in the target's test split or anywhere in its train
split (a superset of every k-shot draw, so one meta init serves all seeds) is dropped; counts go to ``describe()``.
"""
from __future__ import annotations

from pathlib import Path

from workbench.config import ConfigError, LabelledConfig, PromptConfig, TaskConfig
from workbench.engine.data import Dataset, list_datasets, load_dataset
from workbench.engine.heads import make_head
from workbench.engine.splits import kshot_split
from workbench.tasks.episodes import Episode, _clean, _per_class, target_texts
from workbench.tasks.sources import select_sources, source_format

# ----------------------------------------------------------------------------------------------- dataset types
TYPES = {"sst2": "sentiment", "sst5": "sentiment", "mr": "sentiment", "mpqa": "sentiment", "yelp5": "sentiment",
         "cr": "sentiment", "agnews": "topic", "subj": "subjectivity", "cola": "acceptability",
         "rte": "pair", "mrpc": "pair", "qnli": "pair", "snli": "pair"}
FAMILIES = [{"sst2", "sst5"}]  # the same sentences under other labels: never a source for one another
CONFIGURATIONS = {
    "auto": "the leave-one-out candidates, scored on a k-shot draw: those the bare model or a linear probe learns "
            "above chance, the labelled.auto_top most similar to the target (tasks/sources.py)",
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
    pick = {"leave-one-out": lambda d: True, "auto": lambda d: True, "same-type": lambda d: dataset_type(d) == ttype != "unknown",
            "cross-type": lambda d: dataset_type(d) not in (ttype, "unknown"),
            "pairs->single": lambda d: dataset_type(d) == "pair"}[configuration]
    out = [d for d in pool if pick(d)]
    if not out:
        raise ConfigError(f"source configuration {configuration!r} gives no datasets for target {target!r} "
                          f"(type {ttype}) among {pool}")
    return out




class LabelledSource:
    """MPT tasks: (dataset, k-shot split seed) with support from the split's train part, query from its dev part."""

    def __init__(self, datasets: list[Dataset], backbone, lc: LabelledConfig, support: int, query: int,
                 max_length: int, prompt_cfg: PromptConfig, task_cfg: TaskConfig, info: dict):
        if support > lc.k or query > lc.k:
            raise ConfigError(f"support ({support}) and query ({query}) per class must be <= labelled.k ({lc.k})")
        self.support, self.query, self.info = support, query, info
        self.heads, self.splits, self.datasets = {}, {}, {d.name: d for d in datasets}
        for ds in datasets:
            fmt = source_format(ds, backbone, task_cfg)
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


def labelled_factory(cfg, backbone, target=None, progress: bool = False):
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
    if lc.sources == "auto" and not lc.datasets:
        target_ds = load_dataset(target) if target else None
        kept, sel = select_sources(datasets, target_ds, backbone, lc, cfg.task, cfg.prompt, cfg.meta.max_length)
        for rec in sel["selection"]:
            rec["removed_train"] = per[rec["dataset"]]["removed_train"]
        datasets = sorted((d for d in datasets if d.name in kept), key=lambda d: kept.index(d.name))
        info.update(sel, candidates=[d for d in per], sources=kept, per_source={n: per[n] for n in kept})
    return LabelledSource(datasets, backbone, lc, cfg.meta.support, cfg.meta.query, cfg.meta.max_length, cfg.prompt, cfg.task, info)
