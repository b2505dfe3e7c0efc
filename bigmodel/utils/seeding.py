"""Seeds derived from named parts, shared by data (masking, shuffling) and tasks (dropout)."""

from __future__ import annotations

import hashlib
from typing import Any


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and Python runs, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1
