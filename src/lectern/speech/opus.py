"""Opus audio from clients, as raw packets or an Ogg Opus stream, decoded to PCM s16le mono.

Decoding is two steps, so a caller can bound the audio before it exists: ``parse`` reads what
arrived (pages, packets) and says how many bytes of PCM its packets decode to, from each packet's
TOC byte alone (cheap, and a one-byte packet can hold 120 ms); ``decode_pending`` decodes them (costly:
run it off the event loop).
"""

from __future__ import annotations

import struct
import zlib

import av

OPUS_RATE = 48000  # Opus always decodes at 48 kHz here; granules and pre-skip count 48 kHz samples
MAX_PAGE = 27 + 255 + 255 * 255  # header, a full segment table, 255 segments of 255 bytes
MAX_PACKET = 255 * 255  # one page body: the largest Opus packet (120 ms of 1275-byte frames) is 61 KB
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, sequence, CRC, segments
_CONTINUED, _LAST = 0x01, 0x04
_BIT_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


# RFC 6716 3.1: a TOC byte's configuration (its top five bits) sets the duration of every frame
# of the packet, in 48 kHz samples: SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
_FRAME_SAMPLES = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4
MAX_PACKET_SAMPLES = 5760  # 120 ms: the longest packet RFC 6716 allows


class OpusError(ValueError):
    """Audio that cannot be decoded; the message is meant for the client."""


def packet_samples(packet: bytes) -> int:
    """The 48 kHz samples an Opus packet decodes to, read from its TOC byte and frame count
    (RFC 6716 3.1-3.2) without decoding it; OpusError for a packet that cannot be valid."""
    if not packet:
        raise OpusError("an Opus packet cannot be empty")
    code = packet[0] & 0x03
    if code == 0:
        frames = 1
    elif code < 3:
        frames = 2
    elif len(packet) < 2 or not packet[1] & 0x3F:
        raise OpusError("the audio is not valid Opus: a code 3 packet without a frame count")
    else:
        frames = packet[1] & 0x3F
    samples = frames * _FRAME_SAMPLES[packet[0] >> 3]
    if samples > MAX_PACKET_SAMPLES:
        raise OpusError("the audio is not valid Opus: a packet longer than 120 ms")
    return samples


def _pcm_bytes(samples_48k: int, sample_rate: int) -> int:
    """Bytes of s16 mono PCM at ``sample_rate`` that many 48 kHz samples become (rounded up)."""
    return -(-samples_48k * sample_rate // OPUS_RATE) * 2


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04c11db7, not reflected, init 0, no final xor).

    zlib computes the reflected form of the same polynomial in C; reflecting every input byte and
    the result, and undoing zlib's init and final xor, gives Ogg's CRC without a Python byte loop.
    """
    crc = zlib.crc32(data.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{crc:032b}"[::-1], 2)


def _check_rate(sample_rate: int) -> None:
    if sample_rate <= 0:  # the resampler would take 0 to mean "keep 48 kHz"
        raise OpusError(f"cannot decode Opus audio to a sample rate of {sample_rate} Hz")


class _Decoder:
    """One Opus decoder and a resampler to mono s16 at the output rate."""

    def __init__(self, sample_rate: int, head: bytes | None = None) -> None:
        _check_rate(sample_rate)
        self._codec = av.CodecContext.create("libopus" if "libopus" in av.codecs_available else "opus", "r")
        if head is None:
            self._codec.layout = "mono"  # raw packets come without a header; libopus downmixes stereo packets
        else:
            # The OpusHead gives the channel count and mapping, and its pre-skip (the encoder's
            # look-ahead) is dropped by the decoder itself, exactly, at 48 kHz before resampling.
            self._codec.extradata = head
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)

    def decode(self, packet: bytes | None) -> bytes:
        """Decode one packet, or drain the decoder and the resampler when `packet` is None."""
        if packet is not None and not packet:
            raise OpusError("an Opus packet cannot be empty")  # an empty av.Packet would drain the decoder
        try:
            frames = self._codec.decode(None if packet is None else av.Packet(packet))
            out = [f for frame in frames for f in self._resampler.resample(frame)]
            if packet is None:
                out += self._resampler.resample(None)  # the samples swresample holds for its filter
        except (av.FFmpegError, ValueError) as e:
            raise OpusError("the audio is not valid Opus") from e
        return b"".join(f.to_ndarray().tobytes() for f in out)


class OpusPacketDecoder:
    """Raw Opus packets (one per WebSocket message) -> PCM s16le mono at `sample_rate` (8000 or 16000).

    Without a header there is no pre-skip to honour, so the output starts with the encoder's
    look-ahead (6.5 ms for libopus), and the resampler's last ~1 ms is never flushed.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._decoder = _Decoder(sample_rate)
        self._pending: bytes | None = None

    @property
    def pending_packets(self) -> int:
        return 0 if self._pending is None else 1

    def parse(self, packet: bytes) -> int:
        """Take one packet to decode next; returns the bytes of PCM it decodes to."""
        samples = packet_samples(packet)
        self._pending = packet
        return _pcm_bytes(samples, self.sample_rate)

    def decode_pending(self) -> bytes:
        packet, self._pending = self._pending, None
        return b"" if packet is None else self._decoder.decode(packet)

    def decode(self, packet: bytes) -> bytes:
        self.parse(packet)
        return self.decode_pending()


class OggOpusDecoder:
    """An Ogg Opus byte stream cut at arbitrary points -> PCM s16le mono at `sample_rate`.

    Pages are verified (capture pattern, version, CRC, serial, sequence) and their packets decoded
    as each page completes. The first packet must be an OpusHead, the second (OpusTags) is skipped;
    the head's pre-skip and the last page's granule position trim the output to the encoded length.
    After an OpusError the stream is broken and the decoder should be dropped.
    """

    def __init__(self, sample_rate: int) -> None:
        _check_rate(sample_rate)  # now, not when the OpusHead arrives and the decoder is made
        self.sample_rate = sample_rate
        # The start of a page not yet complete: never a whole page, so never MAX_PAGE bytes or more
        # (a page's size comes from its own header, which cannot describe more than MAX_PAGE).
        self._buffer = bytearray()
        self._packet = bytearray()  # a packet continued on the next page
        self._decoder: _Decoder | None = None
        self._pre_skip = 0
        self._packets = 0
        self._serial: int | None = None
        self._sequence = 0
        self._ended = False
        self._limit: int | None = None  # output samples in the whole stream, once the last page says
        self._emitted = 0
        self._pending: list[bytes] = []  # audio packets parsed, not yet decoded

    @property
    def pending_packets(self) -> int:
        return len(self._pending)

    def parse(self, data: bytes) -> int:
        """Accept any slice of the stream: verify the pages it completes and queue their packets.
        Returns the bytes of PCM those packets decode to at most (before the stream's trimming)."""
        self._buffer += data
        pos, samples = 0, 0
        while (size := self._page_size(pos)) and len(self._buffer) - pos >= size:
            for packet in self._read_page(bytes(self._buffer[pos : pos + size])):
                samples += packet_samples(packet)
                self._pending.append(packet)
            pos += size
        del self._buffer[:pos]
        return _pcm_bytes(samples, self.sample_rate)

    def decode_pending(self) -> bytes:
        """Decode the packets ``parse`` queued: the PCM of the pages completed so far (may be b"")."""
        packets, self._pending = self._pending, []
        if not packets:
            return b""
        assert self._decoder is not None  # audio packets come after the OpusHead, which made it
        return self._trim(b"".join(self._decoder.decode(packet) for packet in packets))

    def decode(self, data: bytes) -> bytes:
        """``parse`` then ``decode_pending``, for callers that need no bound."""
        self.parse(data)
        return self.decode_pending()

    def finish(self) -> bytes:
        """End of stream: the decoder's and resampler's last samples, or OpusError if a page is cut short."""
        if self._buffer or self._packet:
            raise OpusError("the Ogg Opus stream ends in the middle of a page")
        tail = self.decode_pending()
        return tail if self._decoder is None else tail + self._trim(self._decoder.decode(None))

    def _page_size(self, pos: int) -> int:
        """The size of the page starting at `pos`, or 0 while its header is incomplete."""
        head = bytes(self._buffer[pos : pos + 27])
        if not head:
            return 0
        if not b"OggS".startswith(head[:4]) or (len(head) > 4 and head[4] != 0):
            if self._serial is None:
                raise OpusError("not an Ogg Opus stream")
            raise OpusError("the Ogg Opus stream is corrupt: a page does not start where the last one ended")
        if self._ended:
            raise OpusError("the Ogg Opus stream continues after its last page")
        if len(head) < 27 or len(self._buffer) - pos < 27 + head[26]:
            return 0
        return 27 + head[26] + sum(self._buffer[pos + 27 : pos + 27 + head[26]])

    def _read_page(self, page: bytes) -> list[bytes]:
        """The audio packets a page completes (the OpusHead and OpusTags are taken here)."""
        _, _, flags, granule, serial, sequence, crc, segments = _PAGE_HEADER.unpack_from(page)
        if ogg_crc(page[:22] + bytes(4) + page[26:]) != crc:
            raise OpusError(f"the Ogg Opus stream is corrupt: page {self._sequence} fails its CRC check")
        if self._serial is None:
            self._serial = serial
        if serial != self._serial:
            raise OpusError("only one Ogg logical stream is supported, not multiplexed or chained streams")
        if sequence != self._sequence or bool(flags & _CONTINUED) != bool(self._packet):
            raise OpusError("the Ogg Opus stream is corrupt: pages are missing or out of order")
        self._sequence += 1
        if flags & _LAST:
            self._ended = True
            if granule >= 0:  # the final granule marks the end of the audio; the rest is padding
                self._limit = max(0, granule - self._pre_skip) * self.sample_rate // OPUS_RATE
        audio, pos = [], 27 + segments
        for lacing in page[27 : 27 + segments]:
            self._packet += page[pos : pos + lacing]
            pos += lacing
            if len(self._packet) > MAX_PACKET:
                raise OpusError(f"an Ogg Opus packet is larger than {MAX_PACKET} bytes")
            if lacing < 255:  # a lacing value of 255 continues the packet in the next segment
                packet = bytes(self._packet)
                self._packet.clear()
                if self._read_header(packet):
                    audio.append(packet)
        return audio

    def _read_header(self, packet: bytes) -> bool:
        """Take the OpusHead and OpusTags packets; True for an audio packet."""
        self._packets += 1
        if self._packets == 1:
            if not packet.startswith(b"OpusHead") or len(packet) < 19:
                raise OpusError("not an Ogg Opus stream")
            self._pre_skip = int.from_bytes(packet[10:12], "little")
            self._decoder = _Decoder(self.sample_rate, head=packet)
            return False
        return self._packets > 2  # the second is OpusTags: the encoder's name and comments

    def _trim(self, pcm: bytes) -> bytes:
        if self._limit is not None:
            pcm = pcm[: max(0, self._limit - self._emitted) * 2]
        self._emitted += len(pcm) // 2
        return pcm
