"""SUPMER: ψ (identity at init, norm, exact meta-gradient, gate regression, save/load), the λ curriculum, the learner
on tiny models (loss goes down, resume through the meta-training loop), and the downstream ψ hook."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from test_supmer_corpus import write_corpus
from workbench.methods import supmer
from workbench.methods.psi import Psi, PsiError, load_psi, save_psi
from workbench.methods.supmer import sample_lambda


def _cfg(**opts):
    from workbench.config import SupmerConfig
    return SimpleNamespace(meta=SimpleNamespace(inner_lr=1.0), supmer=SupmerConfig(**opts))


@pytest.fixture(scope="module")
def bert(tiny):
    from workbench.engine.backbones import load_backbone
    return load_backbone(tiny["bert"])


@pytest.fixture(scope="module")
def source(bert, tmp_path_factory):
    from workbench.config import PromptConfig
    from workbench.config import SelfSupConfig
    from workbench.tasks.selfsup import SelfSupSource
    path = write_corpus(tmp_path_factory.mktemp("corpus") / "c.jsonl")
    cfg = SelfSupConfig(corpus=str(path), n_clusters=6, n_options=3, limit=None, per_task_support=4, per_task_query=4)
    return SelfSupSource(bert, cfg, PromptConfig(length=4), progress=False, max_length=40)


# ----------------------------------------------------------------------------------------------- ψ
def test_psi_starts_at_identity_and_matches_the_gradient_norm():
    torch.manual_seed(0)
    psi = Psi(5, 16, rank=4)
    g, h = torch.randn(3, 5, 16) * 1e-4, torch.randn(3, 16)
    out, gate = psi(g, h)
    assert torch.allclose(out, g, rtol=1e-5, atol=1e-12)  # ψ(g) = g at init, whatever the gate
    assert gate.shape == (3,) and torch.allclose(gate, torch.full((3,), 0.5), atol=0.05)
    with torch.no_grad():
        for U in psi.U:
            U.normal_()
    t = psi.transform(g)
    assert not torch.allclose(t, g, rtol=1e-2)  # no longer the identity ...
    assert torch.allclose(t.flatten(1).norm(dim=1), g.flatten(1).norm(dim=1), rtol=1e-5)  # ... same norm
    assert torch.allclose(psi.transform(7.0 * g), 7.0 * t, rtol=1e-4, atol=1e-12)  # scale-invariant
    row = Psi(5, 16, rank=4, norm="row")
    with torch.no_grad():
        row.U[0].normal_()
    assert torch.allclose(row.transform(g).norm(dim=-1), g.norm(dim=-1), rtol=1e-5)


def test_psi_meta_gradient_is_exact_through_the_inner_step():
    """d/dφ of a query loss at P' = P − a·ψ_φ(g, h̄) (autograd) equals central finite differences (float64)."""
    torch.manual_seed(1)
    psi = Psi(4, 6, rank=3).double()
    with torch.no_grad():
        for U in psi.U:
            U.normal_(std=0.5)
    P, g, h = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64), \
        torch.randn(6, dtype=torch.float64)
    A, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 2, 1, 1])

    def query_loss():
        adapted = P - 0.7 * psi(g, h)[0]
        return torch.nn.functional.cross_entropy(adapted @ A, y)

    params = list(psi.parameters())
    grads = torch.autograd.grad(query_loss(), params)
    direction = [torch.randn_like(p) for p in params]
    analytic = sum((a * d).sum() for a, d in zip(grads, direction)).item()
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(eps * d)
        up = query_loss().item()
        for p, d in zip(params, direction):
            p.sub_(2 * eps * d)
        down = query_loss().item()
    assert abs(analytic) > 1e-4
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-5)


class _Recorder:
    """Stands in for ψ's optimizer: keeps the gradients the learner hands it, changes nothing."""

    def __init__(self, params):
        self.params = list(params)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.grads = [p.grad.detach().clone() for p in self.params]


def test_learner_psi_gradient_matches_finite_differences_on_a_backbone(source):
    """The ψ gradient inside the learner (query loss through the inner step, mixup and gate loss off) matches
    finite differences of the learner's own query loss on a tiny backbone."""
    torch.manual_seed(0)
    eps_ = source.sample(np.random.default_rng(3), 2)
    cfg = _cfg(mixup=False, gate_weight=0.0, psi_clip=0.0)
    P = torch.randn(4, source.bb.hidden_size) * 0.5
    state = supmer.supmer_init_state(P, cfg, source.bb)
    psi = state["psi"]
    with torch.no_grad():
        for U in psi.U:
            U.normal_(std=0.3)
    state["psi_opt"] = rec = _Recorder(psi.parameters())
    loss, _, _ = supmer.supmer_learner(P.clone().requires_grad_(True), eps_, cfg, True, state)
    # perturb only parameters after ψ's ReLUs (last U, gate output layer): the loss is smooth along this direction,
    # so finite differences are not thrown off by ReLU kinks
    smooth = {id(psi.U[-1]), id(psi.g2.weight), id(psi.g2.bias)}
    direction = [torch.randn_like(p) * (id(p) in smooth) for p in psi.parameters()]
    analytic = sum((a * d).sum() for a, d in zip(rec.grads, direction)).item()
    eps = 3e-2  # float32 backbone: a larger step keeps rounding small against the difference (measured)
    vals = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(psi.parameters(), direction):
                p.add_(sign * eps * d)
        vals.append(supmer.supmer_learner(P.clone().requires_grad_(True), eps_, cfg, True, state)[0].item())
        with torch.no_grad():
            for p, d in zip(psi.parameters(), direction):
                p.sub_(sign * eps * d)
    assert abs(analytic) > 1e-3
    assert analytic == pytest.approx((vals[0] - vals[1]) / (2 * eps), rel=0.02)


def test_gate_regression_pulls_the_gate_toward_its_target(source):
    cfg = _cfg(mixup=False, gate_weight=50.0, psi_lr=0.02)
    P = (torch.randn(4, source.bb.hidden_size) * 0.5).requires_grad_(True)
    state = supmer.supmer_init_state(P, cfg, source.bb)
    eps_ = source.sample(np.random.default_rng(0), 2)
    for ep in eps_:
        ep.info["domain_sim"] = 1.0
    first = None
    for _ in range(25):
        _, _, logs = supmer.supmer_learner(P, eps_, cfg, True, state)
        first = first or logs
    assert first["gate_target"] > 0.5
    assert abs(logs["gate"] - logs["gate_target"]) < 0.3 * abs(first["gate"] - first["gate_target"])


# ----------------------------------------------------------------------------------------------- curriculum
def test_lambda_follows_the_curriculum():
    rng = np.random.default_rng(0)
    easy = np.array([sample_lambda(rng, 0.0) for _ in range(2000)])
    hard = np.array([sample_lambda(rng, 1.0) for _ in range(4000)])
    mid = np.array([sample_lambda(rng, 0.5) for _ in range(4000)])
    assert easy.min() > 0.999  # s = 0: λ ≈ 1, no mixing
    assert hard.mean() == pytest.approx(0.5, abs=0.02) and hard.var() == pytest.approx(1 / 12, abs=0.01)
    assert hard.mean() < mid.mean() < easy.mean()


def test_curriculum_ema_and_logs(source):
    cfg = _cfg()
    P = (torch.randn(4, source.bb.hidden_size) * 0.5).requires_grad_(True)
    state = supmer.supmer_init_state(P, cfg, source.bb)
    rng = np.random.default_rng(1)
    _, _, a = supmer.supmer_learner(P, source.sample(rng, 2), cfg, True, state)
    assert state["s"] == pytest.approx(a["alignment"]) and 0 <= a["alignment"] <= 1  # the first step sets s
    _, g, b = supmer.supmer_learner(P, source.sample(rng, 2), cfg, True, state)
    assert state["s"] == pytest.approx(0.5 * a["alignment"] + 0.5 * b["alignment"]) and state["steps"] == 2
    assert b["mixed"] == 1.0 and 0 < b["lambda"] <= 1 and g.shape == P.shape
    off = _cfg(mixup=False, psi=False)
    _, _, c = supmer.supmer_learner(P, source.sample(rng, 2), off, True, supmer.supmer_init_state(P, off, source.bb))
    assert c["mixed"] == 0.0 and c["lambda"] == 1.0 and "gate" not in c


# ----------------------------------------------------------------------------------------------- loop
def _meta_cfg(tmp_path, corpus, tiny_path, out="run", steps=8, **opts):
    from workbench.config import BackboneConfig, MetaConfig, MetaTrainConfig, PromptConfig, apply_overrides
    cfg = MetaTrainConfig(method="supmer", source="selfsup", backbone=BackboneConfig(name=tiny_path),
                          prompt=PromptConfig(length=4), out=str(tmp_path / out),
                          meta=MetaConfig(max_length=40, meta_batch=2, steps=steps, eval_every=steps,
                                          checkpoint_every=2, val_tasks=4, lr=0.1))
    sets = {"selfsup.corpus": str(corpus), "selfsup.n_clusters": 6, "selfsup.n_options": 3, "selfsup.limit": None,
            "selfsup.per_task_support": 4, "selfsup.per_task_query": 4, "selfsup.val_fraction": 0.3,
            "supmer.rank": 4, **{k if "." in k else f"selfsup.{k}": v for k, v in opts.items()}}
    return apply_overrides(cfg, [f"{k}={v}" for k, v in sets.items()])


def test_learner_lowers_the_meta_loss_on_fixed_tasks(source):
    """A toy problem: the same meta-batch again and again; the outer Adam on P plus ψ's own steps lower the query
    loss after the (ψ-transformed) inner step."""
    cfg = _cfg(mixup=False)
    torch.manual_seed(0)
    P = torch.nn.Parameter(torch.randn(4, source.bb.hidden_size) * 0.5)
    state, opt = supmer.supmer_init_state(P, cfg, source.bb), torch.optim.Adam([P], lr=0.05)
    eps_ = source.sample(np.random.default_rng(5), 3)
    losses = []
    for _ in range(15):
        loss, g, _ = supmer.supmer_learner(P, eps_, cfg, True, state)
        P.grad = g
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_meta_training_through_the_loop_logs_and_saves_psi(tiny, tmp_path, bert):
    from workbench.learn.metatrain import run_meta_training
    corpus = write_corpus(tmp_path / "c.jsonl")
    res = run_meta_training(_meta_cfg(tmp_path, corpus, tiny["bert"], steps=4, types="scsp,scc"), backbone=bert,
                            progress=False)
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["event"] == "val"] == [0, 4]
    train = [r for r in recs if r["event"] == "train"]
    assert {t.split("/")[0] for r in train for t in r["tasks"]} <= {"scsp", "scc"}
    assert {"gate", "lambda", "curriculum_s", "alignment"} <= set(train[-1])
    psi = load_psi(tmp_path / "run" / "psi", (4, bert.hidden_size), bert)
    assert isinstance(psi, Psi) and res["source"]["types"] == ["scsp", "scc"]


def test_meta_training_resumes_exactly(tiny, tmp_path, bert):
    from workbench.learn.metatrain import run_meta_training
    from workbench.engine.runs import load_prompt
    corpus = write_corpus(tmp_path / "c.jsonl")
    full = _meta_cfg(tmp_path, corpus, tiny["bert"], "full", 6)
    full.meta.select = "last"  # the trajectory itself (with select=best a short run may write its step-0 prompt)
    run_meta_training(full, backbone=bert, progress=False)
    cfg = _meta_cfg(tmp_path, corpus, tiny["bert"], "cut", 6)
    cfg.meta.select = "last"
    assert "interrupted_at" in run_meta_training(cfg, backbone=bert, progress=False, stop_after=4)
    run_meta_training(cfg, backbone=bert, progress=False, resume=True)
    a, b = load_prompt(tmp_path / "full" / "prompt")[0], load_prompt(tmp_path / "cut" / "prompt")[0]
    assert torch.allclose(a, b, atol=1e-6)
    pa, pb = load_psi(tmp_path / "full" / "psi"), load_psi(tmp_path / "cut" / "psi")
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(pa.state_dict().values(), pb.state_dict().values()))


def test_select_best_saves_psi_from_the_selected_step(tiny, tmp_path, bert, monkeypatch):
    """meta.select=best with meta-validation best at step 0: the saved ψ is the step-0 ψ (as the saved prompt is),
    not the ψ trained for 4 steps that select=last saves."""
    from workbench.learn import metatrain
    from workbench.learn.metatrain import run_meta_training
    monkeypatch.setattr(metatrain, "evaluate_episodes", lambda P, *a, **k: {"acc_pre": 0.5, "loss_pre": 1.0,
                                                                          "acc_post": 0.5, "loss_post": 1.0})
    corpus = write_corpus(tmp_path / "c.jsonl")
    psis = {}
    for select in ("best", "last"):
        cfg = _meta_cfg(tmp_path, corpus, tiny["bert"], select, 4, types="scsp,scc")
        cfg.meta.eval_every, cfg.meta.select = 1, select
        with pytest.warns(UserWarning, match="never improved"):
            run_meta_training(cfg, backbone=bert, progress=False)
        psis[select] = load_psi(tmp_path / select / "psi").state_dict()
    fresh = supmer.supmer_init_state(torch.zeros(4, bert.hidden_size), cfg, bert)["psi"].state_dict()
    assert all(torch.allclose(psis["best"][k], fresh[k]) for k in fresh)
    assert not all(torch.allclose(psis["last"][k], fresh[k]) for k in fresh)


# ----------------------------------------------------------------------------------------------- save / hook
def test_psi_save_load_and_mismatch_errors(tmp_path, bert, tiny):
    from workbench.engine.backbones import load_backbone
    psi = Psi(4, bert.hidden_size, rank=4)
    with torch.no_grad():
        psi.U[0].normal_()
    info = {"backbone": bert.name, "backbone_path": str(bert.path), "hidden_size": bert.hidden_size}
    save_psi(psi, tmp_path / "psi", info)
    back = load_psi(tmp_path, (4, bert.hidden_size), bert)
    g, h = torch.randn(4, bert.hidden_size), torch.randn(bert.hidden_size)
    assert torch.allclose(back(g, h)[0], psi(g, h)[0])
    with pytest.raises(PsiError, match=r"\(4, 32\).*\(8, 32\)"):
        load_psi(tmp_path / "psi", (8, bert.hidden_size), bert)
    other = load_backbone(tiny["bert-mlm"])
    with pytest.raises(PsiError, match="bert-mlm") as e:
        load_psi(tmp_path / "psi", (4, other.hidden_size), other)
    assert str(bert.path) in str(e.value)
    with pytest.raises(PsiError, match="no saved"):
        load_psi(tmp_path / "nothing")


def test_downstream_hook_is_identity_at_init_and_changes_tuning_when_learned(bert, toy_data):
    from workbench.config import PromptConfig, TaskConfig, TuneConfig
    from workbench.engine.splits import kshot_split
    from workbench.engine.data import load_dataset
    from workbench.engine.heads import make_head
    from workbench.engine.templates import resolve_format
    from workbench.learn.tuner import tune_prompt
    ds = load_dataset("toy")
    fmt = resolve_format(ds.name, ds.task, ds.labels, bert.family, TaskConfig())
    head = make_head(bert, fmt, TaskConfig(), PromptConfig(length=4), 32)
    split = kshot_split(ds, 4, 13)
    init = torch.randn(4, bert.hidden_size) * 0.3
    cfg = TuneConfig(steps=6, lr=0.1, batch_size=4, eval_every=2, patience=0)
    seen = []
    psi = Psi(4, bert.hidden_size, rank=4)
    hook = supmer.psi_grad_hook(psi, head)

    def spy(g, batch):
        seen.append(g.norm().item())
        return hook(g, batch)
    plain = tune_prompt(head, init, split.train, split.dev, cfg, 13, progress=False)
    ident = tune_prompt(head, init, split.train, split.dev, cfg, 13, progress=False, grad_hook=spy)
    assert len(seen) == 6 and torch.allclose(plain.history[-1]["dev_loss"] * torch.ones(1),
                                             ident.history[-1]["dev_loss"] * torch.ones(1), atol=1e-5)
    with torch.no_grad():
        for U in psi.U:
            U.normal_()
    learned = tune_prompt(head, init, split.train, split.dev, cfg, 13, progress=False,
                          grad_hook=supmer.psi_grad_hook(psi, head))
    assert learned.history[-1]["dev_loss"] != pytest.approx(plain.history[-1]["dev_loss"], abs=1e-5)
