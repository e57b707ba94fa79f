"""User and session ids never reach disk as they came: a keyed hash with a per-workspace salt replaces them.

HMAC-SHA256 with a random 32-byte salt kept in its own file (mode 0600) beside the events, so a copy of the events
database alone cannot be joined back to customer ids by hashing a list of known ids. The hash is cut to 63 bits to
fit SQLite's INTEGER; collisions at a million users are about 1 in 10^7.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from shoptag.core.files import atomic_write

SALT_BYTES = 32


def load_or_create_salt(path: Path) -> bytes:
    """The workspace's salt, made once (atomically, owner-only) on first use."""
    if path.is_file():
        salt = path.read_bytes()
        if len(salt) == SALT_BYTES:
            return salt
    salt = secrets.token_bytes(SALT_BYTES)
    with atomic_write(path) as handle:
        handle.write(salt)
    os.chmod(path, 0o600)
    return salt


class Pseudonymizer:
    """Raw id → stable 63-bit integer under one salt; memoised, since a file repeats the same users."""

    def __init__(self, salt: bytes) -> None:
        self._salt = salt
        self._memo: dict[str, int] = {}

    def __call__(self, raw: str | None) -> int | None:
        if raw is None or raw == "":
            return None
        value = self._memo.get(raw)
        if value is None:
            digest = hmac.new(self._salt, raw.encode("utf-8"), hashlib.sha256).digest()
            value = int.from_bytes(digest[:8], "big") >> 1
            if len(self._memo) < 1_000_000:
                self._memo[raw] = value
        return value
