"""Raw audio formats and their conversion to the engine's 16 kHz mono s16le."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import soxr

ENGINE_RATE = 16000
Encoding = Literal["pcm_s16le", "pcm_u8", "ulaw"]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: Encoding
    sample_rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm_s16le" else 1

    @property
    def is_engine_native(self) -> bool:
        """Already the engine's 16 kHz s16le: recordings can keep the client's bytes as they are."""
        return self.encoding == "pcm_s16le" and self.sample_rate == ENGINE_RATE

    def seconds(self, nbytes: int) -> float:
        return nbytes / (self.bytes_per_sample * self.sample_rate)

    def check_chunk(self, data: bytes) -> None:
        """Raise ValueError for bytes that cannot be whole samples of this format."""
        if len(data) % self.bytes_per_sample:
            raise ValueError(
                f"audio chunk of {len(data)} bytes is not a whole number of "
                f"{self.bytes_per_sample * 8}-bit samples"
            )


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


_ULAW = _ulaw_table()


class AudioConverter:
    """Stateful per stream: keeps the resampler's filter history across chunks."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = (
            None
            if fmt.sample_rate == ENGINE_RATE
            else soxr.ResampleStream(fmt.sample_rate, ENGINE_RATE, 1, dtype="int16", quality="HQ")
        )

    def convert(self, data: bytes, last: bool = False) -> np.ndarray:
        if self.format.encoding == "ulaw":
            samples = _ULAW[np.frombuffer(data, dtype=np.uint8)]
        elif self.format.encoding == "pcm_u8":
            samples = ((np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
        else:
            samples = np.frombuffer(data, dtype="<i2")
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples, last=last)
