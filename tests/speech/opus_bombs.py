"""Ogg Opus decompression bombs, made by hand: a few bytes of valid Ogg pages that decode to hours of audio."""

from __future__ import annotations

import struct

from lectern.speech.opus import ogg_crc

# TOC byte: config 3 (SILK narrowband, 60 ms frames), code 1 (two frames of equal size). A packet
# of this one byte holds two empty frames: 120 ms of packet-loss concealment, from one byte.
ONE_BYTE_120_MS = bytes([3 << 3 | 1])
PACKET_SAMPLES = 5760  # 120 ms at 48 kHz, Opus's clock
BOMB_PAGE_PACKETS = 255  # one lacing byte a packet: a page of 537 bytes holds 30.6 s


def ogg_page(packets: list[bytes], sequence: int, granule: int, flags: int = 0, serial: int = 0x5EED) -> bytes:
    """One Ogg page holding whole packets (each under 255 bytes a lacing value, so any size works)."""
    lacing = b"".join(bytes([255] * (len(p) // 255) + [len(p) % 255]) for p in packets)
    page = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing))
    page += lacing + b"".join(packets)
    return page[:22] + struct.pack("<I", ogg_crc(page)) + page[26:]


def ogg_bomb(pages: int) -> bytes:
    """A valid Ogg Opus stream (OpusHead, OpusTags, then ``pages`` pages of 255 one-byte 120 ms packets)
    without its last page, as a client streaming it sends it: 161 KB at 300 pages, 9180 s of audio."""
    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 0) + struct.pack("<I", 0)
    data = ogg_page([head], 0, 0, flags=0x02) + ogg_page([tags], 1, 0)
    return data + b"".join(bomb_page(n) for n in range(pages))


def bomb_page(n: int) -> bytes:
    """Page ``n`` after the head and tags of ``ogg_bomb``: 30.6 s of audio in 537 bytes."""
    return ogg_page([ONE_BYTE_120_MS] * BOMB_PAGE_PACKETS, n + 2, (n + 1) * BOMB_PAGE_PACKETS * PACKET_SAMPLES)
