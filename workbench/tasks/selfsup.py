"""SUPMER's five self-supervised task types over a clustered unlabeled corpus, as the task source ``selfsup``.

The corpus (Brown by default; any ``{"text", "doc", "para"}`` JSONL or a .txt) is embedded with the frozen backbone
and clustered with K-means (``corpus.embed_texts`` / ``corpus.cluster``; the cluster centroids live in the pooled
feature space of that backbone). Each sampled task belongs to one cluster ("domain"):

=======  ==================================================================  =====================================
type     task (labels)                                                       examples of one task
=======  ==================================================================  =====================================
nsp      sentence-pair adjacency, 3-way: next sentence / same document /     anchors from the task's cluster; the
         other document (PPT's yes / maybe / no)                             second sentence from the corpus
nss      next-sentence selection, multiple choice: the true next sentence,   anchors from the cluster
         one same-document distractor (if any), other-document distractors
scsp     same-cluster pair, yes/no: is the second sentence from the anchor's  half yes, half no
         cluster?
scss     same-cluster selection, multiple choice: one option from the        correct slot cycles over positions
         anchor's cluster, the others from other clusters
scc      centroid classification: the options are clusters (the task's       one cluster per option, balanced
         option-count clusters); the answer is the sentence's own cluster
=======  ==================================================================  =====================================

How each type meets each head family (decided here, documented for users):

- pair types (nsp, scsp): ``text_a``/``text_b``. Masked LM and seq2seq: ``"{text_a} ? {mask} , {text_b}"`` with
  PPT's label words (nsp: yes/maybe/no; scsp: no/yes); causal LM: ``"{text_a} ? {text_b} ? {mask}"`` (a causal head
  only reads the context before the mask); similarity head: the pair is encoded as a tokenizer pair and the anchors
  are descriptive label texts ("The second sentence follows the first." ...).
- multiple choice (nss, scss, scc): LM families see the options rendered into the text, PPT style,
  ``"<anchor> ? A . <opt> . B . <opt> . ... The correct one is {mask} ."`` with letter label words (scc options are
  the clusters' top TF-IDF keywords, since this engine has no placeholder rows for raw centroid vectors). Anchor and
  options are cut to ``anchor_words`` / ``option_words`` words, fewer when ``max_length`` is small (about 0.7 words
  per token), so that truncation does not drop the last options. The
  similarity head uses *options as anchors* (:class:`OptionHead`): the anchor sentence is encoded with the prompt,
  each option without it (frozen, no gradient), logits = cosine / temperature; for scc the anchors are the cluster
  centroids themselves (the closest analogue of SUPMER's injected centroid vectors).

The option count of each multiple-choice type is ``selfsup.options_per_type[t]``, else ``selfsup.n_options``
(SUPMER and PPT: nss 6, scss 4, scc 4, i.e. ``n_options=4, options_per_type={"nss": 6}``).

Every task also carries an augmentation query set (``Episode.aug``, as many examples as the query) of the same type
built from another cluster (for scc: as many other clusters as options), and ``info`` = {type, clusters, aug_clusters,
domain_sim = (1 + cos(mean task centroid, mean aug centroid)) / 2, n_classes}, the inputs of SUPMER's gate target.

Bad input: adjacency types (nsp, nss) on a corpus without document ids raise :class:`SelfSupError` unless
``skip_missing_docs=True`` (then they are dropped with a warning); multiple-choice types with too few clusters, or
clusters too small to draw from, raise with the numbers. Documents are split 9:1 into meta-train / meta-test
(``split``), as SUPMER does.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workbench.config import (
    LETTERS,
    ConfigError,
    PromptConfig,
    SelfSupConfig,
    TaskConfig,
    to_dict,
)
from workbench.engine.data import Example, read_corpus
from workbench.engine.heads import Head, SimilarityHead, make_head
from workbench.engine.splits import normalize_text
from workbench.engine.templates import TaskFormat, check_template
from workbench.tasks.corpus import cluster, embed_texts, pseudo_label_texts
from workbench.tasks.episodes import Episode, excluded_texts

ADJACENCY = ("nsp", "nss")
NSP_WORDS, SCSP_WORDS = ["yes", "maybe", "no"], ["no", "yes"]
NSP_ANCHORS = ["The second sentence follows the first.", "Both sentences are from the same document.",
               "The sentences are from different documents."]
SCSP_ANCHORS = ["The sentences are about different topics.", "The sentences are about the same topic."]


class SelfSupError(ConfigError):
    """Self-supervised tasks cannot be built as asked; the message names the parameter and the numbers."""




@dataclass(frozen=True)
class MCExample(Example):
    """A multiple-choice example: ``options`` (texts) or ``option_clusters`` (scc) beside the rendered text."""
    options: tuple = ()
    option_clusters: tuple = ()


def min_clusters(t: str, n_options: int) -> int:
    """Clusters a type needs: its task cluster(s) plus a different augmentation cluster (set)."""
    return {"scss": n_options, "scc": 2 * n_options}.get(t, 2)


def _cut(text: str, words: int) -> str:
    w = text.split()
    return " ".join(w[:words]) + (" ..." if len(w) > words else "")


class OptionHead(SimilarityHead):
    """Similarity head whose anchors come with each example: option texts encoded without the prompt (frozen, no
    gradient) or cluster centroids (``option_clusters``). logits[b, j] = cos(pooled(x_b; P), anchor[b, j]) / T."""

    def __init__(self, backbone, fmt, task_cfg, prompt_cfg, max_length, centroids=None):
        Head.__init__(self, backbone, fmt, task_cfg, prompt_cfg, max_length)
        self.centroids = None if centroids is None else F.normalize(
            torch.as_tensor(np.asarray(centroids), dtype=torch.float32), dim=-1).to(backbone.device)
        self.anchors = None

    @torch.no_grad()
    def option_anchors(self, examples) -> torch.Tensor:
        if examples[0].option_clusters:
            ids = torch.tensor([e.option_clusters for e in examples], device=self.bb.device)
            return self.centroids[ids]
        texts = [o for e in examples for o in e.options]
        enc = [self.tok(t, add_special_tokens=True, truncation=True, max_length=self.max_length) for t in texts]
        out = self.encode_pass(self.pad([{"input_ids": e["input_ids"], "token_type_ids": None} for e in enc]), None)
        feats = F.normalize(self.pool(out.hidden, out.sp).float(), dim=-1)
        return feats.view(len(examples), -1, feats.shape[-1])

    def batch(self, examples):
        b = self.pad([self.encode(ex) for ex in examples])
        b["anchors"] = self.option_anchors(examples)
        return b

    def score(self, batch, out, prompt):
        feats = self.pool(out.hidden, out.sp)
        logits = torch.einsum("bd,bcd->bc", F.normalize(feats.float(), dim=-1), batch["anchors"])
        return logits / self.cfg.temperature, feats


class SelfSupSource:
    """Task source: ``sample(rng, n_tasks)`` -> that many :class:`~workbench.meta.Episode` of ONE task type (drawn
    uniformly among ``cfg.types``, as SUPMER does per epoch), each from a distinct cluster where possible."""

    def __init__(self, backbone, cfg: SelfSupConfig | None = None, prompt_cfg: PromptConfig | None = None,
                 task_cfg: TaskConfig | None = None, rows: list[dict] | None = None, progress: bool = True,
                 exclude: set[str] | None = None, seed: int = 0, max_length: int = 128):
        """``seed``: clustering and sampling; ``max_length``: tokens per rendered input (the meta section's)."""
        self.bb, self.cfg, self.seed, self.max_length = backbone, cfg or SelfSupConfig(), seed, max_length
        self.prompt_cfg, self.task_cfg = prompt_cfg or PromptConfig(), task_cfg or TaskConfig()
        cfg, rng = self.cfg, np.random.default_rng(self.seed)
        rows = rows if rows is not None else read_corpus(cfg.corpus)
        self.rows = rows
        self.types = list(cfg.types)
        if any(r.get("doc") is None for r in rows) and set(self.types) & set(ADJACENCY):
            adj = [t for t in self.types if t in ADJACENCY]
            if not cfg.skip_missing_docs:
                raise SelfSupError(f"corpus {cfg.corpus!r} has lines without a document id ('doc'), which task "
                                   f"type(s) {adj} need; drop them from selfsup.types or set "
                                   "selfsup.skip_missing_docs=true to skip them")
            warnings.warn(f"corpus {cfg.corpus!r} has no document ids: skipping task types {adj}")
            self.types = [t for t in self.types if t not in ADJACENCY]
            if not self.types:
                raise SelfSupError("no task types left after skipping the adjacency types (selfsup.types)")
        exclude = exclude or set()
        self.bad = {i for i, r in enumerate(rows) if normalize_text(r["text"]) in exclude}
        keep = [i for i, r in enumerate(rows) if len(r["text"].split()) >= cfg.min_words and i not in self.bad]
        if cfg.limit is not None and len(keep) > cfg.limit:
            keep = sorted(rng.choice(keep, cfg.limit, replace=False).tolist())
        if len(keep) < cfg.n_clusters:
            raise SelfSupError(f"corpus {cfg.corpus!r} has {len(keep)} usable texts (>= {cfg.min_words} words), "
                               f"fewer than selfsup.n_clusters={cfg.n_clusters}")
        self.index = keep  # unit u is rows[keep[u]]
        texts = [rows[i]["text"] for i in keep]
        feats = embed_texts(backbone, texts, max_length=max_length, progress=progress)
        self.clustering = cluster(feats, texts, method=cfg.cluster_method, k=cfg.n_clusters, seed=seed)
        self.k = self.clustering.k
        self.assign = np.asarray(self.clustering.assignments)
        self.centroids = np.asarray(self.clustering.centroids, dtype=np.float32)
        val = np.array([self._is_val(i, rows[i]) for i in keep], dtype=bool)
        self.pools = {s: [np.flatnonzero((self.assign == c) & (val == (s == "val"))) for c in range(self.k)]
                      for s in ("train", "val")}
        self.members = self.pools["train"]
        self.keywords = pseudo_label_texts(self.clustering)
        self._check_options()
        self.usable = {s: [c for c in range(self.k) if len(p[c]) >= 2] for s, p in self.pools.items()}
        self.eligible = self.usable["train"]
        small = [c for c in range(self.k) if c not in self.eligible]
        if small:
            raise SelfSupError(f"cluster(s) {small} have fewer than 2 texts in the training documents; lower "
                               f"selfsup.n_clusters ({cfg.n_clusters}) or raise selfsup.limit ({cfg.limit})")
        self.docs: dict = {}
        for i, r in enumerate(rows):
            self.docs.setdefault(r.get("doc"), []).append(i)
        self.doc_keys = list(self.docs)
        self._heads: dict = {}

    def _check_options(self) -> None:
        """Enough clusters for each type's options (and a distinct augmentation set), and for nss enough texts for
        its options to be distinct sentences."""
        cfg = self.cfg
        for t in self.types:
            if self.k < min_clusters(t, cfg.options(t)):
                raise SelfSupError(f"task type {t!r} needs at least {min_clusters(t, cfg.options(t))} clusters "
                                   f"({cfg.options_knob(t)}, task and augmentation clusters distinct) but the corpus "
                                   f"has {self.k} (selfsup.n_clusters); raise n_clusters or lower the option count")
        usable = len(self.rows) - len(self.bad)
        if "nss" in self.types and usable < cfg.options("nss") + 1:
            raise SelfSupError(f"task type 'nss' needs an anchor and {cfg.options('nss')} option sentences "
                               f"({cfg.options_knob('nss')}) but the corpus has {usable} usable lines; lower the "
                               "option count or use a larger corpus")

    def _is_val(self, i: int, row: dict) -> bool:
        """Whole documents (lines without a doc id: single lines) are held out for validation by a seeded hash."""
        key = row.get("doc") if row.get("doc") is not None else f"line{i}"
        h = int(hashlib.sha256(f"{self.seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return h < self.cfg.val_fraction

    # ----- heads ------------------------------------------------------------------------------------------------
    def head(self, t: str):
        """The head of task type ``t`` for this backbone (one per type; built once)."""
        if t in self._heads:
            return self._heads[t]
        fam, n = self.bb.family, self.cfg.options(t)
        if t in ("nsp", "scsp"):
            words, anchors = (NSP_WORDS, NSP_ANCHORS) if t == "nsp" else (SCSP_WORDS, SCSP_ANCHORS)
            template = {"encoder": "{text_a}{sep}{text_b}", "causal": "{text_a} ? {text_b} ? {mask}"}.get(
                fam, "{text_a} ? {mask} , {text_b}")
            check_template(template, "pair", fam)
            fmt = TaskFormat(template, list(words), anchors if fam == "encoder" else list(words), None)
            h = make_head(self.bb, fmt, self.task_cfg, self.prompt_cfg, self.max_length)
        else:
            letters = list(LETTERS[:n])
            template = "{text}" if fam == "encoder" else "{text} The correct one is {mask} ."
            check_template(template, "single", fam)
            fmt = TaskFormat(template, letters, letters, None)
            h = OptionHead(self.bb, fmt, self.task_cfg, self.prompt_cfg, self.max_length, self.centroids) \
                if fam == "encoder" else make_head(self.bb, fmt, self.task_cfg, self.prompt_cfg, self.max_length)
        self._heads[t] = h
        return h

    # ----- raw material -----------------------------------------------------------------------------------------
    def _text(self, u: int) -> str:
        return self.rows[self.index[u]]["text"]

    def _unit(self, rng, c: int) -> int:
        return int(rng.choice(self.members[c]))

    def _other_cluster(self, rng, exclude) -> int:
        return int(rng.choice([c for c in self.eligible if c not in set(exclude)]))

    def _next(self, rng, c: int) -> tuple[int, int] | None:
        """(row of an anchor in cluster c, row of the line after it in the same document), or None."""
        for _ in range(50):
            i = self.index[self._unit(rng, c)]
            if i + 1 < len(self.rows) and self.rows[i + 1].get("doc") == self.rows[i].get("doc") and \
                    i + 1 not in self.bad:
                return i, i + 1
        return None

    def _same_doc(self, rng, i: int) -> int | None:
        cands = [j for j in self.docs[self.rows[i].get("doc")] if abs(j - i) > 1 and j not in self.bad]
        return int(rng.choice(cands)) if cands else None

    def _other_doc(self, rng, i: int) -> int:
        doc = self.rows[i].get("doc")
        while True:
            d = self.doc_keys[int(rng.integers(len(self.doc_keys)))]
            j = int(rng.choice(self.docs[d]))
            if (d != doc or len(self.doc_keys) == 1) and j not in self.bad:
                return j

    def _other_docs(self, rng, i: int, n: int, taken: set) -> list[int]:
        """``n`` distinct lines from documents other than row ``i``'s, none in ``taken`` (nss distractors); lines
        repeat only when 50 draws per line find no new one (a corpus of very few documents)."""
        out: list[int] = []
        for _ in range(50 * n):
            if len(out) == n:
                break
            j = self._other_doc(rng, i)
            if j not in taken:
                taken.add(j)
                out.append(j)
        return out + [self._other_doc(rng, i) for _ in range(n - len(out))]

    # ----- examples ---------------------------------------------------------------------------------------------
    def _mc(self, anchor: str, options: list[str], label: int, clusters=()) -> Example:
        if self.bb.family == "encoder":
            return MCExample(anchor, label, None, tuple(options), tuple(clusters))
        budget = max(12, int(0.7 * self.max_length) - 8)  # words that fit max_length tokens (roughly)
        aw = min(self.cfg.anchor_words, max(4, budget // 3))
        ow = min(self.cfg.option_words, max(2, (budget - aw) // len(options)))
        body = " ".join(f"{LETTERS[j]} . {_cut(o, ow)} ." for j, o in enumerate(options))
        return MCExample(f"{_cut(anchor, aw)} ? {body}", label, None, tuple(options), tuple(clusters))

    def _examples(self, t: str, rng, clusters: list[int], n: int) -> list[Example]:
        """``n`` examples of type ``t`` from ``clusters`` (one cluster, or the option count of clusters for scc),
        labels balanced (cycled over the classes, then shuffled)."""
        C, rows, out = (3 if t == "nsp" else 2 if t == "scsp" else self.cfg.options(t)), self.rows, []
        labels = [j % C for j in range(n)]
        rng.shuffle(labels)
        c = clusters[0]
        for y in labels:
            if t == "nsp":
                i, nxt = self._next(rng, c) or (self.index[self._unit(rng, c)], None)
                same = self._same_doc(rng, i)
                y = y if (y != 0 or nxt is not None) and (y != 1 or same is not None) else 2
                j = nxt if y == 0 else same if y == 1 else self._other_doc(rng, i)
                out.append(Example(rows[i]["text"], y, rows[j]["text"]))
            elif t == "scsp":
                u = self._unit(rng, c)
                v = self._unit(rng, c) if y == 1 else self._unit(rng, self._other_cluster(rng, [c]))
                out.append(Example(self._text(u), y, self._text(v)))
            elif t == "nss":
                i, nxt = self._next(rng, c) or (None, None)
                if i is None:
                    raise SelfSupError(f"cluster {c} has no sentence followed by another of its document (nss)")
                distract = [d for d in [self._same_doc(rng, i)] if d is not None]
                distract += self._other_docs(rng, i, C - 1 - len(distract), {i, nxt, *distract})
                opts = [rows[j]["text"] for j in distract[:C - 1]]
                opts.insert(y, rows[nxt]["text"])
                out.append(self._mc(rows[i]["text"], opts, y))
            elif t == "scss":
                u = self._unit(rng, c)
                others = rng.choice([k for k in self.eligible if k != c], C - 1, replace=False)
                opts = [self._text(self._unit(rng, int(k))) for k in others]
                opts.insert(y, self._text(self._unit(rng, c)))
                out.append(self._mc(self._text(u), opts, y))
            else:  # scc: clusters are the options, the answer is the sentence's own cluster
                u = self._unit(rng, clusters[y])
                out.append(self._mc(self._text(u), [self.keywords[k] for k in clusters], y, clusters))
        return out

    def episode(self, t: str, rng, cluster: int | None = None) -> Episode:
        """One task of type ``t`` (from ``cluster``, or a random one), with support, query and augmentation set."""
        n = self.cfg.options(t)
        if t == "scc":
            task = [int(k) for k in rng.choice(self.eligible, n, replace=False)] if cluster is None else \
                [cluster] + [int(k) for k in rng.choice([k for k in self.eligible if k != cluster], n - 1, False)]
            aug = [int(k) for k in rng.choice([k for k in self.eligible if k not in task], n, replace=False)]
        else:
            task = [int(rng.choice(self.eligible)) if cluster is None else int(cluster)]
            aug = [self._other_cluster(rng, task)]
        ks, kq = self.cfg.per_task_support, self.cfg.per_task_query
        sup, qry = self._examples(t, rng, task, ks), self._examples(t, rng, task, kq)  # each balanced
        a, b = self.centroids[task].mean(0), self.centroids[aug].mean(0)
        sim = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        info = {"type": t, "split": "val" if self.members is self.pools["val"] else "train", "clusters": task,
                "aug_clusters": aug, "domain_sim": (1.0 + sim) / 2.0, "n_classes": self.head(t).n_classes}
        return Episode(self.head(t), sup, qry, f"{t}/c{'-'.join(map(str, task))}",
                       self._examples(t, rng, aug, kq), info)

    def sample(self, rng, n_tasks: int, split: str = "train") -> list[Episode]:
        """``n_tasks`` episodes of one task type drawn uniformly from the enabled types (validation: the types in
        turn), distinct clusters where there are enough; ``split="val"`` draws every sentence (anchors and options)
        from the held-out documents' sentences of each cluster (other-document distractors of adjacency tasks may
        come from any document)."""
        if split not in self.pools:
            raise SelfSupError(f"split must be 'train' or 'val', got {split!r}")
        self.members, self.eligible = self.pools[split], self.usable[split]
        types = [t for t in self.types if len(self.eligible) >= min_clusters(t, self.cfg.options(t))]
        if not types:  # (only the validation documents can be this thin: training clusters are checked up front)
            self.members, self.eligible = self.pools["train"], self.usable["train"]
            raise SelfSupError(f"only {len(self.eligible)} clusters have >= 2 sentences in the {split} documents, "
                               f"too few for task types {self.types} (raise selfsup.limit or selfsup.val_fraction, or "
                               "lower selfsup.n_clusters)")
        first = int(rng.integers(len(types)))  # validation cycles over the types so that it measures all of them
        pick = [types[first]] * n_tasks if split == "train" else \
            [types[(first + i) % len(types)] for i in range(n_tasks)]
        clusters = rng.permutation(self.eligible)
        try:
            return [self.episode(t, rng, None if t == "scc" else int(clusters[i % len(clusters)]))
                    for i, t in enumerate(pick)]
        finally:
            self.members, self.eligible = self.pools["train"], self.usable["train"]

    def describe(self) -> dict:
        return {"source": "selfsup", "config": to_dict(self.cfg), "types": self.types, "n_texts": len(self.index),
                "clusters": self.k, "cluster_sizes": {s: [len(m) for m in p] for s, p in self.pools.items()},
                "keywords": self.keywords, "decontamination": {"removed_lines": len(self.bad)},
                "corpus_sha256": self.clustering.corpus.get("sha256"), "backbone": self.bb.name}


def episode_rows(ep: Episode, n: int = 2) -> list[dict]:
    """A readable view of an episode's first ``n`` support examples (for notebooks): the input, options, the gold
    label word, the task and augmentation clusters and the domain similarity."""
    words = ep.head.fmt.verbalizer
    return [{"type": ep.info.get("type"), "input": e.text_a, "second / options": e.text_b if e.text_b is not None
             else " | ".join(getattr(e, "options", ()) or ()), "label": words[e.label],
             "clusters": ep.info.get("clusters"), "aug_clusters": ep.info.get("aug_clusters"),
             "domain_sim": round(ep.info.get("domain_sim", 0.0), 3)}
            for e in ep.support[:n]]


def selfsup_factory(cfg, backbone, target=None, progress: bool = False):
    """The ``selfsup`` source of a MetaTrainConfig: its ``selfsup`` section, with ``meta.max_length`` tokens per
    text and ``meta.seed``. Corpus lines whose normalised text is in the target's train or test split (or those of
    ``selfsup.exclude``) are never used."""
    exclude, _ = excluded_texts(target, cfg.selfsup.exclude)
    return SelfSupSource(backbone, cfg.selfsup, cfg.prompt, cfg.task, progress=progress, exclude=exclude,
                         seed=cfg.meta.seed, max_length=cfg.meta.max_length)
