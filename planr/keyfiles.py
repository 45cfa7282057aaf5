"""Key files of the signing layer: Ed25519 private key files and the public key registry.

Private keys live in PEM (PKCS#8, unencrypted) files readable by their owner only; a file
that the group or others can read is refused. The registry is a YAML file of public keys,
several per owner, each valid from ``valid_from`` (inclusive) to ``valid_until``
(exclusive, optional), so keys can be rotated with an overlap::

    keys:
      - id: vsse-2026-01
        owner: vsse
        public_key: <base64 of the raw 32-byte Ed25519 public key>
        valid_from: '2026-01-01T00:00:00Z'
        valid_until: '2027-01-01T00:00:00Z'

Error messages name files, entry indexes, fields and key ids, never key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from planr.errors import UsageError

KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
OWNER_PATTERN = r"^[a-z0-9][a-z0-9._:-]{0,63}$"
PUBLIC_KEY_BYTES = 32
PRIVATE_MODE = 0o600
KEY_DIR_MODE = 0o700
REGISTRY_MODE = 0o644
_REGISTRY_HEADER = (
    "# planr-bus public key registry: Ed25519 public keys (base64 of the raw 32 bytes).\n"
    "# valid_from is inclusive, valid_until exclusive; omit valid_until for no end date.\n"
)


def valid_key_id(key_id: str) -> bool:
    return re.fullmatch(KEY_ID_PATTERN, key_id) is not None


def valid_owner(owner: str) -> bool:
    return re.fullmatch(OWNER_PATTERN, owner) is not None


class KeyEntry(BaseModel):
    """One public key of the registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=KEY_ID_PATTERN)
    owner: str = Field(pattern=OWNER_PATTERN)
    public_key: str
    valid_from: AwareDatetime
    valid_until: AwareDatetime | None = None

    @field_validator("public_key")
    @classmethod
    def _raw_32_bytes(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ValueError(f"must decode to {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
        return value

    @field_validator("valid_until")
    @classmethod
    def _after_valid_from(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("valid_from")
        if value is not None and start is not None and value <= start:
            raise ValueError("must be later than valid_from")
        return value

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return base64.b64decode(self.public_key, validate=True)

    def valid_at(self, at: datetime) -> bool:
        """Whether the key may be used at ``at`` (timezone-aware)."""
        if at.tzinfo is None:
            raise UsageError("key validity needs a timezone-aware time")
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry] = Field(default_factory=list)


def _place(loc: tuple[int | str, ...], data: Any) -> str:
    """``keys[2] (id vsse-2026-01).public_key`` from a pydantic error location."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            entry_id = _entry_id(data, part)
            if entry_id is not None:
                out += f" (id {entry_id})"
        else:
            out += f".{part}" if out else part
    return out or "(top)"


def _entry_id(data: Any, index: int) -> str | None:
    keys = data.get("keys") if isinstance(data, dict) else None
    if isinstance(keys, list) and 0 <= index < len(keys) and isinstance(keys[index], dict):
        entry_id = keys[index].get("id")
        if isinstance(entry_id, str) and valid_key_id(entry_id):
            return entry_id
    return None


def parse_registry(text: str, source: str = "<registry>") -> list[KeyEntry]:
    """The entries of a registry document; errors name the source, entry index and field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        raise UsageError(f"{source}: {where}: not valid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{source}: the registry must be a mapping with a 'keys' list")
    try:
        doc = _RegistryFile.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{source}: {_place(tuple(err['loc']), data)}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise UsageError("\n".join(problems)) from None
    first: dict[str, int] = {}
    for index, entry in enumerate(doc.keys):
        if entry.id in first:
            raise UsageError(
                f"{source}: keys[{index}].id: duplicate key id {entry.id} "
                f"(also keys[{first[entry.id]}])"
            )
        first[entry.id] = index
    return doc.keys


def load_registry(path: Path) -> list[KeyEntry]:
    """Read and validate a registry file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read key registry ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: key registry is not UTF-8 text") from None
    return parse_registry(text, str(path))


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dump_registry(entries: list[KeyEntry]) -> str:
    """The YAML text of a registry (readable: one mapping per key, times in UTC)."""
    keys = []
    for entry in entries:
        item: dict[str, str] = {
            "id": entry.id,
            "owner": entry.owner,
            "public_key": entry.public_key,
            "valid_from": _timestamp(entry.valid_from),
        }
        if entry.valid_until is not None:
            item["valid_until"] = _timestamp(entry.valid_until)
        keys.append(item)
    return _REGISTRY_HEADER + yaml.safe_dump({"keys": keys}, sort_keys=False)


def save_registry(path: Path, entries: list[KeyEntry]) -> None:
    """Write a registry atomically (mode 0644: it holds public keys only)."""
    text = dump_registry(entries)
    parse_registry(text, str(path))  # refuse to write what could not be read back
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).chmod(REGISTRY_MODE)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def add_to_registry(registry_path: Path, entry: KeyEntry) -> None:
    """Add ``entry`` to the registry file, creating the file if needed; refuse duplicate ids."""
    entries = load_registry(registry_path) if registry_path.exists() else []
    if any(existing.id == entry.id for existing in entries):
        raise UsageError(f"{registry_path}: key id {entry.id} is already registered")
    save_registry(registry_path, [*entries, entry])


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PEM PKCS#8) from a file only its owner can read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise UsageError(f"{path}: cannot open private key ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: private key is not a regular file")
        if info.st_mode & 0o077:
            raise UsageError(
                f"{path}: private key is readable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 on it"
            )
        pem = handle.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"{path}: not an unencrypted PEM PKCS#8 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path}: private key is not an Ed25519 key")
    return key


def _prepare_key_dir(key_dir: Path) -> None:
    if key_dir.exists():
        if not key_dir.is_dir():
            raise UsageError(f"{key_dir}: key directory is not a directory")
        mode = stat.S_IMODE(key_dir.stat().st_mode)
        if mode & 0o077:
            raise UsageError(
                f"{key_dir}: key directory is open to group or others (mode {mode:04o}); "
                "run chmod 700 on it"
            )
        return
    key_dir.mkdir(mode=KEY_DIR_MODE, parents=True)
    key_dir.chmod(KEY_DIR_MODE)  # mkdir's mode is masked by the umask


def _write_private(path: Path, pem: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        raise UsageError(f"{path}: a private key file already exists; not overwritten") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), PRIVATE_MODE)
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())


def generate_key(
    owner: str,
    key_dir: Path,
    *,
    key_id: str | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> tuple[Path, KeyEntry]:
    """Create a key pair: ``<key_dir>/<key_id>.pem`` (mode 0600, directory 0700) and its entry.

    ``key_id`` defaults to ``<owner>-<YYYYMMDD of valid_from>-<6 random hex>``; ``valid_from``
    defaults to now (UTC, whole seconds). The entry is not registered: see
    :func:`add_to_registry` and :func:`generate_registered_key`.
    """
    if not valid_owner(owner):
        raise UsageError(f"owner: {owner!r} does not match {OWNER_PATTERN}")
    start = valid_from or datetime.now(UTC).replace(microsecond=0)
    if start.tzinfo is None or (valid_until is not None and valid_until.tzinfo is None):
        raise UsageError("valid_from and valid_until must be timezone-aware")
    key_id = key_id or f"{owner}-{start.astimezone(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    if not valid_key_id(key_id):
        raise UsageError(f"key_id: {key_id!r} does not match {KEY_ID_PATTERN}")
    private = Ed25519PrivateKey.generate()
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    try:
        entry = KeyEntry(
            id=key_id,
            owner=owner,
            public_key=base64.b64encode(raw_public).decode("ascii"),
            valid_from=start,
            valid_until=valid_until,
        )
    except ValidationError as exc:
        raise UsageError("; ".join(
            f"{'.'.join(map(str, e['loc']))}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False, include_input=False)
        )) from None
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _prepare_key_dir(key_dir)
    path = key_dir / f"{key_id}.pem"
    _write_private(path, pem)
    return path, entry


def generate_registered_key(
    owner: str,
    key_dir: Path,
    registry_path: Path,
    *,
    key_id: str | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> tuple[Path, KeyEntry]:
    """:func:`generate_key` then :func:`add_to_registry`, checking the id is free first."""
    taken = load_registry(registry_path) if registry_path.exists() else []
    if key_id is not None and any(e.id == key_id for e in taken):
        raise UsageError(f"{registry_path}: key id {key_id} is already registered")
    path, entry = generate_key(
        owner, key_dir, key_id=key_id, valid_from=valid_from, valid_until=valid_until
    )
    try:
        add_to_registry(registry_path, entry)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, entry
