"""Hot swap from the registry: a transient failure is tried again, an integrity failure (a
wrong signature included) is refused only until the next promote, a promote during start-up
is seen, and a worker that serves another version than the alias's for too long says so."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
import torch
from pydantic import SecretStr

from common.settings import KafkaSettings, RedisSettings
from model.registry import Registry
from model.settings import RegistrySettings
from model.toy import toy_artifact
from tests.registry.support import RedisServer, poll_until
from worker import swap as swap_module
from worker.app import Worker, model_behind
from worker.inference import Model
from worker.metrics import Metrics
from worker.models import RegistryModels
from worker.settings import WorkerSettings
from worker.swap import ModelSlot, RetryPolicy, Swapper

pytestmark = pytest.mark.integration

LABELS = ("earn", "acq", "crude")
FAST_RETRY = RetryPolicy(attempts=10, initial_s=0.2, max_s=1.0)


class Serving:
    """A worker's model side without Kafka: registry models, a slot, a swapper, the watcher."""

    def __init__(
        self,
        redis_settings: RedisSettings,
        registry_settings: RegistrySettings,
        load: Callable[[RegistryModels], Callable[[int], Model]] | None = None,
        **worker: object,
    ) -> None:
        self.settings = WorkerSettings(device="cpu", **worker)  # type: ignore[arg-type]
        self.models = RegistryModels(self.settings, redis_settings, registry_settings)
        self.metrics = Metrics()
        self.slot = ModelSlot(self.metrics)
        self.swapper = Swapper(
            self.slot,
            load(self.models) if load else self.models.version,
            self.metrics,
            retry=FAST_RETRY,
            behind_after_s=self.settings.model_behind_alias_s,
        )

    def start(self) -> Serving:
        """What the worker does at start: load the alias's model, then watch from it."""
        first = self.models.current()
        self.slot.install(first)
        self.swapper.start()
        self.models.watch(self.swapper, first.version)
        return self

    def close(self) -> None:
        self.swapper.stop()
        self.models.close()

    def value(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(f"tagstream_worker_{name}") or 0.0

    def serves(self, version: int, timeout_s: float = 15) -> bool:
        return poll_until(lambda: self.slot.version == version, timeout_s)


@pytest.fixture
def serving(
    redis_settings: RedisSettings, registry_settings: RegistrySettings
) -> Iterator[Callable[..., Serving]]:
    started: list[Serving] = []

    def make(**kwargs: object) -> Serving:
        server = Serving(redis_settings, registry_settings, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


def publish_toys(registry: Registry, count: int) -> list[int]:
    artifacts = [toy_artifact(LABELS, seed=seed) for seed in range(count)]
    return [registry.publish(a.to_bytes(), a.manifest) for a in artifacts]


def corrupt(registry: Registry, version: int) -> bytes:
    """Overwrite the first chunk of ``version`` in Redis; returns the original chunk."""
    key = registry.keys.artifact(version)
    original = registry.client.hget(key, "0")
    assert isinstance(original, bytes)
    registry.client.hset(key, "0", b"\0" * len(original))
    return original


def test_a_redis_timeout_while_fetching_is_retried_and_the_version_installed(
    private_redis: Callable[..., RedisServer], registry_settings: RegistrySettings
) -> None:
    server = private_redis()
    redis_settings = RedisSettings(url=server.url, namespace="swap", socket_timeout_s=0.3)
    with Registry.from_settings(redis_settings, registry_settings) as registry:
        first, second = publish_toys(registry, 2)
        registry.promote(first)
        node = Serving(redis_settings, registry_settings).start()
        try:
            control = redis.Redis.from_url(server.url)
            control.execute_command("CLIENT", "PAUSE", 4000, "ALL")  # Redis stops answering
            control.close()
            node.swapper.want(second)
            assert node.serves(second, timeout_s=30)
        finally:
            node.close()
    assert node.value("model_load_retries_total") >= 1
    assert node.value("model_refusals_total") == 0


def test_out_of_memory_during_warm_up_is_retried(
    registry: Registry, serving: Callable[..., Serving]
) -> None:
    first, second = publish_toys(registry, 2)
    registry.promote(first)
    warm_ups = []

    def short_of_memory_once(models: RegistryModels) -> Callable[[int], Model]:
        def load(version: int) -> Model:
            model = models.version(version)
            warm_up = model.warm_up

            def failing_once() -> None:
                warm_ups.append(version)
                if len(warm_ups) == 1:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")
                warm_up()

            model.warm_up = failing_once  # type: ignore[method-assign]
            return model

        return load

    node = serving(load=short_of_memory_once).start()
    registry.promote(second)
    assert node.serves(second)
    assert warm_ups == [second, second]
    assert node.value("model_load_retries_total") == 1
    assert node.value("model_refusals_total") == 0


def test_a_corrupt_version_is_refused_and_tried_again_when_re_promoted(
    registry: Registry, serving: Callable[..., Serving]
) -> None:
    first, second = publish_toys(registry, 2)
    registry.promote(first)
    node = serving().start()
    original = corrupt(registry, second)
    registry.promote(second)
    assert poll_until(lambda: node.value("model_refusals_total") == 1, 15)
    assert node.slot.version == first and node.swapper.refused() == {second}
    assert node.value("model_load_retries_total") == 0  # an integrity failure is final
    registry.client.hset(registry.keys.artifact(second), "0", original)  # repaired
    registry.promote(second)  # the alias re-set to the version it holds
    assert node.serves(second)


def refusals_reach(node: Serving, count: int) -> bool:
    return poll_until(lambda: node.value("model_refusals_total") == count, 15)


def test_a_wrongly_signed_version_is_refused_and_the_signed_one_keeps_serving(
    redis_settings: RedisSettings, registry_settings: RegistrySettings
) -> None:
    """With TAGSTREAM_REGISTRY_SIGNING_KEY set, a version another key signed, or nobody did,
    is an integrity failure: refused at once, counted, never retried, the old model stays."""
    keyed = registry_settings.model_copy(update={"signing_key": SecretStr("k" * 64)})
    forger = registry_settings.model_copy(update={"signing_key": SecretStr("f" * 64)})
    with (
        Registry.from_settings(redis_settings, keyed) as publisher,
        Registry.from_settings(redis_settings, forger) as intruder,
        Registry.from_settings(redis_settings, registry_settings) as unsigned,
    ):
        (first,) = publish_toys(publisher, 1)
        publisher.promote(first)
        node = Serving(redis_settings, keyed).start()
        try:
            for count, registry in enumerate((intruder, unsigned), start=1):
                (bad,) = publish_toys(registry, 1)
                registry.promote(bad)
                assert refusals_reach(node, count)
                assert node.slot.version == first and bad in node.swapper.refused()
                assert "SignatureError" in (node.swapper.refusal(bad) or "")
        finally:
            node.close()
    assert node.value("model_load_retries_total") == 0  # final, like a sha256 mismatch


def test_a_refused_version_is_tried_again_when_the_alias_moves_away_and_back(
    registry: Registry, serving: Callable[..., Serving]
) -> None:
    first, second = publish_toys(registry, 2)
    registry.promote(first)
    node = serving().start()
    original = corrupt(registry, second)
    registry.promote(second)
    assert poll_until(lambda: node.value("model_refusals_total") == 1, 15)
    registry.client.hset(registry.keys.artifact(second), "0", original)
    registry.rollback()
    registry.promote(second)
    assert node.serves(second)


def test_a_promote_that_lands_while_the_first_model_loads_is_acted_on(
    registry: Registry, serving: Callable[..., Serving]
) -> None:
    first, second = publish_toys(registry, 2)
    registry.promote(first)
    node = serving()
    loaded = node.models.current()  # the worker resolved the alias and is loading ...
    registry.promote(second)  # ... when a promote lands, before it watches
    node.slot.install(loaded)
    node.swapper.start()
    node.models.watch(node.swapper, loaded.version)
    assert node.serves(second)


class EventLog:
    """Stands in for a module's structlog logger; keeps the events it is given."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def _record(self, event: str, *args: object, **fields: object) -> None:
        self.events.append(event)

    info = warning = error = exception = debug = _record


def test_serving_another_version_than_the_alias_too_long_fails_readiness(
    registry: Registry, serving: Callable[..., Serving], monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = EventLog()
    monkeypatch.setattr(swap_module, "log", logged)
    first, second = publish_toys(registry, 2)
    registry.promote(first)
    node = serving(model_behind_alias_s=0.5).start()
    assert model_behind(node.swapper, first, node.settings) is None
    corrupt(registry, second)
    registry.promote(second)
    assert poll_until(lambda: "model behind alias" in logged.events, 15)
    reason = model_behind(node.swapper, first, node.settings)
    assert reason is not None
    assert f"serving model {first}, but production has pointed at {second}" in reason
    assert "refused until the next promote" in reason
    assert node.value("model_behind_alias_seconds") >= 0.5
    worker = Worker(node.settings, KafkaSettings(), RedisSettings(), RegistrySettings())
    worker.slot, worker.swapper = node.slot, node.swapper
    assert worker.ready() == (False, reason)  # what /readyz answers
    time.sleep(0.3)  # the warning is one line per episode, not one per check
    assert logged.events.count("model behind alias") == 1
    registry.rollback()
    assert poll_until(lambda: node.swapper.behind_s() is None, 15)
    assert model_behind(node.swapper, first, node.settings) is None
    assert node.value("model_behind_alias_seconds") == 0
