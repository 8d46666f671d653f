"""Registry authenticity without servers: a signature holds only for the key that made it and
the exact manifest and digest it covers; with a key set, an unsigned manifest is refused."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from model.errors import ArtifactError, SignatureError
from model.registry import sha256_hex, stamped, verify
from model.settings import RegistrySettings
from model.signing import canonical, check_signature, signed
from schemas.manifest import ModelManifest
from tests.registry.support import make_manifest

KEY = SecretStr("k" * 64)
OTHER_KEY = SecretStr("o" * 64)
DATA = b"the artifact bytes"


def published(key: SecretStr | None = KEY) -> ModelManifest:
    """A manifest as the registry stores it: version, digest, size and signature set."""
    return signed(stamped(make_manifest(micro_f1=0.8), 7, sha256_hex(DATA), len(DATA)), key)


def test_a_manifest_signed_with_the_key_passes_with_the_same_key() -> None:
    manifest = published()
    assert manifest.signature is not None
    check_signature(manifest, KEY)
    verify(DATA, manifest, key=KEY)


def test_a_signature_survives_the_round_trip_through_stored_json() -> None:
    manifest = published()
    check_signature(ModelManifest.model_validate_json(manifest.model_dump_json()), KEY)


def test_a_signature_made_with_another_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="not made with TAGSTREAM_REGISTRY_SIGNING_KEY"):
        check_signature(published(OTHER_KEY), KEY)


def test_a_tampered_manifest_is_refused() -> None:
    tampered = published().model_copy(update={"thresholds": [0.0, 0.0, 0.0]})
    with pytest.raises(SignatureError, match="refusing it"):
        check_signature(tampered, KEY)


@pytest.mark.parametrize(
    "update",
    [{"artifact_sha256": sha256_hex(b"other bytes")}, {"artifact_bytes": 1}, {"version": 8}],
)
def test_a_tampered_digest_size_or_version_is_refused(update: dict[str, object]) -> None:
    with pytest.raises(SignatureError):
        check_signature(published().model_copy(update=update), KEY)


def test_an_unsigned_manifest_is_refused_when_a_key_is_set() -> None:
    with pytest.raises(SignatureError, match="unsigned") as caught:
        verify(DATA, published(None), key=KEY)
    assert isinstance(caught.value, ArtifactError) and caught.value.retriable is False


def test_matching_bytes_do_not_excuse_a_wrong_signature_on_the_cache_path() -> None:
    """The disk cache hashed the bytes already; the signature is checked all the same."""
    with pytest.raises(SignatureError):
        verify(DATA, published(OTHER_KEY), key=KEY, sha256_known=True)


def test_without_a_key_nothing_is_signed_and_nothing_checked() -> None:
    unsigned = published(None)
    assert unsigned.signature is None
    verify(DATA, unsigned, key=None)
    verify(DATA, published(OTHER_KEY), key=None)


def test_a_refusal_names_neither_the_key_nor_the_signature_it_expected() -> None:
    manifest = published(OTHER_KEY)
    with pytest.raises(SignatureError) as caught:
        check_signature(manifest, KEY)
    expected = published(KEY).signature
    assert expected is not None
    assert KEY.get_secret_value() not in str(caught.value) and expected not in str(caught.value)


def test_the_signature_covers_every_field_but_itself() -> None:
    manifest = published()
    assert canonical(manifest) == canonical(manifest.model_copy(update={"signature": None}))
    assert b'"artifact_sha256":"' + sha256_hex(DATA).encode() in canonical(manifest)


def test_the_key_setting_is_secret_and_empty_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSTREAM_REGISTRY_SIGNING_KEY", "s3cret-value")
    settings = RegistrySettings()
    assert settings.signing_key is not None
    assert settings.signing_key.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings)
    monkeypatch.setenv("TAGSTREAM_REGISTRY_SIGNING_KEY", "")
    assert RegistrySettings().signing_key is None
