"""``planr keys generate``: a new Ed25519 signing key for an agency or a service of the bus,
registered in the public key registry. The private key never leaves its file: the command
prints its path and key id only."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cli.context import fail, get
from planr.domain import Agency
from planr.errors import UsageError
from planr.keyfiles import generate_registered_key
from planr.parties import JIB_OWNER, is_party, is_tfl
from planr.signing import SERVICE_OWNERS, KeyRegistry, Signer
from scenarios.keys import KeyRing

keys_app = typer.Typer(help="Signing keys of the bus.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time; without a zone, UTC. UsageError names the option."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option}: {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def key_owner(agency: Agency | None, owner: str | None) -> str:
    if (agency is None) == (owner is None):
        raise UsageError("give exactly one of --agency and --owner")
    if agency is not None:
        return agency.value
    if owner in (*SERVICE_OWNERS, JIB_OWNER) or (owner is not None and is_tfl(owner)
                                                   and is_party(owner)):
        return owner
    raise UsageError(f"--owner: {owner!r} is not one of {', '.join(SERVICE_OWNERS)}, "
                     f"{JIB_OWNER} (the JIB's consensus process) or tfl:<arrondissement>")


@keys_app.command("generate")
def generate(  # noqa: PLR0917 - Typer maps parameters to options
    ctx: typer.Context,
    agency: Annotated[Agency | None, typer.Option(help="A key for this agency.")] = None,
    owner: Annotated[str | None, typer.Option(
        help="A key for this service: router, projector, inboxes, aggregator, jib; or for a "
             "local taskforce: tfl:<arrondissement> (JIB proposals).")] = None,
    key_id: Annotated[str | None, typer.Option(
        help="Key id (default: <owner>-<YYYYMMDD>-<random>).")] = None,
    valid_from: Annotated[str | None, typer.Option(
        help="ISO 8601, inclusive (default: now; no zone means UTC).")] = None,
    valid_until: Annotated[str | None, typer.Option(
        help="ISO 8601, exclusive (default: no end).")] = None,
    key_dir: Annotated[Path | None, typer.Option(
        help="Directory of the private key file (default: PLANR_DATA_DIR/keys).")] = None,
    registry: Annotated[Path | None, typer.Option(
        help="Registry to add the public key to (default: PLANR_KEY_REGISTRY).")] = None,
) -> None:
    """Create a key pair: the private key file (mode 0600, directory 0700) and its registry
    entry. Prints the file's path and the key id, never the key."""
    c = get(ctx)
    try:
        who = key_owner(agency, owner)
        path, entry = generate_registered_key(
            who, key_dir or c.settings.data_dir / "keys", registry or c.key_registry_path,
            key_id=key_id, valid_from=parse_time(valid_from, "--valid-from"),
            valid_until=parse_time(valid_until, "--valid-until"),
        )
    except UsageError as exc:
        fail(str(exc), code=2)
    typer.echo(f"private key: {path}")
    typer.echo(f"key id: {entry.id}")
    typer.echo(f"owner: {entry.owner}")
    typer.echo(f"registry: {registry or c.key_registry_path}")


def keys_in_dir(registry_path: Path, key_dir: Path, owners: Iterable[str]) -> KeyRing:
    """For each owner, the registered key valid now with the latest ``valid_from`` whose
    private key file ``<key id>.pem`` is in ``key_dir``. UsageError names a missing owner."""
    registry = KeyRegistry.load(registry_path)
    now = datetime.now(UTC)
    signers: dict[str, Signer] = {}
    paths: dict[str, Path] = {}
    for who in owners:
        usable = [e for e in registry.entries
                  if e.owner == who and e.valid_at(now) and (key_dir / f"{e.id}.pem").is_file()]
        if not usable:
            raise UsageError(f"no valid key of {who} in {key_dir} is registered in "
                             f"{registry_path}; run 'planr keys generate' for it")
        entry = max(usable, key=lambda e: e.valid_from)
        paths[who] = key_dir / f"{entry.id}.pem"
        signers[who] = Signer.from_file(paths[who], owner=who, key_id=entry.id)
        registry.check_signer(signers[who], at=now)
    return KeyRing(key_dir, registry_path, registry, signers, paths)
