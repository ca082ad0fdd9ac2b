"""BayesPrompt: GMM score, SVGD (cached == naive, moves toward density), ECE, fit errors, save/load, init and CLI."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from workbench.config import ConfigError
from workbench.methods.bayes import BayesConfig, BayesError, ece, fit_distribution, load_distribution
from workbench.methods.svgd import GaussianMixtureDensity, SVGDError, naive_log_prob_and_score, svgd


def mixture(K=3, p=5, seed=0, covariance="full"):
    g = torch.Generator().manual_seed(seed)
    mu = 3 * torch.randn(K, p, generator=g, dtype=torch.float64)
    if covariance == "full":
        a = torch.randn(K, p, p, generator=g, dtype=torch.float64)
        cov = a @ a.transpose(1, 2) / p + 0.3 * torch.eye(p, dtype=torch.float64)
    else:
        cov = 0.3 + torch.rand(K, p, generator=g, dtype=torch.float64)
    w = torch.softmax(torch.randn(K, generator=g, dtype=torch.float64), 0)
    return w, mu, cov


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_score_matches_autograd_of_log_density(covariance):
    w, mu, cov = mixture(covariance=covariance)
    dens = GaussianMixtureDensity(w, mu, cov, covariance, dtype=torch.float64)
    x = (2 * torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    full = cov if covariance == "full" else torch.diag_embed(cov)
    ref = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=w),
                                                torch.distributions.MultivariateNormal(mu, full))
    lp_ref = ref.log_prob(x)
    grad_ref, = torch.autograd.grad(lp_ref.sum(), x)
    lp, score = dens.log_prob_and_score(x.detach())
    assert torch.allclose(lp, lp_ref.detach(), atol=1e-9) and torch.allclose(score, grad_ref, atol=1e-9)
    lp_n, score_n = naive_log_prob_and_score(x.detach(), w, mu, cov, covariance)
    assert torch.allclose(lp_n, lp, atol=1e-9) and torch.allclose(score_n, score, atol=1e-9)


def test_cached_svgd_equals_naive_svgd():
    w, mu, cov = mixture(K=3, p=6)
    dens = GaussianMixtureDensity(w, mu, cov, dtype=torch.float64)
    x0 = torch.randn(16, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a = svgd(x0, dens, iterations=40, step_size=0.05, log_every=10)
    b = svgd(x0, None, iterations=40, step_size=0.05, log_every=10, naive=(w, mu, cov, "full"))
    assert torch.allclose(a.particles, b.particles, atol=1e-8)
    assert not torch.allclose(a.particles, x0)  # it did move
    assert [h["iteration"] for h in a.history] == [0, 10, 20, 30, 40]
    assert a.history[-1]["ksd"] == pytest.approx(b.history[-1]["ksd"], rel=1e-6)


def test_svgd_moves_particles_toward_higher_density_and_lower_ksd():
    w, mu, cov = mixture(K=2, p=4, seed=3)
    dens = GaussianMixtureDensity(w, mu, cov)
    x0 = 8 + torch.randn(32, 4, generator=torch.Generator().manual_seed(4))  # far from both modes
    res = svgd(x0, dens, iterations=300, step_size=0.05, log_every=50, record_every=100)
    first, last = res.history[0], res.history[-1]
    assert last["mean_log_density"] > first["mean_log_density"] + 5
    assert last["ksd"] < 0.5 * first["ksd"]
    assert res.trajectory.shape == (4, 32, 4) and res.trajectory_iterations == [0, 100, 200, 300]
    assert dens.log_prob(res.particles).mean() > dens.log_prob(x0).mean()
    assert res.particles.std(0).min() > 0.05  # kernel repulsion: the particles do not collapse onto one point


def test_svgd_stops_on_non_finite_particles_with_the_iteration():
    w, mu, cov = mixture(K=2, p=3)
    dens = GaussianMixtureDensity(w, mu, cov)
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(SVGDError, match=r"iteration 1 of 5"):
        svgd(x0, dens, iterations=5, step_size=1e39)
    with pytest.raises(SVGDError, match="iteration 0"):
        svgd(torch.full((4, 3), float("nan")), dens, iterations=5)


def test_ece_on_constructed_cases():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    # 4 examples at confidence 0.95 (3 right), 6 at 0.55 (3 right): bins 15 and 9 of 15
    probs = np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45]] * 3 + [[0.45, 0.55]] * 3)
    want = 0.4 * abs(0.75 - 0.95) + 0.6 * abs(0.5 - 0.55)
    value, table = ece(probs, labels)
    assert value == pytest.approx(want)
    assert len(table) == 15 and table[14]["count"] == 4 and table[8]["count"] == 6 and table[8]["acc"] == 0.5
    perfect = np.array([[1.0, 0.0]] * 4)
    assert ece(perfect, np.zeros(4, dtype=int))[0] == 0.0
    with pytest.raises(BayesError):
        ece(probs, labels[:3])


def feats(n=12, d=6, seed=0, classes=2):
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(classes, d, generator=g)
    return torch.cat([c + 0.3 * torch.randn(n // classes, d, generator=g) for c in centres])


BB = SimpleNamespace(name="tiny-a", path="/models/tiny-a", hidden_size=6, device=torch.device("cpu"))


def test_fit_errors_and_singular_covariance_is_regularised_with_a_warning():
    cfg = BayesConfig(iterations=20)
    with pytest.raises(BayesError, match=r"3 example\(s\) for bayes.components=4"):
        fit_distribution(feats(n=12)[:3], BayesConfig(components=4), 2, 0, BB)
    with pytest.raises(BayesError, match="bayes.pca_dim=9"):
        fit_distribution(feats(), BayesConfig(pca_dim=9), 2, 0, BB)
    # 4 distinct points repeated, 6 dims, no regularisation: the covariances are singular
    x = feats(n=4).repeat(3, 1)
    with pytest.warns(UserWarning, match="singular covariance"):
        dist = fit_distribution(x, BayesConfig(reg_covar=0.0, iterations=20), 2, 0, BB)
    reg = dist.info["regularisation"]
    assert reg["raised"] and reg["reg_covar_relative"] > 0 and reg["notes"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default (relative 0.1) needs no raise
        ok = fit_distribution(feats(), cfg, 2, 0, BB)
    assert not ok.info["regularisation"]["raised"]


def test_save_load_round_trip_and_mismatched_backbone(tmp_path):
    dist = fit_distribution(feats(n=16), BayesConfig(iterations=30, pca_dim=3, covariance="diag", record_every=10),
                            2, 0, BB)
    assert dist.particles.shape == (16, 3) and dist.trajectory.shape == (4, 16, 3)
    dist.save(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["distribution.json", "distribution.safetensors"]
    back = load_distribution(tmp_path / "d", backbone=BB)
    for name in ("weights", "means", "covariances", "particles", "init_particles", "pca_mean", "pca_components",
                 "trajectory", "residuals", "sources"):
        assert torch.equal(getattr(back, name), getattr(dist, name)), name
    assert back.covariance == "diag" and back.info["svgd"]["history"] == dist.info["svgd"]["history"]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(back.sample_prompt(4, g1), dist.sample_prompt(4, g2))
    assert back.sample_prompt(4, g1).shape == (4, 6)  # mapped back from the PCA space to the feature dimension
    other = SimpleNamespace(name="tiny-b", path="/models/tiny-b", hidden_size=8)
    with pytest.raises(BayesError, match=r"saved for backbone 'tiny-a'.*dimension 6.*'tiny-b'.*dimension 8"):
        load_distribution(tmp_path / "d", backbone=other)
    with pytest.raises(BayesError, match="no saved distribution"):
        load_distribution(tmp_path / "nothing")
    # the density is the same after the round trip
    x = torch.randn(5, 3)
    assert torch.allclose(back.density().log_prob(x), dist.density().log_prob(x))


def test_sample_prompt_slot_rule():
    dist = fit_distribution(feats(n=8), BayesConfig(iterations=10), 2, 0, BB)
    prompt = dist.sample_prompt(5, torch.Generator().manual_seed(0), subset=1)
    parts = dist.feature_particles().float()
    assert all(any(torch.allclose(row, p) for p in parts) for row in prompt)  # subset=1: each slot is one particle
    full = dist.sample_prompt(3, torch.Generator().manual_seed(0), subset=8)
    assert torch.allclose(full, dist.centre(3), atol=1e-6)  # all particles averaged = the centre


def _mean_cosine(x):
    x = torch.nn.functional.normalize(x.float(), dim=1)
    return float(((x @ x.T).sum() - len(x)) / (len(x) * (len(x) - 1)))


def _spread(x):
    """Mean distance to the rows' mean, relative to the mean's norm."""
    return float((x - x.mean(0)).norm(dim=1).mean() / x.mean(0).norm())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_slots_are_not_near_copies(seed):
    # features shaped like MiniLM's mean word embeddings: a large shared mean (pairwise cosine ~0.7), 2 classes,
    # 32 points in 96 dims. The old default (a full 96-d covariance, PCA off, 2 particles averaged per slot) gave
    # slots with cosine 0.87-0.92 and half the data's spread; the default now keeps the data's diversity
    g = torch.Generator().manual_seed(seed)
    d = 96
    mu, cls = torch.randn(d, generator=g), 0.5 * torch.randn(2, d, generator=g)
    x = torch.cat([mu + c + 0.6 * torch.randn(16, d, generator=g) for c in cls])
    bb = SimpleNamespace(name="syn", path="/syn", hidden_size=d, device=torch.device("cpu"))
    cfg = BayesConfig(iterations=300)
    dist = fit_distribution(x, cfg, 2, seed, bb)
    assert dist.dim == 4 and dist.info["pca_dim_rule"] == "auto"  # 32 points and particles // 8
    slots = dist.sample_prompt(20, torch.Generator().manual_seed(seed), cfg.subset)
    assert slots.shape == (20, d)
    assert _spread(slots) >= 0.75 * _spread(x)
    assert _mean_cosine(slots) <= _mean_cosine(x) + 0.08


def test_pca_dim_auto_rule_and_bounds():
    from workbench.methods.bayes import auto_pca_dim
    assert auto_pca_dim(32, 32, 384) == 4 and auto_pca_dim(64, 64, 384) == 8 and auto_pca_dim(64, 32, 384) == 4
    assert auto_pca_dim(8, 8, 384) == 2 and auto_pca_dim(2, 2, 384) == 1 and auto_pca_dim(2032, 32, 384) == 4
    assert auto_pca_dim(5000, 5000, 384) == 383
    with pytest.raises(ConfigError, match="bayes.pca_dim"):
        BayesConfig(pca_dim=-1)
    with pytest.raises(BayesError, match=r"bayes.pca_dim=6 must be 0 \(auto\) or in 1..5"):
        fit_distribution(feats(), BayesConfig(pca_dim=6), 2, 0, BB)
    dist = fit_distribution(feats(n=16), BayesConfig(pca_dim=3, iterations=5), 2, 0, BB)
    assert dist.dim == 3 and dist.info["pca_dim_rule"] == "set"
    # each particle carries its source example's PCA residual: before SVGD they are the k-shot features exactly
    start = dist.to_feature(dist.init_particles) + dist.residuals[dist.sources]
    assert torch.allclose(start, feats(n=16).double(), atol=1e-5)


# --------------------------------------------------------------------------------------------- tiny model, CLI
def _cli(argv):
    from workbench.cli.main import main
    return main(argv)


def test_bayes_init_in_fewshot_and_bayes_cli(tiny, toy_data, tmp_path, capsys):
    common = ["--dataset", "toy", "--k", "4", "--seeds", "1", "--backbone", tiny["bert-mlm"], "--steps", "2",
              "--eval-every", "2", "--prompt-length", "3", "--max-length", "32", "--quiet"]
    assert _cli(["fewshot", "--methods", "random,bayes", "--out", str(tmp_path / "fs")] + common) == 0
    res = json.loads((tmp_path / "fs" / "results.json").read_text())
    assert {r["method"] for r in res["rows"]} == {"random", "bayes"}
    meta = json.loads((tmp_path / "fs/adapters/toy/bayes/seed1/workbench_prompt.json").read_text())
    assert meta["provenance"]["init"] == "bayes" and meta["provenance"]["components"] == 2

    out = tmp_path / "b"
    code = _cli(["bayes", "--baselines", "zero-shot,random", "--iterations", "30", "--ensemble-size", "3",
                 "--density-data", "kshot+unlabeled", "--set", "bayes.unlabeled_limit=6", "--out", str(out)] + common)
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    methods = ["zero-shot", "random", "bayes-init", "bayes-resample", "bayes-ensemble"]
    assert [s["method"] for s in res["summary"]] == methods
    assert all(0 <= s["test_acc_mean"] <= 1 and 0 <= s["test_ece_mean"] <= 1 for s in res["summary"])
    assert res["density_setting"] == "kshot+unlabeled" and all(r["density_data"] == "kshot+unlabeled" for r in res["rows"])
    assert 1 <= res["distributions"]["toy/seed1"]["n_unlabeled"] <= 6  # toy texts repeat: overlaps with k-shot/test dropped
    for m in ("random", "bayes-init", "bayes-resample"):
        assert (out / "adapters/toy" / m / "seed1/adapter_model.safetensors").is_file()
    from safetensors.torch import load_file
    ens = load_file(str(out / "predictions/toy/seed1/bayes-ensemble.safetensors"))
    assert ens["members"].shape[0] == 3 and torch.allclose(ens["members"].mean(0), ens["probs"], atol=1e-6)
    from workbench.engine.backbones import load_backbone
    bb = load_backbone(tiny["bert-mlm"])
    dist = load_distribution(out / "distributions/toy/seed1", backbone=bb)
    assert dist.particles.shape == (8, 2) and dist.feature_particles().shape == (8, bb.hidden_size)  # auto PCA: 2
    assert dist.info["unlabeled_excluded_overlap"] > 0
    with pytest.raises(BayesError, match="saved for backbone"):
        load_distribution(out / "distributions/toy/seed1", backbone=load_backbone(tiny["gpt2"]))
    events = [json.loads(l)["event"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"eval", "row", "svgd"} <= set(events)
    assert json.loads((out / "config.json").read_text())["bayes"]["iterations"] == 30
    printed = capsys.readouterr().out
    assert "bayes-ensemble" in printed and "minus each baseline" in printed
    # each mode against each baseline, in accuracy and ECE; report.md holds the same comparisons
    comps = res["comparisons"]
    assert [(c["method"], c["reference"]) for c in comps] == [(m, r) for m in methods[2:] for r in methods[:2]]
    by = {r["method"]: r for r in res["rows"]}
    for c in comps:
        assert c["test_ece"]["diffs"] == [by[c["method"]]["test_ece"] - by[c["reference"]]["test_ece"]]
    text = (out / "report.md").read_text()
    assert f"| toy | 4 | bayes-resample | random | 1 | {100 * comps[3]['test_acc']['diffs'][0]:+.1f} (" in text

    capsys.readouterr()
    bad = _cli(["bayes", "--set", "bayes.components=50", "--out", str(tmp_path / "bad")] + common)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert bad == 2 and last.startswith("error:") and "bayes.components=50" in last
    assert not (tmp_path / "bad").exists()  # nothing half-written
    assert _cli(["bayes", "--modes", "init,sideways", "--out", str(tmp_path / "bad2")] + common) == 2
    assert "modes" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_svgd_on_cuda_matches_cpu():
    w, mu, cov = mixture(K=2, p=4)
    x0 = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    cpu = svgd(x0, GaussianMixtureDensity(w, mu, cov), iterations=50, step_size=0.05)
    gpu = svgd(x0.cuda(), GaussianMixtureDensity(w, mu, cov, device="cuda"), iterations=50, step_size=0.05)
    assert gpu.particles.is_cuda and torch.allclose(gpu.particles.cpu(), cpu.particles, atol=1e-4)
