"""Deterministic identifiers: the same seed and the same sequence of calls give the same ids."""

from __future__ import annotations

import hashlib

# Crockford's base32 alphabet, as in ULIDs (the vendor's file and event ids look like ULIDs).
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _digest(*parts: object) -> bytes:
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(text.encode("utf-8")).digest()


def hex_id(*parts: object, length: int = 24) -> str:
    """Lowercase hex id of ``length`` characters, shaped like ``69d224901610662a576cd7e6``."""
    return _digest(*parts).hex()[:length]


def ulid_like(*parts: object, length: int = 26) -> str:
    """Uppercase Crockford base32 id of ``length`` characters (``01JY7M4ZVX5R1P3M3Q0TA1S7ZM``)."""
    number = int.from_bytes(_digest(*parts), "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, 32)
        chars.append(_CROCKFORD[index])
    return "".join(chars)


def request_id(*parts: object) -> str:
    """A request id shaped like the vendor's (``req_E906121DE9DA4367AF978C77C9``)."""
    return "req_" + _digest(*parts).hex()[:26].upper()
