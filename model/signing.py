"""Registry authenticity: an HMAC-SHA256 over a version's manifest, its artifact digest included.

The sha256 in a manifest proves the bytes are the ones the manifest names; it proves nothing
about who wrote the manifest, since anyone who can write to Redis can store new bytes with a
matching manifest. With ``TAGSTREAM_REGISTRY_SIGNING_KEY`` set, the publisher also stores
``signature``, an HMAC-SHA256 keyed with that secret over a canonical encoding of every other
manifest field (version, ``artifact_sha256`` and ``artifact_bytes`` among them), and every
load (:func:`model.registry.verify`) refuses a version whose signature is absent or differs::

    canonical(manifest) = DOMAIN + JSON of the manifest without ``signature``,
                          keys sorted, no spaces (the same bytes on every machine)

Without a key nothing is signed or checked. A refusal is a :class:`SignatureError`, an
integrity failure: final for that version, like a sha256 mismatch. Signatures are compared
with :func:`hmac.compare_digest`, and no message ever carries the key or the signature the
key would have made.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from pydantic import SecretStr

from model.errors import SignatureError
from schemas.manifest import ModelManifest

DOMAIN = b"tagstream-registry-manifest/1\n"
"""Prefix of the signed bytes, so a tagstream signature can never be one over anything else."""

KEY_VARIABLE = "TAGSTREAM_REGISTRY_SIGNING_KEY"


def canonical(manifest: ModelManifest) -> bytes:
    """The bytes a signature covers: every field of ``manifest`` except ``signature``."""
    fields = manifest.model_dump(mode="json", exclude={"signature"})
    return DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def signature(manifest: ModelManifest, key: SecretStr) -> str:
    """Hex HMAC-SHA256 of ``canonical(manifest)`` under ``key``."""
    secret = key.get_secret_value().encode()
    return hmac.new(secret, canonical(manifest), hashlib.sha256).hexdigest()


def signed(manifest: ModelManifest, key: SecretStr | None) -> ModelManifest:
    """``manifest`` with its signature under ``key``; unchanged (unsigned) without a key."""
    if key is None:
        return manifest
    return manifest.model_copy(update={"signature": signature(manifest, key)})


def check_signature(manifest: ModelManifest, key: SecretStr | None) -> None:
    """Refuse ``manifest`` (:class:`SignatureError`) unless ``key`` signed it; no key: no check."""
    if key is None:
        return
    version = manifest.version
    if manifest.signature is None:
        raise SignatureError(
            f"model version {version}: manifest is unsigned and {KEY_VARIABLE} is set; refusing it"
        )
    if not hmac.compare_digest(manifest.signature, signature(manifest, key)):
        raise SignatureError(
            f"model version {version}: manifest signature was not made with {KEY_VARIABLE} "
            "(manifest or artifact digest changed since signing, or another key); refusing it"
        )
