"""How fast are Merkle roots and proofs over the event log, next to this machine's raw SHA-256 rate?

    python benchmarks/bench_merkle.py [--leaves N]

Builds the RFC 6962 tree over 1,000,000 leaves of 200 bytes (about one canonical event each), times
the root with and without hashing the leaves, inclusion and consistency proofs at full size, and
their verification. In the same run it measures SHA-256 over 64-byte and 200-byte inputs one call at
a time, the floor the tree cannot beat: it needs n leaf hashes and n - 1 node hashes of 65 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

# Run as a plain script from a checkout: make the package importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leviathan_dagster.core.events.merkle import (  # noqa: E402
    MerkleTree,
    verify_consistency,
    verify_inclusion,
)

LEAF_SIZE = 200
PROOF_SAMPLES = 2_000
REPEATS = 3


def sha256_seconds(count: int, size: int) -> float:
    """Seconds for ``count`` one-shot SHA-256 digests of ``size``-byte inputs."""
    data, sha = os.urandom(size), hashlib.sha256
    start = time.perf_counter()
    for _ in range(count):
        sha(data).digest()
    return time.perf_counter() - start


def timed(action):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def first(pair: tuple) -> float:
    return pair[0]


def per_call_ms(action, samples: list[int]) -> float:  # type: ignore[no-untyped-def]
    """Median milliseconds of ``action(i)`` over ``samples``."""
    times = []
    for i in samples:
        start = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    n = parser.parse_args().leaves
    blob = os.urandom(n + LEAF_SIZE)
    leaves = [blob[i : i + LEAF_SIZE] for i in range(n)]

    # Best of a few runs for everything bulk, ours and the raw limit alike: the first pass over fresh
    # memory is slower, and comparing our best against a cold raw figure would flatter the ratio.
    raw64 = min(sha256_seconds(n, 64) for _ in range(REPEATS))
    raw_leaf = min(sha256_seconds(n, LEAF_SIZE) for _ in range(REPEATS))
    full, tree = min((timed(lambda: MerkleTree.from_leaves(leaves)) for _ in range(REPEATS)), key=first)
    hashes = [tree.leaf(i) for i in range(n)]
    nodes_only, again = min((timed(lambda: MerkleTree(hashes)) for _ in range(REPEATS)), key=first)
    assert again.root() == tree.root()
    root = tree.root()

    step = max(1, n // PROOF_SAMPLES)
    indices = list(range(0, n, step))
    inclusion_ms = per_call_ms(tree.inclusion_proof, indices)
    proofs = {i: tree.inclusion_proof(i) for i in indices[:200]}
    verify_ms = per_call_ms(lambda i: verify_inclusion(i, n, hashes[i], proofs[i], root), list(proofs))
    sizes = [max(1, i) for i in indices[:200]]
    consistency_ms = per_call_ms(tree.consistency_proof, sizes)
    old_roots = {m: tree.root(m) for m in sizes}
    con_proofs = {m: tree.consistency_proof(m) for m in sizes}
    con_verify_ms = per_call_ms(lambda m: verify_consistency(m, n, old_roots[m], root, con_proofs[m]), sizes)
    prefix_root_ms = per_call_ms(tree.root, sizes)

    floor = raw_leaf + raw64  # n leaf hashes plus about n node hashes of (just over) 64 bytes
    longest = len(tree.inclusion_proof(0))
    print(
        f"Merkle tree over {n:,} leaves of {LEAF_SIZE} bytes (RFC 6962); best of {REPEATS} for bulk timings"
    )
    row(f"raw SHA-256 of 64 B x {n:,}", raw64, "s", f"{n / raw64:,.0f} hashes/s")
    row(f"raw SHA-256 of {LEAF_SIZE} B x {n:,}", raw_leaf, "s", f"{n / raw_leaf:,.0f} hashes/s")
    row(
        "root, leaves hashed too", full, "s", f"goal < 2 s; {full / floor:.2f}x the raw floor ({floor:.3f} s)"
    )
    row("root from leaf hashes", nodes_only, "s", f"{nodes_only / raw64:.2f}x {n:,} raw 64 B hashes")
    row(f"inclusion proof at {n:,}", inclusion_ms, "ms", f"goal < 5 ms; median, {longest} hashes at most")
    row("verify inclusion", verify_ms, "ms", "median")
    row(f"consistency proof to {n:,}", consistency_ms, "ms", "median")
    row("verify consistency", con_verify_ms, "ms", "median")
    row("root of an older prefix", prefix_root_ms, "ms", f"median; tree memory ~{2 * n * 32 >> 20} MiB")


def row(label: str, value: float, unit: str, note: str) -> None:
    print(f"  {label:<34} {value:>10.4f} {unit:<3} {note}")


if __name__ == "__main__":
    main()
