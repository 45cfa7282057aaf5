"""The hash tree behind chunk signatures (:mod:`planr.signing`): SHA-256, domain-separated.

A leaf is ``H(0x00 || salt || message)``, with a fresh random 16-byte ``salt`` per record; an
inner node is ``H(0x01 || left || right)``. Leaves and inner nodes never share a preimage
shape, so a leaf cannot pass for a node nor a node for a leaf.

The salt is for need-to-know: a record's proof carries the hashes of other records of its
chunk, which may go to other recipients. Unsalted, a reader could confirm a guess of such a
record (a recipient enumerating the few values a field it does not see can take) by hashing
the guess. Salted, a sibling hash says nothing without the sibling's salt, which travels only
with the sibling record.

The tree is built level by level, pairing nodes left to right. A level with an odd number of
nodes carries its last node up unchanged: it is neither duplicated nor hashed alone, so the
tree of ``n`` leaves has exactly one shape, and a leaf carried up has no proof step for that
level.

A proof (the ``planr-proof`` header) is the record's 16-byte salt, then the audit path from
the leaf to the root, one 33-byte step per level, leaf level first: a direction byte, ``L``
(0x4C: the sibling is the left child, the node is ``H(0x01 || sibling || current)``) or
``R`` (0x52: the sibling is the right child, ``H(0x01 || current || sibling)``), then the
sibling's 32-byte hash. A proof of
the salt alone is a tree of one leaf (the root is the leaf). Anything else - shorter than the
salt, steps whose length is not a multiple of 33, more than :data:`MAX_STEPS` steps, another
direction byte - is malformed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Final

from planr.errors import UsageError

HASH_BYTES: Final = 32
SALT_BYTES: Final = 16
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


def new_salt() -> bytes:
    """A fresh random salt for one leaf."""
    return os.urandom(SALT_BYTES)


def new_salts(n: int) -> list[bytes]:
    """``n`` fresh random salts, drawn from the system's CSPRNG in one call."""
    pool = os.urandom(SALT_BYTES * n)
    return [pool[i : i + SALT_BYTES] for i in range(0, SALT_BYTES * n, SALT_BYTES)]


def leaf_hash(salt: bytes, message: bytes) -> bytes:
    """The leaf of ``message``: ``SHA-256(0x00 || salt || message)``."""
    if len(salt) != SALT_BYTES:
        raise UsageError(f"a leaf's salt is {SALT_BYTES} bytes, not {len(salt)}")
    return hashlib.sha256(_LEAF + salt + message).digest()


def leaf_hash_parts(salt: bytes, head: bytes, tail: bytes) -> bytes:
    """:func:`leaf_hash` of the message ``head + tail``, without building the message (a
    chunk's messages share their head: the domain, topic and key id)."""
    if len(salt) != SALT_BYTES:
        raise UsageError(f"a leaf's salt is {SALT_BYTES} bytes, not {len(salt)}")
    return hashlib.sha256(b"".join((_LEAF, salt, head, tail))).digest()


def split_proof(proof: bytes) -> tuple[bytes, bytes] | None:
    """A ``planr-proof`` header's salt and audit path; ``None`` if shorter than the salt."""
    if len(proof) < SALT_BYTES:
        return None
    return proof[:SALT_BYTES], proof[SALT_BYTES:]


def node_hash(left: bytes, right: bytes) -> bytes:
    """An inner node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE + left + right).digest()


def build(leaves: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root of ``leaves`` (leaf hashes, in order) and each leaf's encoded audit path
    (without the salt)."""
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
    """The root that the audit path ``proof`` (without the salt) leads to from ``leaf``;
    ``None`` if the path is malformed."""
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
