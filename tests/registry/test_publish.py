"""Publication: numbered versions, chunked bytes that come back whole, and atomicity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from common.settings import RedisSettings
from model.errors import ArtifactError, RegistryError
from model.registry import Registry, sha256_hex, split_chunks
from model.settings import RegistrySettings
from schemas.manifest import ModelManifest
from tests.registry.support import make_manifest, poll_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_split_chunks_cover_the_bytes_in_order_without_exceeding_the_size() -> None:
    data = bytes(range(256)) * 10
    chunks = list(split_chunks(data, 1000))
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 560]
    assert b"".join(chunks) == data


@pytest.mark.parametrize("size", [1, 1023, 1024, 1025, 5000])
def test_published_bytes_come_back_whole_with_a_stamped_manifest(
    registry: Registry, manifest: ModelManifest, size: int
) -> None:
    data = os.urandom(size)
    version = registry.publish(data, manifest)
    stored = registry.manifest(version)
    assert registry.fetch(version) == data
    assert (stored.version, stored.artifact_sha256, stored.artifact_bytes) == (
        version,
        sha256_hex(data),
        size,
    )
    assert stored.labels == manifest.labels and stored.metrics == manifest.metrics


def test_versions_only_grow(registry: Registry, manifest: ModelManifest) -> None:
    versions = [registry.publish(os.urandom(100), manifest) for _ in range(4)]
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert registry.versions() == versions


def test_an_empty_artifact_is_refused(registry: Registry, manifest: ModelManifest) -> None:
    with pytest.raises(ArtifactError, match="empty"):
        registry.publish(b"", manifest)
    assert registry.versions() == []


def test_concurrent_publishers_in_threads_each_get_their_own_version(
    registry: Registry, manifest: ModelManifest
) -> None:
    blobs = [os.urandom(10_000 + i) for i in range(8)]
    versions: dict[int, int] = {}
    barrier = threading.Barrier(len(blobs))

    def publish(index: int) -> None:
        barrier.wait()
        versions[index] = registry.publish(blobs[index], manifest)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(blobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(set(versions.values())) == len(blobs)
    assert sorted(registry.versions()) == sorted(versions.values())
    for index, version in versions.items():
        assert registry.fetch(version) == blobs[index]


def child_env(redis_settings: RedisSettings, **registry: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    env |= {
        "TAGSTREAM_REDIS_URL": redis_settings.url,
        "TAGSTREAM_REDIS_NAMESPACE": redis_settings.namespace,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    env |= {f"TAGSTREAM_REGISTRY_{name.upper()}": value for name, value in registry.items()}
    return env


CHILD_PRELUDE = """
import os, sys
from common.settings import RedisSettings, load
from model.registry import Registry
from model.settings import RegistrySettings
from tests.registry.support import make_manifest
registry = Registry.from_settings(load(RedisSettings), load(RegistrySettings))
"""


def spawn(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + code],
        env=env,
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def test_concurrent_publishers_in_processes_each_get_their_own_version(
    registry: Registry, redis_settings: RedisSettings
) -> None:
    code = "print(registry.publish(os.urandom(50_000), make_manifest()))"
    env = child_env(redis_settings, chunk_bytes="4096", retention="100")
    children = [spawn(code, env) for _ in range(4)]
    outputs = [child.communicate(timeout=60)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0, 0, 0]
    versions = sorted(int(out.split()[-1]) for out in outputs)
    assert len(set(versions)) == 4
    assert registry.versions() == versions


def namespace_keys(client: redis.Redis, settings: RedisSettings) -> set[str]:
    return {key.decode() for key in client.scan_iter(f"{settings.namespace}:*")}


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL


def test_a_publisher_killed_between_chunks_leaves_no_version_and_its_staging_expires(
    registry: Registry, redis_settings: RedisSettings, redis_client: redis.Redis
) -> None:
    code = (
        "upload = registry.begin_upload()\n"
        "upload.write(b'a' * 2048)\nupload.write(b'b' * 2048)\n"
        "print(upload.version)\nsys.stdin.read()\n"
    )
    child = spawn(code, child_env(redis_settings, staging_ttl_s="2"))
    assert child.stdout is not None
    version = int(child.stdout.readline().split()[-1])
    kill(child)
    staging = registry.keys.staging(version)
    assert registry.versions() == []
    assert redis_client.hlen(staging) == 2
    assert 0 < redis_client.ttl(staging) <= 2
    assert poll_until(lambda: not redis_client.exists(staging), timeout_s=5)
    assert namespace_keys(redis_client, redis_settings) == {registry.keys.next_version}
    assert registry.publish(b"later", make_manifest()) > version


def test_publish_killed_mid_way_leaves_nothing_visible(
    registry: Registry, redis_settings: RedisSettings, redis_client: redis.Redis
) -> None:
    code = "registry.publish(os.urandom(8 * 1024 * 1024), make_manifest())\nprint('done')\n"
    child = spawn(code, child_env(redis_settings, chunk_bytes="1024", staging_ttl_s="2"))
    staged = lambda: any(  # noqa: E731
        redis_client.hlen(key) >= 3 for key in redis_client.scan_iter("*:staging:*")
    )
    assert poll_until(staged, timeout_s=30), "the child never started staging chunks"
    kill(child)
    assert registry.versions() == []
    assert registry.manifests() == []
    assert poll_until(
        lambda: namespace_keys(redis_client, redis_settings) == {registry.keys.next_version},
        timeout_s=5,
    )


def test_committing_an_expired_upload_is_refused_and_publishes_nothing(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    redis_client: redis.Redis,
    manifest: ModelManifest,
) -> None:
    settings = registry_settings.model_copy(update={"staging_ttl_s": 1})
    with Registry.from_settings(redis_settings, settings) as registry:
        upload = registry.begin_upload()
        upload.write(b"chunk")
        assert poll_until(
            lambda: not redis_client.exists(registry.keys.staging(upload.version)), timeout_s=5
        )
        with pytest.raises(RegistryError, match="expired"):
            upload.commit(manifest)
        assert registry.versions() == []
