"""Merkle trees as RFC 9162 (Certificate Transparency v2) defines them: tree heads, inclusion proofs.

Pure functions over 32-byte SHA-256 hashes. A leaf's hash is SHA-256(0x00 || leaf data), an inner node's
SHA-256(0x01 || left || right) (RFC 9162 §2.1.1: the prefixes keep a leaf from passing for a node). The
tree over n leaves splits at the largest power of two below n, so it is built here level by level, pairing
neighbours and carrying an odd last node up unchanged, which gives the same head (tests/evidence check it
against the recursive definition).

Who uses it: the sealing run (a room-day's tree head), `roomlogs verify` and the API's exports (inclusion
proofs: that an event is one of the leaves of a sealed tree, without the others).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "inclusion_proof",
    "inclusion_proofs",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_proof",
]

_LEAF = b"\x00"
_NODE = b"\x01"
#: The head of a tree with no leaves: SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, the head last."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])  # an odd last node goes up unchanged
        levels.append(above)
    return levels


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree head (MTH) over the given leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    return _levels(leaves)[-1][0]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf `index` (RFC 9162 §2.1.3.1 PATH), bottom up."""
    return inclusion_proofs([index], leaves)[index]


def inclusion_proofs(indices: Iterable[int], leaves: Sequence[bytes]) -> dict[int, list[bytes]]:
    """The audit path of each leaf index, bottom up, with the tree built once for all of them (a partial
    export of a busy day asks for thousands)."""
    levels = _levels(leaves)[:-1]
    paths: dict[int, list[bytes]] = {}
    for leaf in indices:
        if not 0 <= leaf < len(leaves):
            raise IndexError(f"leaf {leaf} of a tree of {len(leaves)}")
        path, i = [], leaf
        for level in levels:
            if (i ^ 1) < len(level):
                path.append(level[i ^ 1])
            i //= 2
        paths[leaf] = path
    return paths


def root_from_proof(index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """The head a leaf hash and its audit path lead to (RFC 9162 §2.1.3.2), or None when the path cannot
    belong to a tree of `tree_size` leaves at that index. Compare the result with the signed head."""
    if not 0 <= index < tree_size:
        return None
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
