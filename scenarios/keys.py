"""Throw-away signing keys for the demo, the benchmarks and the tests.

One Ed25519 key per owner (every agency, and the bus's services: ``router``, ``projector``,
``inboxes``, ``aggregator``), generated into a fresh directory (mode 0700, private key files
0600) with its own registry, exactly as ``planr keys generate`` writes them. Nothing here is
meant for production keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from planr.domain import Agency
from planr.keyfiles import generate_key, save_registry
from planr.signing import SERVICE_OWNERS, KeyRegistry, Signer, sign_headers

#: A record value with the headers that sign it.
SignedValue = tuple[bytes, list[tuple[str, bytes]]]
REGISTRY_FILE = "registry.yaml"


def every_owner() -> list[str]:
    """Every agency id, then the services."""
    return [a.value for a in Agency] + list(SERVICE_OWNERS)


@dataclass(frozen=True)
class KeyRing:
    """Keys by owner: the registry of their public keys, a signer and a key file for each."""

    key_dir: Path
    registry_path: Path
    registry: KeyRegistry
    signers: Mapping[str, Signer]
    paths: Mapping[str, Path]

    def signer(self, owner: str | Agency) -> Signer:
        return self.signers[owner.value if isinstance(owner, Agency) else owner]

    def path(self, owner: str | Agency) -> Path:
        return self.paths[owner.value if isinstance(owner, Agency) else owner]


def throwaway_keys(key_dir: Path, owners: Iterable[str] | None = None) -> KeyRing:
    """Generate one key per owner (default: :func:`every_owner`) into ``key_dir`` (created,
    mode 0700), and their registry ``key_dir/registry.yaml``."""
    signers: dict[str, Signer] = {}
    paths: dict[str, Path] = {}
    entries = []
    for owner in owners if owners is not None else every_owner():
        path, entry = generate_key(owner, key_dir)
        entries.append(entry)
        paths[owner] = path
        signers[owner] = Signer.from_file(path, owner=owner)
    registry_path = key_dir / REGISTRY_FILE
    save_registry(registry_path, entries)
    return KeyRing(key_dir, registry_path, KeyRegistry(entries), signers, paths)


def signed(signer: Signer, topic: str, values: Iterable[bytes]) -> list[SignedValue]:
    """Each value with the headers ``signer`` would give it on ``topic``."""
    return [(v, sign_headers(signer, topic, v)) for v in values]
