"""A stream's effective configuration, built by a protocol adapter from its own parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lectern.speech.audio import AudioFormat
from lectern.speech.endpointing import VadSettings
from lectern.speech.models import ResolvedModel


@dataclass(frozen=True, slots=True)
class ClientInfo:
    address: str
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class StreamConfig:
    protocol: str
    model: ResolvedModel
    audio_format: AudioFormat
    language_code: str | None = "en"  # None: a multilingual model detects it
    commit_strategy: Literal["manual", "vad"] = "manual"
    vad: VadSettings = VadSettings()
    keyterms: tuple[str, ...] = ()
    no_verbatim: bool = False
    keep_transcript: bool = True
    recording: bool = False
    metadata: dict[str, Any] | None = None
    single_utterance: bool = False  # the stream ends at the first pause the VAD commits
    time_limit_seconds: float | None = None  # a protocol's own, shorter limit; else the server's
    echo: dict[str, Any] = field(default_factory=dict)  # the protocol's view, kept with the session
