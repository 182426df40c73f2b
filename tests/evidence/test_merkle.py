"""RFC 9162 Merkle trees: the level-by-level head equals the recursive definition, every inclusion proof
verifies, and a proof for another leaf or index does not. (The tree size is not bound by a path alone:
the signed head carries it.)"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from pipeline.evidence.merkle import (
    EMPTY_ROOT,
    inclusion_proof,
    inclusion_proofs,
    leaf_hash,
    node_hash,
    root,
    root_from_proof,
)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, as written."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]), as written."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def test_the_empty_tree_and_the_known_vector() -> None:
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    # RFC 6962's test vector: the tree of the empty leaf
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70, unique=True))
def test_heads_and_proofs_are_rfc_9162s(data: list[bytes]) -> None:
    leaves = [leaf_hash(d) for d in data]
    head = root(leaves)
    assert head == mth(leaves)
    for m, leaf in enumerate(leaves):
        proof = inclusion_proof(m, leaves)
        assert proof == path(m, leaves)
        assert root_from_proof(m, len(leaves), leaf, proof) == head
        if len(leaves) > 1:
            other = (m + 1) % len(leaves)
            assert root_from_proof(other, len(leaves), leaf, proof) != head
            assert root_from_proof(m, len(leaves), leaf_hash(b"forged"), proof) != head
    assert root_from_proof(len(leaves), len(leaves), leaves[0], []) is None
    # the batch form (one tree for many proofs) gives each leaf RFC 9162's path too
    assert inclusion_proofs(range(len(leaves)), leaves) == {m: path(m, leaves) for m in range(len(leaves))}
