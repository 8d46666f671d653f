"""compose.yaml runs Apache Kafka (KRaft), Redis, the trainer, scalable workers and
Prometheus, wired to the ports, topics and commands the code uses."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy.support import (
    COMPOSE,
    PROMETHEUS,
    cli_command,
    compose,
    compose_env,
    compose_service,
    duration_s,
    health_routes,
    load_settings,
    settings_class,
    tagstream_env,
    topic_partitions,
    yaml_document,
)

TAGSTREAM_SERVICES = ("first-model", "trainer", "worker", "gpu-worker", "produce", "monitor")
BROKERS = ("kafka-1", "kafka-2", "kafka-3")


def worker_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    cls = settings_class("worker.settings", "WorkerSettings")
    return load_settings(cls, tagstream_env(compose_env(service)), monkeypatch)


def trainer_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    cls = settings_class("trainer.settings", "TrainerSettings")
    return load_settings(cls, tagstream_env(compose_env(service)), monkeypatch)


def test_kafka_is_three_official_apache_4x_nodes_in_one_kraft_quorum() -> None:
    voters = set()
    ids = set()
    for broker in BROKERS:
        kafka = compose_service(broker)
        image, _, tag = kafka["image"].partition(":")
        assert image == "apache/kafka" and tag.split(".")[0] == "4"
        env = kafka["environment"]
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert "ZOOKEEPER" not in " ".join(env)
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        ids.add(int(env["KAFKA_NODE_ID"]))
    (quorum,) = voters  # every node names the same quorum...
    assert {int(v.split("@")[0]) for v in quorum.split(",")} == ids == {1, 2, 3}  # ...of all


def test_replication_survives_one_node_and_the_topics_step_matches_the_cluster() -> None:
    for broker in BROKERS:
        env = compose_service(broker)["environment"]
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2
    topics = compose_service("topics")
    assert int(topics["environment"]["REPLICATION_FACTOR"]) == 3
    assert int(topics["environment"]["MIN_INSYNC_REPLICAS"]) == 2
    script = " ".join(topics["command"])
    assert '--replication-factor "$$REPLICATION_FACTOR"' in script
    assert '--config min.insync.replicas="$$MIN_INSYNC_REPLICAS"' in script


def test_the_services_reach_every_kafka_node_on_an_advertised_listener() -> None:
    addresses = set()
    for broker in BROKERS:
        advertised = compose_service(broker)["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        addresses |= {listener.split("://")[1] for listener in advertised.split(",")}
    for service in TAGSTREAM_SERVICES:
        bootstrap = compose_env(service)["TAGSTREAM_KAFKA_BOOTSTRAP"].split(",")
        assert set(bootstrap) <= addresses and len(bootstrap) == 3, service
        assert compose_env(service)["TAGSTREAM_REDIS_URL"].startswith("redis://redis:")
        for broker in BROKERS:
            condition = compose_service(service).get("depends_on", {}).get(broker, {})
            assert condition.get("condition") == "service_healthy", (service, broker)


def test_workers_scale_with_scale_worker_n() -> None:
    """No fixed container name and no host port: N copies can run side by side."""
    for service in ("worker", "gpu-worker"):
        worker = compose_service(service)
        assert "container_name" not in worker
        assert "ports" not in worker
        assert "build" in worker and worker["image"]


def test_the_topics_step_creates_every_topic_the_services_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka here does not create topics on first use, so the init step must."""
    topics = compose_service("topics")
    for broker in BROKERS:
        assert compose_service(broker)["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    created = topic_partitions(topics["environment"]["TOPICS"])
    worker = worker_settings("worker", monkeypatch)
    trainer = trainer_settings("trainer", monkeypatch)
    wanted = {worker.input_topic, worker.output_topic, worker.dlq_topic, trainer.topic}
    assert wanted <= set(created)
    assert created[worker.input_topic] >= 2
    for service in ("first-model", "trainer", "worker", "produce"):
        depends = compose_service(service)["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully", service


def test_the_worker_stop_grace_period_outlasts_its_drain_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for service in ("worker", "gpu-worker"):
        settings = worker_settings(service, monkeypatch)
        grace = duration_s(compose_service(service)["stop_grace_period"])
        assert grace > settings.drain_timeout_s + 5, service
        assert compose_service(service).get("stop_signal", "SIGTERM") == "SIGTERM"


def test_the_worker_healthcheck_and_prometheus_use_the_workers_port_and_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = worker_settings("worker", monkeypatch)
    port = settings.metrics_port
    assert settings.metrics_host == "0.0.0.0"
    worker = compose_service("worker")
    assert str(port) in [str(p) for p in worker["expose"]]
    check = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in check and "/healthz" in health_routes()
    scrape = yaml_document(PROMETHEUS / "prometheus.yml")["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    for job, service in (("tagstream-worker", "worker"), ("tagstream-gpu-worker", "gpu-worker")):
        (sd,) = jobs[job]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["port"] == port
        assert jobs[job]["metrics_path"] in health_routes()


def test_prometheus_scrapes_the_trainer_on_its_metrics_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = trainer_settings("trainer", monkeypatch).metrics_port
    assert str(port) in [str(p) for p in compose_service("trainer")["expose"]]
    check = " ".join(compose_service("trainer")["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in check and "/healthz" in health_routes()
    scrape = yaml_document(PROMETHEUS / "prometheus.yml")["scrape_configs"]
    (trainer,) = [job for job in scrape if job["job_name"] == "tagstream-trainer"]
    assert trainer["static_configs"][0]["targets"] == [f"trainer:{port}"]


def test_kafka_redis_and_the_training_store_keep_their_data_in_volumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    volumes = set(compose()["volumes"])

    def mounts(service: str) -> dict[str, str]:
        pairs = (v.split(":")[:2] for v in compose_service(service)["volumes"])
        return {target: source for source, target in pairs}

    data = set()
    for broker in BROKERS:
        kafka_dir = compose_service(broker)["environment"]["KAFKA_LOG_DIRS"]
        assert mounts(broker)[kafka_dir] in volumes
        data.add(mounts(broker)[kafka_dir])
    assert len(data) == 3  # a volume each
    assert mounts("redis")["/data"] in volumes
    assert "--appendonly" in compose_service("redis")["command"]
    for service in ("trainer", "first-model"):
        store = PurePosixPath(str(trainer_settings(service, monkeypatch).store_path))
        mounted = [t for t in mounts(service) if PurePosixPath(t) in store.parents]
        assert mounted and mounts(service)[mounted[0]] == "training-store", service


def test_every_tagstream_command_in_compose_exists_with_its_options() -> None:
    for service in TAGSTREAM_SERVICES:
        spec = compose_service(service)
        if spec.get("entrypoint"):
            assert spec["entrypoint"] == ["tagstream-ensure-model"], service
            continue
        problem = cli_command([str(word) for word in spec["command"]])
        assert problem is None, f"{service}: {problem}"


def test_the_compose_file_sits_where_its_relative_paths_point() -> None:
    assert compose_service("worker")["build"]["context"] == ".."
    assert (COMPOSE.parent / ".." / compose_service("worker")["build"]["dockerfile"]).is_file()
    for service in ("prometheus", "grafana"):
        for volume in compose_service(service)["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (COMPOSE.parent / source).exists(), source
