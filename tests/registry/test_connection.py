"""Redis AUTH and TLS reach the registry through settings alone."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from common.settings import RedisSettings
from model.errors import RegistryError
from model.registry import Registry
from model.settings import RegistrySettings
from schemas.manifest import ModelManifest
from tests.registry.support import RedisServer

pytestmark = pytest.mark.integration


def round_trip(
    settings: RedisSettings, registry_settings: RegistrySettings, manifest: ModelManifest
) -> bytes:
    with Registry.from_settings(settings, registry_settings) as registry:
        return registry.fetch(registry.publish(b"secret weights", manifest))


def test_a_password_protected_redis_needs_the_password_from_settings(
    private_redis: Callable[..., RedisServer],
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
) -> None:
    server = private_redis("--requirepass", "s3cret-pass")
    good = RedisSettings(url=server.url, password=SecretStr("s3cret-pass"), namespace="auth")
    assert round_trip(good, registry_settings, manifest) == b"secret weights"
    assert "s3cret-pass" not in repr(good)
    for password in (None, SecretStr("wrong")):
        bad = good.model_copy(update={"password": password})
        with pytest.raises(RegistryError, match="reserving a version number"):
            round_trip(bad, registry_settings, manifest)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=tagstream test CA",
        cwd=directory,
    )
    openssl(
        "req",
        *ec,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=directory,
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        cwd=directory,
    )
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


def test_a_rediss_url_talks_tls_verified_against_the_configured_ca(
    private_redis: Callable[..., RedisServer],
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    tmp_path: Path,
) -> None:
    ca, cert, key = make_certificates(tmp_path / "tls")
    server = private_redis(
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca),
        "--tls-auth-clients",
        "no",
        tls=True,
    )
    tls = RedisSettings(url=f"{server.url}?ssl_ca_certs={ca}", namespace="tls")
    assert round_trip(tls, registry_settings, manifest) == b"secret weights"
    untrusted = RedisSettings(url=server.url, namespace="tls", socket_timeout_s=2)
    with pytest.raises(RegistryError, match="reserving a version number"):
        round_trip(untrusted, registry_settings, manifest)
    plain = RedisSettings(
        url=server.url.replace("rediss://", "redis://"), namespace="tls", socket_timeout_s=2
    )
    with pytest.raises(RegistryError):
        round_trip(plain, registry_settings, manifest)
