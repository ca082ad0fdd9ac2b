"""tasks.pseudo."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


class PseudoSource:
    """MetaPT pseudo-tasks from a clustered unlabeled corpus (see the module docstring)."""

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
    fmt = _target_format(target, backbone, cfg.task) if target and pc.template == "target" else None
    return PseudoSource(clustering, texts, backbone, pc, cfg.meta.support, cfg.meta.query, cfg.meta.max_length, cfg.prompt, fmt,
                        cfg.task, cfg.meta.seed, info)
