"""Merkle trees over a log as in RFC 6962 / RFC 9162 (Certificate Transparency).

Pure functions, no I/O. Hashes are SHA-256:

* leaf hash ``H(0x00 || leaf)``, interior node ``H(0x01 || left || right)``;
* the tree of ``n`` leaves splits at ``k``, the largest power of two below ``n``
  (RFC 9162 §2.1.1), which is the same tree as building levels bottom-up and carrying
  an unpaired last node up unchanged (what :class:`MerkleTree` does);
* inclusion proofs (§2.1.3) and consistency proofs (§2.1.4) are the RFC's, and the
  verifiers follow the RFC's verification algorithms step by step, so a proof made
  here checks with any RFC 9162 implementation given the same leaf hashes.

A *frontier* (compact range) of a tree of size ``n`` is the list of roots of the
perfect subtrees that cover ``[0, n)``, largest first (one per set bit of ``n``). It
is enough to extend the tree with more leaves (:func:`extend_frontier`), to compute
its root (:func:`frontier_root`) and, together with the new leaves, a consistency
proof from ``n`` to the extended size (:func:`consistency_proof_from_frontier`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "MerkleTree",
    "consistency_proof",
    "consistency_proof_from_frontier",
    "extend_frontier",
    "frontier_root",
    "leaf_hash",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256

EMPTY_ROOT = _sha256(b"").digest()
"""The root of the empty tree (RFC 9162: the hash of the empty string)."""


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """Every level of the tree over a list of leaf hashes, for roots and proofs."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        """Build all levels; memory is about twice the leaf hashes."""
        level = list(leaf_hashes)
        self.levels: list[list[bytes]] = [level]
        while len(level) > 1:
            up = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)
            level = up

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0])

    def root(self, size: int | None = None) -> bytes:
        """The root of the first ``size`` leaves (default: all)."""
        n = self.size if size is None else size
        if n == 0:
            return EMPTY_ROOT
        return self.subtree(0, n)

    def subtree(self, lo: int, hi: int) -> bytes:
        """``MTH(D[lo:hi])`` for any range inside the tree."""
        n = hi - lo
        if n == 1:
            return self.levels[0][lo]
        if n & (n - 1) == 0 and lo % n == 0:
            # An aligned perfect subtree is stored at level log2(n).
            return self.levels[n.bit_length() - 1][lo // n]
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """``PATH(index, D[0:size])`` (RFC 9162 §2.1.3.1), leaf to root order."""
        n = self.size if size is None else size
        if not 0 <= index < n <= self.size:
            raise ValueError(f"leaf {index} is not in a tree of size {n}")
        return _path(index, 0, n, self.subtree)

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """``PROOF(old_size, D[0:size])`` (RFC 9162 §2.1.4.1)."""
        n = self.size if size is None else size
        return consistency_proof(old_size, n, self.subtree)


def _path(m: int, lo: int, hi: int, node: Callable[[int, int], bytes]) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, lo, lo + k, node), node(lo + k, hi)]
    return [*_path(m - k, lo + k, hi, node), node(lo, lo + k)]


def consistency_proof(old_size: int, size: int, node: Callable[[int, int], bytes]) -> list[bytes]:
    """``PROOF(old_size, D[0:size])`` with ``node(lo, hi)`` giving ``MTH(D[lo:hi])``.

    Raises:
        ValueError: ``old_size`` is not in ``[0, size]``.
    """
    if not 0 <= old_size <= size:
        raise ValueError(f"no consistency proof from size {old_size} to {size}")
    if old_size in (0, size):
        return []
    return _subproof(old_size, 0, size, True, node)


def _subproof(
    m: int, lo: int, hi: int, complete: bool, node: Callable[[int, int], bytes]
) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if complete else [node(lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, lo, lo + k, complete, node), node(lo + k, hi)]
    return [*_subproof(m - k, lo + k, hi, False, node), node(lo, lo + k)]


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove leaf hash ``leaf`` at ``index`` under ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, size: int, old_root: bytes, root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show the tree of ``old_size`` is a prefix of ``size``?"""
    if not 0 <= old_size <= size:
        return False
    if old_size == size:
        return not proof and old_root == root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == root


# -- frontiers (compact ranges) -------------------------------------------------------


def extend_frontier(frontier: Sequence[bytes], size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The frontier of the tree of ``size`` leaves extended by ``leaves`` (leaf hashes)."""
    # Stack of (height, hash), largest first; merging equal heights is binary addition.
    stack: list[tuple[int, bytes]] = []
    bits = [h for h in range(size.bit_length() - 1, -1, -1) if size >> h & 1]
    if len(bits) != len(frontier):
        raise ValueError(f"a frontier of size {size} has {len(bits)} hashes, not {len(frontier)}")
    stack = list(zip(bits, frontier, strict=True))
    for leaf in leaves:
        height, h = 0, leaf
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            h = node_hash(left, h)
            height += 1
        stack.append((height, h))
    return [h for _, h in stack]


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The root of the tree a frontier describes (right to left folding)."""
    if not frontier:
        return EMPTY_ROOT
    r = frontier[-1]
    for h in reversed(frontier[:-1]):
        r = node_hash(h, r)
    return r


def consistency_proof_from_frontier(
    frontier: Sequence[bytes], old_size: int, new_leaves: Sequence[bytes]
) -> list[bytes]:
    """The consistency proof from ``old_size`` to ``old_size + len(new_leaves)``.

    Every old-tree node an RFC 9162 consistency proof names is a node of the old
    frontier, and every other node lies wholly among the new leaves, so the old
    leaves themselves are not needed.
    """
    nodes: dict[tuple[int, int], bytes] = {}
    lo = 0
    bits = [h for h in range(old_size.bit_length() - 1, -1, -1) if old_size >> h & 1]
    for height, h in zip(bits, frontier, strict=True):
        nodes[(lo, lo + (1 << height))] = h
        lo += 1 << height
    new = MerkleTree(new_leaves) if new_leaves else None

    def node(a: int, b: int) -> bytes:
        known = nodes.get((a, b))
        if known is not None:
            return known
        if a < old_size or new is None:
            raise ValueError(f"node [{a}, {b}) is neither in the old frontier nor new")
        return new.subtree(a - old_size, b - old_size)

    return consistency_proof(old_size, old_size + len(new_leaves), node)
