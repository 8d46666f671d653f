"""``tagstream models``: list, show, publish, promote, rollback and pull against the real
Redis, signed with a key or not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.settings import RedisSettings
from model.errors import ModelError, SignatureError
from model.registry import Registry, sha256_hex
from model.toy import toy_artifact
from schemas.manifest import ModelManifest
from tagstream.commands.models import app

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(redis_settings: RedisSettings, tmp_path: Path):
    """``cli(*args, signing_key=None)``: the command with this test's Redis (and key)."""
    runner = CliRunner()
    env = {
        "TAGSTREAM_REDIS_URL": redis_settings.url,
        "TAGSTREAM_REDIS_NAMESPACE": redis_settings.namespace,
        "TAGSTREAM_REGISTRY_CACHE_DIR": str(tmp_path / "cache"),
        "COLUMNS": "160",
    }

    def invoke(*args: str, signing_key: str | None = None):
        key = {"TAGSTREAM_REGISTRY_SIGNING_KEY": signing_key or ""}
        return runner.invoke(app, list(args), env=env | key)

    return invoke


def test_list_shows_versions_aliases_sizes_and_metrics(
    cli, registry: Registry, manifest: ModelManifest
) -> None:
    first = registry.publish(b"a" * 2048, manifest)
    second = registry.publish(b"b" * 10, manifest)
    registry.promote(first)
    registry.promote(second, "canary")
    result = cli("list")
    assert result.exit_code == 0, result.output
    assert "2 model version(s)" in result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "│" in line}
    assert "production" in lines[str(first)] and "2.0 KiB" in lines[str(first)]
    assert "canary" in lines[str(second)] and "micro_f1=0.800" in lines[str(second)]


def test_promote_then_rollback_moves_the_alias_back(
    cli, registry: Registry, manifest: ModelManifest
) -> None:
    old, new = (registry.publish(bytes([i]) * 100, manifest) for i in range(2))
    assert cli("promote", str(old)).exit_code == 0
    result = cli("promote", str(new), "--alias", "production")
    assert f"production -> version {new} (was version {old})" in result.output
    result = cli("rollback")
    assert f"production -> version {old} (was version {new})" in result.output
    assert registry.resolve("production") == old


def test_pull_writes_the_checked_artifact_and_its_manifest(
    cli, registry: Registry, manifest: ModelManifest, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 20
    version = registry.publish(data, manifest)
    result = cli("pull", str(version), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / f"model-v{version}.artifact").read_bytes() == data
    pulled = json.loads((tmp_path / "out" / f"model-v{version}.manifest.json").read_text())
    assert pulled["artifact_sha256"] == sha256_hex(data)


def test_show_prints_the_manifest_and_an_unknown_version_is_an_error(
    cli, registry: Registry, manifest: ModelManifest
) -> None:
    version = registry.publish(b"model", manifest)
    shown = cli("show", str(version))
    assert json.loads(shown.output.rsplit("aliases:", 1)[0])["version"] == version
    missing = cli("show", str(version + 1))
    assert missing.exit_code != 0
    assert isinstance(missing.exception, ModelError)


def test_publish_a_file_checks_it_whole_then_stores_and_promotes_it(
    cli, registry: Registry, tmp_path: Path
) -> None:
    artifact = toy_artifact(("earn", "acq"))
    path = tmp_path / "offline.safetensors"
    path.write_bytes(artifact.to_bytes())
    result = cli("publish", str(path), "--promote", "canary")
    assert result.exit_code == 0, result.output
    (version,) = registry.versions()
    assert f"published offline.safetensors as version {version}" in result.output
    assert f"canary -> version {version} (was unset)" in result.output
    assert registry.fetch(version) == path.read_bytes()
    assert registry.manifest(version).artifact_sha256 == sha256_hex(path.read_bytes())
    assert registry.aliases() == {"canary": version}

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    refused = cli("publish", str(truncated))
    assert isinstance(refused.exception, ModelError), refused.output
    wrong = cli("publish", str(path), "--sha256", "0" * 64)
    assert "is not the expected" in str(wrong.exception)
    assert registry.versions() == [version]  # nothing stored for either


def test_publish_with_a_signing_key_signs_and_a_pull_with_another_key_is_refused(
    cli, registry: Registry, tmp_path: Path
) -> None:
    key, other = "publisher-" + "k" * 40, "other-" + "k" * 40
    path = tmp_path / "offline.safetensors"
    path.write_bytes(toy_artifact(("earn", "acq")).to_bytes())
    result = cli("publish", str(path), signing_key=key)
    assert result.exit_code == 0, result.output
    (version,) = registry.versions()
    assert registry.manifest(version).signature is not None
    assert cli("pull", str(version), "-o", str(tmp_path / "a"), signing_key=key).exit_code == 0
    refused = cli("pull", str(version), "-o", str(tmp_path / "b"), signing_key=other)
    assert isinstance(refused.exception, SignatureError), refused.output
    assert not (tmp_path / "b").exists()
