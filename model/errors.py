"""Errors of the model package: artifacts, the text encoder and the Redis registry.

TagstreamError          (common.errors)
└── ModelError          anything about a model
    ├── ArtifactError   bytes that are malformed or fail their sha256; never retriable
    │   └── SignatureError  a manifest unsigned or wrongly signed for the registry's key
    ├── FencedError     a publish or promote carried a stale trainer-lock token; refused
    ├── AliasMovedError a promote expected another holder of the alias; refused
    └── RegistryError   the Redis registry could not be read or written; retriable
"""

from __future__ import annotations

from common.errors import TagstreamError


class ModelError(TagstreamError):
    """A model could not be built, loaded or used."""


class ArtifactError(ModelError):
    """An artifact is malformed or its bytes do not match the expected sha256."""

    retriable = False


class SignatureError(ArtifactError):
    """A version's manifest carries no signature, or one that the signing key did not make."""


class RegistryError(ModelError):
    """The model registry could not be reached or answered something unexpected."""

    retriable = True


class FencedError(ModelError):
    """A publish or promote carried a trainer-lock token that is no longer current."""

    retriable = False


class AliasMovedError(ModelError):
    """A compare-and-set promote found the alias holding another version than expected."""

    retriable = False
