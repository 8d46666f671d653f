"""A producer for results: kafka-python's ``KafkaProducer``, wrapped.

Every producer is ``acks=all`` and idempotent, and compresses with
``TAGSTREAM_KAFKA_COMPRESSION_TYPE`` (:func:`messaging.config.producer_config`). Each send
reports its outcome to a callback, run on the producer's sender thread, with the project's
error kinds. With a ``transactional_id`` the constructor calls ``init_transactions``, which
fences any older producer with the same id and aborts its open transaction.

kafka-python waits for ``send_offsets_to_transaction``, ``commit_transaction`` and
``abort_transaction`` without a deadline, and for ``init_transactions`` up to
``max_block_ms`` whatever happens meanwhile; here each of the four waits has one
(``transaction_timeout_s``) and ends early when the ``cancel`` event is set, raising
:class:`DeadlineError`: a transaction whose outcome is then unknown is resolved by the broker
(aborted when its own timeout passes) or by the next instance with the same id (fenced and
aborted).

kafka-python's ``flush(timeout)`` waits up to ``timeout`` for each pending batch in turn, and
its ``close`` flushes first and raises there, leaving the sender running. Here
:meth:`Producer.flush` has one deadline for all of them (it waits on every send's outcome),
and :meth:`Producer.close` stops the sender when its flush runs out of time.

kafka-python 3.0.12 puts an idempotent producer that is not transactional into a fatal state
for good when the broker refuses one record for itself (``MESSAGE_TOO_LARGE`` for a batch of
one, ``TOPIC_AUTHORIZATION_FAILED``): every later send fails with that same error, so one
oversized dead letter would stop all output. Here such a refusal fails that record's batch
and bumps the producer epoch instead (KIP-360, as for a sequence error), which resets the
sequence numbers the refused batch left a gap in; the records behind it are sent on under the
new epoch (:func:`_refusals_are_not_fatal`). A transactional producer aborts the transaction
such a refusal spoils, but its sequence numbers keep the gap and the next transaction's
records to that partition fail; so after that abort the client is replaced by a new one with
the same ``transactional_id`` (``init_transactions`` starts a fresh epoch).

kafka-python 3.0.12's sender drops a transactional request for good when the coordinator it
is addressed to cannot be reached: ``KafkaClient.await_ready`` raises instead of returning
false, and the handler for that looks the coordinator up again but never re-queues the
request. A commit, abort or offsets request that finds its coordinator's node dead (a killed
broker, a controller failover) is then never answered, and the transaction times out on the
broker, which fences the producer. Here the sender sees such a node as not ready, so the
request goes back on the queue and is sent to the new coordinator
(:func:`_unreachable_coordinators_are_looked_up_again`).

kafka-python 3.0.12 also makes a transactional request that times out in the client (no
answer within ``request_timeout_ms``: a frozen coordinator, or one that cannot write its log
while ``min.insync.replicas`` is unmet) a fatal error, "Could not execute transactional
request for unknown reasons", after which the producer refuses every call. Apache Kafka's Java
client treats that timeout as a disconnect: it looks the coordinator up again and sends the
request once more, which is safe because every transactional request may be repeated. Here
it does the same (:func:`_timed_out_transactional_requests_are_sent_again`); the waits above
still bound how long a caller waits for the outcome.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kafka_errors

from common.settings import KafkaSettings
from messaging.config import producer_config
from messaging.consumer import kafka_offsets
from messaging.errors import (
    REFUSED,
    DeadlineError,
    MessagingError,
    RetriableError,
    translate,
    translated,
)
from messaging.types import GroupMembership, TopicPartition

Done = Callable[[BaseException | None], None]
WAIT_SLICE_S = 0.1


class Outstanding:
    """How many records were handed to a client and have no outcome yet; a flush waits for
    none, with one deadline for all of them (both producer backends)."""

    def __init__(self) -> None:
        self._count = 0
        self._settled = threading.Condition()

    def add(self) -> None:
        with self._settled:
            self._count += 1

    def settle(self, *_outcome: Any) -> None:
        with self._settled:
            self._count -= 1
            if self._count == 0:
                self._settled.notify_all()

    def wait(self, timeout_s: float) -> None:
        """:class:`DeadlineError` when records are still without an answer after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._settled:
            while self._count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineError(
                        f"flushing: {self._count} records without an answer after {timeout_s:g} s"
                    )
                self._settled.wait(min(remaining, WAIT_SLICE_S))


class Producer:
    """Publishes records; transactional when given a ``transactional_id``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        client_id: str | None = None,
        linger_ms: int = 5,
        transactional_id: str | None = None,
        retry_backoff_ms: int | None = None,
        transaction_timeout_s: float = 30.0,
        cancel: threading.Event | None = None,
    ) -> None:
        config = producer_config(kafka) | {
            "client_id": client_id or kafka.client_id,
            "linger_ms": linger_ms,
        }
        if transactional_id is not None:
            config["transactional_id"] = transactional_id
        if retry_backoff_ms is not None:
            config["retry_backoff_ms"] = retry_backoff_ms
        self._timeout_s = transaction_timeout_s
        self._cancel = cancel or threading.Event()
        self._outstanding = Outstanding()
        self._config = config
        self._producer = self._open()

    def _open(self) -> KafkaProducer:
        """A new client from the configuration; transactions initialised (fencing an older
        producer with this id) within the deadline."""
        with translated():
            producer = KafkaProducer(**self._config)
        self._producer = producer
        _unreachable_coordinators_are_looked_up_again(producer)
        if "transactional_id" in self._config:
            _timed_out_transactional_requests_are_sent_again(producer)
            self._init_transactions()
        else:
            _refusals_are_not_fatal(producer)
        return producer

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Done | None) -> None:
        """Hand one record to the client; ``on_done`` hears the broker's answer.

        Raises :class:`DeadlineError` when no metadata or buffer space came within
        ``max_block_ms``, and :class:`RefusedError` for a record the client will never take.
        """
        try:
            future = self._producer.send(topic, key=key, value=value)
        except Exception as exc:
            raise translate(exc) from exc
        self._outstanding.add()
        future.add_both(self._outstanding.settle)
        if on_done is not None:
            future.add_callback(lambda _metadata: on_done(None))
            future.add_errback(lambda error: on_done(translate(error)))

    # -- transactions -----------------------------------------------------------------------
    def _init_transactions(self) -> None:
        """``init_transactions`` (fences an older producer with this id), within the deadline."""
        try:
            with translated():
                result = self._manager().initialize_transactions()
                self._await(result, "initialising transactions")
        except BaseException:
            with contextlib.suppress(MessagingError):
                self.close(0.0)
            raise

    def begin(self) -> None:
        with translated():
            self._producer.begin_transaction()

    def commit_offsets(
        self, offsets: dict[TopicPartition, int], membership: GroupMembership
    ) -> None:
        """Add the consumer's offsets to the open transaction (KIP-447 fencing by generation).

        Refuses a membership snapshot without a generation, which the broker would accept
        unchecked (see :attr:`GroupMembership.is_member`).
        """
        if not membership.is_member:
            raise RetriableError("the consumer's group membership was reset; not committing")
        with translated():
            result = self._manager().send_offsets_to_transaction(
                kafka_offsets(offsets), membership.raw
            )
            self._await(result, "sending the offsets to the transaction")

    def commit(self) -> None:
        with translated():
            self._await(self._manager().begin_commit(), "committing the transaction")

    def abort(self) -> None:
        manager = self._manager()
        refused = isinstance(manager._last_error, REFUSED_FOR_ITSELF)
        with translated():
            self._await(manager.begin_abort(), "aborting the transaction")
        if refused:  # see the module docstring
            self.close(self._timeout_s)
            self._producer = self._open()

    def _manager(self) -> Any:
        manager = self._producer._transaction_manager
        if manager is None:
            raise RetriableError("transactions are not enabled on this producer")
        return manager

    def _await(self, result: Any, what: str) -> None:
        """Wait for a transactional request's result within the deadline (or ``cancel``)."""
        self._producer._sender.wakeup()
        deadline = time.monotonic() + self._timeout_s
        while not result.wait(timeout_ms=WAIT_SLICE_S * 1000):
            if self._cancel.is_set():
                raise DeadlineError(f"{what}: given up, the worker is stopping")
            if time.monotonic() > deadline:
                raise DeadlineError(f"{what}: no answer within {self._timeout_s:g} s")

    # -- lifecycle --------------------------------------------------------------------------
    def flush(self, timeout_s: float) -> None:
        """Wait until every record sent has its outcome; :class:`DeadlineError` when that
        takes longer than ``timeout_s`` in all."""
        self._producer._sender.wakeup()
        self._outstanding.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Flush for up to ``timeout_s``, then stop the sender whether or not all was sent
        (what is still unsent fails: at-least-once it is read again, exactly-once it was in a
        transaction that is never committed)."""
        with translated():
            close_kafka_producer(self._producer, timeout_s)


def close_kafka_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close a kafka-python producer within about ``timeout_s``, sent or not.

    Its own ``close`` flushes first and raises ``KafkaTimeoutError`` when records are still
    pending, leaving the sender thread running and the producer open; its ``__del__`` then
    tries again and raises where nobody can catch it. Here a flush that runs out of time
    stops the sender and finishes the close; what was unsent fails.
    """
    try:
        producer.close(timeout=timeout_s)
    except kafka_errors.KafkaTimeoutError:
        producer._sender.force_close()
        producer._sender.join(max(timeout_s, WAIT_SLICE_S))
        producer.close(timeout=0)


class _SenderClient:
    """The client as the producer's sender sees it: a node it cannot reach is not ready.

    Everything but :meth:`await_ready` goes to the client itself.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def await_ready(self, node_id: Any, timeout_ms: int = 30_000) -> bool:
        try:
            return bool(self._client.await_ready(node_id, timeout_ms=timeout_ms))
        except kafka_errors.KafkaConnectionError:
            return False


def _unreachable_coordinators_are_looked_up_again(producer: KafkaProducer) -> None:
    """Make the sender re-queue a transactional request whose coordinator cannot be reached,
    instead of dropping it (see the module docstring)."""
    producer._sender._client = _SenderClient(producer._sender._client)


def _timed_out_transactional_requests_are_sent_again(producer: KafkaProducer) -> None:
    """Make a transactional request that timed out in the client go to the coordinator again,
    as after a disconnect, instead of failing the producer for good (see the module
    docstring)."""
    manager = producer._transaction_manager
    next_handler = manager.next_request_handler

    def next_request_handler(has_incomplete_batches: bool) -> Any:
        handler = next_handler(has_incomplete_batches)
        if handler is not None and "on_complete" not in vars(handler):
            handler.on_complete = _timeouts_as_disconnects(handler.on_complete)
        return handler

    manager.next_request_handler = next_request_handler


def _timeouts_as_disconnects(on_complete: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
    def complete(correlation_id: int, response_or_error: Any) -> None:
        if isinstance(response_or_error, kafka_errors.RequestTimedOutError):
            response_or_error = kafka_errors.KafkaConnectionError(
                f"{response_or_error}; sending the request again"
            )
        on_complete(correlation_id, response_or_error)

    return complete


REFUSED_FOR_ITSELF = (*REFUSED, kafka_errors.TopicAuthorizationFailedError)
"""Broker answers about one record or topic, not about the producer."""


def _refusals_are_not_fatal(producer: KafkaProducer) -> None:
    """Make a refused batch bump the epoch of an idempotent producer, not kill it (see the
    module docstring); a producer without idempotence, or a broker before KIP-360, is left
    as it is."""
    manager = producer._transaction_manager
    if manager is None or manager.is_transactional() or not manager._supports_epoch_bump():
        return
    classify = manager.classify_batch_error

    def refusal_bumps_the_epoch(error: Any, batch: Any, log_start_offset: int = -1) -> Any:
        kind = classify(error, batch, log_start_offset=log_start_offset)
        error_type = error if isinstance(error, type) else type(error)
        if kind == manager.ERROR_CLASS_FATAL and issubclass(error_type, REFUSED_FOR_ITSELF):
            return manager.ERROR_CLASS_NEEDS_EPOCH_BUMP
        return kind

    manager.classify_batch_error = refusal_bumps_the_epoch
