"""Opaque handles for recorded versions: what the browser gets instead of a rowid.

Rowids are numbered in path order within each sync cycle, so a list of them ranks the
students' uids. A handle is a keyed permutation of the 64-bit rowid (a 4-round Feistel
network whose round function is an HMAC-SHA256 under the deployment's key, the one
ACCESS_DB keeps for every worker), written as 16 hex digits: every worker decodes what
another one sent, and without the key the handles of two versions say nothing about
their order.
"""

import hashlib
import hmac
import re

ROUNDS = 4
HALF = 32
HALF_MASK = (1 << HALF) - 1
HANDLE_RE = re.compile(r"[0-9a-f]{16}")
MAX_ROWID = 2**63  # SQLite's rowids are below it


def round_value(key, number, half):
    """The round function: 32 bits of HMAC-SHA256(key, round number, half)."""
    message = number.to_bytes(1, "big") + half.to_bytes(4, "big")
    digest = hmac.digest(key, message, hashlib.sha256)
    return int.from_bytes(digest[:4], "big")


def encode(key, rowid):
    """The handle of `rowid` (an int in [0, 2**63)) under `key` (bytes)."""
    left, right = rowid >> HALF, rowid & HALF_MASK
    for number in range(ROUNDS):
        left, right = right, left ^ round_value(key, number, right)
    return f"{(left << HALF) | right:016x}"


def decode(key, handle):
    """The rowid a handle stands for, or None for anything that is not one."""
    if not isinstance(handle, str) or not HANDLE_RE.fullmatch(handle):
        return None
    value = int(handle, 16)
    left, right = value >> HALF, value & HALF_MASK
    for number in reversed(range(ROUNDS)):
        left, right = right ^ round_value(key, number, left), left
    rowid = (left << HALF) | right
    return rowid if 0 < rowid < MAX_ROWID else None
