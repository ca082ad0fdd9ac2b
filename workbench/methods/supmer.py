"""SUPMER: the meta-gradient regulariser ψ, curriculum mixup, the ``supmer`` meta-learner, the ``supmer`` inits and
the downstream ψ hook. (Evaluation and domain generalisation: :mod:`workbench.supmer_eval`; tasks:
:mod:`workbench.sstasks`.)

ψ (:class:`Psi`) rewrites a prompt gradient g (L, d) given a summary h̄ (d,) of the batch it came from:
T(g) = residual low-rank MLP applied to each prompt row, T̂ = T(g) rescaled to ||g||, gate c = σ(MLP(h̄)),
ψ(g, h̄) = (1 − c)·T̂ + c·g. The learner (one meta-batch of T tasks, one batched backbone pass per stage):

1. support gradients g_t at P (first order: detached) and h̄_t;
2. the inner step P'_t = P − inner_lr·ψ(g_t, h̄_t), differentiable in ψ's parameters (exact meta-gradient for ψ);
3. query loss at P'_t: with mixup, KL(mixed soft labels ‖ model) on hidden states mixed between the query batch and
   the augmentation batch, λ_t ~ Beta(α, α(2^s − 1)) (s = EMA of the support/query gradient alignment); else CE;
4. the prompt gets the query gradient at P'_t unchanged (first order, as FOMAML; summed over tasks); ψ gets the exact
   gradient of the query loss plus the gate regression (c_t − [0.5·domain_sim_t + 0.5·align_t])², where
   align_t = (1 + mean-row cos(query grad, ψ(g_t)))/2; ψ's own Adam steps inside the learner (state ``psi_opt``);
5. s ← ema·s + (1 − ema)·mean_t align_t (the first step sets s).

Deliberate differences from the released SUPMER code (methods.md §1.5, §1.10):

- near-identity init: each layer is x + U·ReLU(V·x + b) with U = 0 (the original fills U, V from N(0, 1), drops the
  residual and ends in a ReLU, so T(g) ≥ 0 and ψ starts far from the identity); here ψ(g, h̄) = g exactly at init;
- ONE normalisation (``norm``: global Frobenius by default, or per row) used in meta-training and downstream alike
  (the original used per-row in meta-training and global downstream); its input is divided by the gradient's RMS,
  so ψ is scale-invariant (the original fed raw gradients of ~1e-4 into an MLP);
- rank ``rank`` (default 32, CPU-sized) instead of min(1920, d); the gate input is the layer-normalised h̄;
- h̄ = the batch mean of the frozen backbone's pooled features of the inputs *without* the prompt, both in
  meta-training and in the downstream hook (the hook sees only the batch, so this is the summary both can compute);
- mixup happens where each head family reads its class scores: similarity head, the pooled features (the anchors
  are the union of the two batches' anchors when they differ, e.g. multiple-choice options or scc centroids, so
  the soft labels live in a union label space); masked LM / causal LM, the hidden state at the mask / last context
  position; seq2seq, the whole encoder output (attention mask = max of both), as the original. Batches a head
  cannot mix (multi-piece label words of different lengths; heads other than the four families) use plain CE.
  Class counts: a meta-batch holds one task type and the augmentation set has the query's type, so both share the
  label words (shared label space); only per-example anchors (similarity head) need the union space above.

Inits: ``supmer`` (the meta-trained prompt, trained once per config + backbone + target and cached) and
``supmer+psi`` (the same prompt; its provenance names the saved ψ, which :func:`grad_hook_for` turns into a frozen
``tune_prompt`` grad_hook; callers that apply it set ``InitContext.extras["applies_grad_hook"]``, others are refused
rather than silently tuning without ψ); ``file+psi`` does the same for the prompt and ψ of a given ``meta-train``
run (``prompt.init_path``).

Options are the ``supmer`` section (:class:`~workbench.config.SupmerConfig`; CLI ``--set supmer.psi=false``), e.g.
the ablations ``supmer.psi=false`` / ``supmer.mixup=false``; task types are ``selfsup.types`` (``--set
selfsup.types=nsp,scc``). The same keys work in ``meta-train``, ``fewshot`` and suites.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workbench.config import (
    ConfigError,
    SupmerConfig,
    to_dict,
)
from workbench.engine.heads import (
    CausalHead,
    MLMHead,
    Pass,
    Seq2SeqHead,
    SimilarityHead,
)
from workbench.engine.joint import joint_forward
from workbench.engine.prompts import Spliced
from workbench.learn.data_parallel import Shards
from workbench.learn.inits import file_init, saved_prompt_path
from workbench.learn.meta import task_losses
from workbench.learn.meta_inits import trained_prompt
from workbench.methods.psi import Psi, PsiError, load_psi, save_psi


def supmer_config(cfg) -> SupmerConfig:
    """The learner's options: the ``supmer`` section of a MetaTrainConfig (defaults for configs without one)."""
    return getattr(cfg, "supmer", None) or SupmerConfig()


# ----------------------------------------------------------------------------------------------- batches
class _Capture:
    """A head proxy whose ``score`` returns the backbone pass itself (to mix hidden states after joint_forward)."""

    def __init__(self, head):
        self.head = head

    def __getattr__(self, name):
        return getattr(self.head, name)

    def score(self, batch, out, prompt):
        return out


def passes(items, batched: bool = True) -> list:
    """Backbone passes (heads.Pass) for [(head, batch, prompt)], one joint pass when every batch can join."""
    if batched and all(h.joinable(b) for h, b, _ in items):
        return joint_forward([(_Capture(h), b, p) for h, b, p in items])
    return [h.encode_pass(b, p) if h.joinable(b) else None for h, b, p in items]


def _plain(batch: dict) -> dict:
    return next(iter(batch["groups"].values())) if "groups" in batch else batch


@torch.no_grad()
def batch_summary(head, batch: dict) -> torch.Tensor:
    """h̄: mean over the batch of the frozen backbone's pooled features without the prompt (d,)."""
    out = head.encode_pass(_plain(batch), None)
    return head.pool(out.hidden, out.sp).float().mean(0)


def _pad(t: torch.Tensor, T: int) -> torch.Tensor:
    return t if t.shape[1] == T else torch.cat([t, t.new_zeros(t.shape[0], T - t.shape[1], *t.shape[2:])], 1)


def mixed_logits(head, qb: dict, ab: dict, oq: Pass, oa: Pass, lam: float, prompt):
    """(logits (B, C'), aug label offset): class scores of hidden states mixed λ·query + (1 − λ)·aug where
    ``head`` reads them (see the module docstring), or None when this head/batch cannot be mixed."""
    B = min(oq.hidden.shape[0], oa.hidden.shape[0])
    rows = torch.arange(B, device=oq.hidden.device).unsqueeze(1)
    if isinstance(head, SimilarityHead):
        f = lam * head.pool(oq.hidden, oq.sp)[:B] + (1 - lam) * head.pool(oa.hidden, oa.sp)[:B]
        f = F.normalize(f.float(), dim=-1)
        if "anchors" in qb:  # per-example anchors (options / centroids): union label space
            anchors = torch.cat([qb["anchors"][:B], ab["anchors"][:B]], dim=1)
            return torch.einsum("bd,bcd->bc", f, anchors) / head.cfg.temperature, qb["anchors"].shape[1]
        return f @ head.anchors.T / head.cfg.temperature, 0
    if isinstance(head, Seq2SeqHead):
        T = max(oq.hidden.shape[1], oa.hidden.shape[1])
        H = lam * _pad(oq.hidden[:B], T) + (1 - lam) * _pad(oa.hidden[:B], T)
        am = torch.maximum(_pad(oq.sp.attention_mask[:B], T), _pad(oa.sp.attention_mask[:B], T))
        sp = Spliced(H, am, None, _pad(oq.sp.prompt_mask[:B], T), oq.sp.rows(slice(0, B)).offset, oq.sp.length)
        return head.score({k: v[:B] if torch.is_tensor(v) else v for k, v in qb.items()}, Pass(H, sp), prompt)[0], 0
    if isinstance(head, MLMHead) and "groups" not in qb and oq.logits is None:
        key = "mask_pos"
    elif isinstance(head, CausalHead) and head.single:
        key = "last"
    else:
        return None
    sq, sa = oq.sp.rows(slice(0, B)), oa.sp.rows(slice(0, B))
    move = Spliced.predictor if key == "last" else Spliced.shift  # the hidden state the head reads
    pq, pa = move(sq, qb[key][:B]), move(sa, ab[key][:B])
    pq, pa = (pq, pa) if pq.dim() == 2 else (pq.unsqueeze(1), pa.unsqueeze(1))
    H = oq.hidden[:B].clone()
    H[rows, pq] = lam * oq.hidden[rows, pq] + (1 - lam) * oa.hidden[rows, pa]
    qsub = {k: v[:B] if torch.is_tensor(v) else v for k, v in qb.items()}
    return head.score(qsub, Pass(H, sq), prompt)[0], 0


def soft_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ softmax(logits)), batch mean (0·log 0 = 0)."""
    logp = logits.float().log_softmax(-1)
    ent = torch.where(target > 0, target * target.clamp_min(1e-30).log(), torch.zeros_like(target)).sum(-1)
    return (ent - (target * logp).sum(-1)).mean()


def sample_lambda(rng: np.random.Generator, s: float, alpha: float = 1.0) -> float:
    """λ ~ Beta(alpha, alpha·c), c = 2^s − 1 (+1e-7): s = 0 gives λ ≈ 1 (no mixing), s = 1 gives U(0, 1)."""
    c = 2.0 ** float(np.clip(s, 0.0, 1.0)) - 1.0 + 1e-7
    return float(rng.beta(alpha, alpha * c))


def query_losses(episodes, prompts, lams, batched=True, mixup=True) -> tuple[torch.Tensor, list[bool]]:
    """Per-task query loss (T,): mixup KL with λ_t where the task has an augmentation set and the head can mix,
    else cross-entropy. Also returns which tasks were mixed."""
    items, labels = [], []
    for i, ep in enumerate(episodes):
        qb, yq = ep.batch("query")
        items.append((ep.head, qb, prompts[i]))
        labels.append(yq)
        if mixup and ep.aug:
            ab = ep.head.batch(ep.aug)
            items.append((ep.head, ab, prompts[i]))
            labels.append(torch.tensor([e.label for e in ep.aug], device=yq.device))
    outs = passes(items, batched)
    losses, mixed, j = [], [], 0
    for i, ep in enumerate(episodes):
        head, qb, p = items[j]
        oq, yq = outs[j], labels[j]
        res = None
        if mixup and ep.aug:
            ab, oa, ya = items[j + 1][1], outs[j + 1], labels[j + 1]
            if oq is not None and oa is not None:
                res = mixed_logits(head, qb, ab, oq, oa, lams[i], p)
            j += 2
        else:
            j += 1
        if res is not None:
            logits, off = res
            B = logits.shape[0]
            target = lams[i] * F.one_hot(yq[:B], logits.shape[1]).float() + \
                (1 - lams[i]) * F.one_hot(ya[:B] + off, logits.shape[1]).float()
            losses.append(soft_kl(logits, target))
        else:
            logits = head.score(qb, oq, p)[0] if oq is not None else head.forward(qb, p)[0]
            losses.append(F.cross_entropy(logits.float(), yq))
        mixed.append(res is not None)
    return torch.stack(losses), mixed


# ----------------------------------------------------------------------------------------------- learner
def supmer_init_state(P, cfg, backbone) -> dict:
    sc = supmer_config(cfg)
    psi = Psi(P.shape[0], P.shape[1], sc.rank, sc.layers, sc.gate_hidden, sc.norm, sc.seed).to(P.device)
    return {"psi": psi, "psi_opt": torch.optim.Adam(psi.parameters(), lr=sc.psi_lr), "s": 0.0, "steps": 0,
            "backbone": {"backbone": backbone.name, "backbone_path": str(backbone.path),
                         "hidden_size": backbone.hidden_size}, "options": to_dict(sc)}


def supmer_finalize(state, out_dir):
    if state.get("options", {}).get("psi", True):
        save_psi(state["psi"], Path(out_dir) / "psi", state["backbone"],
                 {"curriculum_s": state["s"], "steps": state["steps"], "options": state["options"]})


def _row_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-30).mean(-1)


def supmer_learner(P, episodes, cfg, batched=True, state=None, shards: Shards | None = None):
    """SUPMER's meta-step on ``shards``' share of ``episodes`` (all of them in one process): the means over those
    tasks; ψ's gradient and the curriculum's alignment are averaged over every process's tasks before they are used,
    and the mixup ratios are drawn for the whole meta-batch, so every process makes the same ψ and curriculum update
    and the result does not depend on the number of processes."""
    sc, shards = supmer_config(cfg), shards or Shards()
    state = state if state is not None else supmer_init_state(P, cfg, episodes[0].head.bb)
    rng = np.random.default_rng([sc.seed, int(state["steps"])])  # curriculum mixup ratios, one per task
    lams_all = [sample_lambda(rng, state["s"], sc.alpha) if sc.mixup else 1.0 for _ in episodes]
    episodes, lams, total = shards.split(episodes), shards.split(lams_all), len(episodes)
    psi, T = state["psi"], len(episodes)
    cache: dict = {}
    with torch.enable_grad():  # 1. support gradients at P (first order) and batch summaries
        Ps = P.detach().unsqueeze(0).expand(T, *P.shape).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(task_losses(episodes, "support", Ps, batched, cache).sum(), Ps)
    h = torch.stack([batch_summary(ep.head, cache[(i, "support")][0]) for i, ep in enumerate(episodes)])
    leaf = P.detach().unsqueeze(0).expand(T, *P.shape).clone().requires_grad_(True)
    if sc.psi:  # 2. inner step through ψ
        delta, gate = psi(g, h)
    else:
        delta, gate = g, None
    adapted = leaf - cfg.meta.inner_lr * delta.to(leaf.dtype)
    losses, mixed = query_losses(episodes, adapted, lams, batched, sc.mixup)
    loss = losses.mean()
    params = [p for p in psi.parameters()] if sc.psi else []
    grads = torch.autograd.grad(loss, [leaf] + params, allow_unused=True)
    gq = grads[0]  # 4. the query gradient at each P'_t (d loss / d P'_t)
    align = ((1 + _row_cos(gq, delta.detach())) / 2).detach()  # (T,)
    logs = {"query_loss": float(loss.detach()), "lambda": float(np.mean(lams_all)), "mixed": float(np.mean(mixed)),
            "alignment": float(align.mean())}
    if sc.psi:
        dsim = torch.tensor([float(ep.info.get("domain_sim", 0.5)) for ep in episodes], device=align.device)
        target = 0.5 * dsim + 0.5 * align
        gate = psi.gate(h)  # recomputed (tiny MLP): the first graph was freed by the query backward
        reg = ((gate - target) ** 2).mean()
        rgrads = torch.autograd.grad(sc.gate_weight * reg, params, allow_unused=True)
        opt = state["psi_opt"]
        opt.zero_grad(set_to_none=True)
        local = [(a if a is not None else torch.zeros_like(p)) + (b if b is not None else 0)
                 for p, a, b in zip(params, grads[1:], rgrads)]
        flat = shards.mean(torch.cat([g.reshape(-1) for g in local]), T, total)  # over all processes: one all-reduce
        for p, g in zip(params, flat.split([g.numel() for g in local])):
            p.grad = g.view_as(p)
        if sc.psi_clip > 0:
            logs["psi_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, sc.psi_clip))
        opt.step()
        logs.update({"gate": float(gate.detach().mean()), "gate_target": float(target.mean()),
                     "gate_loss": float(reg.detach())})
    s_new = float(shards.mean(align.mean(), T, total))  # 5. curriculum EMA
    state["s"] = s_new if state["steps"] == 0 else sc.ema * state["s"] + (1 - sc.ema) * s_new
    state["steps"] = int(state["steps"]) + 1
    logs["curriculum_s"] = state["s"]
    return loss.detach(), gq.sum(0).detach(), logs


# ----------------------------------------------------------------------------------------------- downstream
def psi_grad_hook(psi: Psi, head):
    """A ``tuner.tune_prompt`` grad_hook applying a frozen ψ to every prompt gradient (h̄ of the current batch)."""
    psi = psi.to(head.bb.device).eval()
    for p in psi.parameters():
        p.requires_grad_(False)

    def hook(grad, batch):
        with torch.no_grad():
            return psi(grad, batch_summary(head, batch))[0].to(grad.dtype)
    return hook


# ----------------------------------------------------------------------------------------------- inits
def supmer_init(ctx, with_psi: bool):
    """The ``supmer`` / ``supmer+psi`` inits: the SUPMER prompt from the shared meta-init factory
    (:func:`workbench.learn.meta_inits.trained_prompt`: method supmer over the selfsup source, sized by the caller's
    ``meta``, ``selfsup`` and ``supmer`` sections, cached); ``with_psi`` records the saved ψ in the provenance (see
    :func:`grad_hook_for`)."""
    init_name = "supmer+psi" if with_psi else "supmer"
    if with_psi:
        refuse_without_hook(init_name, ctx)  # before any training
    prompt, prov, out = trained_prompt(init_name, ctx)
    want = (ctx.length, ctx.backbone.hidden_size)
    if with_psi:
        if not (out / "psi" / "psi.json").is_file():
            raise PsiError(f"{out} has no saved ψ (meta-trained with supmer.psi=false?); use the init 'supmer'")
        load_psi(out / "psi", want, ctx.backbone)  # fail now, not at the first tuning step
        prov["psi"] = str(out / "psi")
    return prompt, prov


def refuse_without_hook(init_name: str, ctx) -> None:
    """A ψ init for a caller that would tune without ψ: ConfigError (not a silent plain tuning)."""
    if not ctx.extras.get("applies_grad_hook"):
        raise ConfigError(f"init {init_name!r} needs a caller that applies ψ while tuning (fewshot, benchmark, "
                          "supmer-dg, or tune_prompt(grad_hook=supmer.grad_hook_for(...)) with InitContext."
                          "extras['applies_grad_hook']=True); this one does not")


def psi_beside(init_path) -> Path:
    """The ``psi/`` folder of the run whose prompt is at ``init_path``: the run directory itself, its ``prompt/``
    adapter folder, or a prompt file in the run directory."""
    prompt = saved_prompt_path(init_path)
    run = prompt.parent if prompt.is_file() or prompt.name == "prompt" else prompt
    return run / "psi"


def file_psi_init(ctx):
    """The ``file+psi`` init: the prompt of a ``meta-train --method supmer`` run (``prompt.init_path``: the run
    directory or its ``prompt/``) as the ``file`` init loads it, and the run's ψ in the provenance, checked against
    this prompt shape and backbone now; :func:`grad_hook_for` applies it frozen, as for ``supmer+psi``."""
    refuse_without_hook("file+psi", ctx)
    if not ctx.cfg.init_path:
        raise ConfigError("init 'file+psi' needs prompt.init_path (CLI: --init-path runs/supmer, a meta-train "
                          "--method supmer run directory)")
    psi = psi_beside(ctx.cfg.init_path)
    for name in ("psi.json", "psi.safetensors"):
        if not (psi / name).is_file():
            raise PsiError(f"init 'file+psi': no saved ψ for prompt.init_path={ctx.cfg.init_path}: {psi / name} does "
                           "not exist (meta-train --method supmer writes psi/ unless supmer.psi=false); use the init "
                           "'file' for the prompt alone")
    prompt, prov = file_init(ctx)
    load_psi(psi, (ctx.length, ctx.backbone.hidden_size), ctx.backbone)  # fail now, not at the first tuning step
    return prompt, {**prov, "psi": str(psi)}


def grad_hook_for(prov: dict, head):
    """The downstream grad_hook an init asks for: a frozen ψ when its provenance names one (init ``supmer+psi``),
    else None. For ``tuner.tune_prompt(..., grad_hook=grad_hook_for(prov, head))``."""
    if not prov.get("psi"):
        return None
    psi = load_psi(prov["psi"], backbone=head.bb)
    return psi_grad_hook(psi, head)


