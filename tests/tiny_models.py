"""Tiny random-weight models of every supported family, saved to disk so they load "by path".

No weights can be downloaded in the test environment, so each family is built here from a config, with a
word-level fast tokenizer over a fixed English vocabulary (``WORDS``), and written with ``save_pretrained``
(safetensors).  The result loads with ``AutoConfig/AutoTokenizer/AutoModel*.from_pretrained(path)`` exactly like a
user's real checkpoint::

    from tiny_models import build_tiny
    path = build_tiny("bert-mlm", tmp_path)          # -> tmp_path / "bert-mlm"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForMaskedLM.from_pretrained(path)

Special-token layouts (single / pair), mirroring the real checkpoints of each family:

==============  ============================  ==========================================  ==================
family          class (config.architectures)  layout                                      specials (ids)
==============  ============================  ==========================================  ==================
bert            BertModel (no LM head)        [CLS] a [SEP] / [CLS] a [SEP] b [SEP]       [PAD]=0 [UNK]=1
                                              (token_type_ids 0.../1...)                  [CLS]=2 [SEP]=3
                                                                                          [MASK]=4
bert-mlm        BertForMaskedLM               as bert                                     as bert
roberta-mlm     RobertaForMaskedLM            <s> a </s> / <s> a </s></s> b </s>          <s>=0 <pad>=1
                                                                                          </s>=2 <unk>=3
                                                                                          <mask>=last
t5              T5ForConditionalGeneration    a </s> / a </s> b </s>                      <pad>=0 </s>=1
                                                                                          <unk>=2; sentinels
                                                                                          <extra_id_0..9> at
                                                                                          the end, descending
                                                                                          like real T5
gpt2            GPT2LMHeadModel               a / a b  (no special tokens added)          <|endoftext|>=last
                                                                                          (bos=eos=pad),
                                                                                          <unk>=0
llama           LlamaForCausalLM              <s> a / <s> a <s> b                         <unk>=0 <s>=1
                                                                                          </s>=2 (=pad)
==============  ============================  ==========================================  ==================

Weights are drawn with ``initializer_range=INIT_STD`` (0.2, not the library's 0.02; see below) so that outputs depend
on the input and a soft prompt can actually be tuned.  ``build_inputs_with_special_tokens(tokenizer, ids_a, ids_b)``
replaces the tokenizer method of that name, which transformers 5 no longer has on fast tokenizers.

``build_tiny_real(family, out_dir, corpus)`` builds the same models for roberta-mlm, gpt2, t5 and llama with tokenizers
trained in seconds on a JSONL corpus instead (byte-level BPE / SentencePiece-style Unigram, each family's special
tokens and post-processor), so that leading-space tokens, "▁" pieces and multi-piece words are exercised too.

Words outside ``WORDS`` map to the unk token; text is lower-cased and split on whitespace and on each
punctuation character, so ``"great"``, ``" great"`` and ``"Great"`` all give the same single token.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile

FAMILIES = ("bert", "bert-mlm", "roberta-mlm", "t5", "gpt2", "llama")

PUNCTUATION = [".", ",", "?", "!", ":", ";", "'", '"', "-", "(", ")"]

WORDS: list[str] = PUNCTUATION + [
    # sentiment
    "great", "terrible", "good", "bad", "okay", "awful", "wonderful", "boring", "excellent", "horrible",
    "amazing", "fine", "poor", "best", "worst", "brilliant", "dull", "fun", "funny", "sad", "happy",
    "beautiful", "ugly", "love", "loved", "hate", "hated", "like", "liked", "enjoy", "enjoyed", "nice",
    "perfect", "mediocre", "fantastic", "stupid", "smart", "clever", "weak", "strong", "lovely", "annoying",
    "entertaining", "disappointing", "interesting", "pleasant", "painful", "charming", "mess", "masterpiece",
    "waste", "worth", "better", "worse", "cool", "solid", "decent", "slow", "fast",
    # label words
    "negative", "positive", "neutral", "yes", "no", "maybe", "world", "sports", "business", "tech",
    "science", "subjective", "objective", "correct", "incorrect", "true", "false", "right", "wrong",
    "entailment", "contradiction", "agree", "disagree", "same", "different",
    # template words
    "it", "was", "is", "this", "that", "about", "answer", "question", "the", "a", "an", "movie", "film",
    "review", "sentence", "text", "topic", "label", "category", "overall", "sentiment", "opinion",
    "summary", "article", "news", "story", "quite", "really", "very", "so", "too", "all", "in", "one",
    "word", "means", "therefore", "because", "so", "what", "which", "does", "do", "did", "are", "were",
    "be", "been", "being", "has", "have", "had", "of", "to", "and", "or", "but", "not", "for", "with",
    "on", "at", "by", "from", "as", "if", "than", "then", "there", "here", "its", "s", "t", "n",
    # common words
    "i", "you", "he", "she", "we", "they", "me", "him", "her", "us", "them", "my", "your", "his", "our",
    "their", "who", "whom", "whose", "when", "where", "why", "how", "can", "could", "will", "would",
    "should", "may", "might", "must", "just", "also", "only", "even", "still", "never", "always", "often",
    "some", "any", "every", "each", "many", "much", "more", "most", "less", "few", "little", "lot", "lots",
    "other", "another", "new", "old", "first", "last", "long", "short", "big", "small", "high", "low",
    "time", "year", "years", "day", "days", "way", "thing", "things", "people", "man", "woman", "child",
    "life", "work", "part", "place", "case", "point", "end", "kind", "game", "team", "company", "market",
    "stock", "price", "government", "country", "city", "president", "player", "season", "win", "won",
    "lost", "computer", "software", "internet", "phone", "data", "music", "book", "show", "actor",
    "actors", "plot", "script", "scene", "scenes", "director", "character", "characters", "performance",
    "acting", "ending", "cast", "make", "makes", "made", "see", "saw", "seen", "watch", "watched", "go",
    "goes", "went", "get", "got", "say", "said", "think", "thought", "know", "feel", "felt", "look",
    "looks", "want", "give", "take", "come", "came", "find", "tell", "seem", "seems", "keep", "let",
    "well", "now", "again", "back", "up", "down", "out", "over", "into", "through", "after", "before",
    "while", "without", "against", "nothing", "something", "everything", "anything", "enough", "almost",
    "both", "either", "neither", "none", "two", "three", "hour", "hours", "minutes", "minute",
]
WORDS = list(dict.fromkeys(WORDS))  # de-duplicate, keep order

# family -> model class (config.architectures[0])
_ARCH = {
    "bert": "BertModel",
    "bert-mlm": "BertForMaskedLM",
    "roberta-mlm": "RobertaForMaskedLM",
    "t5": "T5ForConditionalGeneration",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
}
N_SENTINELS = 10
# Weight scale.  With the library default (initializer_range=0.02) a 32-wide random model is nearly linear: attention
# is uniform and every input gives almost the same output, so a soft prompt cannot separate examples (few-shot loss
# stays at ~ln 2).  10x that (and 2x T5's initializer_factor) gives input-dependent, still well-conditioned models in
# which tuning a 4-token prompt on 4 examples drives the loss down by 60-99% for every family and seed tried (0-6).
INIT_STD = 0.2
T5_INIT_FACTOR = 2.0
_SPECIAL_KWARGS = {"bos_token", "eos_token", "cls_token", "sep_token", "pad_token", "unk_token", "mask_token"}


def _vocab(specials_head: list[str], specials_tail: list[str] = ()) -> dict[str, int]:
    tokens = list(specials_head) + WORDS + list(specials_tail)
    assert len(tokens) == len(set(tokens)), "duplicate token in the tiny vocabulary"
    return {t: i for i, t in enumerate(tokens)}


def _build_tokenizer(family: str, max_positions: int):
    """A word-level ``PreTrainedTokenizerFast`` with the family's special tokens and post-processor."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    two_inputs = ["input_ids", "attention_mask"]
    if family in ("bert", "bert-mlm"):
        vocab = _vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        specials = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                        mask_token="[MASK]")
        single, pair = "[CLS] $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"
        extra, input_names = [], ["input_ids", "token_type_ids", "attention_mask"]
    elif family == "roberta-mlm":
        vocab = _vocab(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"])
        specials = dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                        unk_token="<unk>", mask_token="<mask>")
        single, pair = "<s> $A </s>", "<s> $A </s> </s> $B </s>"
        extra, input_names = [], two_inputs
    elif family == "t5":
        extra = [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
        vocab = _vocab(["<pad>", "</s>", "<unk>"], extra[::-1])  # like T5: <extra_id_0> has the highest id
        specials = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
        single, pair = "$A </s>", "$A </s> $B </s>"
        input_names = two_inputs
    elif family == "gpt2":
        vocab = _vocab(["<unk>"], ["<|endoftext|>"])
        specials = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                        unk_token="<unk>")
        single, pair = "$A", "$A $B"
        extra, input_names = [], two_inputs
    elif family == "llama":
        vocab = _vocab(["<unk>", "<s>", "</s>"])
        # NB: transformers 5 neither saves nor (with a tokenizer.json) reads add_bos_token/add_eos_token -- the
        # post-processor below is the truth, and a reloaded tokenizer reports add_bos_token == False regardless.
        specials = dict(bos_token="<s>", eos_token="</s>", pad_token="</s>", unk_token="<unk>")
        single, pair = "<s> $A", "<s> $A <s> $B"
        extra, input_names = [], two_inputs
    else:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {FAMILIES}")

    unk = specials["unk_token"]
    assert set(specials) <= _SPECIAL_KWARGS
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation("isolated")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies " ." etc.
    special_tokens = list(dict.fromkeys(list(specials.values()) + extra))
    tok.add_special_tokens(special_tokens)
    in_templates = dict.fromkeys(t.split(":")[0] for t in f"{single} {pair}".split() if not t.startswith("$"))
    tok.post_processor = TemplateProcessing(single=single, pair=pair,
                                            special_tokens=[(t, vocab[t]) for t in in_templates])
    kwargs = dict(specials)
    if extra:
        kwargs["extra_special_tokens"] = extra  # transformers 5's name for additional_special_tokens
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_positions,
                                   model_input_names=input_names, padding_side="right", **kwargs)
    assert len(fast) == len(vocab), (len(fast), len(vocab))
    return fast


def _build_model(family: str, tokenizer, *, hidden: int, layers: int, heads: int, max_positions: int):
    import transformers as tf

    common = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(tokenizer, name) is not None:
            common[name] = getattr(tokenizer, name)
    if family != "t5":
        common["initializer_range"] = INIT_STD
    if family in ("bert", "bert-mlm", "roberta-mlm"):
        roberta = family == "roberta-mlm"
        cfg = (tf.RobertaConfig if roberta else tf.BertConfig)(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
            max_position_embeddings=max_positions + 2 if roberta else max_positions,  # RoBERTa: pad_id + 1 offset
            type_vocab_size=1 if roberta else 2, **common)
        cls = {"bert": tf.BertModel, "bert-mlm": tf.BertForMaskedLM, "roberta-mlm": tf.RobertaForMaskedLM}[family]
        model = cls(cfg)
    elif family == "t5":
        cfg = tf.T5Config(d_model=hidden, d_ff=2 * hidden, d_kv=hidden // heads, num_heads=heads, num_layers=layers,
                          num_decoder_layers=layers, relative_attention_num_buckets=8,
                          relative_attention_max_distance=max_positions, feed_forward_proj="relu",
                          initializer_factor=T5_INIT_FACTOR, decoder_start_token_id=tokenizer.pad_token_id, **common)
        model = tf.T5ForConditionalGeneration(cfg)
    elif family == "gpt2":
        cfg = tf.GPT2Config(n_positions=max_positions, n_embd=hidden, n_layer=layers, n_head=heads,
                            n_inner=2 * hidden, **common)
        model = tf.GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = tf.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                             max_position_embeddings=max_positions, tie_word_embeddings=False, **common)
        model = tf.LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {FAMILIES}")
    assert type(model).__name__ == _ARCH[family]
    return model.eval()


def build_tiny(family: str, out_dir: str | os.PathLike, *, seed: int = 0, hidden: int = 32, layers: int = 2,
               heads: int = 2, max_positions: int = 128) -> pathlib.Path:
    """Build a random-weight ``family`` model and its tokenizer into ``out_dir/<family>`` and return that path.

    Idempotent: if ``out_dir/<family>/config.json`` already exists the folder is returned as is (whatever the other
    arguments are).  The folder is written under a temporary name and renamed into place, so concurrent builders
    (e.g. pytest-xdist workers sharing a folder) never see a half-written model.  Weights are deterministic in
    ``seed`` (torch's global RNG is seeded; its previous state is restored afterwards).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {FAMILIES}")
    target = pathlib.Path(out_dir) / family
    if (target / "config.json").is_file():
        return target
    return _write_tiny(family, target, _build_tokenizer(family, max_positions), seed=seed, hidden=hidden,
                       layers=layers, heads=heads, max_positions=max_positions)


def _write_tiny(family: str, target: pathlib.Path, tokenizer, *, seed: int, **dims) -> pathlib.Path:
    """Build ``family``'s random model for ``tokenizer`` (weights seeded) and save both atomically to ``target``."""
    import torch

    out_dir, name = target.parent, target.name
    out_dir.mkdir(parents=True, exist_ok=True)
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = _build_model(family, tokenizer, **dims)
    finally:
        torch.random.set_rng_state(rng_state)

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
    try:
        with _quiet_progress_bars():
            tokenizer.save_pretrained(tmp)
            model.save_pretrained(tmp, safe_serialization=True)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------ realistic (trained) tokenizers
# The word-level tokenizers above hide what real ones do: byte-level BPE marks a leading space in the token (" great"
# and "great" are different ids), SentencePiece writes it as "▁", and words outside the commonest few hundred split
# into several pieces.  ``build_tiny_real`` trains such tokenizers in about a second on a few thousand lines of a
# corpus (the shared Brown corpus in the tests) and attaches them to the same tiny random models.
REAL_FAMILIES = ("roberta-mlm", "gpt2", "t5", "llama")
REAL_VOCAB = 2000  # trained vocabulary, special tokens included (T5's sentinels come on top)
REAL_LINES = 3000


def corpus_lines(path: str | os.PathLike, n: int = REAL_LINES) -> list[str]:
    """The non-empty ``text`` fields of the first ``n`` records of a JSONL corpus."""
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line).get("text", "").strip() if line.strip() else ""
            if text:
                out.append(text)
            if len(out) >= n:
                break
    return out


def train_byte_level_bpe(family: str, lines: list[str], vocab_size: int = REAL_VOCAB):
    """A byte-level BPE ``tokenizers.Tokenizer`` with GPT-2 / RoBERTa conventions, and its special-token kwargs.

    No prefix space is added, so "great" at the start of a text and " great" after a space are different tokens.
    roberta-mlm: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask>=last (left-stripping the space before it, as in RoBERTa),
    ``<s> a </s>`` / ``<s> a </s></s> b </s>``.  gpt2: <|endoftext|>=last is bos = eos = unk = pad, nothing added.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE

    roberta = family == "roberta-mlm"
    tok = Tokenizer(BPE())  # no unk: every byte is in the initial alphabet
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<s>", "<pad>", "</s>", "<unk>"] if roberta else [],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    if roberta:
        mask = AddedToken("<mask>", lstrip=True, special=True)
        tok.add_special_tokens([mask])
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                          add_prefix_space=False)
        return tok, dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                         unk_token="<unk>", mask_token=mask)
    tok.add_special_tokens(["<|endoftext|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok, dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token"), "<|endoftext|>")


def train_unigram(family: str, lines: list[str], vocab_size: int = REAL_VOCAB):
    """A SentencePiece-style Unigram ``tokenizers.Tokenizer`` ("▁" marks a word start), and its special-token kwargs.

    t5: <pad>=0 </s>=1 <unk>=2, sentinels <extra_id_0..9> after the trained pieces with descending ids (<extra_id_0>
    last) as in T5, ``a </s>`` / ``a </s> b </s>``.  llama: <unk>=0 <s>=1 </s>=2 (= pad), ``<s> a`` / ``<s> a <s> b``,
    Llama's pre-tokenizer (Metaspace prepending "▁" to the first word only, no split).
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import Unigram
    from tokenizers.processors import TemplateProcessing

    t5 = family == "t5"
    head = ["<pad>", "</s>", "<unk>"] if t5 else ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.train_from_iterator(lines, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=head,
                                                            unk_token="<unk>", show_progress=False))
    if t5:  # transformers' T5Tokenizer layout
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), tok.pre_tokenizer])
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        sentinels = [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
        tok.add_special_tokens(sentinels[::-1])
        tok.post_processor = TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
        return tok, dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_special_tokens=sentinels)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok, dict(bos_token="<s>", eos_token="</s>", pad_token="</s>", unk_token="<unk>")


def real_tokenizer(family: str, lines: list[str], vocab_size: int = REAL_VOCAB, max_positions: int = 128):
    """A ``PreTrainedTokenizerFast`` trained on ``lines`` with ``family``'s real conventions (see the trainers)."""
    from transformers import PreTrainedTokenizerFast

    if family not in REAL_FAMILIES:
        raise ValueError(f"no realistic tokenizer for {family!r}; expected one of {REAL_FAMILIES}")
    train = train_byte_level_bpe if family in ("roberta-mlm", "gpt2") else train_unigram
    tok, specials = train(family, lines, vocab_size)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_positions, padding_side="right",
                                   model_input_names=["input_ids", "attention_mask"], **specials)
    assert len(fast) == tok.get_vocab_size(with_added_tokens=True), (len(fast), tok.get_vocab_size())
    return fast


def build_tiny_real(family: str, out_dir: str | os.PathLike, corpus: str | os.PathLike, *, seed: int = 0,
                    vocab_size: int = REAL_VOCAB, n_lines: int = REAL_LINES, hidden: int = 32, layers: int = 2,
                    heads: int = 2, max_positions: int = 128) -> pathlib.Path:
    """Like :func:`build_tiny`, with a tokenizer trained on the first ``n_lines`` texts of the JSONL ``corpus``
    (:func:`real_tokenizer`); written to ``out_dir/<family>`` and returned as is when already there."""
    target = pathlib.Path(out_dir) / family
    if (target / "config.json").is_file():
        return target
    tokenizer = real_tokenizer(family, corpus_lines(corpus, n_lines), vocab_size, max_positions)
    return _write_tiny(family, target, tokenizer, seed=seed, hidden=hidden, layers=layers, heads=heads,
                       max_positions=max_positions)


@contextlib.contextmanager
def _quiet_progress_bars():
    """Silence transformers' "Writing model shards" bar while saving (restoring the previous setting)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_inputs_with_special_tokens(tokenizer, ids_a: list[int], ids_b: list[int] | None = None) -> list[int]:
    """``tokenizer.build_inputs_with_special_tokens(ids_a, ids_b)`` for any tokenizer.

    transformers 5 removed that method (and ``get_special_tokens_mask`` for un-formatted ids) from every
    ``tokenizers``-backed tokenizer -- the tiny ones here and real ones such as ``BertTokenizer`` alike.  This calls the
    method where it exists (python-backed tokenizers) and otherwise applies the backend's post-processor
    (``TemplateProcessing``, ``BertProcessing``, ``RobertaProcessing``, ``ByteLevel`` or a ``Sequence`` of those) to
    the ids, which is what ``tokenizer(text)`` does after splitting.
    """
    method = getattr(type(tokenizer), "build_inputs_with_special_tokens", None)
    if method is not None:
        return list(method(tokenizer, list(ids_a), None if ids_b is None else list(ids_b)))
    processor = json.loads(tokenizer.backend_tokenizer.to_str()).get("post_processor")
    return _post_process(processor, list(ids_a), None if ids_b is None else list(ids_b))


def _post_process(proc: dict | None, a: list[int], b: list[int] | None) -> list[int]:
    kind = None if proc is None else proc["type"]
    if kind in (None, "ByteLevel"):
        return a + (b or [])
    if kind == "Sequence":
        adding = [p for p in proc["processors"] if p["type"] != "ByteLevel"]
        if len(adding) > 1:
            raise NotImplementedError(f"post-processor sequence {[p['type'] for p in adding]}")
        return _post_process(adding[0] if adding else None, a, b)
    if kind == "TemplateProcessing":
        out = []
        for piece in proc["pair" if b is not None else "single"]:
            if "SpecialToken" in piece:
                out += proc["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            else:
                out += a if piece["Sequence"]["id"] == "A" else b
        return out
    if kind in ("BertProcessing", "RobertaProcessing"):
        cls, sep = proc["cls"][1], proc["sep"][1]
        if b is None:
            return [cls] + a + [sep]
        return [cls] + a + [sep] + ([sep] if kind == "RobertaProcessing" else []) + b + [sep]
    raise NotImplementedError(f"post-processor {kind}")
