"""Fixtures for the registry tests: settings, a registry over the stack's Redis, a manifest,
and private redis-servers a test may stop, restart or configure (AUTH, TLS)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.settings import RedisSettings
from model.registry import Registry
from model.settings import RegistrySettings
from schemas.manifest import ModelManifest
from tests.registry.support import RedisServer, make_manifest


@pytest.fixture
def manifest() -> ModelManifest:
    return make_manifest(micro_f1=0.8, macro_f1=0.5)


@pytest.fixture
def registry_settings(tmp_path: Path) -> RegistrySettings:
    return RegistrySettings(
        chunk_bytes=1024,
        retention=50,
        staging_ttl_s=60,
        poll_interval_s=0.2,
        cache_dir=tmp_path / "model-cache",
    )


@pytest.fixture
def registry(
    redis_settings: RedisSettings, registry_settings: RegistrySettings
) -> Iterator[Registry]:
    with Registry.from_settings(redis_settings, registry_settings) as registry:
        yield registry


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``private_redis(*redis_server_args)`` starts a dedicated redis-server; all are
    stopped at the end of the test."""
    servers: list[RedisServer] = []

    def start(*extra: str, tls: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", *extra, tls=tls).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
