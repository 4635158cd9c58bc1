"""A pocketsphinx stream commits what the engine hears in the whole utterance decoded at once.

pocketsphinx decoding live normalizes by a cepstral mean that starts from the model's prior and
moves toward the speaker's only over seconds of speech; a quiet speaker (or a far microphone) sits
far from that prior, and the live decode of a stream's first utterance lost words the whole-file
decode finds ("lazy died" for "lazy dog"). The fixtures are made quieter here to be such a voice.
"""

import numpy as np
import pytest
from pocketsphinx import Decoder

from lectern.speech.audio import AudioFormat
from lectern.speech.endpointing import VadSettings
from lectern.speech.engines.base import RecognizerOptions
from lectern.speech.segmenter import RawSegment, Segmenter, SegmentRules
from lectern.speech.text import clean_token
from tests.conftest import load_speech

PCM16 = AudioFormat("pcm_s16le", 16000)
CHUNK = 3200  # 100 ms, as clients send
QUIET = 0.25  # -12 dB


def quieter(pcm: bytes) -> bytes:
    return (np.frombuffer(pcm, dtype=np.int16) * QUIET).astype(np.int16).tobytes()


def offline(pcm: bytes) -> list[str]:
    """The engine alone on the whole audio at once (bench/wer.py's offline path)."""
    decoder = Decoder(loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm, False, True)
    decoder.end_utt()
    return [word for word in (clean_token(seg.word) for seg in decoder.seg()) if word]


def streamed(engine, vad_model, pcm: bytes, rules: SegmentRules, commit: bool) -> list[RawSegment]:
    segmenter = Segmenter(engine.recognizer(RecognizerOptions()), vad_model, PCM16, rules)
    try:
        segments = []
        for start in range(0, len(pcm), CHUNK):
            segments += segmenter.feed(pcm[start : start + CHUNK]).segments
        return segments + (segmenter.commit() if commit else segmenter.finish()[0])
    finally:
        segmenter.close()


def words(segments: list[RawSegment]) -> list[str]:
    return [w.text for s in segments for w in s.words]


@pytest.mark.parametrize("name", ["fox", "coffee"])
def test_a_quiet_speakers_first_utterance_is_committed_as_the_whole_file_decode_hears_it(engine, vad_model, name):
    pcm = quieter(load_speech(name).pcm)
    # Committed by the client right after the speech (no pause to prepare at): decoded at the commit.
    assert words(streamed(engine, vad_model, pcm, SegmentRules(), commit=True)) == offline(pcm)


@pytest.mark.parametrize("name", ["fox", "coffee"])
def test_a_vad_commit_after_the_pause_commits_the_same_words(engine, vad_model, name):
    pcm = quieter(load_speech(name).pcm) + bytes(2 * 16000 * 2)  # then 2 s of silence
    segments = streamed(engine, vad_model, pcm, SegmentRules(vad=VadSettings(silence_seconds=1.0)), commit=False)
    assert segments[0].trigger == "vad"
    # The VAD decoded 0.15 s of the silence after the speech with it, so the offline decode does.
    spoken = round(segments[0].end * 16000) * 2 + int(0.15 * 16000) * 2
    assert words(segments) == offline(pcm[:spoken])


def test_speech_resuming_after_a_pause_and_the_next_utterance_keep_every_word(engine, vad_model):
    two = load_speech("two_sentences")  # a sentence, a 2 s pause, a sentence
    pcm = quieter(two.pcm)
    # One utterance through the pause (prepared at the pause, then decoded on live), and two
    # utterances (the second starts from the first one's mean): the same words, all of them.
    one = words(streamed(engine, vad_model, pcm, SegmentRules(), commit=True))
    split = streamed(engine, vad_model, pcm, SegmentRules(vad=VadSettings(silence_seconds=1.0)), commit=False)
    assert [s.trigger for s in split] == ["vad", "end"]
    assert one == words(split) == two.text.split()
