"""Unlabeled corpora -> auxiliary tasks for MetaPT: :func:`embed_texts` (mean-pooled, L2-normalised features of the
frozen backbone, cached on disk), :func:`cluster` (K-means on the features or LDA topics over a bag of words, with
TF-IDF keywords, medoid and examples per cluster), :func:`save_clustering` / :func:`load_clustering` (JSON +
safetensors, no pickle), pseudo-labels for the heads, genre purity/NMI for Brown, and the ``cluster`` subcommand."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.decomposition import LatentDirichletAllocation
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from workbench.config import WorkbenchError
from workbench.engine.backbones import _sha256
from workbench.engine.data import _dirs, read_corpus
from workbench.engine.progress import progress_bar
from workbench.engine.runs import write_json

METHODS, N_KEYWORDS = ("kmeans", "lda"), 8
_WORD = r"(?<![\w'’])[^\W\d_][^\W_]{2,}(?!\w|['’]t\b)"  # keyword tokens: 3+ chars, not "ll" or "don" of don't
_TENSORS = {"assignments", "centroids"}  # saved in clusters.safetensors, the other Clustering fields in clusters.json
_weights_ids: dict[tuple, str] = {}


class ClusterError(WorkbenchError, ValueError):
    """A clustering cannot be made or read as asked; the message names the numbers or the file at fault."""


def texts_sha256(texts: list[str]) -> str:
    """``"sha256:<hex>"`` of the texts joined with newlines (the corpus identity used for caches and saved files)."""
    return "sha256:" + hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------- embedding
def embedding_cache_key(backbone, texts: list[str], max_length: int) -> str:
    """Hex sha256 of (backbone path, weights identity, family, dtype, max_length, sha256 of the texts); the weights
    identity is the sha256 of each ``*.safetensors`` file of a local backbone folder (memoised), else of the config."""
    files = sorted(Path(backbone.path).glob("*.safetensors")) if Path(backbone.path).is_dir() else []
    if files and (memo := tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)) not in _weights_ids:
        _weights_ids[memo] = ",".join(_sha256(f) for f in files)
    weights = _weights_ids[memo] if files else hashlib.sha256(backbone.config.to_json_string().encode()).hexdigest()
    ident = {"path": str(backbone.path), "weights": weights, "family": backbone.family, "max_length": int(max_length),
             "dtype": str(next(backbone.model.parameters()).dtype), "texts": texts_sha256(texts), "n": len(texts)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _encode_batches(backbone, texts: list[str], batch_size: int, max_length: int, progress: bool) -> np.ndarray:
    """Run the frozen trunk (the encoder of a seq2seq model, ``model.base_model`` of an MLM/causal LM) over
    ``texts`` in length-sorted batches; return (n, d) float32 means of the last hidden states over real tokens."""
    tok, m = backbone.tokenizer, backbone.model
    trunk = {"seq2seq": m.get_encoder, "encoder": lambda: m}.get(backbone.family, lambda: m.base_model)()
    lengths = [len(x) for x in tok(texts or [""], truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")[::-1]  # longest first: a batch that does not fit fails at once
    tt = getattr(backbone.config, "type_vocab_size", 0) > 1  # pass token_type_ids only where the model has types
    kw = {"use_cache": False} if backbone.family == "causal" else {}
    out = np.zeros((len(texts), backbone.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in progress_bar(range(0, len(texts), batch_size), desc="embed", unit="batch", enabled=progress):
            idx = order[s:s + batch_size]
            batch = tok([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
            batch = {k: v.to(backbone.device) for k, v in batch.items() if k != "token_type_ids" or tt}
            h = trunk(**batch, **kw).last_hidden_state.float()
            w = batch["attention_mask"].to(h.dtype).unsqueeze(-1)
            out[idx] = ((h * w).sum(1) / w.sum(1).clamp_min(1.0)).cpu().numpy()
    return out


def embed_texts(backbone, texts: list[str], batch_size: int = 64, max_length: int = 128, cache_dir=None,
                progress: bool = True) -> np.ndarray:
    """Sentence features (n, d) float32, rows L2-normalised, from :func:`_encode_batches`. Cached (written via a
    temporary file and a rename) as ``<cache_dir>/embeddings/<embedding_cache_key>.npy``; ``cache_dir`` None means
    ``$WORKBENCH_CACHE`` or else ``~/.cache/workbench``; False disables the cache. A hit does not run the model."""
    texts, file = [str(t) for t in texts], None
    if cache_dir is not False:
        folder = Path(cache_dir or os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")
        file = folder.expanduser() / "embeddings" / f"{embedding_cache_key(backbone, texts, max_length)}.npy"
        try:
            feats = np.load(file, allow_pickle=False) if file.is_file() else None
            if feats is not None and feats.shape == (len(texts), backbone.hidden_size):
                return feats.astype(np.float32, copy=False)
        except (OSError, ValueError, EOFError):
            pass  # unreadable cache entry: recompute and replace it
    feats = _encode_batches(backbone, texts, batch_size, max_length, progress)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=file.parent, prefix=f".{file.stem}.", suffix=".tmp", delete=False) as f:
            np.save(f, feats, allow_pickle=False)
        os.replace(f.name, file)
    return feats


# ----------------------------------------------------------------------------------------------- clustering
@dataclass
class Clustering:
    """``assignments[i]`` in ``0..k-1``; ``summaries[c]`` = {id, size, keywords, medoid: {index, text}, examples};
    ``centroids`` (k, d) = members' mean feature; ``dropped`` = original ids of empty clusters removed by drop_empty."""
    method: str
    k: int
    seed: int
    assignments: np.ndarray
    sizes: list[int]
    summaries: list[dict]
    centroids: np.ndarray
    dropped: list[int] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    corpus: dict = field(default_factory=dict)  # name, n, sha256 (+ how it was read)
    backbone: dict = field(default_factory=dict)  # name, path
    diagnostics: dict = field(default_factory=dict)  # genre purity / NMI (Brown)


def _lda(texts, k, seed, features, opts):
    """LDA topic per text: (assignments, doc-topic matrix, params)."""
    vec = CountVectorizer(stop_words="english", min_df=opts.get("min_df", 2), max_df=opts.get("max_df", 0.5))
    try:
        bow = vec.fit_transform(texts)
    except ValueError as e:  # empty vocabulary, or max_df below min_df on a tiny corpus
        raise ClusterError(f"LDA: no usable bag of words from {len(texts)} texts ({e})") from None
    lda = LatentDirichletAllocation(n_components=k, random_state=seed, max_iter=opts.get("max_iter", 10),
                                    learning_method=opts.get("learning_method", "batch"))
    theta = lda.fit_transform(bow)
    assign, no_words = theta.argmax(1), np.asarray(bow.sum(1)).ravel() == 0
    if no_words.any() and (~no_words).any():  # uniform theta -> argmax 0: place these by nearest topic centroid
        ref = features if features is not None else theta
        used = [c for c in range(k) if (assign[~no_words] == c).any()]
        cents = np.stack([ref[~no_words & (assign == c)].mean(0) for c in used])
        assign[no_words] = np.asarray(used)[((ref[no_words, None, :] - cents[None]) ** 2).sum(-1).argmin(1)]
    return assign, theta, {"vocabulary": len(vec.vocabulary_), "n_without_vocabulary_words": int(no_words.sum()),
                           "max_iter": lda.max_iter, "learning_method": lda.learning_method}


def cluster(features, texts: list[str], method: str = "kmeans", k: int = 16, seed: int = 0, **opts) -> Clustering:
    """Cluster ``texts`` (with their ``features``, (n, d)) into ``k`` groups. ``method="kmeans"``: sklearn KMeans on
    the L2-normalised features (``n_init`` default 10). ``method="lda"``: LatentDirichletAllocation(n_components=k,
    random_state=seed) over CountVectorizer(stop_words="english", min_df=2, max_df=0.5) counts, cluster = most
    probable topic (texts with no vocabulary word: nearest topic centroid); ``features`` may be None for LDA
    (centroids and medoids then use the topic mixtures). Any empty cluster raises :class:`ClusterError` unless
    ``drop_empty=True``, which removes empty clusters, renumbers the rest and records them in ``dropped``."""
    texts, drop_empty, n = [str(t) for t in texts], bool(opts.pop("drop_empty", False)), len(texts)
    if method not in METHODS:
        raise ClusterError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ClusterError(f"k must be an integer >= 2, got {k!r}")
    if n < k:
        raise ClusterError(f"the corpus has {n} texts, fewer than k={k} clusters; lower k or use more texts")
    if features is None and method == "kmeans":
        raise ClusterError("K-means needs features (n, d); got None")
    elif features is not None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != n:
            raise ClusterError(f"features have shape {features.shape} but there are {n} texts")
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if method == "kmeans":
        km = KMeans(n_clusters=int(k), n_init=opts.get("n_init", 10), max_iter=opts.get("max_iter", 300),
                    random_state=seed)
        assign = km.fit_predict(features)
        params = {"n_init": km.n_init, "max_iter": km.max_iter, "inertia": float(km.inertia_)}
    else:
        assign, theta, params = _lda(texts, int(k), seed, features, opts)
        features = features if features is not None else theta.astype(np.float32)
    sizes = np.bincount(assign, minlength=k)
    empty, keep = [int(c) for c in np.flatnonzero(sizes == 0)], np.flatnonzero(sizes > 0)
    if empty and not drop_empty:
        advice = "lower k or pass drop_empty=True" if method == "lda" else "lower k or try another seed"
        raise ClusterError(f"{method}: cluster(s) {empty} of k={k} are empty after fitting on {n} texts; {advice}")
    if len(keep) < 2:
        raise ClusterError(f"{method}: only {len(keep)} non-empty cluster(s) of k={k}; lower k or use more texts")
    assign = np.searchsorted(keep, assign).astype(np.int64)  # renumber the kept clusters 0..len(keep)-1
    return _summarise(method, int(seed), assign, features, texts, empty, {**params, "k_requested": int(k)})


def _summarise(method, seed, assign, features, texts, dropped, params) -> Clustering:
    """Sizes, centroids, medoid, 3 seeded random examples and keywords per cluster: the ``N_KEYWORDS`` words whose
    mean TF-IDF (TfidfVectorizer(stop_words="english") on all texts) in the cluster most exceeds the corpus mean."""
    k, rng = int(assign.max()) + 1, np.random.default_rng(seed)
    sizes, keywords, summaries = np.bincount(assign, minlength=k), [[] for _ in range(k)], []
    centroids = np.stack([features[assign == c].mean(0) for c in range(k)]).astype(np.float32)
    try:
        X = (vec := TfidfVectorizer(stop_words="english", token_pattern=_WORD)).fit_transform(texts)
        member = sparse.csr_matrix((np.ones(len(assign)), (assign, np.arange(len(assign)))), shape=(k, len(assign)))
        inside = np.asarray((member @ X).todense()) / sizes[:, None]
        score, vocab = inside - np.asarray(X.mean(0)), vec.get_feature_names_out()
        keywords = [[str(vocab[j]) for j in np.argsort(-score[c], kind="stable")[:N_KEYWORDS]
                     if score[c, j] > 0 < inside[c, j]] for c in range(k)]
    except ValueError:  # only stop words: no keywords
        pass
    for c in range(k):
        members = np.flatnonzero(assign == c)
        med = int(members[((features[members] - centroids[c]) ** 2).sum(1).argmin()])
        rest = members[members != med]
        ex = sorted(rng.choice(rest, size=min(3, len(rest)), replace=False).tolist()) if len(rest) else [med]
        summaries.append({"id": c, "size": int(sizes[c]), "keywords": keywords[c],
                          "medoid": {"index": med, "text": texts[med]}, "examples": [texts[i] for i in ex]})
    return Clustering(method, k, seed, assign, [int(s) for s in sizes], summaries, centroids, list(dropped),
                      params, {"n": len(texts), "sha256": texts_sha256(texts)})


# ----------------------------------------------------------------------------------------------- files, labels
def save_clustering(clustering: Clustering, out_dir) -> Path:
    """Write ``clusters.json`` and ``clusters.safetensors`` (assignments int64, centroids float32) into ``out_dir``."""
    out, c = Path(out_dir), clustering
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "clusters.json", {f.name: getattr(c, f.name) for f in fields(c) if f.name not in _TENSORS})
    tensors = {"assignments": torch.as_tensor(np.asarray(c.assignments, dtype=np.int64)).contiguous(),
               "centroids": torch.as_tensor(np.asarray(c.centroids, dtype=np.float32)).contiguous()}
    save_file(tensors, str(out / ".clusters.safetensors.tmp"), metadata={"format": "pt"})
    os.replace(out / ".clusters.safetensors.tmp", out / "clusters.safetensors")
    return out


def load_clustering(out_dir) -> Clustering:
    """Read a clustering written by :func:`save_clustering`; missing files or disagreeing shapes raise ClusterError."""
    jf, tf = Path(out_dir) / "clusters.json", Path(out_dir) / "clusters.safetensors"
    if missing := [str(f) for f in (jf, tf) if not f.is_file()]:
        raise ClusterError(f"{missing[0]}: file not found (a saved clustering has clusters.json and .safetensors)")
    try:
        meta = json.loads(jf.read_text(encoding="utf-8"))
        k, sizes, n = int(meta["k"]), list(meta["sizes"]), int(meta["corpus"]["n"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise ClusterError(f"{jf}: not a clusters.json ({type(e).__name__}: {e})") from None
    try:
        with safe_open(str(tf), framework="pt") as f:
            assign, cents = f.get_tensor("assignments").numpy(), f.get_tensor("centroids").float().numpy()
    except (SafetensorError, OSError, KeyError) as e:  # not safetensors, or a tensor missing
        raise ClusterError(f"{tf}: unreadable, or no 'assignments' and 'centroids' tensors ({e})") from None
    if assign.shape != (n,) or cents.ndim != 2 or cents.shape[0] != k or len(sizes) != k or \
            len(meta.get("summaries", [])) != k:
        raise ClusterError(f"{tf}: assignments {tuple(assign.shape)} and centroids {tuple(cents.shape)} do not fit "
                           f"{jf.name} (n={n}, k={k}, {len(sizes)} sizes, {len(meta.get('summaries', []))} summaries)")
    if assign.min() < 0 or assign.max() >= k or np.bincount(assign, minlength=k).tolist() != sizes:
        raise ClusterError(f"{tf}: assignments disagree with the cluster sizes in {jf.name}")
    known = {f.name for f in fields(Clustering)} - _TENSORS
    return Clustering(**{f: meta[f] for f in known if f in meta}, assignments=assign.astype(np.int64), centroids=cents)


def pseudo_label_texts(clustering, mode: str = "keywords", n_keywords: int = 3, max_words: int = 20) -> list[str]:
    """One label text per cluster for the similarity head: its top ``n_keywords`` keywords joined by ", "
    (``mode="keywords"``; more keywords are added where two clusters would collide; the medoid where a cluster has
    none) or its medoid text cut to ``max_words`` words (``mode="medoid"``)."""
    if mode not in ("keywords", "medoid"):
        raise ClusterError(f"mode must be 'keywords' or 'medoid', got {mode!r}")
    out: list[str] = []
    for s in clustering.summaries:
        kws = (s.get("keywords") or []) if mode == "keywords" else []
        options = [", ".join(kws[:m]) for m in range(min(n_keywords, len(kws)), len(kws) + 1)] if kws else \
            [" ".join(s["medoid"]["text"].split()[:max_words])]
        label = next((o for o in options if o not in out), options[-1])
        out.append(label if label not in out else f"{label} ({s['id']})")
    return out


def pseudo_label_words(clustering: Clustering) -> list[str]:
    """One single word per cluster, distinct across clusters: alphabetic keywords taken greedily by rank (rank 1 of
    every cluster first, then rank 2, ...), then words of the medoid, then ``cluster<i>``."""
    kws = [[w for w in s.get("keywords") or [] if w.isalpha()] for s in clustering.summaries]
    medoids = [[w.lower() for w in re.findall(r"[A-Za-z]{3,}", s["medoid"]["text"])] for s in clustering.summaries]
    cands = [kw + [w for i, w in enumerate(m) if w not in kw and w not in m[:i]] for kw, m in zip(kws, medoids)]
    words: list[str | None] = [None] * len(cands)
    for rank in range(max((len(c) for c in cands), default=0)):
        for c, options in enumerate(cands):
            if words[c] is None and rank < len(options) and options[rank] not in words:
                words[c] = options[rank]
    return [w or f"cluster{c}" for c, w in enumerate(words)]


# ----------------------------------------------------------------------------------------------- diagnostics, CLI
def _known(assignments, reference):
    """(assignments, reference) as arrays, without the positions whose reference label is unknown ("" or None)."""
    a, r = np.asarray(assignments), np.asarray(["" if x is None else str(x) for x in reference])
    if a.shape[0] != r.shape[0]:
        raise ClusterError(f"{a.shape[0]} assignments but {r.shape[0]} reference labels")
    return a[r != ""], r[r != ""]


def purity(assignments, reference_labels) -> float:
    """Fraction of texts whose cluster's majority reference label is their own (unknown labels "" are ignored)."""
    a, r = _known(assignments, reference_labels)
    return float(contingency_matrix(r, a).max(0).sum() / len(a)) if len(a) else float("nan")


def nmi(assignments, reference_labels) -> float:
    """sklearn's normalized_mutual_info_score of clusters vs reference labels (unknown labels "" are ignored)."""
    a, r = _known(assignments, reference_labels)
    return float(normalized_mutual_info_score(r, a)) if len(a) else float("nan")


def brown_genres(docs, search_path=None) -> list[str]:
    """Brown genre letter ("a".."r") of each doc index, from ``unlabeled/meta.json`` on the data search path (the
    genre is the letter after the "c" of file ids such as "ca01"); "" where unknown or the metadata is unavailable."""
    files = []
    for d in _dirs(search_path):
        try:
            entries = json.loads((d / "unlabeled" / "meta.json").read_text(encoding="utf-8"))
            files = next(e["doc_files"] for e in (entries if isinstance(entries, list) else [entries])
                         if isinstance(e, dict) and e.get("name") == "brown" and isinstance(e.get("doc_files"), list))
            break
        except (OSError, ValueError, StopIteration):
            continue
    ok = lambda d: type(d) is int and 0 <= d < len(files) and isinstance(files[d], str) and len(files[d]) > 1  # noqa
    return [files[d][1] if ok(d) else "" for d in docs]


def cluster_corpus(backbone, corpus: str = "brown", method: str = "kmeans", k: int = 16, seed: int = 0,
                   limit: int | None = None, min_words: int = 4, cache_dir=None, progress: bool = True,
                   batch_size: int = 64, max_length: int = 128, **opts):
    """Read ``corpus`` (a name on the data search path or a file), keep texts of at least ``min_words`` words, keep
    a seeded random sample of ``limit`` of them (in corpus order) when there are more, embed (cached) and cluster.
    Returns ``(texts, docs, features, clustering)``; for Brown, ``clustering.diagnostics`` has genre purity/NMI."""
    n_kept = len(rows := [r for r in read_corpus(corpus) if len(r["text"].split()) >= min_words])
    if limit is not None and len(rows) > limit:
        rows = [rows[i] for i in sorted(np.random.default_rng(seed).choice(len(rows), limit, replace=False))]
    texts, docs = [r["text"] for r in rows], [r["doc"] for r in rows]
    if len(texts) < max(k, 2):
        raise ClusterError(f"corpus {corpus!r} has {len(texts)} texts of >= {min_words} words, fewer than k={k}")
    feats = embed_texts(backbone, texts, batch_size, max_length, cache_dir, progress)
    res = cluster(feats, texts, method=method, k=k, seed=seed, **opts)
    res.corpus = {"name": str(corpus), **res.corpus, "min_words": min_words, "limit": limit,
                  "n_after_min_words": n_kept, "max_length": max_length}
    res.backbone = {"name": backbone.name, "path": str(backbone.path)}
    genres = brown_genres(docs) if Path(str(corpus)).stem == "brown" else []
    if any(genres):
        res.diagnostics = {"genre_purity": purity(res.assignments, genres), "genre_nmi": nmi(res.assignments, genres),
                           "n_genres": len(set(genres) - {""})}
    return texts, docs, feats, res
