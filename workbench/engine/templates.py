"""Templates and verbalizers: how an example becomes model input, and which words stand for the labels.

A template is a string with placeholders ``{text}`` (= ``{text_a}``), ``{text_b}``, ``{mask}`` and ``{sep}``.
``{sep}`` splits the template into two segments that the tokenizer encodes as a pair (its own separators and
token types). ``{mask}`` is where the label is predicted: the tokenizer's mask token for a masked LM, the first
sentinel (``<extra_id_0>``) for T5-style models, and the end of the context for a causal LM (anything after it is
dropped). The similarity head has no mask: its label side is ``label_template`` (for example ``"It was {label}."``),
embedded by the frozen model as one anchor per class.

Defaults: known dataset names get the manual templates and label words of LM-BFF (Gao et al., 2021); any other
dataset gets generic templates and its ``meta.json`` label names (underscores read as spaces). Everything is
overridable through :class:`~workbench.config.TaskConfig`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from workbench.config import ConfigError, TaskConfig

_SENT2 = {"verbalizer": ["terrible", "great"], "template": "{text} It was {mask}.", "label_template": "It was {label}."}
_SENT5 = {"verbalizer": ["terrible", "bad", "okay", "good", "great"], "template": "{text} It was {mask}.",
          "label_template": "It was {label}."}
_NLI = {"template": "{text_a} ? {mask} , {text_b}", "label_template": "{label}"}
PRESETS: dict[str, dict] = {
    "sst2": _SENT2, "mr": _SENT2, "cr": _SENT2, "mpqa": _SENT2, "sst5": _SENT5, "yelp5": _SENT5,
    "subj": {"verbalizer": ["subjective", "objective"], "template": "{text} This is {mask}.",
             "label_template": "This is {label}."},
    "agnews": {"verbalizer": ["World", "Sports", "Business", "Tech"], "template": "{mask} News: {text}",
               "label_template": "{label} news"},
    "cola": {"verbalizer": ["incorrect", "correct"], "template": "{text} This is {mask}.",
             "label_template": "This is {label}."},
    "rte": {"verbalizer": ["Yes", "No"], **_NLI}, "qnli": {"verbalizer": ["Yes", "No"], **_NLI},
    "snli": {"verbalizer": ["Yes", "Maybe", "No"], **_NLI},
    "mrpc": {"verbalizer": ["No", "Yes"], "template": "{text_a} {mask} , {text_b}", "label_template": "{label}"},
}
GENERIC = {
    "single": {"template": "{text} This is {mask}.", "label_template": "{label}"},
    "pair": {"template": "{text_a} ? {mask} , {text_b}", "label_template": "{label}"},
}
# A causal LM reads a template only up to {mask} (the label is the continuation): presets that put text after the
# mask (agnews' "{mask} News: {text}", the pair templates) are replaced by these for the causal family.
CAUSAL_GENERIC = {"single": "{text} This is {mask}.", "pair": "{text_a} ? {text_b} ? {mask}"}
SIMILARITY_TEMPLATES = {"single": "{text}", "pair": "{text_a}{sep}{text_b}"}
_PLACEHOLDER = re.compile(r"\{(text|text_a|text_b|mask|sep)\}")


@dataclass
class TaskFormat:
    """The resolved template, verbalizer and label texts for one dataset under one head family."""

    template: str
    verbalizer: list[str]
    label_texts: list[str]  # similarity head anchors (label_template applied to the verbalizer)
    preset: str | None  # which preset supplied the defaults, if any

    def as_dict(self) -> dict:
        return {"template": self.template, "verbalizer": self.verbalizer, "label_texts": self.label_texts,
                "preset": self.preset}


def preset_name(dataset_name: str) -> str | None:
    key = dataset_name.replace("\\", "/").rstrip("/").split("/")[-1].lower().replace("-", "").replace("_", "")
    return key if key in PRESETS else None


def resolve_format(dataset_name: str, task: str, labels: list[str], family: str, cfg: TaskConfig) -> TaskFormat:
    """Combine the user's TaskConfig, the dataset preset and the generic defaults (in that order of priority)."""
    preset_key = preset_name(dataset_name)
    preset = PRESETS.get(preset_key, {}) if preset_key else {}
    if preset.get("verbalizer") and len(preset["verbalizer"]) != len(labels):
        preset, preset_key = {}, None  # a same-named dataset with other labels: presets do not apply
    generic = GENERIC[task]
    verbalizer = cfg.verbalizer or preset.get("verbalizer") or [l.replace("_", " ") for l in labels]
    if len(verbalizer) != len(labels):
        raise ConfigError(f"task.verbalizer has {len(verbalizer)} words but the dataset has {len(labels)} labels {labels}")
    if any(not str(v).strip() for v in verbalizer):
        raise ConfigError(f"task.verbalizer contains an empty label word: {verbalizer}")
    if family == "encoder":
        template = cfg.template or SIMILARITY_TEMPLATES[task]
    else:
        template = cfg.template or preset.get("template") or generic["template"]
        if family == "causal" and not cfg.template and text_after_mask(template):
            template = CAUSAL_GENERIC[task]  # the preset's text would come after the label: never seen
    label_template = cfg.label_template or preset.get("label_template") or generic["label_template"]
    if "{label}" not in label_template:
        raise ConfigError(f"task.label_template must contain {{label}}, got {label_template!r}")
    check_template(template, task, family)
    return TaskFormat(template=template, verbalizer=[str(v) for v in verbalizer],
                      label_texts=[label_template.replace("{label}", str(v)) for v in verbalizer], preset=preset_key)


def check_template(template: str, task: str, family: str):
    names = _PLACEHOLDER.findall(template)
    has_a = "text" in names or "text_a" in names
    if not has_a:
        raise ConfigError(f"task.template {template!r} has no {{text}} (or {{text_a}}) placeholder")
    if task == "pair" and "text_b" not in names:
        raise ConfigError(f"task.template {template!r} is for a sentence-pair dataset but has no {{text_b}}")
    if task == "single" and "text_b" in names:
        raise ConfigError(f"task.template {template!r} uses {{text_b}} but the dataset is single-sentence")
    if family != "encoder" and names.count("mask") != 1:
        raise ConfigError(f"task.template {template!r} needs exactly one {{mask}} for a {family} backbone")
    if names.count("sep") > 1:
        raise ConfigError(f"task.template {template!r} may contain at most one {{sep}}")
    if family == "causal" and text_after_mask(template):
        raise ConfigError(f"task.template {template!r}: a causal LM reads the template only up to {{mask}} (the label "
                          f"is its continuation), so {{text}}/{{text_b}} after {{mask}} would never be seen; put them "
                          f"before it, e.g. {CAUSAL_GENERIC[task]!r}")


def text_after_mask(template: str) -> bool:
    """Whether a text placeholder comes after ``{mask}`` in ``template``."""
    names = _PLACEHOLDER.findall(template)
    return "mask" in names and any(n in ("text", "text_a", "text_b") for n in names[names.index("mask") + 1:])


def render(template: str, text_a: str, text_b: str | None, mask: str) -> list[str]:
    """Fill a template; return one string per segment (two when the template has ``{sep}``)."""
    out = _PLACEHOLDER.sub(lambda m: {"text": text_a, "text_a": text_a, "text_b": text_b or "", "mask": mask,
                                      "sep": "\x00"}[m.group(1)], template)
    return [s.strip() for s in out.split("\x00")]


def label_ids(tokenizer, template: str, word: str) -> list[int]:
    """Token ids of the label ``word`` as it is tokenised where ``{mask}`` stands in ``template``.

    The word is tokenised after the template's literal text before ``{mask}`` (from the previous placeholder on)
    and that text's tokens are removed: so it keeps a space before it where the template has one (" great" is
    another token than "great" in byte-level BPE), and gets no word-start "▁" where the template has none (a
    SentencePiece tokenizer marks a word standing alone as a word start). Where there is no literal text before the
    mask, or the text's last token merges with the word, the word (with its space) is tokenised alone.
    """
    i = template.find("{mask}")
    space = " " if i > 0 and template[i - 1].isspace() else ""
    anchor = _PLACEHOLDER.split(template[:i])[-1].rstrip()
    ids = tokenizer(anchor + space + word, add_special_tokens=False)["input_ids"]
    head = tokenizer(anchor, add_special_tokens=False)["input_ids"] if anchor else []
    if head and ids[:len(head)] == head and len(ids) > len(head):
        return ids[len(head):]
    return tokenizer(space + word, add_special_tokens=False)["input_ids"]


def truncate_texts(tokenizer, text_a: str, text_b: str | None, budget: int) -> tuple[str, str | None]:
    """Cut the text fields (longest first) so that together they take at most ``budget`` tokens.

    Cuts happen at token boundaries found through the fast tokenizer's offset mapping, so the kept text is a
    verbatim prefix of the original.
    """
    fields = [text_a] + ([text_b] if text_b is not None else [])
    # the whole text is tokenised only to find cut points, never fed to the model: no "longer than the maximum" warning
    encs = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True, verbose=False) for t in fields]
    lens = [len(e["input_ids"]) for e in encs]
    if sum(lens) <= budget:
        return text_a, text_b
    if budget < len(fields):
        raise ConfigError(f"tune.max_length leaves no room for the text (budget {budget} tokens after the template)")
    keep = list(lens)
    while sum(keep) > budget:
        i = max(range(len(keep)), key=lambda j: keep[j])
        keep[i] -= 1
    cut = [f if k == n else f[: e["offset_mapping"][k - 1][1]] for f, e, k, n in zip(fields, encs, keep, lens)]
    return cut[0], (cut[1] if text_b is not None else None)
