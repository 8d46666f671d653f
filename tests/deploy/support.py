"""Read the deployment files and the code they must agree with, without a container engine.

Everything here is static: YAML and JSON are parsed, the Dockerfile is split into stages,
settings classes are found by importing the settings modules, and CLI commands, health
routes and metric names are read from the source with ``ast``. Nothing starts a server or
imports torch, so the deploy tests stay well under two seconds.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DOCS = ROOT / "docs" / "deploy.md"

SETTINGS_MODULES = (
    "common.settings",
    "tagstream.stack",
    "model.settings",
    "worker.settings",
    "trainer.settings",
    "monitor.settings",
)
"""Modules holding the services' pydantic-settings classes; those that exist are imported."""

VARIABLE = re.compile(r"\bTAGSTREAM_[A-Z0-9_]*")


# -- files ----------------------------------------------------------------------------------


def deploy_files(*suffixes: str) -> list[Path]:
    """Files under deploy/ with one of ``suffixes``, leaving out the lead's deploy/local."""
    return sorted(
        path
        for path in DEPLOY.rglob("*")
        if path.is_file() and path.suffix in suffixes and DEPLOY / "local" not in path.parents
    )


@cache
def yaml_documents(path: Path) -> tuple[Any, ...]:
    with path.open(encoding="utf-8") as handle:
        return tuple(doc for doc in yaml.safe_load_all(handle) if doc is not None)


def yaml_document(path: Path) -> Any:
    (document,) = yaml_documents(path)
    return document


def k8s_patch_files() -> set[Path]:
    """Files that kustomizations under deploy/k8s apply as patches, not as resources."""
    found = set()
    for path in K8S.rglob("kustomization.yaml"):
        for patch in yaml_document(path).get("patches", []):
            if "path" in patch:
                found.add((path.parent / patch["path"]).resolve())
    return found


def k8s_objects(*, patches: bool = False) -> list[dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s; overlay patches only when asked for."""
    skip = set() if patches else k8s_patch_files()
    objects = []
    for path in deploy_files(".yaml", ".yml"):
        if K8S not in path.parents or path.name == "kustomization.yaml" or path in skip:
            continue
        objects += [doc for doc in yaml_documents(path) if isinstance(doc, dict) and "kind" in doc]
    return objects


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` named ``name`` in the base and the overlays' resources."""
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("initContainers", [])) + list(pod_spec.get("containers", []))


def duration_s(text: str | int | float) -> float:
    """Compose durations (``45s``, ``2m``, ``1m30s``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    assert parts, f"not a duration: {text!r}"
    return sum(float(value) * units[unit] for value, unit in parts)


def topic_partitions(spec: str) -> dict[str, int]:
    """``"articles:12 articles.dlq:3"`` -> ``{"articles": 12, "articles.dlq": 3}``."""
    pairs = (item.rsplit(":", 1) for item in spec.split())
    return {name: int(count) for name, count in pairs}


# -- the Dockerfile -------------------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` stage: its base, and the instructions it holds, continuation lines joined."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; comments dropped, ``\\`` continuations joined."""
    logical = ""
    in_heredoc: str | None = None
    for line in text.splitlines():
        if in_heredoc is not None:
            logical += "\n" + line
            if line.strip() == in_heredoc:
                in_heredoc = None
                yield _split_instruction(logical)
                logical = ""
            continue
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += (" " if logical else "") + line.strip()
        if logical.endswith("\\"):
            logical = logical[:-1].rstrip()
            continue
        yield _split_instruction(logical)
        logical = ""


def _split_instruction(logical: str) -> tuple[str, str]:
    keyword, _, args = logical.partition(" ")
    return keyword.upper(), args.strip()


@cache
def dockerfile_stages() -> dict[str, Stage]:
    """Stages by name (unnamed ones by their index), in order."""
    stages: dict[str, Stage] = {}
    for keyword, args in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages[name or str(len(stages))] = Stage(words[0], name)
        elif stages:
            list(stages.values())[-1].instructions.append((keyword, args))
    return stages


def stage_chain(name: str) -> list[Stage]:
    """The stage and the stages it is built ``FROM``, nearest first."""
    stages = dockerfile_stages()
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def effective_user(target: str) -> str:
    """The USER a container of ``target`` runs as (root when no stage sets one)."""
    for stage in stage_chain(target):
        users = stage.all("USER")
        if users:
            return users[-1]
    return "root"


def effective_instruction(target: str, keyword: str) -> str | None:
    for stage in stage_chain(target):
        found = stage.all(keyword)
        if found:
            return found[-1]
    return None


def env_assignments(args: str) -> dict[str, str]:
    """``ENV A=1 B="two words"`` (or the legacy ``ENV A 1``) as a dict."""
    words = shlex.split(args)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def image_env(target: str) -> dict[str, str]:
    """The ENV a container of ``target`` starts with, the nearest stage winning."""
    env: dict[str, str] = {}
    for stage in reversed(stage_chain(target)):
        for args in stage.all("ENV"):
            env |= env_assignments(args)
    return env


def stage_args(stage: str) -> dict[str, str]:
    """``ARG NAME=default`` of one stage."""
    found = {}
    for args in dockerfile_stages()[stage].all("ARG"):
        name, _, default = args.partition("=")
        found[name] = default
    return found


def json_form(args: str) -> list[str]:
    """An exec-form instruction (``ENTRYPOINT ["tagstream"]``) as its list."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return [str(item) for item in value]


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    name: str
    settings: type[BaseSettings]
    field: str
    secret: bool


@cache
def settings_classes() -> tuple[type[BaseSettings], ...]:
    """Every project settings class in the settings modules that exist today."""
    modules = [importlib.import_module(name) for name in SETTINGS_MODULES if _exists(name)]
    found: list[type[BaseSettings]] = []
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value is not BaseSettings
                and value.__module__ == module.__name__
                and value.model_config.get("env_prefix")
            ):
                found.append(value)
    return tuple(found)


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@cache
def settings_variables() -> dict[str, Variable]:
    """``TAGSTREAM_*`` name -> the settings field it sets."""
    variables = {}
    for cls in settings_classes():
        prefix = str(cls.model_config["env_prefix"]).upper()
        for name, info in cls.model_fields.items():
            secret = "SecretStr" in repr(info.annotation) or info.annotation is SecretStr
            variables[f"{prefix}{name.upper()}"] = Variable(
                f"{prefix}{name.upper()}", cls, name, secret
            )
    return variables


def settings_prefixes() -> set[str]:
    return {str(cls.model_config["env_prefix"]).upper() for cls in settings_classes()}


@cache
def environ_variables() -> frozenset[str]:
    """``TAGSTREAM_*`` names the code reads straight from the environment (``TAGSTREAM_CACHE``)."""
    read = re.compile(r"""(?:environ\.get|environ\[|getenv)\(?\s*["'](TAGSTREAM_[A-Z0-9_]+)["']""")
    names: set[str] = set()
    for package in project_packages():
        for path in (ROOT / package).rglob("*.py"):
            names |= set(read.findall(path.read_text(encoding="utf-8")))
    return frozenset(names)


def unknown_variables(names: set[str]) -> set[str]:
    """Names that no settings field and no direct environment read of the code accounts for.

    A name ending in ``_`` is a prefix (``TAGSTREAM_WORKER_`` as in ``TAGSTREAM_WORKER_*``)
    and must be the prefix of a settings class, or ``TAGSTREAM_`` itself.
    """
    known = set(settings_variables()) | environ_variables()
    prefixes = settings_prefixes() | {"TAGSTREAM_"}
    return {
        name
        for name in names
        if (name not in prefixes if name.endswith("_") else name not in known)
    }


def load_settings(cls: type[BaseSettings], env: dict[str, str], monkeypatch: Any) -> Any:
    """``cls`` as a process with exactly ``env`` (and no other TAGSTREAM_*) would load it."""
    from common.settings import load  # noqa: PLC0415 - imported with the settings modules

    for name in [n for n in os.environ if n.startswith("TAGSTREAM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load(cls)


def settings_class(module: str, name: str) -> type[BaseSettings]:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, BaseSettings)
    return cls


# -- the code's commands, routes and metrics ------------------------------------------------


@cache
def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def project_packages() -> list[str]:
    patterns = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return [p.rstrip("*") for p in patterns if (ROOT / p.rstrip("*")).is_dir()]


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@dataclass(frozen=True)
class Command:
    name: str
    options: frozenset[str]


def _module_path(module: str) -> Path:
    return ROOT / Path(*module.split(".")).with_suffix(".py")


@cache
def _tree(module: str) -> ast.Module:
    return _parse(_module_path(module))


def _functions(module: str) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in _tree(module).body if isinstance(n, ast.FunctionDef)}


def _options(function: ast.FunctionDef) -> frozenset[str]:
    """The ``--flags`` of a typer command: ``typer.Option`` defaults, explicit or from the name."""
    flags: set[str] = set()
    arguments = function.args.args + function.args.kwonlyargs
    defaults = [None] * (len(function.args.args) - len(function.args.defaults))
    defaults += list(function.args.defaults) + list(function.args.kw_defaults)
    for argument, default in zip(arguments, defaults, strict=True):
        if not (
            isinstance(default, ast.Call)
            and isinstance(default.func, ast.Attribute)
            and default.func.attr == "Option"
        ):
            continue
        given = [
            a.value
            for a in default.args
            if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")
        ]
        flags |= set(given) if given else {"--" + argument.arg.replace("_", "-")}
    return frozenset(flags)


def _command_name(call: ast.Call, function: str) -> str:
    """``x.command("name")``, ``x.command(name="name")`` or the function's name, dashed."""
    for arg in call.args[:1]:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    for keyword in call.keywords:
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return function.replace("_", "-")


def _command_call(node: ast.AST, receiver: str) -> ast.Call | None:
    """``receiver.command(...)`` as a call node, else None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "command"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == receiver
    ):
        return node
    return None


def _registered(
    nodes: list[ast.AST], receiver: str, functions: dict[str, ast.FunctionDef]
) -> dict[str, Command]:
    """Commands that ``receiver.command(...)`` adds in ``nodes``: as a decorator of one of
    ``functions`` or called on one, ``receiver.command("x")(function)``."""
    found: dict[str, Command] = {}
    for function in functions.values():
        for decorator in function.decorator_list:
            call = _command_call(decorator, receiver)
            if call is not None and function in nodes:
                name = _command_name(call, function.name)
                found[name] = Command(name, _options(function))
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Name):
            call = _command_call(node.func, receiver)
            target = functions.get(node.args[0].id)
            if call is not None and target is not None:
                name = _command_name(call, target.name)
                found[name] = Command(name, _options(target))
    return found


def _typer_commands(module: str) -> dict[str, Command]:
    """Commands a ``tagstream.commands`` module puts on its own module-level ``app``."""
    return _registered(list(_tree(module).body), "app", _functions(module))


def _registrar_commands(module: str, function: str) -> dict[str, Command]:
    """Commands ``module.function(app)`` adds to the sub-app it is given."""
    registrar = _functions(module)[function]
    receiver = registrar.args.args[0].arg
    return _registered(list(registrar.body), receiver, _functions(module))


def _attribute(node: ast.AST, aliases: dict[str, str]) -> tuple[str, str] | None:
    """``alias.name`` -> (module, name) for an imported ``tagstream.commands`` module."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        module = aliases.get(node.value.id)
        if module is not None:
            return module, node.attr
    return None


@cache
def cli_tree() -> dict[str, dict[str, Command] | Command]:
    """What ``tagstream`` offers, read from tagstream/cli.py: each sub-app's commands, and
    each single command, with their options."""
    tree = _parse(ROOT / "tagstream" / "cli.py")
    aliases = {
        alias.asname or alias.name: f"tagstream.commands.{alias.name}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "tagstream.commands"
        for alias in node.names
    }
    groups: dict[tuple[str, str], str] = {}
    result: dict[str, dict[str, Command] | Command] = {}
    calls = [
        n.value for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
    ]
    for call in calls:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "add_typer":
            sub = _attribute(call.args[0], aliases)
            names = [
                str(k.value.value)
                for k in call.keywords
                if k.arg == "name" and isinstance(k.value, ast.Constant)
            ]
            assert sub is not None and len(names) == 1, ast.unparse(call)
            name = names[0]
            groups[sub] = name
            result[name] = _typer_commands(sub[0])
    for call in calls:
        target = _attribute(call.func, aliases)
        given = _attribute(call.args[0], aliases) if call.args else None
        if target is not None and given in groups:
            group = result[groups[given]]
            assert isinstance(group, dict)
            group |= _registrar_commands(*target)
        if isinstance(call.func, ast.Call) and _command_call(call.func, "app") and call.args:
            function = _attribute(call.args[0], aliases)
            assert function is not None, ast.unparse(call)
            name = _command_name(call.func, function[1])
            result[name] = Command(name, _options(_functions(function[0])[function[1]]))
    return result


def cli_command(argv: list[str]) -> str | None:
    """Why ``tagstream <argv>`` would not resolve to a command with those options, or None."""
    first, *rest = argv
    entry = cli_tree().get(first)
    if entry is None:
        return f"`tagstream {first}` does not exist: {sorted(cli_tree())}"
    if isinstance(entry, dict):
        wanted = rest[0] if rest else ""
        if wanted not in entry:
            return f"`tagstream {first} {wanted}` does not exist: {sorted(entry)}"
        command, rest = entry[wanted], rest[1:]
    else:
        command = entry
    unknown = [
        option.split("=")[0]
        for option in rest
        if option.startswith("-") and option.split("=")[0] not in command.options | {"--help"}
    ]
    if unknown:
        return f"`tagstream {' '.join(argv)}`: unknown options {unknown}"
    return None


def health_routes() -> set[str]:
    """The paths common/health.py serves (string constants that look like routes)."""
    tree = _parse(ROOT / "common" / "health.py")
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"/[a-z]+", node.value)
    }


def worker_metric_names() -> set[str]:
    """Exposed sample names of the worker's metrics (``_total``, ``_bucket`` ... included)."""
    from worker.metrics import Metrics  # noqa: PLC0415 - prometheus-client only, no torch

    return registry_metric_names(Metrics().registry)


def monitor_metric_names() -> set[str]:
    """Exposed sample names of the live-quality monitor's metrics."""
    from monitor.service import MonitorMetrics  # noqa: PLC0415

    return registry_metric_names(MonitorMetrics().registry)


def registry_metric_names(registry: Any) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names |= {sample.name for sample in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
    return names


def trainer_metric_names() -> set[str]:
    """Metric names the trainer declares (read from its source: importing it loads torch)."""
    names: set[str] = set()
    for path in (ROOT / "trainer").glob("*.py"):
        for node in ast.walk(_parse(path)):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"tagstream_trainer_[a-z_]+", node.value)
            ):
                base = node.value.removesuffix("_total")
                names |= {base, base + "_total"} | {base + s for s in ("_bucket", "_sum", "_count")}
    return names


PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "irate", "increase",
    "deriv", "histogram_quantile", "count_values", "label_replace", "vector", "on", "and",
    "or", "unless", "le", "offset", "bool", "group_left", "group_right", "ignoring",
}  # fmt: skip


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside strings, label matchers,
    groupings and ranges that are not functions (followed by ``(``) or keywords."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue
        variable = match.start() > 0 and text[match.start() - 1] == "$"
        if match.group() not in PROMQL_WORDS and not variable:
            names.add(match.group())
    return names


# -- what a container of each deployment sees ----------------------------------------------


def compose() -> dict[str, Any]:
    document = yaml_document(COMPOSE)
    assert isinstance(document, dict)
    return document


def compose_service(name: str) -> dict[str, Any]:
    """A compose service with ``extends`` (within the file) applied to its environment."""
    services = compose()["services"]
    service = dict(services[name])
    parent = service.get("extends", {}).get("service")
    if parent is not None:
        base = compose_service(parent)
        service = base | service
        service["environment"] = _environment(base) | _environment(service)
    return service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def compose_env(name: str) -> dict[str, str]:
    """The environment of a compose service's container: image ENV, then ``environment``."""
    service = compose_service(name)
    target = (service.get("build") or {}).get("target", "cpu")
    target = re.sub(r"\$\{[A-Z_]+:-([a-z]+)\}", r"\1", target)
    return image_env(target) | _environment(service)


def k8s_env(container: dict[str, Any], target: str = "cpu") -> dict[str, str]:
    """A container's environment: image ENV, then envFrom (ConfigMaps, Secrets), then env.

    ``valueFrom`` entries that Kubernetes fills at run time (pod name, ...) become a stand-in.
    """
    env = image_env(target)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= k8s_object("ConfigMap", source["configMapRef"]["name"])["data"]
        if "secretRef" in source:
            secret = k8s_object("Secret", source["secretRef"]["name"])
            env |= secret.get("stringData", {})
    for entry in container.get("env", []):
        env[entry["name"]] = entry["value"] if "value" in entry else _value_from(entry["valueFrom"])
    return {name: str(value) for name, value in env.items()}


def _value_from(source: dict[str, Any]) -> str:
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return str(k8s_object("ConfigMap", ref["name"])["data"][ref["key"]])
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return str(k8s_object("Secret", ref["name"])["stringData"][ref["key"]])
    return "from-the-downward-api"


def pod_spec(deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def container(deployment: str, name: str) -> dict[str, Any]:
    (found,) = [c for c in containers(pod_spec(deployment)) if c["name"] == name]
    return found


def tagstream_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("TAGSTREAM_")}
