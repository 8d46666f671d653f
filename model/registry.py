"""The model registry in Redis: numbered versions, chunked artifacts, aliases with history.

Keys, all under ``{namespace}:model:`` (``RedisSettings.namespace``)::

    next-version          INCR counter; every upload takes the next number, so concurrent
                          publishers never share one and numbers only grow (gaps are fine)
    manifests             hash  version -> manifest JSON; a version exists iff it is here
    artifact:{v}          hash  chunk index -> bytes (a few MB each) of a published version
    staging:{v}           hash  like artifact:{v}, while the upload runs; carries a TTL that
                          every chunk renews, so an abandoned upload vanishes on its own
    aliases               hash  alias -> version (``production``, ``canary``)
    alias-serials         hash  alias -> count of promotes and rollbacks, so a watcher sees an
                          alias re-set to the version it already held
    history:{alias}       list  previous holders, newest first, for rollback
    alias-changes         pub/sub channel announcing every alias change (JSON)
    fence                 string  highest trainer-lock fencing token a publish or promote used

Publication is atomic: chunks go to ``staging:{v}``; one Lua script checks they are all
there, renames the hash to ``artifact:{v}``, drops its TTL and adds the manifest, so
readers see either nothing or the whole version. Promote, rollback and retention are Lua
scripts too, so an alias can never point at a version retention is deleting.

Fencing: a publish or promote may carry a :class:`Fence` (the trainer lock's key and token).
The script then refuses (:class:`FencedError`) unless the lock still holds that token and no
higher token was used before; without a fence (a person at the CLI) nothing is checked. A
promote may also name the holder it expects (``expected_current``) and is refused
(:class:`AliasMovedError`) when the alias has moved meanwhile, e.g. by a manual rollback.

Artifacts are opaque bytes here; :meth:`Registry.fetch` checks their size and sha256 against
the manifest before returning them, and nothing is ever unpickled. With a signing key
(``TAGSTREAM_REGISTRY_SIGNING_KEY``) a publish signs the manifest and every check
(:func:`verify`) first refuses a manifest that key did not sign (``model.signing``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, cast, get_args

import redis
from pydantic import SecretStr, ValidationError

from common.logging import get_logger
from common.settings import RedisSettings
from model.errors import AliasMovedError, ArtifactError, FencedError, ModelError, RegistryError
from model.settings import RegistrySettings
from model.signing import check_signature, signed
from schemas.manifest import ModelManifest

Alias = Literal["production", "canary"]
ALIASES: tuple[Alias, ...] = get_args(Alias)

log = get_logger("model.registry")

FENCE_CHECK = """
-- fence(high_key, lock_key, token): nil when allowed; an error text otherwise.
-- An empty token means no fence (a person at the CLI): nothing is checked or recorded.
local function fence(high_key, lock_key, token)
  if token == '' then return nil end
  local held = redis.call('GET', lock_key)
  if not held or string.match(held, ':(%d+)$') ~= token then
    return 'FENCED the training lock is not held with token ' .. token .. ' any more'
  end
  local high = tonumber(redis.call('GET', high_key) or '0')
  if tonumber(token) < high then
    return 'FENCED token ' .. token .. ' is older than token ' .. high .. ', already used'
  end
  redis.call('SET', high_key, token)
  return nil
end
"""

COMMIT_SCRIPT = (
    FENCE_CHECK
    + """
-- KEYS: staging, artifact, manifests, fence, lock   ARGV: version, manifest, chunk count, token
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('STAGING_GONE upload expired or never started')
end
if redis.call('HLEN', KEYS[1]) ~= tonumber(ARGV[3]) then
  return redis.error_reply('STAGING_INCOMPLETE chunk count differs from the upload')
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return redis.error_reply('VERSION_TAKEN version already published')
end
local refused = fence(KEYS[4], KEYS[5], ARGV[4])
if refused then return redis.error_reply(refused) end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
"""
)

PROMOTE_SCRIPT = (
    FENCE_CHECK
    + """
-- KEYS: aliases, history, manifests, serials, fence, lock
-- ARGV: alias, version, history length, channel, token, expected ('' any, 'unset', a version)
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then
  return redis.error_reply('NO_VERSION version is not published')
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[6] ~= '' and (current or 'unset') ~= ARGV[6] then
  return redis.error_reply('ALIAS_MOVED alias holds ' .. (current or 'nothing') ..
    ', not the expected ' .. ARGV[6])
end
local refused = fence(KEYS[5], KEYS[6], ARGV[5])
if refused then return redis.error_reply(refused) end
if current and current ~= ARGV[2] then
  redis.call('LPUSH', KEYS[2], current)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
redis.call('PUBLISH', ARGV[4], cjson.encode({action = 'promote', alias = ARGV[1],
  version = tonumber(ARGV[2]), previous = current and tonumber(current) or cjson.null}))
return current
"""
)

ROLLBACK_SCRIPT = """
-- KEYS: aliases, history, manifests, serials   ARGV: alias, channel, expected holder ('' any)
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] ~= '' and (current or 'unset') ~= ARGV[3] then
  return redis.error_reply('ALIAS_MOVED alias holds ' .. (current or 'nothing') ..
    ', not the expected ' .. ARGV[3])
end
while true do
  local previous = redis.call('LPOP', KEYS[2])
  if not previous then
    return redis.error_reply('NO_HISTORY no earlier holder to roll back to')
  end
  if previous ~= current and redis.call('HEXISTS', KEYS[3], previous) == 1 then
    redis.call('HSET', KEYS[1], ARGV[1], previous)
    redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
    redis.call('PUBLISH', ARGV[2], cjson.encode({action = 'rollback', alias = ARGV[1],
      version = tonumber(previous), previous = current and tonumber(current) or cjson.null}))
    return previous
  end
end
"""

PRUNE_SCRIPT = """
-- KEYS: manifests, aliases, history:{alias}...   ARGV: retention, artifact key prefix
local keep = {}
for _, version in ipairs(redis.call('HVALS', KEYS[2])) do keep[version] = true end
for i = 3, #KEYS do
  local head = redis.call('LINDEX', KEYS[i], 0)
  if head then keep[head] = true end
end
local versions = redis.call('HKEYS', KEYS[1])
table.sort(versions, function(a, b) return tonumber(a) > tonumber(b) end)
local deleted = {}
for rank, version in ipairs(versions) do
  if rank > tonumber(ARGV[1]) and not keep[version] then
    redis.call('HDEL', KEYS[1], version)
    redis.call('UNLINK', ARGV[2] .. version)
    table.insert(deleted, tonumber(version))
  end
end
return deleted
"""


@dataclass(frozen=True)
class Fence:
    """The trainer lock a publish or promote claims to hold: its key and fencing token."""

    lock_key: str
    token: int


@dataclass(frozen=True)
class AliasState:
    """One reading of the aliases: versions, change serials, and values that are not versions."""

    versions: dict[str, int]
    serials: dict[str, int]
    malformed: dict[str, str]


SCRIPT_ERRORS: dict[str, type[ModelError]] = {
    "NO_VERSION": ModelError,
    "NO_HISTORY": ModelError,
    "FENCED": FencedError,
    "ALIAS_MOVED": AliasMovedError,
}
"""Error replies of the scripts that are answers, not outages: the exception each becomes."""


@dataclass(frozen=True)
class RegistryKeys:
    """The Redis key names of one namespace."""

    namespace: str

    def key(self, suffix: str) -> str:
        return f"{self.namespace}:model:{suffix}"

    @property
    def next_version(self) -> str:
        return self.key("next-version")

    @property
    def manifests(self) -> str:
        return self.key("manifests")

    @property
    def aliases(self) -> str:
        return self.key("aliases")

    @property
    def serials(self) -> str:
        return self.key("alias-serials")

    @property
    def fence(self) -> str:
        return self.key("fence")

    @property
    def channel(self) -> str:
        return self.key("alias-changes")

    @property
    def artifact_prefix(self) -> str:
        return self.key("artifact:")

    def artifact(self, version: int) -> str:
        return f"{self.artifact_prefix}{version}"

    def staging(self, version: int) -> str:
        return self.key(f"staging:{version}")

    def history(self, alias: str) -> str:
        return self.key(f"history:{alias}")


@contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Turn redis-py's exceptions into a retriable :class:`RegistryError` naming ``action``."""
    try:
        yield
    except redis.RedisError as exc:
        raise RegistryError(f"{action}: {type(exc).__name__}: {exc}") from exc


def script_error(exc: redis.ResponseError, code: str) -> bool:
    """Whether ``exc`` is the error reply ``code`` raised by one of the registry's scripts."""
    return str(exc).startswith(code)


@contextmanager
def script_answers(action: str) -> Iterator[None]:
    """Like :func:`redis_errors`, but a script's refusal (``SCRIPT_ERRORS``) becomes the
    matching non-retriable error, with the script's reason."""
    try:
        with redis_errors(action):
            yield
    except RegistryError as exc:
        cause = exc.__cause__
        if isinstance(cause, redis.ResponseError):
            for code, kind in SCRIPT_ERRORS.items():
                if script_error(cause, code):
                    raise kind(f"{action}: {str(cause).split(' ', 1)[1]}") from cause
        raise


def fence_args(keys: RegistryKeys, fence: Fence | None) -> tuple[str, str]:
    """(lock key, token) for a script; no fence is an empty token (the script checks nothing)."""
    if fence is None:
        return keys.fence, ""
    return fence.lock_key, str(fence.token)


def parse_aliases(raw: dict[bytes, bytes]) -> tuple[dict[str, int], dict[str, str]]:
    """(alias -> version, alias -> raw value that is not a version number)."""
    versions: dict[str, int] = {}
    malformed: dict[str, str] = {}
    for name, value in raw.items():
        text = value.decode(errors="replace")
        if text.isascii() and text.isdigit():
            versions[name.decode(errors="replace")] = int(text)
        else:
            malformed[name.decode(errors="replace")] = text
    return versions, malformed


def split_chunks(data: bytes, chunk_bytes: int) -> Iterator[bytes]:
    """``data`` in slices of at most ``chunk_bytes``."""
    view = memoryview(data)
    for start in range(0, len(data), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_alias(alias: str) -> Alias:
    if alias not in ALIASES:
        raise ModelError(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
    return alias


class Upload:
    """One artifact on its way in: chunks under a staging key, made visible by :meth:`commit`.

    A publisher that dies before ``commit`` leaves nothing visible; its staging hash expires
    ``staging_ttl_s`` after its last chunk. With ``signing_key`` the manifest is signed.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: RegistryKeys,
        version: int,
        ttl_s: int,
        signing_key: SecretStr | None = None,
    ):
        self.version = version
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s
        self._signing_key = signing_key
        self._digest = hashlib.sha256()
        self._size = 0
        self._chunks = 0

    def write(self, chunk: bytes) -> None:
        """Stage the next chunk and renew the staging TTL, in one transaction."""
        staging = self._keys.staging(self.version)
        with redis_errors(f"staging chunk {self._chunks} of version {self.version}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(staging, str(self._chunks), chunk)
            pipe.expire(staging, self._ttl_s)
            pipe.execute()
        self._digest.update(chunk)
        self._size += len(chunk)
        self._chunks += 1

    def commit(self, manifest: ModelManifest, fence: Fence | None = None) -> ModelManifest:
        """Publish the staged chunks with ``manifest`` (version, sha256, size and, with a
        signing key, signature filled in); with ``fence``, only while that trainer lock token
        is current (else FencedError)."""
        if self._size == 0:
            raise ArtifactError(f"version {self.version}: refusing to publish an empty artifact")
        stored = signed(
            stamped(manifest, self.version, self._digest.hexdigest(), self._size),
            self._signing_key,
        )
        keys = self._keys
        lock_key, token = fence_args(keys, fence)
        try:
            with script_answers(f"publishing version {self.version}"):
                self._client.eval(
                    COMMIT_SCRIPT,
                    5,
                    keys.staging(self.version),
                    keys.artifact(self.version),
                    keys.manifests,
                    keys.fence,
                    lock_key,
                    self.version,
                    stored.model_dump_json(),
                    self._chunks,
                    token,
                )
        except RegistryError as exc:
            cause = exc.__cause__
            if isinstance(cause, redis.ResponseError) and script_error(cause, "STAGING_GONE"):
                raise RegistryError(
                    f"version {self.version}: the staged upload expired before commit "
                    "(raise TAGSTREAM_REGISTRY_STAGING_TTL_S?)"
                ) from cause
            raise
        return stored


def stamped(manifest: ModelManifest, version: int, sha256: str, size: int) -> ModelManifest:
    """``manifest`` with the registry's fields set (unsigned), validated again."""
    fields = manifest.model_dump() | {
        "version": version,
        "artifact_sha256": sha256,
        "artifact_bytes": size,
        "signature": None,
    }
    return ModelManifest.model_validate(fields)


class Registry:
    """Versions, artifacts and aliases of one namespace in one Redis."""

    def __init__(self, client: redis.Redis, namespace: str, settings: RegistrySettings):
        self.client = client
        self.keys = RegistryKeys(namespace)
        self.settings = settings

    @classmethod
    def from_settings(cls, redis_settings: RedisSettings, settings: RegistrySettings) -> Self:
        """A registry over a client built from ``redis_settings`` (AUTH, TLS via ``rediss://``)."""
        client = redis.Redis.from_url(redis_settings.url, **redis_settings.client_kwargs())
        return cls(client, redis_settings.namespace, settings)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- publication -------------------------------------------------------------------

    def begin_upload(self) -> Upload:
        """Reserve the next version number and return an :class:`Upload` for it."""
        with redis_errors("reserving a version number"):
            version = int(self.client.incr(self.keys.next_version))
        return Upload(
            self.client, self.keys, version, self.settings.staging_ttl_s, self.settings.signing_key
        )

    def publish(
        self, artifact_bytes: bytes, manifest: ModelManifest, *, fence: Fence | None = None
    ) -> int:
        """Store ``artifact_bytes`` with ``manifest`` as a new version and return its number.

        ``fence``: the trainer lock this publisher holds; refused (:class:`FencedError`) when it
        is not current. None (the CLI, a person) publishes unfenced."""
        if not artifact_bytes:
            raise ArtifactError("refusing to publish an empty artifact")
        upload = self.begin_upload()
        for chunk in split_chunks(artifact_bytes, self.settings.chunk_bytes):
            upload.write(chunk)
        stored = upload.commit(manifest, fence)
        log.info(
            "model published",
            version=stored.version,
            bytes=stored.artifact_bytes,
            sha256=stored.artifact_sha256,
            signed=stored.signature is not None,
        )
        self.prune()
        return upload.version

    # -- reading -----------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Published version numbers, oldest first."""
        with redis_errors("listing versions"):
            fields = cast(list[bytes], self.client.hkeys(self.keys.manifests))
        return sorted(int(field) for field in fields)

    def manifests(self) -> list[ModelManifest]:
        """Manifests of every published version, oldest first."""
        with redis_errors("listing manifests"):
            raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.manifests))
        manifests = [parse_manifest(int(field), value) for field, value in raw.items()]
        return sorted(manifests, key=lambda manifest: manifest.version or 0)

    def manifest(self, version: int) -> ModelManifest:
        """The manifest of ``version``; :class:`ModelError` if it is not published."""
        with redis_errors(f"reading the manifest of version {version}"):
            raw = cast(bytes | None, self.client.hget(self.keys.manifests, str(version)))
        if raw is None:
            raise ModelError(f"model version {version} is not in the registry")
        return parse_manifest(version, raw)

    def fetch(self, version: int) -> bytes:
        """The artifact bytes of ``version``, checked against its manifest's size and sha256
        (and signature, with a signing key).

        Manifest and chunks are read in one transaction, so retention cannot delete the
        version half-way through the read.
        """
        with redis_errors(f"reading version {version}"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(self.keys.manifests, str(version))
            pipe.hgetall(self.keys.artifact(version))
            raw, chunks = cast(tuple[bytes | None, dict[bytes, bytes]], tuple(pipe.execute()))
        if raw is None:
            raise ModelError(f"model version {version} is not in the registry")
        manifest = parse_manifest(version, raw)
        data = join_chunks(version, chunks)
        verify(data, manifest, key=self.settings.signing_key)
        return data

    # -- aliases -----------------------------------------------------------------------

    def aliases(self) -> dict[str, int]:
        """Which version each alias points at (unset aliases are absent).

        A value that is not a version number (written by hand, say) is logged and left out."""
        with redis_errors("reading aliases"):
            raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.aliases))
        versions, malformed = parse_aliases(raw)
        for alias, value in malformed.items():
            log.warning("alias value malformed", alias=alias, value=value[:100])
        return versions

    def alias_state(self) -> AliasState:
        """Versions, change serials and malformed values of the aliases, read atomically."""
        with redis_errors("reading aliases"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(self.keys.aliases)
            pipe.hgetall(self.keys.serials)
            raw, serials = cast(tuple[dict[bytes, bytes], dict[bytes, bytes]], pipe.execute())
        versions, malformed = parse_aliases(raw)
        counts, _ = parse_aliases(serials)
        return AliasState(versions, counts, malformed)

    def resolve(self, alias: str) -> int:
        """The version ``alias`` points at; :class:`ModelError` if it is unset."""
        check_alias(alias)
        with redis_errors(f"resolving alias {alias}"):
            raw = cast(bytes | None, self.client.hget(self.keys.aliases, alias))
        if raw is None:
            raise ModelError(f"alias {alias!r} does not point at any model yet")
        versions, malformed = parse_aliases({alias.encode(): raw})
        if malformed:
            raise ModelError(f"alias {alias!r} holds {malformed[alias][:100]!r}, not a version")
        return versions[alias]

    def history(self, alias: str) -> list[int]:
        """Earlier holders of ``alias``, newest first (what :meth:`rollback` walks back to)."""
        check_alias(alias)
        with redis_errors(f"reading the history of {alias}"):
            raw = cast(list[bytes], self.client.lrange(self.keys.history(alias), 0, -1))
        return [int(value) for value in raw if value.isdigit()]  # rollback skips the rest too

    def promote(
        self,
        version: int,
        alias: str = "production",
        *,
        fence: Fence | None = None,
        expected_current: int | Literal["unset"] | None = None,
    ) -> int | None:
        """Point ``alias`` at ``version``, remember the previous holder, announce the change.

        Re-setting the holder changes nothing but is announced (a worker that refused the
        version tries it again). ``fence``: as in :meth:`publish`. ``expected_current``: the
        version (or ``"unset"``) the caller saw there; if the alias holds anything else now,
        :class:`AliasMovedError` and nothing changes. None: whatever it holds.
        """
        check_alias(alias)
        lock_key, token = fence_args(self.keys, fence)
        expected = "" if expected_current is None else str(expected_current)
        previous = self._run_alias_script(
            PROMOTE_SCRIPT,
            f"promoting version {version} to {alias}",
            alias,
            (self.keys.fence, lock_key),
            version,
            self.settings.history_length,
            self.keys.channel,
            token,
            expected,
        )
        log.info("model promoted", alias=alias, version=version, previous=previous)
        return previous

    def rollback(self, alias: str = "production", *, expect: int | None = None) -> int:
        """Point ``alias`` back at its previous holder and return that version.

        With ``expect``, only while the alias still points at that version (compare-and-set):
        otherwise :class:`AliasMovedError` and nothing changes, so an automatic rollback
        never undoes a promote that landed after its verdict."""
        check_alias(alias)
        restored = self._run_alias_script(
            ROLLBACK_SCRIPT,
            f"rolling back {alias}",
            alias,
            (),
            self.keys.channel,
            "" if expect is None else str(expect),
        )
        assert restored is not None
        log.info("model rolled back", alias=alias, version=restored)
        return restored

    def _run_alias_script(
        self, script: str, action: str, alias: str, extra_keys: tuple[str, ...], *args: Any
    ) -> int | None:
        keys = (
            self.keys.aliases,
            self.keys.history(alias),
            self.keys.manifests,
            self.keys.serials,
            *extra_keys,
        )
        with script_answers(action):
            raw = self.client.eval(script, len(keys), *keys, alias, *args)
        if raw is None:
            return None
        versions, _ = parse_aliases({b"previous": cast(bytes, raw)})
        return versions.get("previous")  # a malformed previous holder is no version

    # -- retention ---------------------------------------------------------------------

    def prune(self) -> list[int]:
        """Delete versions beyond the newest ``retention``, except those aliases hold or
        would roll back to; return the deleted numbers."""
        keys = [self.keys.manifests, self.keys.aliases]
        keys += [self.keys.history(alias) for alias in ALIASES]
        with redis_errors("pruning old versions"):
            deleted = cast(
                list[int],
                self.client.eval(
                    PRUNE_SCRIPT,
                    len(keys),
                    *keys,
                    self.settings.retention,
                    self.keys.artifact_prefix,
                ),
            )
        if deleted:
            log.info("models pruned", versions=sorted(deleted))
        return sorted(int(version) for version in deleted)


def parse_manifest(version: int, raw: bytes) -> ModelManifest:
    """Decode a stored manifest; a malformed one is an :class:`ArtifactError`."""
    try:
        return ModelManifest.model_validate_json(raw)
    except ValidationError as exc:
        raise ArtifactError(
            f"model version {version}: stored manifest is malformed: {exc}"
        ) from exc


def join_chunks(version: int, chunks: dict[bytes, bytes]) -> bytes:
    """The chunks ``{b"0": ..., b"1": ...}`` in order; a gap is an :class:`ArtifactError`."""
    indices = sorted(int(index) for index in chunks)
    if not indices or indices != list(range(len(indices))):
        raise ArtifactError(f"model version {version}: artifact chunks are missing")
    return b"".join(chunks[str(index).encode()] for index in indices)


def verify(
    data: bytes, manifest: ModelManifest, *, key: SecretStr | None, sha256_known: bool = False
) -> None:
    """Refuse ``data`` unless ``key`` signed ``manifest`` (no key: no signature check) and the
    size and sha256 of ``data`` are the ones ``manifest`` declares. Every load passes here,
    from Redis or the disk cache.

    ``sha256_known``: the caller already hashed ``data`` to the manifest's digest (the disk
    cache does on every read), so only the size is compared.
    """
    version = manifest.version
    if manifest.artifact_sha256 is None:
        raise ArtifactError(f"model version {version}: manifest carries no sha256")
    check_signature(manifest, key)
    if manifest.artifact_bytes is not None and len(data) != manifest.artifact_bytes:
        raise ArtifactError(
            f"model version {version}: artifact is {len(data)} bytes, "
            f"manifest says {manifest.artifact_bytes}; refusing it"
        )
    actual = manifest.artifact_sha256 if sha256_known else sha256_hex(data)
    if actual != manifest.artifact_sha256:
        raise ArtifactError(
            f"model version {version}: artifact sha256 {actual} does not match the manifest's "
            f"{manifest.artifact_sha256}; refusing it"
        )
