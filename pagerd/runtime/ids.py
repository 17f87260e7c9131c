"""Incident ids: short, unique, and sorting by creation time.

The core takes the id an alert's incident would get as an argument (``Alert.new_incident_id``),
so it stays free of randomness; intake draws one here for every alert.
"""

from __future__ import annotations

import random
import secrets
import time

# Crockford's base32 digits (no I, L, O, U), in order, so that ids sort as numbers.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit number as its two digits: an id is eight table lookups.
_DIGIT_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
# Every alert carries a would-be id (it is kept only if it opens an incident), so the
# draw must be cheap: ids need to be unique, not secret, and a seeded generator suffices.
_id_bits = random.Random(secrets.randbits(64))


def new_incident_id(now_ms: int | None = None) -> str:
    """A 16-character id that sorts by creation time: 50 bits of ms, 30 random bits.

    The digits of ``(ms << 30) | random`` in Crockford's base32, most significant first.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    bits = _id_bits.getrandbits(30)
    p = _DIGIT_PAIRS
    return (
        f"{p[ms >> 40 & 0x3FF]}{p[ms >> 30 & 0x3FF]}{p[ms >> 20 & 0x3FF]}{p[ms >> 10 & 0x3FF]}"
        f"{p[ms & 0x3FF]}{p[bits >> 20]}{p[bits >> 10 & 0x3FF]}{p[bits & 0x3FF]}"
    )
