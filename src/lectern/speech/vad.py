"""Silero VAD on onnxruntime, using the model file shipped inside the silero-vad wheel.

The silero_vad package itself imports torch, so only its data directory is used here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime

WINDOW = 512  # samples at 16 kHz: one probability every 32 ms
WINDOW_SECONDS = WINDOW / 16000
_CONTEXT = 64


def silero_model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad is not installed (pip install --no-deps silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.exists():
        raise RuntimeError(f"silero VAD model missing at {path}")
    return path


def load_vad_model() -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(silero_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )


class SileroVad:
    """Speech probabilities for a 16 kHz stream, one per 32 ms window; state is per stream."""

    def __init__(self, model: onnxruntime.InferenceSession) -> None:
        self._model = model
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._sr = np.array(16000, dtype=np.int64)

    def process(self, pcm: np.ndarray) -> list[float]:
        audio = np.concatenate([self._pending, pcm.astype(np.float32) / 32768.0])
        whole = len(audio) - len(audio) % WINDOW
        self._pending = audio[whole:]
        probs: list[float] = []
        for start in range(0, whole, WINDOW):
            frame = np.concatenate([self._context, audio[None, start : start + WINDOW]], axis=1)
            out, self._state = self._model.run(None, {"input": frame, "state": self._state, "sr": self._sr})
            self._context = frame[:, -_CONTEXT:]
            probs.append(float(out[0][0]))
        return probs
