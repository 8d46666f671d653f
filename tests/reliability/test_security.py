"""Scenario 7: Kafka over SASL/SCRAM-SHA-512 and Redis with a password.

The worker and the trainer get every credential from the environment, reach the broker's
SASL listener and a redis-server started with ``--requirepass``, and do their whole job:
the worker loads its model from the registry and predicts, the trainer stores labelled
articles and runs a training cycle under its Redis lock. The registry signing key is set on
both: the worker loads only signed versions, and what the trainer publishes is signed.
Clients without credentials, or with wrong ones, are refused; a worker without them says why
and publishes nothing. No secret (the signing key included) appears in any log line or
metric of either service.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from common.errors import StackError
from common.ports import free_port
from common.settings import KafkaSettings, RedisSettings
from messaging import MessagingError
from messaging.admin import admin as admin_client
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import synthetic_articles, toy_artifact
from tagstream import feed
from tests.conftest import Stack
from tests.registry.support import RedisServer
from tests.reliability.support import (
    metrics_port,
    private_stack,
    record,
    scrape,
    stored_ids,
    trainer_env,
)
from tests.worker.harness import LABELS, articles, env_for, expected_ids
from tests.worker.kafka_tools import TopicReader, WorkerProcess, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Secured:
    """Where the authenticated servers listen, and the credentials."""

    sasl_bootstrap: str
    sasl_user: str
    sasl_password: str
    redis_url: str
    redis_password: str
    signing_key: str = field(default_factory=lambda: secrets.token_hex(32))

    def kafka(self, **changes: str) -> KafkaSettings:
        values = {
            "bootstrap": self.sasl_bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": self.sasl_user,
            "sasl_password": self.sasl_password,
        }
        return KafkaSettings(**(values | changes))

    def env(self) -> dict[str, str]:
        return {
            "TAGSTREAM_KAFKA_BOOTSTRAP": self.sasl_bootstrap,
            "TAGSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "TAGSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TAGSTREAM_KAFKA_SASL_USERNAME": self.sasl_user,
            "TAGSTREAM_KAFKA_SASL_PASSWORD": self.sasl_password,
            "TAGSTREAM_REDIS_URL": self.redis_url,
            "TAGSTREAM_REDIS_PASSWORD": self.redis_password,
            "TAGSTREAM_REGISTRY_SIGNING_KEY": self.signing_key,
        }

    def registry(self) -> RegistrySettings:
        return RegistrySettings(signing_key=SecretStr(self.signing_key))

    @property
    def secrets(self) -> list[str]:
        return [self.sasl_password, self.redis_password, self.signing_key]


@pytest.fixture
def secured(stack: Stack, tmp_path: Path) -> Iterator[Secured]:
    """The session broker's SASL listener (or a private stack's, when the session uses
    servers from the environment) and a redis-server that requires a password."""
    password = secrets.token_urlsafe(18)
    server = RedisServer(tmp_path / "redis-auth", "--requirepass", password).start()
    try:
        if stack.local is not None and (state := stack.local.status()) is not None:
            user, sasl_password = stack.local.sasl_credentials()
            yield Secured(state.kafka_sasl_bootstrap, user, sasl_password, server.url, password)
        else:
            with private_stack(tmp_path / "stack") as (local, state):
                user, sasl_password = local.sasl_credentials()
                yield Secured(state.kafka_sasl_bootstrap, user, sasl_password, server.url, password)
    finally:
        server.stop()


def test_services_connect_with_credentials_others_are_refused_and_no_secret_leaks(
    secured: Secured,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    topic_factory: Callable[..., str],
    group_id: str,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    t = topics(2)
    labelled = topic_factory(1, "labelled")
    redis_settings = RedisSettings(
        url=secured.redis_url, password=SecretStr(secured.redis_password), namespace="secure"
    )
    with Registry.from_settings(redis_settings, secured.registry()) as registry:
        artifact = toy_artifact(LABELS)
        registry.promote(registry.publish(artifact.to_bytes(), artifact.manifest))

    env = env_for(service_env, t, group_id, log_level="DEBUG") | secured.env()
    env["TAGSTREAM_REDIS_NAMESPACE"] = "secure"
    worker = processes(env, "worker")
    trainer_port = free_port()
    trainer = processes(
        trainer_env(
            env,
            tmp_path,
            300,
            topic=labelled,
            group_id=f"trainer-{labelled}",
            retrain_min_examples="150",
            metrics_port=str(trainer_port),
            log_level="DEBUG",
        ),
        "trainer",
        [sys.executable, "-m", "tagstream", "trainer", "serve"],
    )
    kafka = secured.kafka()
    produce(kafka, t["input"], articles(500))
    labelled_articles = synthetic_articles(LABELS, 150, seed=9, prefix="secure")
    feed.produce(kafka, labelled, labelled_articles)
    predictions = reader(t["output"], kafka)
    wait_until(lambda: len(predictions.ids()) == 500, 120, "500 predictions over SASL")
    cycle = _cycle_outcome(trainer)

    if cycle["promoted"]:  # the trainer published over the password: the worker swaps to it
        worker.wait_for(
            "model installed", 60, lambda line: line["model_version"] == cycle["version"]
        )
        with Registry.from_settings(redis_settings, secured.registry()) as registry:
            assert registry.manifest(cycle["version"]).signature is not None
    stored = len(stored_ids(tmp_path / "store.db"))
    refusals = _refusals(secured)
    unauthorised = _worker_without_credentials(env, processes, tmp_path / "empty-cache")
    exposed = [
        worker.log_path.read_text(errors="replace"),
        trainer.log_path.read_text(errors="replace"),
        scrape(metrics_port(worker)),
        scrape(trainer_port),
        *(p.log_path.read_text(errors="replace") for p in unauthorised),
    ]
    worker.signal(15)
    trainer.signal(15)
    assert worker.wait() == 0
    assert trainer.wait(120) == 0
    assert predictions.ids() == expected_ids(500)
    assert stored == len(labelled_articles)
    leaks = [s for s in secured.secrets for text in exposed if s in text]
    record(
        "7-security",
        produced=500,
        predicted=len(predictions.ids()),
        missing=0,
        duplicated=0,
        dead_lettered=0,
        labelled_produced=len(labelled_articles),
        labelled_stored=stored,
        trainer_cycle={k: cycle[k] for k in ("promoted", "reason", "version")},
        refused=refusals,
        texts_grepped=len(exposed),
        characters_grepped=sum(len(text) for text in exposed),
        secrets_found=len(leaks),
    )
    assert leaks == [], "a secret appears in a log line or a metric"
    assert all(refusals.values()), refusals


def _cycle_outcome(trainer: WorkerProcess) -> dict[str, Any]:
    """The trainer's first finished cycle: it took the lock and read the registry."""
    ended: list[dict[str, Any]] = []

    def finished() -> bool:
        ended[:] = trainer.events("cycle") + trainer.events("cycle failed")
        return bool(ended)

    wait_until(finished, 240, "a training cycle to end")
    assert ended[0]["event"] == "cycle", ended[0]
    return ended[0]


def _refusals(secured: Secured) -> dict[str, bool]:
    """Whether each client without the right credentials was refused."""
    return {
        "kafka without SASL": _kafka_refused(
            KafkaSettings(bootstrap=secured.sasl_bootstrap, client_id="no-credentials")
        ),
        "kafka with a wrong password": _kafka_refused(secured.kafka(sasl_password="wrong")),
        "redis without password": _redis_refused(secured.redis_url, None),
        "redis with a wrong password": _redis_refused(secured.redis_url, "wrong"),
    }


def _kafka_refused(settings: KafkaSettings) -> bool:
    try:
        with admin_client(settings, timeout_s=5.0) as admin:
            admin.list_topics()
    except (StackError, MessagingError):
        return True
    return False


def _redis_refused(url: str, password: str | None) -> bool:
    client = redis.Redis.from_url(url, password=password, socket_timeout=5)
    try:
        client.ping()
    except redis.AuthenticationError:
        return True
    except redis.ResponseError as exc:  # older servers answer NOAUTH / WRONGPASS this way
        return "NOAUTH" in str(exc) or "WRONGPASS" in str(exc)
    finally:
        client.close()
    return False


def _worker_without_credentials(
    env: dict[str, str], processes: Callable[..., WorkerProcess], cache_dir: Path
) -> list[WorkerProcess]:
    """A worker with no Kafka credentials exits with the reason; one with no Redis password
    waits, unready, saying why. Returns both (their logs are grepped too)."""
    no_kafka = {k: v for k, v in env.items() if not k.startswith("TAGSTREAM_KAFKA_SASL")}
    no_kafka |= {"TAGSTREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    no_redis = {k: v for k, v in env.items() if k != "TAGSTREAM_REDIS_PASSWORD"}
    no_redis |= {
        "TAGSTREAM_WORKER_GROUP_ID": "never-joins",
        # With the other workers' cache it would serve the model it finds there, as a
        # worker does while Redis is unreachable: it must not learn anything from Redis.
        "TAGSTREAM_REGISTRY_CACHE_DIR": str(cache_dir),
    }
    without_kafka = processes(no_kafka, "worker-without-kafka-credentials")
    without_redis = processes(no_redis, "worker-without-redis-password")
    assert without_kafka.wait(90) == 2
    assert "not reachable" in without_kafka.log_path.read_text()
    waiting = without_redis.wait_for("no model to serve yet; retrying", 90)
    assert "Authentication" in waiting["error"] or "NOAUTH" in waiting["error"], waiting
    without_redis.signal(15)
    without_redis.wait(30)
    return [without_kafka, without_redis]
