"""``tagstream models list|show|publish|promote|rollback|pull``: the model registry in Redis.

Connection from ``TAGSTREAM_REDIS_*`` (URL, password, namespace), registry behaviour from
``TAGSTREAM_REGISTRY_*``. Errors are :class:`TagstreamError` and end the command with one line.
"""

from __future__ import annotations

import enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from common.settings import RedisSettings, load
from model.artifact import Artifact
from model.registry import Registry, verify
from model.settings import RegistrySettings
from schemas.manifest import ModelManifest

app = typer.Typer(
    help="List, inspect, promote, roll back and pull registry models.", no_args_is_help=True
)


class AliasName(enum.StrEnum):
    production = "production"
    canary = "canary"


ALIAS_OPTION = typer.Option(AliasName.production, "--alias", "-a", help="Alias to move.")


def open_registry() -> Registry:
    return Registry.from_settings(load(RedisSettings), load(RegistrySettings))


def key_metrics(manifest: ModelManifest, limit: int = 3) -> str:
    """Up to ``limit`` metrics, F1 scores first, as ``name=value``."""
    names = sorted(manifest.metrics, key=lambda name: ("f1" not in name, name))[:limit]
    return " ".join(f"{name}={manifest.metrics[name]:.3f}" for name in names)


def human_bytes(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def holders(aliases: dict[str, int]) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(version, []).append(alias)
    return by_version


@app.command("list")
def list_models() -> None:
    """Every published version: created, aliases, size and key metrics."""
    with open_registry() as registry:
        manifests = registry.manifests()
        by_version = holders(registry.aliases())
    table = Table(title=f"{len(manifests)} model version(s)")
    for column in ("version", "created", "aliases", "size", "sha256", "metrics"):
        table.add_column(column, justify="right" if column in ("version", "size") else "left")
    for manifest in reversed(manifests):
        version = manifest.version or 0
        table.add_row(
            str(version),
            manifest.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            ",".join(by_version.get(version, [])),
            human_bytes(manifest.artifact_bytes),
            (manifest.artifact_sha256 or "")[:12],
            key_metrics(manifest),
        )
    Console(width=max(Console().width, 120)).print(table)


@app.command()
def show(version: int = typer.Argument(..., help="Version number.")) -> None:
    """The full manifest of one version, as JSON, and the aliases that point at it."""
    with open_registry() as registry:
        manifest = registry.manifest(version)
        aliases = holders(registry.aliases()).get(version, [])
    typer.echo(manifest.model_dump_json(indent=2))
    typer.echo(f"aliases: {', '.join(aliases) or '-'}")


@app.command()
def publish(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="An artifact file."),
    sha256: str = typer.Option(
        None, "--sha256", help="Refuse the file unless its sha256 is this (from `models pull`)."
    ),
    promote_to: AliasName = typer.Option(
        None, "--promote", help="Also point this alias (production or canary) at it."
    ),
) -> None:
    """Publish an artifact trained offline (`tagstream trainer train`) as a new version.

    The file is parsed as a whole first (tensors, manifest, encoder, network), so a truncated
    or foreign file is refused before anything is stored; the registry then records its size
    and sha256 (signed with TAGSTREAM_REGISTRY_SIGNING_KEY when set), which every worker
    checks when it loads the version."""
    data = path.read_bytes()
    manifest = Artifact.from_bytes(data, sha256).manifest
    with open_registry() as registry:
        version = registry.publish(data, manifest)
        stored = registry.manifest(version)
        verify(registry.fetch(version), stored, key=registry.settings.signing_key)
        typer.echo(
            f"published {path.name} as version {version} "
            f"({human_bytes(stored.artifact_bytes)}, sha256 {stored.artifact_sha256})"
        )
        if promote_to is not None:
            previous = registry.promote(version, promote_to.value)
            was = "unset" if previous is None else f"version {previous}"
            typer.echo(f"{promote_to.value} -> version {version} (was {was})")


@app.command()
def promote(
    version: int = typer.Argument(..., help="Version number."),
    alias: AliasName = ALIAS_OPTION,
) -> None:
    """Point an alias at a version; workers watching it swap models.

    Promoting the version the alias holds re-announces it: workers that refused it try again.
    A promote from here carries no trainer-lock fencing token, so it needs no lock."""
    with open_registry() as registry:
        previous = registry.promote(version, alias.value)
    was = "unset" if previous is None else f"version {previous}"
    typer.echo(f"{alias.value} -> version {version} (was {was})")


@app.command()
def rollback(alias: AliasName = ALIAS_OPTION) -> None:
    """Point an alias back at the version it held before."""
    with open_registry() as registry:
        current = registry.aliases().get(alias.value)
        restored = registry.rollback(alias.value)
    typer.echo(f"{alias.value} -> version {restored} (was version {current})")


@app.command()
def pull(
    version: int = typer.Argument(..., help="Version number."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write into (created)."),
) -> None:
    """Download a version's artifact (sha256 checked) and manifest into a directory."""
    with open_registry() as registry:
        manifest = registry.manifest(version)
        data = registry.fetch(version)
    out.mkdir(parents=True, exist_ok=True)
    artifact_path = out / f"model-v{version}.artifact"
    manifest_path = out / f"model-v{version}.manifest.json"
    artifact_path.write_bytes(data)
    manifest_path.write_text(manifest.model_dump_json(indent=2) + "\n")
    typer.echo(
        f"wrote {artifact_path} ({human_bytes(len(data))}, sha256 "
        f"{manifest.artifact_sha256}) and {manifest_path}"
    )
