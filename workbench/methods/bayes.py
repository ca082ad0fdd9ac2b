"""BayesPrompt: a prompt distribution fitted to the target domain (GMM + SVGD particles), sampled into prompt slots.

Pipeline (each step a function here; the math is in :mod:`workbench.bayes_svgd`, the grid runner and the CLI in
:mod:`workbench.bayes_run`, the figures in :mod:`workbench.bayes_viz`):

1. **Features** (:func:`features`) of the target-domain examples, each rendered through the task template exactly as
   the head feeds it to the model: ``"embed"`` (default, what the original intends) = the mean of the input word
   embeddings over the real tokens (special tokens in, padding out); ``"encoder"`` = the mean-pooled last hidden
   states of the unprompted backbone (the head's pooled features).
2. **Density** (:func:`fit_distribution`): scikit-learn ``GaussianMixture`` (``components`` = number of classes by
   default, ``full`` or ``diag`` covariance, k-means init, ``random_state`` = seed) in a PCA space of the fitted data
   (:func:`auto_pca_dim`: ``pca_dim=0``, the default, takes ``min(points, particles) // 8`` dimensions, at least 2,
   at most ``points - 1`` and ``feature dimension - 1``; 32 k-shot examples -> 4). 32 points cannot support a
   384-d covariance, and SVGD with few particles per dimension collapses them toward the mean (measured on MiniLM
   with sst2, agnews and mr: the particles keep ~0.75-1.0 of their spread at 8 particles per dimension, 0.5-0.7 at
   one per dimension). ``reg_covar`` is **relative**: sklearn gets ``reg_covar * mean per-dimension variance`` of the fitted
   data, so one value works across backbones (the original's absolute 0.1 was in RoBERTa-large units). It is fitted on
   the k-shot **train** examples only (``density_data="kshot"``, the strict default) or on those plus unlabeled
   in-domain text (``"kshot+unlabeled"``: the rest of the dataset's train split, labels dropped, k-shot train/dev and
   test texts removed) -- a different setting, recorded with every result.
3. **Particles** start at the few-shot train features (``n_particles=0``: one per example; more: cycled with a small
   seeded jitter; fewer: a seeded subset) and move by SVGD toward the density. ``step_size`` is relative too: the
   SVGD step is ``step_size * sqrt(mean per-dimension variance)``.
4. **Prompts from particles** (:meth:`Distribution.sample_prompt`): particles are mapped back to the feature space
   as ``z @ components + mean + residual``, where ``residual`` is the part of the particle's starting example that
   the PCA discards (the density says nothing about those directions, so SVGD leaves them where the example put
   them; setting them to the PCA mean instead made every slot the dataset mean off the p modelled directions), and
   each of the L prompt slots gets the mean of ``subset`` particles drawn without replacement (default 1: one
   particle per slot; 0 = the original's ``min(n_particles, #classes)``, which shrinks every slot toward the particle
   mean by about ``1/sqrt(#classes)``), one independent draw per slot. With ``"embed"`` features the slots are in the
   word-embedding space the prompt lives in; ``"encoder"`` features live in hidden-state space (a usable but
   different scale). The ``bayes`` init (registered below) is one such draw, seeded.

Saved distributions (:meth:`Distribution.save`): ``distribution.safetensors`` (GMM weights/means/covariances, PCA
mean/components, the k-shot examples' PCA residuals and each particle's source example, the density data's features, initial and final particles, the trajectory when recorded) plus
``distribution.json`` (backbone, dimensions, settings, fit notes, SVGD diagnostics). No pickle.
"""
from __future__ import annotations

import dataclasses
import json
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from workbench.config import BayesConfig, ConfigError, TaskConfig, choice, to_dict
from workbench.engine.data import Example
from workbench.engine.heads import make_head
from workbench.engine.runs import write_json
from workbench.engine.splits import normalize_text, texts_of
from workbench.learn.inits import InitContext
from workbench.methods.svgd import GaussianMixtureDensity, svgd

FORMAT_VERSION = 1


class BayesError(ConfigError):
    """Bad input to the Bayesian prompt pipeline; the message names the parameter or file. A ConfigError, so the
    ``fewshot`` command (init ``bayes``) reports it as one ``error:`` line too."""




# ------------------------------------------------------------------------------------------------------- features
@torch.inference_mode()
def features(head, examples, kind: str = "embed", batch_size: int = 32) -> torch.Tensor:
    """(n, d) features of ``examples`` as the head renders them (template included); see the module docstring."""
    choice("bayes.features", kind, ("embed", "encoder"))
    out = []
    for s in range(0, len(examples), batch_size):
        batch = head.batch(examples[s:s + batch_size])
        if kind == "embed":
            if "groups" in batch:  # MLM with label words of several piece counts: any group has the same text
                batch = next(iter(batch["groups"].values()))
            emb = head.bb.embed(batch["input_ids"]).float()
            w = batch["attention_mask"].to(emb.dtype).unsqueeze(-1)
            out.append(((emb * w).sum(1) / w.sum(1).clamp_min(1)).cpu())
        else:
            out.append(head.forward(batch, None)[1].float().cpu())
    if not out:
        raise BayesError("no examples to compute features from")
    return torch.cat(out)


def unlabeled_texts(dataset, split, limit: int, seed: int):
    """Examples of the dataset's train split outside the k-shot train/dev and the test texts, labels dropped."""
    taken = {normalize_text(t) for t in texts_of(split.train) + texts_of(split.dev) + texts_of(split.test)}
    pool = [Example(e.text_a, -1, e.text_b) for e in dataset.splits["train"] if normalize_text(e.text) not in taken]
    random.Random(seed).shuffle(pool)
    return pool[:limit], len(dataset.splits["train"]) - len(pool)


# ------------------------------------------------------------------------------------------------------- density
@dataclass
class Distribution:
    """A fitted GMM (in feature or PCA space), its SVGD particles, and where they came from."""

    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, p)
    covariances: torch.Tensor  # (K, p, p) full | (K, p) diag
    covariance: str
    pca_mean: torch.Tensor | None  # (d,)
    pca_components: torch.Tensor | None  # (p, d)
    data: torch.Tensor  # (n_fit, p) the density data in fitted space
    init_particles: torch.Tensor  # (m, p)
    particles: torch.Tensor  # (m, p) after SVGD
    info: dict = field(default_factory=dict)  # backbone, dims, settings, fit notes, diagnostics
    trajectory: torch.Tensor | None = None  # (T, m, p)
    residuals: torch.Tensor | None = None  # (n_kshot, d) what the PCA discards of each k-shot example
    sources: torch.Tensor | None = None  # (m,) long: the k-shot example each particle started from

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.info["feature_dim"])

    def density(self, device=None, dtype=torch.float32):
        return GaussianMixtureDensity(self.weights, self.means, self.covariances, self.covariance, device, dtype)

    def to_fitted(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x if self.pca_components is None else (x - self.pca_mean) @ self.pca_components.T

    def to_feature(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return z if self.pca_components is None else z @ self.pca_components + self.pca_mean

    def feature_particles(self) -> torch.Tensor:
        """(m, d) the particles in the feature space: ``to_feature`` plus each one's source example's residual."""
        x = self.to_feature(self.particles)
        if self.residuals is not None and self.sources is not None:
            x = x + self.residuals.double()[self.sources.long()]
        return x

    def sample_prompt(self, length: int, generator: torch.Generator, subset: int = 1) -> torch.Tensor:
        """(L, d): each slot the mean of ``subset`` particles drawn without replacement (0 = number of classes)."""
        parts = self.feature_particles().float()
        m = parts.shape[0]
        s = min(subset or int(self.info.get("n_classes", 1)), m)
        idx = torch.stack([torch.randperm(m, generator=generator)[:s] for _ in range(length)])  # (L, s)
        return parts[idx].mean(1)

    def centre(self, length: int) -> torch.Tensor:
        """(L, d): the mean of all particles in every slot (the expectation of :meth:`sample_prompt`)."""
        return self.feature_particles().float().mean(0, keepdim=True).expand(length, -1).clone()

    # ----- save / load ----------------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        t = {"weights": self.weights, "means": self.means, "covariances": self.covariances, "data": self.data,
             "init_particles": self.init_particles, "particles": self.particles}
        if self.pca_components is not None:
            t.update(pca_mean=self.pca_mean, pca_components=self.pca_components)
        if self.trajectory is not None:
            t["trajectory"] = self.trajectory
        if self.residuals is not None and self.sources is not None:
            t.update(residuals=self.residuals, sources=self.sources)
        tmp = directory / ".distribution.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in t.items()}, str(tmp), metadata={"format": "pt"})
        tmp.replace(directory / "distribution.safetensors")
        write_json(directory / "distribution.json", {"format_version": FORMAT_VERSION, "covariance": self.covariance,
                                                     **self.info})
        return directory


def load_distribution(directory, backbone=None) -> Distribution:
    """Load a saved distribution; with ``backbone``, refuse one saved for another model or dimension."""
    directory = Path(directory)
    meta_f, tens_f = directory / "distribution.json", directory / "distribution.safetensors"
    if not meta_f.is_file() or not tens_f.is_file():
        raise BayesError(f"no saved distribution at {directory} (expected distribution.json + distribution.safetensors)")
    info = json.loads(meta_f.read_text())
    if backbone is not None:
        saved = (info.get("backbone"), info.get("backbone_path"), info.get("feature_dim"))
        have = (backbone.name, backbone.path, backbone.hidden_size)
        if saved[2] != have[2] or (saved[1] != have[1] and saved[0] != have[0]):
            raise BayesError(f"{meta_f} was saved for backbone {saved[0]!r} ({saved[1]}, dimension {saved[2]}), "
                             f"but the loading backbone is {have[0]!r} ({have[1]}, dimension {have[2]})")
    t = load_file(str(tens_f))
    cov = info.pop("covariance")
    info.pop("format_version", None)
    return Distribution(t["weights"], t["means"], t["covariances"], cov, t.get("pca_mean"), t.get("pca_components"),
                        t["data"], t["init_particles"], t["particles"], info, t.get("trajectory"), t.get("residuals"),
                        t.get("sources"))


def _fit_gmm(z: np.ndarray, k: int, covariance: str, reg_rel: float, seed: int):
    """sklearn GMM with regularisation raised (x10, with a warning) while the fit fails or a covariance is singular."""
    scale = float(z.var(0).mean()) or 1.0
    rel, notes = reg_rel, []
    for _ in range(12):
        reg = max(rel * scale, 1e-12)
        try:
            gm = GaussianMixture(k, covariance_type=covariance, reg_covar=reg, random_state=seed).fit(z)
            ev = np.linalg.eigvalsh(gm.covariances_) if covariance == "full" else gm.covariances_
            cond = float(ev.max() / max(ev.min(), 1e-300)) if ev.min() > 0 else float("inf")
            if cond < 1e8:
                return gm, {"reg_covar_relative": rel, "reg_covar_absolute": reg, "feature_variance": scale,
                            "condition_number": cond, "raised": bool(notes), "notes": notes}
            why = f"covariance condition number {cond:.3g} (singular)"
        except ValueError as e:  # sklearn: "ill-defined empirical covariance"
            why = f"sklearn: {str(e).splitlines()[0]}"
        new = max(rel * 10, 1e-6)
        notes.append(f"reg_covar={rel:g} (relative): {why}; raised to {new:g}")
        warnings.warn(f"BayesPrompt GMM: singular covariance with reg_covar={rel:g} ({why}); regularising with "
                      f"reg_covar={new:g} (relative to the mean feature variance {scale:.3g})", stacklevel=3)
        rel = new
    raise BayesError(f"GMM fit failed even with reg_covar={rel:g}: {notes[-1]}")


def particle_sources(n: int, m: int, seed: int) -> torch.Tensor:
    """(m,) the k-shot example each of m particles starts from: all n in order (m = n), a seeded subset (m < n), or
    cycled (m > n); the same draw :func:`initial_particles` makes."""
    if m < n:
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m]
    return torch.arange(m) % n


def initial_particles(zk: torch.Tensor, m: int, sd: float, seed: int) -> torch.Tensor:
    """m particles from the k-shot features zk: all of them (m = n), a seeded subset (m < n), or cycled with a
    seeded jitter of 0.01 feature standard deviations (m > n)."""
    if m <= len(zk):
        return zk[particle_sources(len(zk), m, seed)].clone()
    g = torch.Generator().manual_seed(seed)
    return zk[particle_sources(len(zk), m, seed)] + 1e-2 * sd * torch.randn(m, zk.shape[1], generator=g, dtype=zk.dtype)


PARTICLES_PER_DIM = 8


def auto_pca_dim(n_points: int, n_particles: int, feature_dim: int) -> int:
    """``pca_dim=0``: ``min(points, particles) // 8``, at least 2, at most ``points - 1`` and ``feature_dim - 1``.

    Points bound what a covariance can be estimated from; particles bound what SVGD can represent: with m particles
    in p dimensions SVGD's repulsion weakens as p/m grows and the particles collapse toward the mean (measured on
    MiniLM features of sst2, agnews and mr, k=16: the particles keep ~0.75-1.0 of their spread at 8 per dimension,
    0.6-0.9 at 2 per dimension, 0.5-0.7 at 1 per dimension)."""
    return max(1, min(max(2, min(n_points, n_particles) // PARTICLES_PER_DIM), n_points - 1, feature_dim - 1))


def fit_distribution(feats: torch.Tensor, cfg: BayesConfig, n_classes: int, seed: int, backbone=None,
                     extra: torch.Tensor | None = None, progress: bool = False, info: dict | None = None) -> Distribution:
    """Fit the GMM on ``feats`` (the k-shot train features; + ``extra`` unlabeled ones) and run SVGD from ``feats``."""
    feats = feats.double()
    fit = feats if extra is None or len(extra) == 0 else torch.cat([feats, extra.double()])
    n, d = fit.shape
    k = cfg.components or n_classes
    if n < k:
        raise BayesError(f"the GMM needs at least as many examples as components: {n} example(s) for "
                         f"bayes.components={k}{' (= number of classes)' if not cfg.components else ''}; "
                         f"use more shots (k) or fewer components")
    m = cfg.n_particles or len(feats)
    if cfg.pca_dim < 0 or cfg.pca_dim >= d:
        raise BayesError(f"bayes.pca_dim={cfg.pca_dim} must be 0 (auto) or in 1..{d - 1} (below the feature "
                         f"dimension {d})")
    if cfg.pca_dim > n:
        raise BayesError(f"bayes.pca_dim={cfg.pca_dim} exceeds min(examples, feature dimension) = min({n}, {d})")
    p = cfg.pca_dim or auto_pca_dim(n, m, d)
    pca = PCA(p, random_state=seed).fit(fit.numpy())
    pca_mean, pca_comp = torch.from_numpy(pca.mean_), torch.from_numpy(pca.components_)
    z = (fit - pca_mean) @ pca_comp.T
    residuals = feats - (z[: len(feats)] @ pca_comp + pca_mean)  # what the PCA discards of each k-shot example
    gm, reg = _fit_gmm(z.numpy(), k, cfg.covariance, cfg.reg_covar, seed)
    zk = z[: len(feats)]
    x0 = initial_particles(zk, m, reg["feature_variance"] ** 0.5, seed)
    device = cfg.device if cfg.device != "auto" else (str(backbone.device) if backbone is not None else "cpu")
    weights, means = torch.from_numpy(gm.weights_), torch.from_numpy(gm.means_)
    covs = torch.from_numpy(gm.covariances_)
    dens = GaussianMixtureDensity(weights, means, covs, cfg.covariance, device)
    step = cfg.step_size * reg["feature_variance"] ** 0.5
    res = svgd(x0.float().to(device), dens, cfg.iterations, step, cfg.alpha, log_every=cfg.log_every,
               record_every=cfg.record_every, progress=progress)
    pts = (sum(gm.predict(z.numpy()) == c) for c in range(k))
    meta = {**(info or {}), "backbone": getattr(backbone, "name", None), "backbone_path": getattr(backbone, "path", None),
            "feature_dim": d, "fitted_dim": int(z.shape[1]), "pca_dim_rule": "set" if cfg.pca_dim else "auto", "n_classes": n_classes, "components": k,
            "n_kshot": len(feats), "n_unlabeled": n - len(feats), "n_particles": m, "seed": seed,
            "density_data": cfg.density_data, "config": to_dict(cfg), "regularisation": reg,
            "points_per_component": [int(c) for c in pts], "svgd_step_absolute": step,
            "svgd": {"device": device, "wall_s": res.wall_s, "history": res.history},
            "pca_explained_variance": float(pca.explained_variance_ratio_.sum())}
    return Distribution(weights, means, covs, cfg.covariance, pca_mean, pca_comp, z, x0, res.particles.double().cpu(),
                        meta, res.trajectory, residuals, particle_sources(len(zk), m, seed))


def rerun_svgd(dist: Distribution, n_particles: int = 0, iterations: int | None = None, seed: int = 0,
               record_every: int = 0) -> Distribution:
    """The same fitted GMM, SVGD rerun from the k-shot features with another particle count / iteration budget."""
    cfg = BayesConfig(**{**dist.info["config"], "n_particles": n_particles,
                         "iterations": iterations or dist.info["config"]["iterations"], "record_every": record_every})
    zk = dist.data[: dist.info["n_kshot"]]
    m = cfg.n_particles or len(zk)
    x0 = initial_particles(zk, m, dist.info["regularisation"]["feature_variance"] ** 0.5, seed)
    res = svgd(x0.float(), dist.density(), cfg.iterations, dist.info["svgd_step_absolute"], cfg.alpha,
               log_every=cfg.log_every, record_every=record_every)
    info = {**dist.info, "n_particles": m, "config": to_dict(cfg), "svgd": {"device": "cpu", "wall_s": res.wall_s,
                                                                           "history": res.history}}
    sources = particle_sources(len(zk), m, seed) if dist.residuals is not None else None
    return dataclasses.replace(dist, init_particles=x0, particles=res.particles.double(), info=info,
                               trajectory=res.trajectory, sources=sources)


def build_distribution(head, split, cfg: BayesConfig, seed: int, dataset=None, progress: bool = False) -> Distribution:
    """Features of ``split.train`` (+ unlabeled in-domain text when asked), then :func:`fit_distribution`."""
    feats = features(head, split.train, cfg.features)
    extra, info = None, {"dataset": getattr(dataset, "name", split.dataset), "k": split.k}
    if cfg.density_data == "kshot+unlabeled":
        if dataset is None:
            raise BayesError("bayes.density_data='kshot+unlabeled' needs the dataset (its train split)")
        ex, removed = unlabeled_texts(dataset, split, cfg.unlabeled_limit, seed)
        extra = features(head, ex, cfg.features) if ex else None
        info["unlabeled_excluded_overlap"] = removed
    return fit_distribution(feats, cfg, head.n_classes, seed, head.bb, extra, progress, info)


# ------------------------------------------------------------------------------------------------------- calibration
def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> tuple[float, list[dict]]:
    """Expected calibration error: confidences (max probability) in ``n_bins`` equal-width bins over [0, 1]
    (bin b holds (b/n, (b+1)/n], the first also 0); ECE = sum_b n_b/N |accuracy_b - mean confidence_b|.
    Returns the ECE and the per-bin table (lo, hi, count, acc, conf) for a reliability diagram."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise BayesError(f"ece needs probs (N, C) and N labels, got {probs.shape} and {labels.shape}")
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == labels).astype(float)
    b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total, table = 0.0, []
    for i in range(n_bins):
        sel = b == i
        cnt = int(sel.sum())
        acc = float(correct[sel].mean()) if cnt else None
        cf = float(conf[sel].mean()) if cnt else None
        if cnt:
            total += cnt / len(labels) * abs(acc - cf)
        table.append({"lo": i / n_bins, "hi": (i + 1) / n_bins, "count": cnt, "acc": acc, "conf": cf})
    return float(total), table


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------------------------------------------- the init
def bayes_init(ctx: InitContext):
    if ctx.fmt is None or ctx.split is None:
        raise ConfigError("init 'bayes' needs a target dataset and its k-shot split")
    fs = ctx.extras.get("config")  # the caller's FewShotConfig: its bayes section (fewshot, benchmark, bayes command)
    cfg = ctx.extras.get("bayes") or (fs.bayes if fs is not None else BayesConfig())
    head = ctx.extras.get("head") or make_head(ctx.backbone, ctx.fmt, TaskConfig(), ctx.cfg, cfg.max_length)
    dist = ctx.extras.get("distribution") or build_distribution(head, ctx.split, cfg, ctx.seed, ctx.dataset)
    prompt = dist.sample_prompt(ctx.length, torch.Generator().manual_seed(ctx.seed), cfg.subset)
    return prompt, {"features": cfg.features, "components": dist.info["components"], "covariance": dist.covariance,
                    "pca_dim": dist.dim, "pca_dim_rule": dist.info.get("pca_dim_rule"), "density_data": cfg.density_data, "n_particles": dist.info["n_particles"],
                    "svgd_final": dist.info["svgd"]["history"][-1] if dist.info["svgd"]["history"] else None,
                    "regularisation": dist.info["regularisation"]}


__all__ = ["BayesConfig", "BayesError", "Distribution", "auto_pca_dim", "build_distribution", "ece", "features",
           "fit_distribution", "load_distribution", "rerun_svgd", "softmax"]
