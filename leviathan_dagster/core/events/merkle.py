"""The RFC 6962 / RFC 9162 Merkle tree over the event log: roots, inclusion and consistency proofs.

Leaves are the events' canonical bytes. ``leaf_hash`` and ``node_hash`` use the RFC's domain
separation prefixes (0x00 for leaves, 0x01 for interior nodes), so a leaf can never be passed off as
an interior node. The empty tree's hash is SHA-256 of the empty string.

The RFC defines the tree top-down (split at the largest power of two below n). The same tree is
built bottom-up by pairing neighbours level by level and carrying an odd last node up unchanged,
so :class:`MerkleTree` hashes every level once (n - 1 node hashes) and keeps each level as one
contiguous ``bytes``: 32 bytes per node instead of a Python object per hash, and the pair to hash is
a single 64-byte slice. Every proof is then O(log n) lookups into those levels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 ‖ data): the hash of one leaf."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right): the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (size ≥ 2): where the RFC splits."""
    return 1 << ((size - 1).bit_length() - 1)


class MerkleTree:
    """An RFC 6962 tree over fixed leaf hashes, with every level kept for O(log n) proofs.

    Also answers for any prefix of its leaves (``root(size)``, ``inclusion_proof(i, size)``), which is
    what a consistency check against an older, smaller checkpoint needs.
    """

    def __init__(self, leaf_hashes: Iterable[bytes]) -> None:
        level = b"".join(leaf_hashes)
        if len(level) % HASH_SIZE:
            raise ValueError("every leaf hash must be 32 bytes")
        self.size = len(level) // HASH_SIZE
        self._levels = [level]
        prefix = b"\x01"
        while len(level) > HASH_SIZE:
            paired = len(level) // (2 * HASH_SIZE) * (2 * HASH_SIZE)
            # One list comprehension per level is the hot loop (about n node hashes in all); a 64-byte
            # slice of the level is exactly ``left ‖ right``, so no concatenation of two hashes.
            upper = b"".join([_sha256(prefix + level[j : j + 64]).digest() for j in range(0, paired, 64)])
            level = upper + level[paired:]  # an odd last node moves up unchanged (the RFC's right edge)
            self._levels.append(level)

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> MerkleTree:
        """A tree over raw leaf data (each item is hashed with :func:`leaf_hash`)."""
        return cls(_sha256(b"\x00" + data).digest() for data in leaves)

    def leaf(self, index: int) -> bytes:
        """The hash of leaf ``index``."""
        return self._node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        size = self._check_size(size)
        return self._range_hash(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 §2.1.1, ordered from the leaf up."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is outside a tree of size {size}")
        proof: list[bytes] = []
        start, end = 0, size
        # Walk down from the root; each step records the sibling subtree, so the result is reversed.
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self._range_hash(start + k, end))
                end = start + k
            else:
                proof.append(self._range_hash(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:size]) of RFC 6962 §2.1.2; empty when ``old_size`` is ``size``.

        ``old_size`` 0 is refused: RFC 9162 defines consistency proofs for 0 < m ≤ n only, and
        :func:`verify_consistency` rejects m = 0, so such a proof could never be checked.
        """
        size = self._check_size(size)
        if not 0 < old_size <= size:
            raise ValueError(f"old size {old_size} is outside 1..{size}")
        if old_size == size:
            return []
        proof: list[bytes] = []
        start, end, m, complete = 0, size, old_size, True
        # SUBPROOF(m, D[start:end], complete) unrolled; like PATH, it collects from the top down.
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._range_hash(start + k, end))
                end = start + k
            else:
                proof.append(self._range_hash(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            proof.append(self._range_hash(start, end))
        proof.reverse()
        return proof

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size

    def _node(self, level: int, index: int) -> bytes:
        offset = index * HASH_SIZE
        return self._levels[level][offset : offset + HASH_SIZE]

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a subtree of some prefix tree (``start`` aligned to its height).

        A stored node at height h covers ``[i·2^h, min((i+1)·2^h, self.size))``, so full subtrees and
        right edges of the whole tree are one lookup; a right edge of a smaller prefix is split.
        """
        height = (end - start - 1).bit_length()
        if end - start == 1 << height or end == self.size:
            return self._node(height, start >> height)
        k = _split(end - start)
        return node_hash(self._range_hash(start, start + k), self._range_hash(start + k, end))


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over ``leaf_hashes`` (already hashed with :func:`leaf_hash`)."""
    return MerkleTree(leaf_hashes).root()


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree over all of ``leaf_hashes``."""
    return MerkleTree(leaf_hashes).inclusion_proof(index)


def consistency_proof(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree over the first ``m`` leaves is a prefix of the tree over all."""
    return MerkleTree(leaf_hashes).consistency_proof(m)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show ``leaf`` at ``index`` in the tree of ``size`` with ``root``?

    Every hash must be 32 bytes: a shorter or longer value could otherwise be folded into a node hash
    and compared, and "does not verify" must never depend on how a malformed input happens to hash.
    """
    if not 0 <= index < size or not _all_hashes(leaf, root_hash, *proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:  # a right edge: skip the levels where the node moved up unpaired
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root_hash


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show the tree of size ``m`` is a prefix of the one of size ``n``?

    The RFC covers 0 < m < n; m == n holds with an empty proof and equal roots. m == 0 (and so n == 0)
    is not defined by RFC 9162 and is False, as is any hash that is not 32 bytes and any other shape
    of input: False, never an error.
    """
    if not 0 < m <= n or not _all_hashes(root_m, root_n, *proof):
        return False
    if m == n:
        return not proof and root_m == root_n
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: the old root is itself a node of the new tree
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == root_m and sr == root_n and sn == 0


def _all_hashes(*values: object) -> bool:
    return all(isinstance(value, bytes) and len(value) == HASH_SIZE for value in values)
