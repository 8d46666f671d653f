"""A second producer backend: confluent-kafka (librdkafka), at-least-once and exactly-once.

kafka-python does its producing in Python: batching, compression, the sender's network loop
and every acknowledgement callback hold the GIL, and in the worker that is the largest cost
outside the model (docs/benchmarks.md, "Worker overhead"). librdkafka does all of that in C
threads that never take the GIL; only the outcome callbacks come back to Python.

:class:`RdKafkaProducer` has :class:`messaging.Producer`'s interface for output that is not
transactional: ``send`` with an outcome callback, ``flush`` with one deadline for everything
pending, ``close`` that fails what it could not send. Its configuration is the same as every
producer's here (``acks=all``, idempotent, ``TAGSTREAM_KAFKA_COMPRESSION_TYPE``). Outcome
callbacks run on this class's own polling thread, as kafka-python's run on its sender.

Given a ``transactional_id`` it is transactional, with :class:`messaging.Producer`'s
transaction methods and deadlines. An exactly-once worker commits its offsets inside the
transaction with its consumer's group metadata (KIP-447: group, generation, member id, static
instance id), so the broker refuses the commit of a member the group has moved on from.
librdkafka takes that metadata as the bytes its own consumer serialises
(``rd_kafka_consumer_group_metadata_write``, a documented format for handing the metadata to
a producer in another process): :func:`group_metadata` writes them from the kafka-python
consumer's membership, and a test holds them to what a librdkafka consumer in a group writes.
librdkafka's transactional calls block; each is called in slices of ``CALL_SLICE_S`` (a call
that timed out can be called again and resumes) until it answers, the deadline
(``transaction_timeout_s``) passes, or ``cancel`` is set.

The errors a callback or a call sees are the project's kinds (:mod:`messaging.errors`),
translated from librdkafka's codes by :func:`translate_rdkafka`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from common.logging import get_logger
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

log = get_logger("messaging.rdkafka")

POLL_S = 0.05
CALL_SLICE_S = 1.0
"""How long one call of a blocking transactional method may wait before the deadline and
``cancel`` are looked at again."""
METADATA_MAGIC = b"CGMDv2:"
TRANSACTION_TIMEOUT_MS = 60_000
RETRY_PAUSE_S = 0.1
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


def group_metadata(membership: GroupMembership) -> bytes:
    """librdkafka's serialised consumer group metadata for ``membership``: the magic, the
    generation (native byte order, as librdkafka writes it), the group and member ids each
    ending in a NUL byte, then whether the static instance id is absent and, if present, it."""
    instance = membership.group_instance_id
    return b"".join(
        [
            METADATA_MAGIC,
            membership.generation_id.to_bytes(4, sys.byteorder, signed=True),
            membership.group_id.encode() + b"\0",
            membership.member_id.encode() + b"\0",
            b"\x01" if instance is None else b"\x00" + instance.encode() + b"\0",
        ]
    )


class RdKafkaProducer:
    """Publishes records through librdkafka; transactional when given a ``transactional_id``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        client_id: str | None = None,
        linger_ms: int = 5,
        transactional_id: str | None = None,
        transaction_timeout_s: float = 30.0,
        cancel: threading.Event | None = None,
    ) -> None:
        config = rdkafka_config(kafka, client_id=client_id or kafka.client_id, linger_ms=linger_ms)
        config["error_cb"] = self._on_client_error
        if transactional_id is not None:
            # The broker aborts a transaction open this long (kafka-python's default too);
            # librdkafka wants every record's own timeout within it.
            config["transactional.id"] = transactional_id
            config["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
            config["message.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        self._config = config
        self._transactional = transactional_id is not None
        self._timeout_s = transaction_timeout_s
        self._cancel = cancel or threading.Event()
        self._outstanding = Outstanding()
        self._fatal: MessagingError | None = None
        self._refused_in_transaction = False
        self._wedged: str | None = None
        """Why the client is abandoned: a transactional call never returned."""
        self._closed = False
        self._open()

    def _open(self) -> None:
        """A new librdkafka client and its polling thread; transactions initialised (fencing
        an older producer with this id) within the deadline."""
        try:
            self._producer = confluent_kafka.Producer(self._config)
        except KafkaException as exc:
            raise translate_rdkafka(exc.args[0]) from exc
        self._closing = threading.Event()
        self._poller = threading.Thread(
            target=_serve,
            args=(self._producer, self._closing, self._on_client_error),
            name="rdkafka-callbacks",
            daemon=True,
        )
        self._poller.start()
        if self._transactional:
            try:
                self._call("initialising transactions", self._producer.init_transactions)
            except BaseException:
                self._shut(0.0)
                self._closed = True
                raise

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
                outcome = None if error is None else translate_rdkafka(error)
                if isinstance(outcome, RefusedError):
                    self._refused_in_transaction = self._transactional
                if on_done is not None:
                    on_done(outcome)
            finally:
                self._outstanding.settle()

        return delivered

    # -- transactions -----------------------------------------------------------------------
    def begin(self) -> None:
        self._check_transactional()
        self._refused_in_transaction = False
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise translate_rdkafka(exc.args[0]) from exc

    def commit_offsets(
        self, offsets: dict[TopicPartition, int], membership: GroupMembership
    ) -> None:
        """Add the consumer's offsets to the open transaction (KIP-447 fencing by generation).

        Refuses a membership snapshot without a generation, which the broker would accept
        unchecked (see :attr:`GroupMembership.is_member`)."""
        self._check_transactional()
        if not membership.is_member:
            raise RetriableError("the consumer's group membership was reset; not committing")
        positions = [
            confluent_kafka.TopicPartition(tp.topic, tp.partition, offset)
            for tp, offset in offsets.items()
        ]
        metadata = group_metadata(membership)
        self._call_abandoning(
            "sending the offsets to the transaction",
            lambda timeout: self._producer.send_offsets_to_transaction(
                positions, metadata, timeout
            ),
        )

    def commit(self) -> None:
        """Commit the open transaction (librdkafka flushes its records first)."""
        self._check_transactional()
        self._call("committing the transaction", self._producer.commit_transaction)

    def abort(self) -> None:
        """Abort the open transaction; its unsent records are purged, and their callbacks hear
        a retriable error.

        After a transaction in which the broker refused a record for itself (over the topic's
        ``max.message.bytes``), librdkafka 2.16 bumps the producer's epoch during the abort but
        the next transaction to that partition still fails with ``OUT_OF_ORDER_SEQUENCE_NUMBER``
        (tests/messaging/test_producer.py); so the client is opened anew, which starts a new
        epoch with fresh sequences, as :class:`messaging.Producer` does for kafka-python."""
        self._check_transactional()
        refused = self._refused_in_transaction
        self._call("aborting the transaction", self._producer.abort_transaction)
        if refused:
            self._shut(self._timeout_s)
            self._open()

    def _check_transactional(self) -> None:
        if not self._transactional:
            raise FatalError("this producer was opened without a transactional id")
        if self._wedged is not None:
            raise DeadlineError(self._wedged)

    def _call_abandoning(self, what: str, call: Callable[[float], object]) -> None:
        """:meth:`_call` on a helper thread, given up at its deadline even when librdkafka
        does not return: with its group coordinator down, ``send_offsets_to_transaction``
        can block past its own timeout (librdkafka issue 5456, seen with 2.16 when a node
        was killed). The client is then abandoned: every later transactional call raises
        :class:`DeadlineError`, so the worker stops and its replacement fences the id."""
        failure: list[BaseException] = []
        answered = threading.Event()

        def run() -> None:
            try:
                self._call(what, call)
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)
            finally:
                answered.set()

        threading.Thread(target=run, name="rdkafka-transaction-call", daemon=True).start()
        # _call answers within a slice of its deadline or of cancel, unless librdkafka hangs
        deadline = time.monotonic() + self._timeout_s + CALL_SLICE_S
        while not answered.wait(POLL_S):
            if self._cancel.is_set():
                deadline = min(deadline, time.monotonic() + 2 * CALL_SLICE_S)
            if time.monotonic() > deadline:
                self._wedged = f"{what}: librdkafka did not return within its deadline"
                log.error("librdkafka transactional call abandoned", call=what)
                raise DeadlineError(self._wedged)
        if failure:
            raise failure[0]

    def _call(self, what: str, call: Callable[[float], object]) -> None:
        """``call(timeout)`` in slices until it answers; :class:`DeadlineError` after
        ``transaction_timeout_s`` or once ``cancel`` is set, the project's kind of any error
        librdkafka answers."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if self._cancel.is_set():
                raise DeadlineError(f"{what}: given up, the worker is stopping")
            if remaining <= 0:
                raise DeadlineError(f"{what}: no answer within {self._timeout_s:g} s")
            try:
                call(min(CALL_SLICE_S, remaining))
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.retriable() and not (error.fatal() or error.txn_requires_abort()):
                    # Timed out (the call resumes where it was), or a coordinator still
                    # loading or moving: librdkafka asks for the same call again.
                    if error.code() != KafkaError._TIMED_OUT:
                        self._cancel.wait(RETRY_PAUSE_S)
                    continue
                raise translate_rdkafka(error) from exc

    # -- lifecycle --------------------------------------------------------------------------
    def flush(self, timeout_s: float) -> None:
        """Wait until every record sent has its outcome; :class:`DeadlineError` when that
        takes longer than ``timeout_s`` in all."""
        self._outstanding.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Flush for up to ``timeout_s``, then purge what is left (its callbacks hear a
        retriable error: at-least-once it is read again; exactly-once it was in a transaction
        that is never committed) and stop."""
        if self._closed:
            return
        self._closed = True
        self._shut(timeout_s)

    def _shut(self, timeout_s: float) -> None:
        producer = self._producer
        if self._wedged is not None:
            # A thread is still inside librdkafka's transactional API, and closing aborts
            # the open transaction through it: left to the process's exit instead.
            self._closing.set()
            log.warning("librdkafka producer left open", reason=self._wedged)
            return
        try:
            self.flush(timeout_s)
        except DeadlineError:
            with contextlib.suppress(KafkaException):
                producer.purge(in_queue=True, in_flight=True)
                producer.poll(0)
        finally:
            self._closing.set()
            self._poller.join(max(timeout_s, 1.0))
            with warnings.catch_warnings(record=True) as noted:
                # Closed with a transaction open (or not yet initialised), confluent-kafka
                # aborts it and warns when it cannot; a fenced client raises its fatal error
                # again. The broker aborts such a transaction at its timeout.
                warnings.simplefilter("always")
                try:
                    producer.flush(0)
                    producer.close()
                except KafkaException as exc:
                    log.warning("librdkafka producer closed", error=str(exc.args[0]))
            for warning in noted:
                log.warning("librdkafka producer closed", note=str(warning.message))


def _serve(
    producer: confluent_kafka.Producer,
    closing: threading.Event,
    on_error: Callable[[KafkaError], None],
) -> None:
    """Serve a client's outcome callbacks until it is closed (they run on this thread). A
    fenced transactional client raises its fatal error out of ``poll``: that goes to
    ``on_error`` (the next call on the producer raises it) and serving goes on, so the
    outcomes still pending are heard when the client is closed."""
    while not closing.is_set():
        try:
            producer.poll(POLL_S)
        except KafkaException as exc:
            on_error(exc.args[0])
            closing.wait(POLL_S)
