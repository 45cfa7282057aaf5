"""``planr keys generate``, and the verbs that sign refusing a missing or foreign key (no
broker needed: they stop before connecting). The oracle for the files is the file system and
the ``cryptography`` package reading the key file back."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner, Result

from cli import app
from planr.keyfiles import load_registry
from scenarios.keys import KeyRing


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; give the next tests theirs back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    clean = {k: None for k in os.environ if k.startswith("PLANR_")}
    return CliRunner().invoke(app, list(args), env={**clean, **(env or {})})


def printed(result: Result) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


def test_generate_writes_a_private_key_only_its_owner_reads_and_registers_its_public_key(
    tmp_path: Path,
):
    key_dir, registry = tmp_path / "k", tmp_path / "registry.yaml"
    result = run("keys", "generate", "--agency", "vsse", "--key-dir", str(key_dir),
                 "--registry", str(registry))
    assert result.exit_code == 0, result.output
    out = printed(result)
    path = Path(out["private key"])
    assert path == key_dir / f"{out['key id']}.pem"
    assert out["key id"].startswith("vsse-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    pem = path.read_bytes()
    assert b"PRIVATE KEY" not in result.output.encode()
    assert pem.decode() not in result.output
    private = serialization.load_pem_private_key(pem, password=None)
    raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    [entry] = load_registry(registry)
    assert (entry.id, entry.owner) == (out["key id"], "vsse")
    assert base64.b64decode(entry.public_key) == raw


def test_generate_for_a_service_with_id_and_validity_defaults_to_the_data_dir(tmp_path: Path):
    env = {"PLANR_DATA_DIR": str(tmp_path / "data")}
    result = run("keys", "generate", "--owner", "router", "--key-id", "router-2026",
                 "--valid-from", "2026-01-01", "--valid-until", "2027-01-01T00:00:00+01:00",
                 env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "keys" / "router-2026.pem").is_file()
    [entry] = load_registry(tmp_path / "data" / "keys" / "registry.yaml")
    assert entry.owner == "router"
    assert entry.valid_from == datetime(2026, 1, 1, tzinfo=UTC)  # no zone: UTC
    assert entry.valid_until == datetime(2026, 12, 31, 23, tzinfo=UTC)
    again = run("keys", "generate", "--owner", "router", "--key-id", "router-2026", env=env)
    assert again.exit_code == 2
    assert "router-2026 is already registered" in again.output


@pytest.mark.parametrize(("args", "message"), [
    ((), "exactly one of --agency and --owner"),
    (("--agency", "vsse", "--owner", "router"), "exactly one of --agency and --owner"),
    (("--owner", "vsse"), "--owner: 'vsse' is not one of router, projector"),
    (("--agency", "vsse", "--valid-from", "tomorrow"), "--valid-from: 'tomorrow' is not"),
    (("--agency", "vsse", "--key-id", "bad id"), "key_id: 'bad id' does not match"),
])
def test_generate_refuses_bad_usage_with_exit_2(tmp_path: Path, args: tuple[str, ...],
                                                message: str):
    result = run("keys", "generate", *args, env={"PLANR_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "keys").exists() or not list((tmp_path / "keys").glob("*.pem"))


def test_signing_verbs_refuse_a_missing_or_foreign_key_before_connecting(keys: KeyRing):
    env = {"PLANR_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "PLANR_KEY_REGISTRY": str(keys.registry_path)}
    unset = run("route", env=env)
    assert unset.exit_code == 2
    assert "PLANR_SIGNING_KEY is not set" in unset.output
    env["PLANR_SIGNING_KEY"] = str(keys.path("vsse"))
    for verb, owner in ((["route"], "router"), (["aggregate"], "aggregator"),
                        (["inboxes"], "inboxes"), (["ftf", "project"], "projector"),
                        (["publish", "--agency", "ocam", "-"], "ocam")):
        result = run(*verb, env=env)
        assert result.exit_code == 2, verb
        assert f"is registered for vsse, not {owner}" in result.output, verb
    missing = run("route", env={**env, "PLANR_KEY_REGISTRY": str(keys.key_dir / "none.yaml")})
    assert missing.exit_code == 2
    assert "PLANR_KEY_REGISTRY" in missing.output
