"""tasks.pseudo."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from workbench.config import ConfigError, PromptConfig, PseudoConfig, TaskConfig
from workbench.engine.data import Example, load_dataset, read_corpus
from workbench.engine.heads import make_head
from workbench.engine.splits import normalize_text
from workbench.engine.templates import (
    SIMILARITY_TEMPLATES,
    TaskFormat,
    check_template,
    resolve_format,
)
from workbench.tasks import corpus
from workbench.tasks.corpus import (
    ClusterError,
    load_clustering,
    pseudo_label_texts,
    pseudo_label_words,
)
from workbench.tasks.episodes import Episode, SubsetHead, _hash, excluded_texts


def _cluster_texts(texts, pc: PseudoConfig, seed: int, backbone, progress: bool):
    if pc.features == "backbone":
        feats = corpus.embed_texts(backbone, texts, progress=progress)
        return corpus.cluster(feats, texts, "kmeans", pc.n_clusters, seed)
    if pc.features == "lda":
        return corpus.cluster(None, texts, "lda", pc.n_clusters, seed, drop_empty=True)
    X = TfidfVectorizer(stop_words="english", min_df=2, max_df=0.5, sublinear_tf=True).fit_transform(texts)
    dims = max(2, min(pc.svd_dims, X.shape[1] - 1, len(texts) - 1))
    feats = TruncatedSVD(dims, random_state=seed).fit_transform(X)
    return corpus.cluster(feats, texts, "kmeans", pc.n_clusters, seed)


def _template(pc: PseudoConfig, family: str, target_fmt) -> tuple[str, str]:
    """The (template, label template) of the pseudo-tasks' head under ``pseudo.template``."""
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
    return template, label_template


def _split_members(assign: np.ndarray, k: int, val_fraction: float, seed: int) -> dict:
    """{split: {cluster: member indices}}: each cluster's members shuffled, ``val_fraction`` of them held out."""
    rng = np.random.default_rng(seed)
    members = {"train": {}, "val": {}}
    for c in range(k):
        idx = rng.permutation(np.flatnonzero(assign == c))
        n_val = int(round(len(idx) * val_fraction))
        members["val"][c], members["train"][c] = idx[:n_val], idx[n_val:]
    return members


@torch.inference_mode()
def zero_shot_labels(head, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """The frozen backbone's zero-shot class (argmax of ``head``'s logits without a prompt) of every text."""
    out = np.zeros(len(texts), dtype=np.int64)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        logits, _ = head.forward(head.batch([Example(texts[i], 0) for i in idx]), None)
        out[idx] = logits.argmax(-1).cpu().numpy()
    return out


class PseudoSource:
    """MetaPT pseudo-tasks from a clustered unlabeled corpus, built as ``pseudo.tasks`` says:

    * ``clusters-as-classes``: an episode takes N=``pseudo.n_way`` clusters as its N classes (label = cluster);
    * ``labels-within-clusters`` (MetaPT over PPT's pseudo-labelled data): one cluster is one task; every text carries
      the frozen backbone's zero-shot prediction in the target's label space (target template and label words, no
      prompt) as its pseudo-label, and an episode draws ``support`` + ``query`` texts per pseudo-label from one
      cluster (clusters short of that for some label are skipped).
    """

    def __init__(self, clustering, texts: list[str], backbone, pc: PseudoConfig, support: int, query: int,
                 max_length: int, prompt_cfg: PromptConfig, target_fmt=None, task_cfg: TaskConfig | None = None,
                 seed: int = 0, info: dict | None = None):
        self.pc, self.support, self.query, self.info = pc, support, query, dict(info or {})
        assign = np.asarray(clustering.assignments)
        if len(assign) != len(texts):
            raise ConfigError(f"clustering has {len(assign)} assignments but the corpus has {len(texts)} texts")
        sizes = np.bincount(assign, minlength=clustering.k)
        if (sizes == 0).any():
            raise ClusterError(f"cluster(s) {np.flatnonzero(sizes == 0).tolist()} of K={clustering.k} are empty; "
                               "recluster with a lower K (or drop empty clusters)")
        self.texts, self.clustering, self.labels = texts, clustering, None
        self.members = _split_members(assign, clustering.k, pc.val_fraction, seed)
        task_cfg = task_cfg or TaskConfig()
        if pc.tasks == "labels-within-clusters":
            self._init_within(backbone, target_fmt, task_cfg, prompt_cfg, max_length)
        else:
            self._init_clusters(backbone, sizes, target_fmt, task_cfg, prompt_cfg, max_length)

    def _init_clusters(self, backbone, sizes, target_fmt, task_cfg, prompt_cfg, max_length):
        pc, need = self.pc, self.support + self.query
        if len(self.texts) < pc.n_way * need:
            raise ConfigError(f"the corpus has {len(self.texts)} texts, too few for {pc.n_way}-way episodes of "
                              f"{self.support}+{self.query} sentences per cluster ({pc.n_way * need} needed)")
        self.eligible = {s: [c for c, m in self.members[s].items() if len(m) >= need] for s in ("train", "val")}
        if len(self.eligible["train"]) < pc.n_way:
            raise ConfigError(f"only {len(self.eligible['train'])} of K={self.clustering.k} clusters have >= {need} "
                              f"training sentences (k={self.support} support + q={self.query} query; sizes "
                              f"{sizes.tolist()}), fewer than pseudo.n_way={pc.n_way}: lower n_way/k/q/K or use a "
                              "larger corpus")
        family = backbone.family
        if pc.label != "words" and family != "encoder":
            raise ConfigError(f"pseudo.label={pc.label!r} names clusters by label texts, which only the similarity "
                              f"head (encoder) embeds; a {family} backbone predicts one word: use pseudo.label=words")
        words = pseudo_label_words(self.clustering)
        names = words if pc.label == "words" else pseudo_label_texts(self.clustering, pc.label)
        template, label_template = _template(pc, family, target_fmt)
        self.fmt = TaskFormat(template, names, [label_template.replace("{label}", n) for n in names], None)
        self.head = make_head(backbone, self.fmt, task_cfg, prompt_cfg, max_length)

    def _init_within(self, backbone, target_fmt, task_cfg, prompt_cfg, max_length):
        if target_fmt is None:
            raise ConfigError("pseudo.tasks=labels-within-clusters pseudo-labels the corpus in the target's label "
                              "space: it needs a target dataset (meta-train --target NAME), or use "
                              "pseudo.tasks=clusters-as-classes")
        if "{text_b}" in target_fmt.template:
            raise ConfigError(f"pseudo.tasks=labels-within-clusters labels single corpus sentences, but the target's "
                              f"template {target_fmt.template!r} is for sentence pairs: use clusters-as-classes")
        self.label_fmt = target_fmt
        label_head = make_head(backbone, target_fmt, task_cfg, prompt_cfg, max_length)
        self.labels = zero_shot_labels(label_head, self.texts)
        template, _ = _template(self.pc, backbone.family, target_fmt)
        self.fmt = TaskFormat(template, list(target_fmt.verbalizer), list(target_fmt.label_texts), target_fmt.preset)
        same = template == target_fmt.template
        self.head = label_head if same else make_head(backbone, self.fmt, task_cfg, prompt_cfg, max_length)
        n = len(target_fmt.verbalizer)
        self.by_label = {s: {c: [m[self.labels[m] == y] for y in range(n)] for c, m in self.members[s].items()}
                         for s in ("train", "val")}
        need = self.support + self.query
        self.eligible = {s: [c for c, g in self.by_label[s].items() if min(map(len, g)) >= need]
                         for s in ("train", "val")}
        if not self.eligible["train"]:
            raise ConfigError(self._no_cluster_message("train"))

    def _no_cluster_message(self, split: str) -> str:
        need, counts = self.support + self.query, self.label_counts(split)
        return (f"pseudo.tasks=labels-within-clusters: no cluster has >= {need} {split} texts (meta.support="
                f"{self.support} + meta.query={self.query}) of every pseudo-label {self.fmt.verbalizer}; {split} "
                f"pseudo-label counts per cluster: {counts}. Lower meta.support/meta.query, use fewer clusters "
                f"(pseudo.n_clusters), more texts (pseudo.limit, pseudo.corpus) or a smaller pseudo.val_fraction")

    def label_counts(self, split: str | None = None) -> list[list[int]]:
        """Pseudo-label counts per cluster (rows: clusters, columns: the target's classes), of one split or all."""
        splits = [split] if split else ["train", "val"]
        return [[sum(len(self.by_label[s][c][y]) for s in splits) for y in range(len(self.fmt.verbalizer))]
                for c in range(self.clustering.k)]

    def sample(self, rng, n_tasks: int, split: str = "train") -> list[Episode]:
        if self.pc.tasks == "labels-within-clusters":
            return [self._within_episode(rng, split) for _ in range(n_tasks)]
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
                               info={"source": "pseudo", "tasks": self.pc.tasks, "clusters": cols, "split": split}))
        return eps

    def _within_episode(self, rng, split: str) -> Episode:
        if not self.eligible[split]:
            raise ConfigError(self._no_cluster_message(split))
        c = int(rng.choice(self.eligible[split]))
        sup, qry = [], []
        for y, members in enumerate(self.by_label[split][c]):
            exs = [Example(self.texts[i], y) for i in rng.choice(members, self.support + self.query, replace=False)]
            sup, qry = sup + exs[:self.support], qry + exs[self.support:]
        sup = [sup[i] for i in rng.permutation(len(sup))]
        qry = [qry[i] for i in rng.permutation(len(qry))]
        return Episode(self.head, sup, qry, name=f"cluster:{c}",
                       info={"source": "pseudo", "tasks": self.pc.tasks, "clusters": [c], "split": split})

    def describe(self) -> dict:
        c = self.clustering
        out = {"source": "pseudo", **self.info, "tasks": self.pc.tasks, "features": self.pc.features, "k": c.k,
               "sizes": list(c.sizes), "n_way": self.pc.n_way, "support": self.support, "query": self.query,
               "eligible_clusters": self.eligible, "label": self.pc.label, "format": self.fmt.as_dict(),
               "keywords": [s.get("keywords", [])[:5] for s in c.summaries], "corpus": c.corpus,
               "texts_sha256": _hash(self.texts)}
        if self.labels is not None:
            out.update(n_way=len(self.fmt.verbalizer), label="target zero-shot",
                       pseudo_labels={"format": self.label_fmt.as_dict(), "classes": list(self.fmt.verbalizer),
                                      "per_cluster": self.label_counts(), "per_cluster_train": self.label_counts("train"),
                                      "total": np.bincount(self.labels, minlength=len(self.fmt.verbalizer)).tolist()})
        return out


def _target_format(target, backbone, task_cfg):
    ds = load_dataset(target)
    fmt = resolve_format(ds.name, ds.task, ds.labels, backbone.family, task_cfg)
    # the label template is not kept in TaskFormat: recover it from the first label text
    lt = fmt.label_texts[0].replace(fmt.verbalizer[0], "{label}", 1) if fmt.label_texts else "{label}"
    fmt.label_template = lt if "{label}" in lt else "{label}"
    return fmt


def pseudo_factory(cfg, backbone, target=None, progress: bool = False):
    pc = cfg.pseudo
    targets, tinfo = excluded_texts(target, pc.exclude)
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
            rows = [rows[i] for i in sorted(np.random.default_rng(cfg.meta.seed).choice(len(rows), pc.limit, False))]
        texts = [t for t in rows if normalize_text(t) not in targets]
        removed = len(rows) - len(texts)
        need = pc.n_way * (cfg.meta.support + cfg.meta.query)
        if len(texts) < max(pc.n_clusters, need):
            raise ConfigError(f"corpus {pc.corpus!r} has {len(texts)} usable texts, fewer than K="
                              f"{pc.n_clusters} clusters or {pc.n_way}-way x ({cfg.meta.support}+{cfg.meta.query}) = {need}")
        clustering = _cluster_texts(texts, pc, cfg.meta.seed, backbone, progress)
        info = {"corpus": pc.corpus, "n_read": n_read}
    info.update({"target": tinfo, "decontamination": {"removed": removed, "kept": len(texts), "exclude": pc.exclude}})
    wants_target = pc.template == "target" or pc.tasks == "labels-within-clusters"
    fmt = _target_format(target, backbone, cfg.task) if target and wants_target else None
    return PseudoSource(clustering, texts, backbone, pc, cfg.meta.support, cfg.meta.query, cfg.meta.max_length, cfg.prompt, fmt,
                        cfg.task, cfg.meta.seed, info)
