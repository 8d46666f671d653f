"""Every TAGSTREAM_* variable the deployment files set exists in a settings class, the
values load, and passwords only ever come from Secrets."""

from __future__ import annotations

import pytest

from tests.deploy.support import (
    DEPLOY,
    DOCKERFILE,
    DOCS,
    VARIABLE,
    compose,
    compose_env,
    container,
    containers,
    deploy_files,
    image_env,
    k8s_env,
    k8s_objects,
    load_settings,
    settings_class,
    settings_variables,
    tagstream_env,
    unknown_variables,
)


def mentioned_variables() -> dict[str, set[str]]:
    """TAGSTREAM_* tokens per file: the Dockerfile, compose, k8s, scripts and docs/deploy.md."""
    paths = [*deploy_files(".yaml", ".yml", ".json", ".sh"), DOCKERFILE, DOCS]
    return {
        str(path.relative_to(DEPLOY.parent)): set(VARIABLE.findall(path.read_text("utf-8")))
        for path in set(paths)
    }


def test_the_settings_classes_of_every_service_are_found() -> None:
    prefixes = {name.split("_")[1] for name in settings_variables()}
    assert {"KAFKA", "REDIS", "STACK", "REGISTRY", "WORKER", "TRAINER", "MONITOR"} <= prefixes


def test_an_unknown_variable_or_prefix_is_reported() -> None:
    """The check below is not vacuous: a typo or an invented prefix is caught."""
    assert unknown_variables({"TAGSTREAM_WORKER_MAX_BATCH_SIZES", "TAGSTREAM_GPU_"}) == {
        "TAGSTREAM_WORKER_MAX_BATCH_SIZES",
        "TAGSTREAM_GPU_",
    }
    assert unknown_variables({"TAGSTREAM_WORKER_MAX_BATCH_SIZE", "TAGSTREAM_WORKER_"}) == set()


def test_every_tagstream_variable_in_the_deployment_files_exists_in_the_settings() -> None:
    mentioned = mentioned_variables()
    assert sum(len(names) for names in mentioned.values()) > 30
    unknown = {path: sorted(unknown_variables(names)) for path, names in mentioned.items()}
    assert {path: names for path, names in unknown.items() if names} == {}


def secret_variables() -> set[str]:
    return {name for name, variable in settings_variables().items() if variable.secret}


def test_passwords_are_set_only_in_secrets() -> None:
    secrets = secret_variables()
    assert {
        "TAGSTREAM_REDIS_PASSWORD",
        "TAGSTREAM_KAFKA_SASL_PASSWORD",
        "TAGSTREAM_REGISTRY_SIGNING_KEY",
    } <= secrets
    for o in k8s_objects():
        if o["kind"] == "ConfigMap":
            assert not secrets & set(o["data"]), o["metadata"]["name"]
        template = o.get("spec", {}).get("template", {}).get("spec")
        for c in containers(template) if template else []:
            literal = {e["name"] for e in c.get("env", []) if "value" in e}
            assert not secrets & literal, c["name"]
    for name in compose()["services"]:
        assert not secrets & set(compose_env(name)), f"compose service {name}"
    assert not secrets & set(image_env("cpu")) and not secrets & set(image_env("cuda"))


def test_the_kubernetes_secret_holds_the_credentials_and_nothing_else() -> None:
    """Every secret setting, and the SASL user name beside its password; no other setting."""
    (secret,) = [o for o in k8s_objects() if o["kind"] == "Secret"]
    credentials = {
        "TAGSTREAM_REDIS_PASSWORD",
        "TAGSTREAM_KAFKA_SASL_USERNAME",
        "TAGSTREAM_KAFKA_SASL_PASSWORD",
        "TAGSTREAM_REGISTRY_SIGNING_KEY",
    }
    assert set(secret["stringData"]) == credentials
    assert set(secret["stringData"]) - {"TAGSTREAM_KAFKA_SASL_USERNAME"} == secret_variables()


def gpu_worker_env() -> dict[str, str]:
    """The worker of the gpu overlay: the base container with the patch's env merged in."""
    (patch,) = [
        o for o in k8s_objects(patches=True) if o not in k8s_objects() and o["kind"] == "Deployment"
    ]
    (patched,) = patch["spec"]["template"]["spec"]["containers"]
    base = container("tagstream-worker", "worker")
    merged = {e["name"]: e for e in base.get("env", []) + patched.get("env", [])}
    return k8s_env(base | {"env": list(merged.values())}, target="cuda")


SERVICES = {
    "worker": [("worker.settings", "WorkerSettings")],
    "trainer": [("trainer.settings", "TrainerSettings")],
}
CONNECTIONS = [
    ("common.settings", "KafkaSettings"),
    ("common.settings", "RedisSettings"),
    ("model.settings", "RegistrySettings"),
]


@pytest.mark.parametrize(
    ("where", "env_of", "service"),
    [
        ("compose worker", lambda: compose_env("worker"), "worker"),
        ("compose gpu-worker", lambda: compose_env("gpu-worker"), "worker"),
        ("compose trainer", lambda: compose_env("trainer"), "trainer"),
        ("compose first-model", lambda: compose_env("first-model"), "trainer"),
        ("k8s worker", lambda: k8s_env(container("tagstream-worker", "worker")), "worker"),
        ("k8s gpu worker", gpu_worker_env, "worker"),
        ("k8s trainer", lambda: k8s_env(container("tagstream-trainer", "trainer")), "trainer"),
        (
            "k8s first-model",
            lambda: k8s_env(container("tagstream-trainer", "first-model")),
            "trainer",
        ),
    ],
)
def test_each_service_loads_its_settings_from_what_the_files_give_it(
    where: str, env_of: object, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Types, choices and cross-field rules hold: the service would start, not exit on config."""
    assert callable(env_of)
    env = tagstream_env(env_of())
    for module, name in SERVICES[service] + CONNECTIONS:
        load_settings(settings_class(module, name), env, monkeypatch)
