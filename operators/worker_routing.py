"""Which Bytewax worker holds a key: so that the shard keys can be spread evenly over workers.

Bytewax 0.21 sends a string key to worker ``h % workers``, where ``h`` is Rust's
``DefaultHasher`` of the string: SipHash-1-3 with zero keys over its UTF-8 bytes and a
``0xff`` terminator (``String::hash``). Shard keys named ``shard-0`` … ``shard-3`` happen to
hash alike modulo 2, so two processes held all four on one worker and the other scored
nothing; ``tests/dataflow/test_worker_routing.py`` checks this function against real
multi-worker runs, so a Bytewax that routes otherwise fails there first. Python's own
SipHash is keyed per process, and no maintained package offers the 1-3 variant, so it is
written out here (https://www.aumasson.jp/siphash/siphash.pdf).
"""

from __future__ import annotations

_MASK = (1 << 64) - 1


def _rotate(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def siphash13(data: bytes) -> int:
    """SipHash-1-3 of ``data`` with the key 0, as Rust's ``DefaultHasher::new()`` computes it.

    >>> hex(siphash13(b""))
    '0xd1fba762150c532c'
    """
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

    def round_() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK
        v1 = _rotate(v1, 13) ^ v0
        v0 = _rotate(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotate(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotate(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotate(v1, 17) ^ v2
        v2 = _rotate(v2, 32)

    whole = len(data) - len(data) % 8
    for start in range(0, whole, 8):
        word = int.from_bytes(data[start : start + 8], "little")
        v3 ^= word
        round_()
        v0 ^= word
    last = (len(data) & 0xFF) << 56 | int.from_bytes(data[whole:], "little")
    v3 ^= last
    round_()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        round_()
    return v0 ^ v1 ^ v2 ^ v3


def key_hash(key: str) -> int:
    """The hash Bytewax routes ``key`` by: its worker is this modulo the workers of all processes."""
    return siphash13(key.encode() + b"\xff")
