"""The Merkle tree against a literal transcription of RFC 6962 §2.1 (MTH, PATH, PROOF) for n = 1..64."""

from __future__ import annotations

import hashlib

import pytest

from leviathan_dagster.core.events import merkle
from leviathan_dagster.core.events.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

MAX_N = 64
DATA = [f"leaf-{i}".encode() for i in range(MAX_N)]


# -- the reference: RFC 6962 §2.1 word for word, recursive and slow on purpose -----------------------


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = ref_k(n)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_k(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# -- cross-checks ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trees() -> dict[int, MerkleTree]:
    return {n: MerkleTree.from_leaves(DATA[:n]) for n in range(MAX_N + 1)}


def test_leaf_and_node_hashes_use_the_rfc_prefixes() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert MerkleTree([]).root() == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_root_matches_the_reference_for_every_size_and_prefix(trees) -> None:
    for n in range(MAX_N + 1):
        assert trees[n].root() == ref_mth(DATA[:n]), n
        assert trees[MAX_N].root(n) == ref_mth(DATA[:n]), n
    assert merkle.root([leaf_hash(x) for x in DATA[:13]]) == ref_mth(DATA[:13])


def test_inclusion_proofs_match_the_reference_and_verify(trees) -> None:
    for n in range(1, MAX_N + 1):
        root = ref_mth(DATA[:n])
        for i in range(n):
            proof = trees[n].inclusion_proof(i)
            assert proof == ref_path(i, DATA[:n]), (i, n)
            assert trees[MAX_N].inclusion_proof(i, n) == proof, (i, n)
            assert verify_inclusion(i, n, leaf_hash(DATA[i]), proof, root), (i, n)


def test_consistency_proofs_match_the_reference_and_verify(trees) -> None:
    for n in range(1, MAX_N + 1):
        root_n = ref_mth(DATA[:n])
        for m in range(1, n):
            proof = trees[n].consistency_proof(m)
            assert proof == ref_proof(m, DATA[:n]), (m, n)
            assert trees[MAX_N].consistency_proof(m, n) == proof, (m, n)
            assert verify_consistency(m, n, ref_mth(DATA[:m]), root_n, proof), (m, n)


def test_module_functions_agree_with_the_class() -> None:
    hashes = [leaf_hash(x) for x in DATA[:21]]
    tree = MerkleTree(hashes)
    assert merkle.inclusion_proof(5, hashes) == tree.inclusion_proof(5)
    assert merkle.consistency_proof(7, hashes) == tree.consistency_proof(7)
    assert tree.leaf(20) == hashes[20]


def test_wrong_inclusion_inputs_are_rejected(trees) -> None:
    n, i = 23, 9
    tree, root = trees[n], trees[n].root()
    proof = tree.inclusion_proof(i)
    good = leaf_hash(DATA[i])
    assert verify_inclusion(i, n, good, proof, root)
    assert not verify_inclusion(i, n, leaf_hash(b"other"), proof, root)
    assert not verify_inclusion(i + 1, n, good, proof, root)
    # The path binds the tree's shape, not its exact size (23 and 24 share this path's shape); the size
    # is authenticated by the signed checkpoint. A size of another depth fails.
    assert not verify_inclusion(i, 2 * n, good, proof, root)
    assert not verify_inclusion(i, n, good, proof[:-1], root)
    assert not verify_inclusion(i, n, good, [*proof, proof[0]], root)
    assert not verify_inclusion(i, n, good, proof, trees[n - 1].root())
    assert not verify_inclusion(n, n, good, proof, root)
    for j in range(len(proof)):
        flipped = [*proof]
        flipped[j] = bytes([flipped[j][0] ^ 1]) + flipped[j][1:]
        assert not verify_inclusion(i, n, good, flipped, root)


def test_wrong_consistency_inputs_are_rejected(trees) -> None:
    m, n = 6, 27
    root_m, root_n = trees[m].root(), trees[n].root()
    proof = trees[n].consistency_proof(m)
    assert verify_consistency(m, n, root_m, root_n, proof)
    assert not verify_consistency(m, n, trees[m + 1].root(), root_n, proof)
    assert not verify_consistency(m, n, root_m, trees[n - 1].root(), proof)
    assert not verify_consistency(m + 1, n, root_m, root_n, proof)
    assert not verify_consistency(m, 2 * n, root_m, root_n, proof)
    assert not verify_consistency(m, n, root_m, root_n, proof[:-1])
    assert not verify_consistency(m, n, root_m, root_n, [])
    assert not verify_consistency(n, m, root_n, root_m, proof)
    for j in range(len(proof)):
        flipped = [*proof]
        flipped[j] = bytes([flipped[j][0] ^ 1]) + flipped[j][1:]
        assert not verify_consistency(m, n, root_m, root_n, flipped)


def test_edge_sizes_for_consistency(trees) -> None:
    root = trees[9].root()
    assert trees[9].consistency_proof(9) == []
    assert verify_consistency(9, 9, root, root, [])
    assert not verify_consistency(9, 9, root, trees[8].root(), [])
    # RFC 9162 defines no proof from the empty tree, nor any proof over size 0: all refused.
    with pytest.raises(ValueError):
        trees[9].consistency_proof(0)
    assert not verify_consistency(0, 9, EMPTY_ROOT, root, [])
    assert not verify_consistency(0, 9, root, root, [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_inclusion(0, 0, leaf_hash(DATA[0]), [], EMPTY_ROOT)


def test_hashes_of_the_wrong_length_never_verify(trees) -> None:
    m, n, i = 6, 27, 9
    root_m, root_n = trees[m].root(), trees[n].root()
    proof = trees[n].consistency_proof(m)
    path = trees[n].inclusion_proof(i)
    leaf = leaf_hash(DATA[i])
    assert verify_consistency(m, n, root_m, root_n, proof) and verify_inclusion(i, n, leaf, path, root_n)
    for bad in (b"", root_n[:31], root_n + b"\x00", "not bytes"):
        assert not verify_consistency(m, n, bad, root_n, proof)
        assert not verify_consistency(m, n, root_m, bad, proof)
        assert not verify_consistency(m, n, root_m, root_n, [*proof[:-1], bad])
        assert not verify_inclusion(i, n, bad, path, root_n)
        assert not verify_inclusion(i, n, leaf, path, bad)
        assert not verify_inclusion(i, n, leaf, [bad, *path[1:]], root_n)
    # A single-leaf tree: the leaf hash is the root; the same bytes cut short must not pass.
    one = trees[1].root()
    assert verify_inclusion(0, 1, one, [], one) and not verify_inclusion(0, 1, one[:16], [], one[:16])


def test_out_of_range_requests_raise(trees) -> None:
    with pytest.raises(ValueError):
        trees[5].inclusion_proof(5)
    with pytest.raises(ValueError):
        trees[5].root(6)
    with pytest.raises(ValueError):
        trees[5].consistency_proof(6)
    with pytest.raises(ValueError):
        MerkleTree([b"short"])
