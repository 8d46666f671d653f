"""A second producer backend: confluent-kafka (librdkafka), for at-least-once output.

kafka-python does its producing in Python: batching, compression, the sender's network loop
and every acknowledgement callback hold the GIL, and in the worker that is the largest cost
outside the model (docs/benchmarks.md, "Worker overhead"). librdkafka does all of that in C
threads that never take the GIL; only the outcome callbacks come back to Python.

:class:`RdKafkaProducer` has :class:`messaging.Producer`'s interface for output that is not
transactional: ``send`` with an outcome callback, ``flush`` with one deadline for everything
pending, ``close`` that fails what it could not send. Its configuration is the same as every
producer's here (``acks=all``, idempotent, ``TAGSTREAM_KAFKA_COMPRESSION_TYPE``). Outcome
callbacks run on this class's own polling thread, as kafka-python's run on its sender.

Transactions are refused: an exactly-once worker commits its offsets through the producer
with the consumer's group metadata (KIP-447), and librdkafka takes that only from its own
consumer, while the worker's consumer is kafka-python's. The worker refuses the combination at
start (:func:`worker.sink.open_sink`).

The errors a callback or a call sees are the project's kinds (:mod:`messaging.errors`),
translated from librdkafka's codes by :func:`translate_rdkafka`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from common.settings import KafkaSettings
from messaging.config import client_config
from messaging.errors import (
    DeadlineError,
    FatalError,
    FencedError,
    MessagingError,
    RefusedError,
    RetriableError,
)
from messaging.producer import Done, Outstanding
from messaging.types import GroupMembership, TopicPartition

POLL_S = 0.05
MAX_BLOCK_S = 60.0
"""How long :meth:`RdKafkaProducer.send` waits for queue space, as kafka-python's
``max_block_ms``."""

REFUSED_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError._INVALID_ARG,
    }
)
FATAL_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.UNSUPPORTED_VERSION,
    }
)
DEADLINE_CODES = frozenset({KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT})
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})


def translate_rdkafka(error: KafkaError) -> MessagingError:
    """The project's kind of a librdkafka error, with librdkafka's name and message."""
    code = error.code()
    message = f"{error.name()}: {error.str()}"
    kind: type[MessagingError]
    if code in REFUSED_CODES:
        kind = RefusedError
    elif code in FENCED_CODES:
        kind = FencedError
    elif code in FATAL_CODES or error.fatal():
        kind = FatalError
    elif code in DEADLINE_CODES:
        kind = DeadlineError
    else:
        # librdkafka has already retried what it can within message.timeout.ms, and reports
        # few errors as retriable; a record that failed otherwise (a leader gone, a purge at
        # close, a broker away) was never acknowledged, and sending it again may succeed.
        kind = RetriableError
    return kind(message)


def rdkafka_config(settings: KafkaSettings, *, client_id: str, linger_ms: int) -> dict[str, Any]:
    """librdkafka's configuration for the settings every producer here shares
    (:func:`messaging.config.producer_config` is kafka-python's)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "security.protocol": settings.security_protocol,
        "client.id": client_id,
        "reconnect.backoff.max.ms": settings.reconnect_backoff_max_ms,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": settings.compression_type,
        "linger.ms": linger_ms,
        # kafka-python's delivery_timeout_ms; librdkafka's own default is 300 s.
        "message.timeout.ms": 120_000,
    }
    if settings.security_protocol.startswith("SASL"):
        # client_config refuses missing credentials with the same words.
        kafka_python = client_config(settings)
        config |= {
            "sasl.mechanism": settings.sasl_mechanism,
            "sasl.username": kafka_python["sasl_plain_username"],
            "sasl.password": kafka_python["sasl_plain_password"],
        }
    if settings.ssl_cafile:
        config["ssl.ca.location"] = settings.ssl_cafile
    return config


class RdKafkaProducer:
    """Publishes records through librdkafka; not transactional (see the module docstring)."""

    def __init__(
        self, kafka: KafkaSettings, *, client_id: str | None = None, linger_ms: int = 5
    ) -> None:
        config = rdkafka_config(kafka, client_id=client_id or kafka.client_id, linger_ms=linger_ms)
        config["error_cb"] = self._on_client_error
        try:
            self._producer = confluent_kafka.Producer(config)
        except KafkaException as exc:
            raise translate_rdkafka(exc.args[0]) from exc
        self._outstanding = Outstanding()
        self._fatal: MessagingError | None = None
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="rdkafka-callbacks", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        """Serve the outcome callbacks until closed (they run on this thread)."""
        while not self._closing.is_set():
            self._producer.poll(POLL_S)

    def _on_client_error(self, error: KafkaError) -> None:
        # librdkafka reports broker disconnects here and recovers by itself; only a fatal
        # error (idempotence can no longer be guaranteed) ends the producer.
        if error.fatal():
            self._fatal = translate_rdkafka(error)

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Done | None) -> None:
        """Hand one record to librdkafka; ``on_done`` hears the broker's answer.

        Raises :class:`DeadlineError` when the queue has no room within ``MAX_BLOCK_S``,
        :class:`RefusedError` for a record the client will never take, and the producer's
        fatal error once it has one.
        """
        if self._fatal is not None:
            raise self._fatal
        callback = self._outcome(on_done)
        deadline = time.monotonic() + MAX_BLOCK_S
        self._outstanding.add()
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=callback)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    self._outstanding.settle()
                    raise DeadlineError(
                        f"no room in the producer's queue within {MAX_BLOCK_S:g} s"
                    ) from None
                time.sleep(POLL_S)
            except KafkaException as exc:
                self._outstanding.settle()
                error = translate_rdkafka(exc.args[0])
                if isinstance(error, RetriableError) and not isinstance(error, DeadlineError):
                    # Not taken now (an unknown partition, say): the caller's deadline path,
                    # as kafka-python's max_block_ms, not the refusal path (a dead letter).
                    raise DeadlineError(f"the client did not take the record: {error}") from exc
                raise error from exc

    def _outcome(self, on_done: Done | None) -> Any:
        def delivered(error: KafkaError | None, _message: Any) -> None:
            try:
                if on_done is not None:
                    on_done(None if error is None else translate_rdkafka(error))
            finally:
                self._outstanding.settle()

        return delivered

    # -- transactions: not with this backend -------------------------------------------------
    def begin(self) -> None:
        raise _no_transactions()

    def commit_offsets(
        self, offsets: dict[TopicPartition, int], membership: GroupMembership
    ) -> None:
        raise _no_transactions()

    def commit(self) -> None:
        raise _no_transactions()

    def abort(self) -> None:
        raise _no_transactions()

    # -- lifecycle --------------------------------------------------------------------------
    def flush(self, timeout_s: float) -> None:
        """Wait until every record sent has its outcome; :class:`DeadlineError` when that
        takes longer than ``timeout_s`` in all."""
        self._outstanding.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Flush for up to ``timeout_s``, then purge what is left (its callbacks hear a
        retriable error: at-least-once it is read again) and stop."""
        if self._closing.is_set():
            return
        try:
            self.flush(timeout_s)
        except DeadlineError:
            self._producer.purge(in_queue=True, in_flight=True)
            self._producer.poll(0)
        finally:
            self._closing.set()
            self._poller.join(max(timeout_s, 1.0))
            self._producer.flush(0)
            self._producer.close()


def _no_transactions() -> FatalError:
    return FatalError(
        "the confluent-kafka producer backend is not transactional; exactly-once output needs "
        "TAGSTREAM_KAFKA_PRODUCER_BACKEND=kafka-python"
    )
