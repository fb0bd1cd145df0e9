"""The Merkle tree against RFC 6962's reference vectors and the RFC's own definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqe.audit.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof_from_frontier,
    extend_frontier,
    frontier_root,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference leaves and the root of each prefix (sizes 1..8).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CT_CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, literally (leaf hashes in, root out)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def hashed(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_reference_roots() -> None:
    hashes = [leaf_hash(x) for x in CT_LEAVES]
    assert MerkleTree([]).root() == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == hashlib.sha256(b"").hexdigest()
    tree = MerkleTree(hashes)
    for n in range(1, 9):
        assert tree.root(n).hex() == CT_ROOTS[n - 1]
        assert MerkleTree(hashes[:n]).root().hex() == CT_ROOTS[n - 1]


def test_hand_computed_three_leaf_tree() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert a == hashlib.sha256(b"\x00a").digest()
    expected = hashlib.sha256(b"\x01" + hashlib.sha256(b"\x01" + a + b).digest() + c).digest()
    assert MerkleTree([a, b, c]).root() == expected


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_reference_inclusion(index: int, size: int, path: list[str]) -> None:
    hashes = [leaf_hash(x) for x in CT_LEAVES]
    tree = MerkleTree(hashes)
    assert [p.hex() for p in tree.inclusion_proof(index, size)] == path
    proof = [bytes.fromhex(p) for p in path]
    assert verify_inclusion(hashes[index], index, size, proof, bytes.fromhex(CT_ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_reference_consistency(old: int, new: int, path: list[str]) -> None:
    hashes = [leaf_hash(x) for x in CT_LEAVES]
    tree = MerkleTree(hashes)
    assert [p.hex() for p in tree.consistency_proof(old, new)] == path
    proof = [bytes.fromhex(p) for p in path]
    old_root, new_root = bytes.fromhex(CT_ROOTS[old - 1]), bytes.fromhex(CT_ROOTS[new - 1])
    assert verify_consistency(old, new, old_root, new_root, proof)
    assert not verify_consistency(old, new, new_root, old_root, proof)


def test_every_inclusion_proof_in_every_small_tree() -> None:
    leaves = hashed(40)
    for n in range(1, 41):
        tree = MerkleTree(leaves[:n])
        root = tree.root()
        assert root == mth(leaves[:n])
        for i in range(n):
            path = tree.inclusion_proof(i)
            assert verify_inclusion(leaves[i], i, n, path, root)
            # Another leaf, another index or a shortened path must not verify.
            if n > 1:
                assert not verify_inclusion(leaves[(i + 1) % n], i, n, path, root)
                assert not verify_inclusion(leaves[i], (i + 1) % n, n, path, root)
            assert not verify_inclusion(leaves[i], n, n, path, root)
            if path:
                assert not verify_inclusion(leaves[i], i, n, path[:-1], root)


def test_every_consistency_proof_in_small_trees() -> None:
    leaves = hashed(33)
    for n in range(1, 34):
        tree = MerkleTree(leaves[:n])
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert verify_consistency(m, n, mth(leaves[:m]), tree.root(), proof)
            if m < n:
                wrong = mth([*leaves[: m - 1], leaf_hash(b"other")])
                assert not verify_consistency(m, n, wrong, tree.root(), proof)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=70), min_size=1, max_size=6))
def test_frontier_extension_matches_the_whole_tree(steps: list[int]) -> None:
    """Sealing in steps (frontier + new leaves) gives the RFC root and proof each time."""
    leaves = hashed(sum(steps))
    frontier: list[bytes] = []
    size = 0
    for step in steps:
        new = leaves[size : size + step]
        proof = consistency_proof_from_frontier(frontier, size, new)
        frontier = extend_frontier(frontier, size, new)
        old_root = mth(leaves[:size])
        size += step
        assert frontier_root(frontier) == mth(leaves[:size])
        assert proof == MerkleTree(leaves[:size]).consistency_proof(size - step, size)
        assert verify_consistency(size - step, size, old_root, frontier_root(frontier), proof)
        assert len(frontier) == bin(size).count("1")


def test_frontier_size_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="frontier of size 3"):
        extend_frontier([leaf_hash(b"x")], 3, [])
