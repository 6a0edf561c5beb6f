"""The validation alone against the hostile messages of ``tests/hostile.py``: it never raises, it
gives each kind its verdict, and a message routed by its plainly written device id is the
device it decodes to."""

from __future__ import annotations

import pytest

from operators.messages import MessageLimits, Rejection, decode_message, peek_device_id
from tests.hostile import PROCESSED, SUITE_N, SUITE_SEED, shared_cases

LIMITS = MessageLimits()


@pytest.fixture(scope="module")
def decoded():
    cases = shared_cases(SUITE_N, SUITE_SEED)
    return cases, [decode_message(case.raw, "test", LIMITS) for case in cases]


def test_every_hostile_message_gets_the_verdict_of_its_kind(decoded):
    cases, records = decoded
    wrong = [
        (case.kind, case.expected, verdict, case.raw[:100])
        for case, record in zip(cases, records, strict=True)
        if case.expected is not None
        and (verdict := record.reason if isinstance(record, Rejection) else PROCESSED) != case.expected
    ]
    assert not wrong, f"{len(wrong)} wrong verdicts, the first: {wrong[:5]}"


def test_a_device_id_read_without_decoding_is_the_one_decoding_finds(decoded):
    """Readings are routed to their shard by the id read plainly (``peek_device_id``): for a valid
    message it must be its device, or the device's state splits across shards. An escaped
    ``"device_\\u0069d"`` key decodes to ``device_id`` too (and wins, written last)."""
    cases, records = decoded
    misrouted = [
        (peeked, record.device_id, case.raw[:160])
        for case, record in zip(cases, records, strict=True)
        if not isinstance(record, Rejection)
        and (peeked := peek_device_id(case.raw)) is not None
        and peeked != record.device_id
    ]
    assert not misrouted, f"{len(misrouted)} would go to another device's shard: {misrouted[:3]}"
    assert any(b"device_\\u0069d" in case.raw for case in cases)
