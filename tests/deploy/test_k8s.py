"""The Kubernetes manifests: probes on the worker's own routes and port, a grace period
longer than the drain, KEDA bounded by the partitions, the trainer's store on a volume, and
Kafka SASL and Redis AUTH on by default with every credential from the Secret."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from common.errors import ConfigError
from messaging.config import client_config
from tests.deploy.support import (
    cli_command,
    container,
    containers,
    effective_user,
    health_routes,
    k8s_env,
    k8s_object,
    k8s_objects,
    load_settings,
    pod_spec,
    settings_class,
    tagstream_env,
    topic_partitions,
)

WORKER = "tagstream-worker"
TRAINER = "tagstream-trainer"


def settings(module: str, name: str, deployment: str, container_name: str, mp: Any) -> Any:
    env = tagstream_env(k8s_env(container(deployment, container_name)))
    return load_settings(settings_class(module, name), env, mp)


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Any:
    return settings("worker.settings", "WorkerSettings", WORKER, "worker", monkeypatch)


@pytest.fixture
def trainer(monkeypatch: pytest.MonkeyPatch) -> Any:
    return settings("trainer.settings", "TrainerSettings", TRAINER, "trainer", monkeypatch)


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> Any:
    return settings("common.settings", "KafkaSettings", WORKER, "worker", monkeypatch)


def port_number(port: str | int, spec: dict[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port]
    return int(found)


def partitions() -> dict[str, int]:
    return topic_partitions(k8s_object("ConfigMap", "tagstream-topics")["data"]["TOPICS"])


def test_worker_probes_hit_healthz_and_readyz_on_the_metrics_port(worker: Any) -> None:
    spec = container(WORKER, "worker")
    routes = health_routes()
    assert {"/healthz", "/readyz", "/metrics"} <= routes
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = spec[probe]["httpGet"]
        assert get["path"] in routes
        assert port_number(get["port"], spec) == worker.metrics_port, probe
    assert worker.metrics_host == "0.0.0.0", "probes from the kubelet need a non-loopback bind"


def test_the_worker_pod_advertises_its_metrics_port_for_scraping(worker: Any) -> None:
    annotations = k8s_object("Deployment", WORKER)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(worker.metrics_port)
    assert annotations["prometheus.io/path"] in health_routes()
    spec = container(WORKER, "worker")
    assert port_number("metrics", spec) == worker.metrics_port


def test_the_worker_grace_period_outlasts_the_drain_deadline(worker: Any) -> None:
    grace = pod_spec(WORKER)["terminationGracePeriodSeconds"]
    assert grace > worker.drain_timeout_s + 10


def test_keda_scales_workers_on_lag_never_past_the_input_partitions(
    worker: Any, kafka: Any
) -> None:
    scaled = k8s_object("ScaledObject", WORKER)["spec"]
    assert scaled["scaleTargetRef"]["name"] == WORKER
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["topic"] == worker.input_topic
    assert meta["consumerGroup"] == worker.group_id
    assert meta["bootstrapServers"] == kafka.bootstrap
    assert meta["offsetResetPolicy"] == worker.auto_offset_reset
    assert meta.get("allowIdleConsumers", "false") == "false"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["maxReplicaCount"] <= partitions()[worker.input_topic]


def test_keda_owns_the_worker_replica_count() -> None:
    """A `replicas` in the Deployment would reset KEDA's choice on every apply."""
    assert "replicas" not in k8s_object("Deployment", WORKER)["spec"]


def test_the_worker_rollout_never_adds_a_pod_beyond_the_current_count() -> None:
    """A surge pod past the partition count never gets ready and stalls the rollout."""
    rolling = k8s_object("Deployment", WORKER)["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxSurge"] == 0 and rolling["maxUnavailable"] >= 1


def test_the_topic_job_creates_every_topic_the_services_use(worker: Any, trainer: Any) -> None:
    wanted = {worker.input_topic, worker.output_topic, worker.dlq_topic, trainer.topic}
    assert wanted <= set(partitions())
    job = k8s_object("Job", "tagstream-topics")["spec"]["template"]["spec"]
    (create,) = job["containers"]
    assert create["image"].startswith("apache/kafka:4.")
    assert {"configMapRef": {"name": "tagstream-topics"}} in create["envFrom"]


def test_the_topic_job_replicates_to_survive_one_broker_and_sets_min_insync() -> None:
    data = k8s_object("ConfigMap", "tagstream-topics")["data"]
    replicas, in_sync = int(data["REPLICATION_FACTOR"]), int(data["MIN_INSYNC_REPLICAS"])
    assert replicas >= 3 and in_sync == replicas - 1
    job = k8s_object("Job", "tagstream-topics")["spec"]["template"]["spec"]
    script = " ".join(job["containers"][0]["args"])
    assert '--config min.insync.replicas="$MIN_INSYNC_REPLICAS"' in script


def test_the_monitor_runs_once_with_probes_and_scraping_on_its_metrics_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor = settings(
        "monitor.settings", "MonitorSettings", "tagstream-monitor", "monitor", monkeypatch
    )
    deployment = k8s_object("Deployment", "tagstream-monitor")
    assert deployment["spec"]["replicas"] == 1  # its figures are per process
    spec = container("tagstream-monitor", "monitor")
    assert monitor.metrics_host == "0.0.0.0"
    assert port_number(spec["livenessProbe"]["httpGet"]["port"], spec) == monitor.metrics_port
    assert spec["livenessProbe"]["httpGet"]["path"] in health_routes()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(monitor.metrics_port)


def test_the_trainer_store_lives_on_its_persistent_volume_claim(trainer: Any) -> None:
    deployment = k8s_object("Deployment", TRAINER)["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in pod_spec(TRAINER)["volumes"]}
    store = PurePosixPath(str(trainer.store_path))
    for name in ("trainer", "first-model"):
        mounts = container(TRAINER, name)["volumeMounts"]
        (mount,) = [m for m in mounts if PurePosixPath(m["mountPath"]) in store.parents]
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        k8s_object("PersistentVolumeClaim", claim)


def test_the_trainer_pod_exposes_its_metrics_port(trainer: Any) -> None:
    spec = container(TRAINER, "trainer")
    assert port_number("metrics", spec) == trainer.metrics_port
    annotations = k8s_object("Deployment", TRAINER)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(trainer.metrics_port)


def test_trainer_probes_hit_healthz_on_the_metrics_port(trainer: Any) -> None:
    spec = container(TRAINER, "trainer")
    for probe in ("livenessProbe", "startupProbe"):
        get = spec[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["path"] in health_routes()
        assert port_number(get["port"], spec) == trainer.metrics_port, probe
    assert trainer.metrics_host == "0.0.0.0", "probes from the kubelet need a non-loopback bind"


def test_pods_run_as_the_images_non_root_user() -> None:
    uid, _, gid = effective_user("cpu").partition(":")
    for deployment in (WORKER, TRAINER):
        security = pod_spec(deployment)["securityContext"]
        assert security["runAsNonRoot"] is True
        assert str(security["runAsUser"]) == uid and str(security["fsGroup"]) == gid
        for c in containers(pod_spec(deployment)):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_every_pod_that_must_not_run_as_root_names_a_numeric_user() -> None:
    """The kubelet refuses runAsNonRoot with a named image user (apache/kafka's `appuser`)."""
    for o in k8s_objects():
        template = o.get("spec", {}).get("template", {}).get("spec")
        if not template:
            continue
        pod = template.get("securityContext", {})
        for c in containers(template):
            security = pod | c.get("securityContext", {})
            if security.get("runAsNonRoot"):
                assert int(security["runAsUser"]) > 0, (o["metadata"]["name"], c["name"])


def test_every_tagstream_command_in_the_manifests_exists() -> None:
    seen = 0
    for o in k8s_objects():
        template = o.get("spec", {}).get("template", {}).get("spec")
        for c in containers(template) if template else []:
            if not c["image"].startswith("tagstream"):
                continue
            seen += 1
            if "command" in c:
                assert c["command"] == ["tagstream-ensure-model"], c["name"]
                continue
            assert cli_command(c["args"]) is None, cli_command(c["args"])
    assert seen >= 3


SECRET = "tagstream-secrets"
CREDENTIALS = (
    "TAGSTREAM_REDIS_PASSWORD",
    "TAGSTREAM_KAFKA_SASL_USERNAME",
    "TAGSTREAM_KAFKA_SASL_PASSWORD",
    "TAGSTREAM_REGISTRY_SIGNING_KEY",
)
TAGSTREAM_CONTAINERS = [
    (WORKER, "worker"),
    (TRAINER, "trainer"),
    (TRAINER, "first-model"),
    ("tagstream-monitor", "monitor"),
]


def from_secret(spec: dict[str, Any], name: str) -> bool:
    """Whether the container's ``name`` comes from tagstream-secrets, and nothing overrides it."""
    if any(e["name"] == name for e in spec.get("env", [])):
        return False
    secrets = [s["secretRef"]["name"] for s in spec.get("envFrom", []) if "secretRef" in s]
    maps = [s["configMapRef"]["name"] for s in spec.get("envFrom", []) if "configMapRef" in s]
    in_maps = any(name in k8s_object("ConfigMap", m)["data"] for m in maps)
    return SECRET in secrets and name in k8s_object("Secret", SECRET)["stringData"] and not in_maps


@pytest.mark.parametrize(("deployment", "name"), TAGSTREAM_CONTAINERS)
def test_the_defaults_turn_on_kafka_sasl_and_redis_auth_with_credentials_from_the_secret(
    deployment: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = container(deployment, name)
    kafka = load_settings(
        settings_class("common.settings", "KafkaSettings"),
        tagstream_env(k8s_env(spec)),
        monkeypatch,
    )
    assert kafka.security_protocol == "SASL_SSL" and kafka.sasl_mechanism.startswith("SCRAM")
    for variable in CREDENTIALS:
        assert from_secret(spec, variable), (name, variable)


def test_the_secret_left_at_its_placeholders_stops_a_service_at_start(kafka: Any) -> None:
    """SASL with the empty user and password of secret.yaml fails before any connection."""
    with pytest.raises(ConfigError, match="TAGSTREAM_KAFKA_SASL_USERNAME"):
        client_config(kafka)


KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
"""TAGSTREAM_KAFKA_SASL_MECHANISM in the words of KEDA's kafka scaler."""


def test_keda_reads_the_lag_with_the_workers_sasl_credentials(kafka: Any) -> None:
    (trigger,) = k8s_object("ScaledObject", WORKER)["spec"]["triggers"]
    meta = trigger["metadata"]
    assert meta["sasl"] == KEDA_SASL[kafka.sasl_mechanism]
    assert meta["tls"] == ("enable" if kafka.security_protocol == "SASL_SSL" else "disable")
    auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["secretTargetRef"]}
    assert refs == {
        "username": (SECRET, "TAGSTREAM_KAFKA_SASL_USERNAME"),
        "password": (SECRET, "TAGSTREAM_KAFKA_SASL_PASSWORD"),
    }


def test_the_topic_job_connects_with_the_same_sasl_settings() -> None:
    (create,) = k8s_object("Job", "tagstream-topics")["spec"]["template"]["spec"]["containers"]
    sources = {e["name"]: e["valueFrom"] for e in create["env"]}
    assert sources["SECURITY_PROTOCOL"]["configMapKeyRef"]["key"] == (
        "TAGSTREAM_KAFKA_SECURITY_PROTOCOL"
    )
    assert sources["SASL_MECHANISM"]["configMapKeyRef"]["key"] == "TAGSTREAM_KAFKA_SASL_MECHANISM"
    assert sources["SASL_USERNAME"]["secretKeyRef"] == {
        "name": SECRET,
        "key": "TAGSTREAM_KAFKA_SASL_USERNAME",
    }
    assert sources["SASL_PASSWORD"]["secretKeyRef"] == {
        "name": SECRET,
        "key": "TAGSTREAM_KAFKA_SASL_PASSWORD",
    }
    script = create["args"][0]
    assert script.count("--command-config /tmp/client.properties") == 2
    assert "security.protocol=$SECURITY_PROTOCOL" in script and "ScramLoginModule" in script
