"""The math of BayesPrompt: a Gaussian-mixture density with a closed-form score, and Stein variational gradient descent.

:class:`GaussianMixtureDensity` holds a fitted mixture (weights, means, full or diagonal covariances) as torch tensors
and caches everything the score needs **once**, at construction: the precision matrices (from Cholesky factors),
their log-determinants and ``mu_k P_k``. Then for particles ``x`` (n, p)::

    log N_k(x) = -1/2 (x - mu_k)^T P_k (x - mu_k) - 1/2 log|Sigma_k| - p/2 log(2 pi)
    r_k(x)     = softmax_k(log pi_k + log N_k(x))                          (responsibilities, in log space)
    grad log p(x) = -sum_k r_k(x) P_k (x - mu_k)

:func:`naive_log_prob_and_score` is the same formula with the covariances inverted on every call, as the original
BayesPrompt code does inside its SVGD loop; it exists for the equivalence test and the benchmark.

:func:`svgd` runs SVGD (Liu & Wang 2016) with the RBF kernel ``k(x, y) = exp(-|x - y|^2 / (2 h^2))``, the median
heuristic ``h^2 = median_ij |x_i - x_j|^2 / (2 log(n + 1))`` (recomputed every iteration; the median is the lower
middle value, ``torch.median``), the update direction ``phi = (K @ score + sum_j grad_{x_j} k(x_j, .)) / n`` and
AdaGrad with momentum: ``hist = g^2`` at the first iteration, then ``hist = alpha hist + (1 - alpha) g^2``, and
``x += step * g / (fudge + sqrt(hist))``. At iterations 0, ``log_every``, ``2 log_every``... and after the last it logs the particles'
mean log-density and the kernel Stein discrepancy (V-statistic, RBF kernel with the bandwidth fixed at its
iteration-0 median value so that values are comparable over iterations) and the current bandwidth. A
non-finite particle stops the run with :class:`SVGDError` naming the iteration. Runs on whatever device the
particles are on (CPU or CUDA).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from workbench.engine.progress import progress_bar
from workbench.learn.tuner import TuningError

LOG_2PI = math.log(2 * math.pi)


class SVGDError(TuningError):
    """SVGD cannot go on (non-finite particles); the message names the iteration. A TuningError, so every command
    reports it as one ``error:`` line."""


class GaussianMixtureDensity:
    """A Gaussian mixture with cached precisions; ``covariance`` is ``"full"`` (K, p, p) or ``"diag"`` (K, p)."""

    def __init__(self, weights, means, covariances, covariance: str = "full", device=None, dtype=torch.float32):
        if covariance not in ("full", "diag"):
            raise ValueError(f"covariance must be 'full' or 'diag', got {covariance!r}")
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        cov = torch.as_tensor(covariances, dtype=torch.float64)
        K, p = mu.shape
        self.covariance, self.K, self.dim = covariance, K, p
        self.weights, self.means, self.covariances = w, mu, cov  # float64 originals (for saving)
        if covariance == "full":
            L, info = torch.linalg.cholesky_ex(cov)
            if int(info.max()) > 0:
                bad = [k for k in range(K) if int(info[k]) > 0]
                raise ValueError(f"covariance of component(s) {bad} is not positive definite; increase reg_covar")
            prec = torch.cholesky_inverse(L)
            logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
            mprec = torch.einsum("kp,kpq->kq", mu, prec)
        else:
            if (cov <= 0).any():
                raise ValueError("diagonal covariance has non-positive entries; increase reg_covar")
            prec = 1.0 / cov
            logdet = torch.log(cov).sum(-1)
            mprec = mu * prec
        dev = torch.device(device) if device is not None else torch.device("cpu")
        cast = lambda t: t.to(device=dev, dtype=dtype).contiguous()
        self.device, self.dtype = dev, dtype
        self._logw, self._mu, self._prec, self._mprec = cast(torch.log(w)), cast(mu), cast(prec), cast(mprec)
        self._const = cast(-0.5 * logdet - 0.5 * p * LOG_2PI)  # (K,)
        self._mpm = cast((mprec * mu).sum(-1))  # mu_k^T P_k mu_k

    def to(self, device=None, dtype=None) -> GaussianMixtureDensity:
        return GaussianMixtureDensity(self.weights, self.means, self.covariances, self.covariance,
                                      device or self.device, dtype or self.dtype)

    def log_prob_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x) (n,), grad_x log p(x) (n, p))`` in closed form with the cached precisions."""
        # (x - mu)^T P (x - mu) = x.(P x) - 2 x.(P mu) + mu.(P mu): no (K, n, p) difference tensor is needed
        if self.covariance == "full":
            xp = torch.matmul(x.unsqueeze(0), self._prec)  # P_k x, (K, n, p)
        else:
            xp = x.unsqueeze(0) * self._prec.unsqueeze(1)
        maha = (x.unsqueeze(0) * xp).sum(-1) - 2 * self._mprec @ x.T + self._mpm.unsqueeze(1)  # (K, n)
        joint = -0.5 * maha + self._const.unsqueeze(1) + self._logw.unsqueeze(1)
        lp = torch.logsumexp(joint, 0)
        r = torch.softmax(joint, 0)  # (K, n)
        # -sum_k r_k P_k (x - mu_k); a broadcast multiply-and-sum, not einsum("kn,knp->np"), which torch 2.13 on CPU
        # runs ~12x slower here (1.6 vs 0.13 ms at K=4, n=256, p=384: a sixth of the whole SVGD iteration)
        score = r.T @ self._mprec - (r.unsqueeze(-1) * xp).sum(0)
        return lp, score

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob_and_score(x)[0]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob_and_score(x)[1]


def naive_log_prob_and_score(x, weights, means, covariances, covariance: str = "full"):
    """The same log-density and score, inverting the covariances on every call (the original's cost profile)."""
    diff = x.unsqueeze(0) - means.unsqueeze(1)
    if covariance == "full":
        prec = torch.stack([torch.linalg.inv(c) for c in covariances])  # per component, every call
        logdet = torch.stack([torch.linalg.slogdet(c)[1] for c in covariances])
        pd = torch.matmul(diff, prec)  # symmetric precision: diff @ P == (P diff^T)^T
    else:
        prec = 1.0 / covariances
        logdet = torch.log(covariances).sum(-1)
        pd = diff * prec.unsqueeze(1)
    p = x.shape[-1]
    joint = -0.5 * (diff * pd).sum(-1) - 0.5 * logdet.unsqueeze(1) - 0.5 * p * LOG_2PI + torch.log(weights).unsqueeze(1)
    r = torch.softmax(joint, 0)
    return torch.logsumexp(joint, 0), -(r.unsqueeze(-1) * pd).sum(0)


def rbf_kernel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(K (n, n), squared distances (n, n), h^2)`` with the median-heuristic bandwidth."""
    n = x.shape[0]
    xx = (x * x).sum(1)
    sq = (xx.unsqueeze(1) + xx.unsqueeze(0) - 2 * x @ x.T).clamp_min(0)
    med = sq.flatten().median()  # the lower middle value
    h2 = 0.5 * med / math.log(n + 1)
    h2 = torch.where(h2 > 0, h2, torch.ones_like(h2))  # all particles coincide (or n = 1): unit bandwidth
    return torch.exp(-sq / (2 * h2)), sq, h2


def svgd_direction(x, score, kern, h2):
    """phi(x_i) = 1/n sum_j [k(x_j, x_i) score(x_j) + grad_{x_j} k(x_j, x_i)]."""
    grad_k = (x * kern.sum(1, keepdim=True) - kern @ x) / h2
    return (kern @ score + grad_k) / x.shape[0]


def kernel_stein_discrepancy(x, score, kern, sq, h2) -> float:
    """KSD (square root of the V-statistic) of the particles against the density whose score is given."""
    p = x.shape[1]
    sx = score @ x.T  # (i, j): s_i . x_j
    sxd = torch.diagonal(sx)
    cross = sxd.unsqueeze(1) + sxd.unsqueeze(0) - sx - sx.T  # (s_i - s_j) . (x_i - x_j)
    u = kern * (score @ score.T + cross / h2 + p / h2 - sq / h2 ** 2)
    return float(u.mean().clamp_min(0).sqrt())


def _diagnostics(it, x, lp, score, sq, h2, h2_ksd) -> dict:
    """KSD with the bandwidth fixed at its iteration-0 value, so the curve is comparable across iterations."""
    kern = torch.exp(-sq / (2 * h2_ksd))
    return {"iteration": it, "mean_log_density": float(lp.mean()), "ksd": kernel_stein_discrepancy(x, score, kern, sq, h2_ksd),
            "bandwidth": float(h2.sqrt())}


@dataclass
class SVGDResult:
    particles: torch.Tensor  # (n, p), on the input's device
    history: list = field(default_factory=list)  # {"iteration", "mean_log_density", "ksd", "bandwidth"}
    trajectory: torch.Tensor | None = None  # (T, n, p) on cpu when record_every > 0 (iteration 0 first)
    trajectory_iterations: list = field(default_factory=list)
    iterations: int = 0
    wall_s: float = 0.0


def svgd(x0: torch.Tensor, density: GaussianMixtureDensity | None = None, iterations: int = 1000,
         step_size: float = 0.01, alpha: float = 0.9, fudge: float = 1e-6, log_every: int = 10,
         record_every: int = 0, naive: tuple | None = None, progress: bool = False) -> SVGDResult:
    """Move particles ``x0`` (n, p) toward ``density`` by SVGD; see the module docstring for the exact update.

    ``naive=(weights, means, covariances, covariance)`` swaps the cached score for :func:`naive_log_prob_and_score`
    (covariances inverted at every iteration); the arithmetic is otherwise identical.
    """
    if iterations < 1 or step_size <= 0:
        raise ValueError(f"svgd needs iterations >= 1 and step_size > 0, got {iterations} and {step_size}")
    if density is None and naive is None:
        raise ValueError("svgd needs a density (or naive=(weights, means, covariances, covariance))")

    t0 = time.perf_counter()
    x = x0.detach().clone()
    if not torch.isfinite(x).all():
        raise SVGDError("non-finite initial particles (iteration 0)")
    if naive is not None:
        w, mu, cov, ctype = (t.to(x) if torch.is_tensor(t) else t for t in naive)
        score_fn = lambda z: naive_log_prob_and_score(z, w, mu, cov, ctype)
    else:
        score_fn = density.log_prob_and_score
    hist = h2_ksd = None
    history, frames, frame_its = [], [], []
    if record_every:
        frames.append(x.detach().cpu().clone())
        frame_its.append(0)
    for it in progress_bar(range(1, iterations + 1), desc="svgd", nested=True, enabled=progress):
        lp, score = score_fn(x)
        kern, sq, h2 = rbf_kernel(x)
        g = svgd_direction(x, score, kern, h2)
        if h2_ksd is None:
            h2_ksd = h2
        if log_every and (it - 1) % log_every == 0:  # the state before update number `it`
            history.append(_diagnostics(it - 1, x, lp, score, sq, h2, h2_ksd))
        hist = g * g if hist is None else alpha * hist + (1 - alpha) * g * g
        x = x + step_size * g / (fudge + hist.sqrt())
        if not bool(torch.isfinite(x).all()):
            raise SVGDError(f"non-finite particles at SVGD iteration {it} of {iterations} "
                            f"(step_size={step_size}); lower the step size or raise reg_covar")
        if record_every and (it % record_every == 0 or it == iterations):
            frames.append(x.detach().cpu().clone())
            frame_its.append(it)
    if log_every:
        lp, score = score_fn(x)
        _, sq, h2 = rbf_kernel(x)
        history.append(_diagnostics(iterations, x, lp, score, sq, h2, h2_ksd))
    traj = torch.stack(frames) if frames else None
    return SVGDResult(x, history, traj, frame_its, iterations, time.perf_counter() - t0)
