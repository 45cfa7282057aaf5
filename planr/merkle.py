"""The hash tree behind chunk signatures (:mod:`planr.signing`): SHA-256, domain-separated.

A leaf is ``H(0x00 || message)``, an inner node ``H(0x01 || left || right)``. Leaves and inner
nodes never share a preimage shape, so a leaf cannot pass for a node nor a node for a leaf.

The tree is built level by level, pairing nodes left to right. A level with an odd number of
nodes carries its last node up unchanged: it is neither duplicated nor hashed alone, so the
tree of ``n`` leaves has exactly one shape, and a leaf carried up has no proof step for that
level.

A proof (the ``planr-proof`` header) is the audit path from the leaf to the root, one 33-byte
step per level, leaf level first: a direction byte, ``L`` (0x4C: the sibling is the left
child, the node is ``H(0x01 || sibling || current)``) or ``R`` (0x52: the sibling is the
right child, ``H(0x01 || current || sibling)``), then the sibling's 32-byte hash. An empty
proof is a tree of one leaf (the root is the leaf). Anything else - a length that is not a
multiple of 33, more than :data:`MAX_STEPS` steps, another direction byte - is malformed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from planr.errors import UsageError

HASH_BYTES: Final = 32
STEP_BYTES: Final = 1 + HASH_BYTES
LEFT: Final = 0x4C  # "L": the sibling is the left child
RIGHT: Final = 0x52  # "R": the sibling is the right child
#: The deepest proof accepted: a tree of at most 2**16 leaves.
MAX_STEPS: Final = 16
MAX_LEAVES: Final = 1 << MAX_STEPS

_LEAF: Final = b"\x00"
_NODE: Final = b"\x01"
_L: Final = bytes([LEFT])
_R: Final = bytes([RIGHT])


def leaf_hash(message: bytes) -> bytes:
    """The leaf of ``message``: ``SHA-256(0x00 || message)``."""
    return hashlib.sha256(_LEAF + message).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An inner node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE + left + right).digest()


def build(leaves: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root of ``leaves`` (leaf hashes, in order) and each leaf's encoded proof."""
    if not leaves or len(leaves) > MAX_LEAVES:
        raise UsageError(f"a hash tree has 1 to {MAX_LEAVES} leaves, not {len(leaves)}")
    proofs = [bytearray() for _ in leaves]
    level = list(leaves)
    under: list[list[int]] = [[i] for i in range(len(leaves))]  # the leaves below each node
    while len(level) > 1:
        up: list[bytes] = []
        up_under: list[list[int]] = []
        for i in range(0, len(level) - 1, 2):
            left, right = level[i], level[i + 1]
            for leaf in under[i]:
                proofs[leaf] += _R + right
            for leaf in under[i + 1]:
                proofs[leaf] += _L + left
            up.append(node_hash(left, right))
            up_under.append(under[i] + under[i + 1])
        if len(level) % 2:  # the odd node out is carried up unchanged
            up.append(level[-1])
            up_under.append(under[-1])
        level, under = up, up_under
    return level[0], [bytes(p) for p in proofs]


def root_of(leaf: bytes, proof: bytes) -> bytes | None:
    """The root that ``proof`` leads to from ``leaf``; ``None`` if the proof is malformed."""
    size = len(proof)
    if size % STEP_BYTES or size > MAX_STEPS * STEP_BYTES:
        return None
    node = leaf
    for at in range(0, size, STEP_BYTES):
        direction = proof[at]
        sibling = proof[at + 1 : at + STEP_BYTES]
        if direction == LEFT:
            node = hashlib.sha256(_NODE + sibling + node).digest()
        elif direction == RIGHT:
            node = hashlib.sha256(_NODE + node + sibling).digest()
        else:
            return None
    return node
