"""Key files and the key registry: generation, modes, validation (pure logic, no broker).

The oracle for signatures is the ``cryptography`` package used directly on the message
layout written out in full here, not the module's own message builder.
"""

from __future__ import annotations

import base64
import stat
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)

from planr.errors import UsageError
from planr.keyfiles import (
    add_to_registry,
    generate_key,
    generate_registered_key,
    load_registry,
    parse_registry,
    read_private_key,
    save_registry,
)
from planr.signing import (
    KeyRegistry,
    Signer,
    sign_headers,
    verify_record,
)
from tests.signing_helpers import NOW, T0, T1, TOPIC, VALUE, entry


@pytest.fixture
def keys():
    return {"vsse": Ed25519PrivateKey.generate(), "router": Ed25519PrivateKey.generate()}


# --- key files ---------------------------------------------------------------------------


def test_generated_key_files_have_private_modes_and_sign_verifiably(tmp_path):
    key_dir = tmp_path / "keys"
    path, entry = generate_key("vsse", key_dir, key_id="vsse-2026-01",
                               valid_from=T0, valid_until=T1)
    assert path == key_dir / "vsse-2026-01.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert (entry.id, entry.owner, entry.valid_from, entry.valid_until) == (
        "vsse-2026-01", "vsse", T0, T1)
    signer = Signer.from_file(path, owner="vsse")
    assert signer.key_id == "vsse-2026-01"
    headers = sign_headers(signer, TOPIC, VALUE)
    assert verify_record(KeyRegistry([entry]), TOPIC, VALUE, headers, at=NOW,
                         expected_owner="vsse") == "vsse"


def test_generated_key_directory_is_0700_whatever_the_umask(tmp_path):
    import os  # noqa: PLC0415 - only this test changes the umask

    old = os.umask(0o277)  # even without owner write, the modes come out exact
    try:
        path, _ = generate_key("router", tmp_path / "k", valid_from=T0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generate_key_defaults_to_a_fresh_key_id_and_never_overwrites(tmp_path):
    p1, e1 = generate_key("vsse", tmp_path / "k", valid_from=T0)
    _, e2 = generate_key("vsse", tmp_path / "k", valid_from=T0)
    assert e1.id != e2.id
    assert e1.id.startswith("vsse-20260101-")
    assert e1.valid_until is None
    before = p1.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        generate_key("vsse", tmp_path / "k", key_id=e1.id, valid_from=T0)
    assert p1.read_bytes() == before


def test_generate_key_refuses_an_end_before_the_start_and_writes_nothing(tmp_path):
    with pytest.raises(UsageError, match="valid_until: must be later than valid_from"):
        generate_key("vsse", tmp_path / "k", valid_from=T1, valid_until=T0)
    assert not (tmp_path / "k").exists()


def test_generate_key_refuses_an_existing_open_directory(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    with pytest.raises(UsageError, match=str(open_dir)):
        generate_key("vsse", open_dir, valid_from=T0)
    assert list(open_dir.iterdir()) == []


def test_group_readable_private_key_file_is_refused_naming_the_path(tmp_path):
    path, _ = generate_key("vsse", tmp_path / "k", key_id="vsse-1", valid_from=T0)
    path.chmod(0o644)
    with pytest.raises(UsageError) as exc_info:
        Signer.from_file(path, owner="vsse")
    assert str(path) in str(exc_info.value)
    assert "0644" in str(exc_info.value)
    path.chmod(0o640)
    with pytest.raises(UsageError, match="group or others"):
        read_private_key(path)


def test_private_key_file_that_is_not_ed25519_pem_is_refused(tmp_path):
    path = tmp_path / "bad.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(UsageError, match=r"bad\.pem"):
        read_private_key(path)
    with pytest.raises(UsageError, match="cannot open"):
        read_private_key(tmp_path / "missing.pem")


def test_registry_round_trips_through_its_file(tmp_path, keys):
    entries = [entry("vsse-2026-01", "vsse", keys["vsse"]),
               entry("router-a", "router", keys["router"], valid_from=T0 + timedelta(hours=1))]
    path = tmp_path / "registry.yaml"
    save_registry(path, entries)
    assert load_registry(path) == entries
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    text = path.read_text()
    assert "2026-01-01T00:00:00Z" in text
    assert "2026-01-01T01:00:00Z" in text


def test_add_to_registry_creates_appends_and_refuses_duplicate_ids(tmp_path, keys):
    path = tmp_path / "sub" / "registry.yaml"
    first = entry("vsse-2026-01", "vsse", keys["vsse"])
    add_to_registry(path, first)
    second = entry("router-2026-01", "router", keys["router"])
    add_to_registry(path, second)
    assert [e.id for e in load_registry(path)] == ["vsse-2026-01", "router-2026-01"]
    with pytest.raises(UsageError, match="vsse-2026-01"):
        add_to_registry(path, entry("vsse-2026-01", "vsse", keys["router"]))
    assert load_registry(path) == [first, second]


def test_generate_registered_key_leaves_no_private_file_for_a_taken_id(tmp_path, keys):
    registry = tmp_path / "registry.yaml"
    add_to_registry(registry, entry("vsse-2026-01", "vsse", keys["vsse"]))
    with pytest.raises(UsageError, match="already registered"):
        generate_registered_key("vsse", tmp_path / "k", registry, key_id="vsse-2026-01")
    assert not (tmp_path / "k" / "vsse-2026-01.pem").exists()
    path, made = generate_registered_key("vsse", tmp_path / "k", registry, valid_from=T0)
    assert path.exists()
    assert KeyRegistry.load(registry).get(made.id) == made


GOOD_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    ("entry_text", "expected"),
    [
        (f"  - id: a\n    owner: vsse\n    public_key: {GOOD_KEY}\n"
         "    valid_from: 2026-01-01T00:00:00\n", "keys[1] (id a).valid_from: Input should have"),
        ("  - id: a\n    owner: vsse\n    public_key: '!!notbase64'\n"
         "    valid_from: 2026-01-01T00:00:00Z\n", "keys[1] (id a).public_key: not valid base64"),
        (f"  - id: a\n    owner: vsse\n    public_key: {GOOD_KEY[:-4]}\n"
         "    valid_from: 2026-01-01T00:00:00Z\n", "keys[1] (id a).public_key: must decode to 32"),
        (f"  - id: a\n    owner: vsse\n    public_key: {GOOD_KEY}\n"
         "    valid_from: 2026-01-01T00:00:00Z\n    valid_until: 2025-01-01T00:00:00Z\n",
         "keys[1] (id a).valid_until: must be later than valid_from"),
        (f"  - id: a\n    owner: vsse\n    public_key: {GOOD_KEY}\n"
         "    valid_from: 2026-01-01T00:00:00Z\n    comment: x\n", "keys[1] (id a).comment"),
        (f"  - id: k1\n    owner: vsse\n    public_key: {GOOD_KEY}\n"
         "    valid_from: 2026-01-01T00:00:00Z\n",
         "keys[1].id: duplicate key id k1 (also keys[0])"),
        (f"  - owner: vsse\n    public_key: {GOOD_KEY}\n    valid_from: 2026-01-01T00:00:00Z\n",
         "keys[1].id"),
    ],
    ids=["naive-time", "bad-base64", "short-key", "until-before-from", "extra-field",
         "duplicate-id", "missing-id"],
)
def test_registry_errors_name_the_entry_and_field(entry_text, expected):
    text = ("keys:\n  - id: k1\n    owner: vsse\n"
            f"    public_key: {GOOD_KEY}\n    valid_from: 2026-01-01T00:00:00Z\n" + entry_text)
    with pytest.raises(UsageError) as exc_info:
        parse_registry(text, "reg.yaml")
    assert f"reg.yaml: {expected}" in str(exc_info.value)


def test_registry_top_level_errors_name_the_file(tmp_path):
    with pytest.raises(UsageError, match=r"reg.yaml: extra"):
        parse_registry("keys: []\nextra: 1\n", "reg.yaml")
    with pytest.raises(UsageError, match=r"reg.yaml: line \d+: not valid YAML"):
        parse_registry("keys:\n  - [\n", "reg.yaml")
    with pytest.raises(UsageError, match="cannot read key registry"):
        load_registry(tmp_path / "absent.yaml")


