"""SUPMER's meta-gradient regularisation ψ: a gated low-rank transform of the prompt gradient, and its files.

ψ(g, h) = (1 - c(h)) * T(g) * |g| / |T(g)| + c(h) * g, with T a stack of low-rank layers that starts as the exact
identity, c(h) a small gate on the support batch's mean features, and one (global) norm matching used in meta-training
and downstream tuning alike (see ``supmer.py`` for the training and the documented differences from the original).
Saved as ``psi.safetensors`` + ``psi.json``; loading checks the prompt shape and the backbone.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from workbench.config import ConfigError
from workbench.engine.runs import write_json

PSI_FORMAT = "workbench-supmer-psi"


class PsiError(ConfigError):
    """A saved ψ does not fit the prompt or backbone it is applied to (the message names both)."""


class Psi(torch.nn.Module):
    """ψ(g, h̄) for gradients g (..., L, d) and summaries h̄ (..., d); returns (ψ(g, h̄), gate c (...,))."""

    def __init__(self, length: int, dim: int, rank: int = 32, layers: int = 2, gate_hidden: int = 24,
                 norm: str = "global", seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.length, self.dim, self.rank, self.n_layers, self.gate_hidden, self.norm = \
            length, dim, rank, layers, gate_hidden, norm
        self.V = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(rank, dim, generator=gen) / math.sqrt(dim))
                                         for _ in range(layers)])
        self.b = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(rank)) for _ in range(layers)])
        self.U = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(dim, rank)) for _ in range(layers)])
        self.g1 = torch.nn.Linear(dim, gate_hidden)
        self.g2 = torch.nn.Linear(gate_hidden, 1)
        with torch.no_grad():
            self.g1.weight.copy_(torch.randn(gate_hidden, dim, generator=gen) / math.sqrt(dim))
            self.g1.bias.zero_()
            self.g2.weight.copy_(torch.randn(1, gate_hidden, generator=gen) * 0.01)
            self.g2.bias.zero_()  # gate starts at ~0.5

    def spec(self) -> dict:
        return {"length": self.length, "dim": self.dim, "rank": self.rank, "layers": self.n_layers,
                "gate_hidden": self.gate_hidden, "norm": self.norm}

    def transform(self, g: torch.Tensor) -> torch.Tensor:
        """T̂(g): the residual low-rank MLP on each row of g / rms(g), rescaled to g's norm (global or per row)."""
        g = g.float() if g.dtype in (torch.float16, torch.bfloat16) else g
        x = g / g.pow(2).mean((-2, -1), keepdim=True).sqrt().clamp_min(1e-30)
        for V, b, U in zip(self.V, self.b, self.U):
            x = x + F.relu(x @ V.T + b) @ U.T
        dims = (-2, -1) if self.norm == "global" else (-1,)
        return x * (g.norm(dim=dims, keepdim=True) / x.norm(dim=dims, keepdim=True).clamp_min(1e-30))

    def gate(self, h: torch.Tensor) -> torch.Tensor:
        h = F.layer_norm(h.to(self.g1.weight.dtype), h.shape[-1:])
        return torch.sigmoid(self.g2(F.relu(self.g1(h)))).squeeze(-1)

    def forward(self, g: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.gate(h)
        t = self.transform(g)
        return (1 - c)[..., None, None] * t + c[..., None, None] * g.to(t.dtype), c


def save_psi(psi: Psi, directory, backbone_info: dict, extra: dict | None = None) -> Path:
    """``psi.safetensors`` + ``psi.json`` (shape, backbone, hyper-parameters) in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in psi.state_dict().items()}
    save_file(tensors, str(d / ".psi.safetensors.tmp"), metadata={"format": "pt"})
    (d / ".psi.safetensors.tmp").replace(d / "psi.safetensors")
    write_json(d / "psi.json", {"format": PSI_FORMAT, "version": 1, **psi.spec(),
                                "prompt_shape": [psi.length, psi.dim], **backbone_info, **(extra or {})})
    return d


def load_psi(directory, prompt_shape=None, backbone=None) -> Psi:
    """Load a ψ saved by :func:`save_psi`; refuse (PsiError naming both) another prompt shape or backbone."""
    d = Path(directory)
    if (d / "psi").is_dir() and not (d / "psi.json").is_file():
        d = d / "psi"
    if not (d / "psi.json").is_file() or not (d / "psi.safetensors").is_file():
        raise PsiError(f"no saved ψ at {directory} (expected psi.json and psi.safetensors)")
    meta = json.loads((d / "psi.json").read_text(encoding="utf-8"))
    if meta.get("format") != PSI_FORMAT:
        raise PsiError(f"{d / 'psi.json'} is not a saved ψ (format {meta.get('format')!r})")
    saved = f"prompt shape {tuple(meta['prompt_shape'])} on backbone {meta.get('backbone')!r}"
    if prompt_shape is not None and tuple(prompt_shape) != tuple(meta["prompt_shape"]):
        raise PsiError(f"ψ at {d} was saved for {saved}, but the prompt here has shape {tuple(prompt_shape)}"
                       + (f" on backbone {backbone.name!r}" if backbone is not None else ""))
    if backbone is not None and (meta.get("backbone_path") not in (None, str(backbone.path)) or
                                 meta.get("hidden_size") not in (None, backbone.hidden_size)):
        raise PsiError(f"ψ at {d} was saved for {saved} (path {meta.get('backbone_path')}), but it is applied to "
                       f"backbone {backbone.name!r} (path {backbone.path}, hidden size {backbone.hidden_size})")
    psi = Psi(meta["length"], meta["dim"], meta["rank"], meta["layers"], meta["gate_hidden"], meta["norm"])
    psi.load_state_dict(load_file(str(d / "psi.safetensors")))
    return psi.eval()
