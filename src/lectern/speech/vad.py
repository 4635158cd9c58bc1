"""Silero VAD (v6) on onnxruntime, with the model file that ships inside the faster-whisper wheel.

faster-whisper is a dependency anyway (the Whisper engine), so a plain ``pip install`` brings the
VAD model too: nothing is downloaded and no extra package is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

WINDOW = 512  # samples at 16 kHz: one probability every 32 ms
WINDOW_SECONDS = WINDOW / 16000
_CONTEXT = 64  # the model sees the last 64 samples of the previous window before each window


def silero_model_path() -> Path:
    from faster_whisper.vad import get_assets_path

    path = Path(get_assets_path()) / "silero_vad_v6.onnx"
    if not path.exists():
        raise RuntimeError(f"silero VAD model missing at {path} (reinstall faster-whisper)")
    return path


def load_vad_model() -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # counted against the cores: one worker process per core
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(
        str(silero_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )


class SileroVad:
    """Speech probabilities for a 16 kHz stream, one per 32 ms window; state is per stream.

    All whole windows of a chunk go to the model in one call (its LSTM state carries across
    them), and the result does not depend on how the audio was chunked.
    """

    def __init__(self, model: onnxruntime.InferenceSession) -> None:
        self._model = model
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, pcm: np.ndarray) -> list[float]:
        audio = np.concatenate([self._pending, pcm.astype(np.float32) / 32768.0])
        whole = len(audio) - len(audio) % WINDOW
        self._pending = audio[whole:]
        if not whole:
            return []
        windows = audio[:whole].reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None], windows[:-1, -_CONTEXT:]])
        self._context = windows[-1, -_CONTEXT:].copy()
        probabilities, self._h, self._c = self._model.run(
            None, {"input": np.concatenate([contexts, windows], axis=1), "h": self._h, "c": self._c}
        )
        return [float(p) for p in probabilities.reshape(-1)]
