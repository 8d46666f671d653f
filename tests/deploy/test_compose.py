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

TAGSTREAM_SERVICES = ("first-model", "trainer", "worker", "gpu-worker", "produce")


def worker_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    cls = settings_class("worker.settings", "WorkerSettings")
    return load_settings(cls, tagstream_env(compose_env(service)), monkeypatch)


def trainer_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    cls = settings_class("trainer.settings", "TrainerSettings")
    return load_settings(cls, tagstream_env(compose_env(service)), monkeypatch)


def test_kafka_is_the_official_apache_image_4x_in_kraft_mode() -> None:
    kafka = compose_service("kafka")
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and tag.split(".")[0] == "4"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)


def test_the_services_reach_kafka_on_an_advertised_listener() -> None:
    advertised = compose_service("kafka")["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    addresses = {listener.split("://")[1] for listener in advertised.split(",")}
    for service in TAGSTREAM_SERVICES:
        assert compose_env(service)["TAGSTREAM_KAFKA_BOOTSTRAP"] in addresses, service
        assert compose_env(service)["TAGSTREAM_REDIS_URL"].startswith("redis://redis:")


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
    assert compose_service("kafka")["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
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

    kafka_dir = compose_service("kafka")["environment"]["KAFKA_LOG_DIRS"]
    assert mounts("kafka")[kafka_dir] in volumes
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
