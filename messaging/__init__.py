"""tagstream's Kafka boundary: the only package that imports kafka-python (and confluent-kafka).

Everything above it (worker, trainer, CLI, demo) talks to Kafka through these modules and
never sees a kafka-python class, exception or private attribute:

``config``     client keyword arguments built from :class:`common.settings.KafkaSettings`
``types``      ``TopicPartition``, ``Record``, ``GroupMembership`` (a typed view of group
               metadata, and the guard against transactional commits without membership)
``errors``     the few kinds of failure the loops branch on: retriable, deadline, fenced,
               refused, undecodable, fatal (kafka-python's exceptions are translated here)
``consumer``   :class:`Consumer`: a group member with explicit commits and rebalance callbacks
``producer``   :class:`Producer`: acks=all, idempotent, optionally transactional, compressed
``rdkafka``    :class:`~messaging.rdkafka.RdKafkaProducer`: the same, transactional too, on
               librdkafka (imported only by a worker configured for it)
``admin``      admin client, readiness, topic creation and description, group lag

kafka-python workarounds, all of them here (docs/kafka.md tells the story of each):

1. *Retriable errors out of poll.* kafka-python 3.0.12 raises connection errors out of
   ``KafkaConsumer.poll`` while a broker is away; the client reconnects by itself, so such a
   poll brought nothing (:meth:`Consumer.poll`, logged once per outage).
2. *The lost join.* A rejoin started by a metadata change can complete on the broker after a
   short poll timed out; once the metadata settles the client never applies it and sits in
   REBALANCING with no partitions and no heartbeats. :meth:`Consumer.poll` spots that state and
   asks for a rejoin.
3. *Reconnect backoff.* kafka-python backs off up to 30 s from a broker that keeps refusing;
   every client gets ``reconnect_backoff_max_ms`` (1 s by default, the Java client's value).
4. *Transactional commits without membership.* After ``UnknownMemberIdError`` kafka-python
   resets the member to generation -1 and no member id, and the broker accepts a transactional
   offset commit carrying no generation without any check. :attr:`GroupMembership.is_member`
   says whether a snapshot can be fenced against; :meth:`Producer.commit_offsets` refuses
   one that cannot.
5. *Undecodable batches.* A record batch the client cannot decode raises out of ``poll`` with
   no partition attached, and the same batch raises again on every poll. :meth:`Consumer.poll`
   names the partition and offset, pauses that partition and reports it
   (:class:`~messaging.errors.UndecodableError`), so the others go on.
6. *Deadlines.* ``commit_transaction``, ``send_offsets_to_transaction``,
   ``abort_transaction`` and ``init_transactions`` wait without a deadline (or deaf to a stop)
   in kafka-python; :class:`Producer` waits on each with one (``transaction_timeout_s``).
7. *Flush and close.* kafka-python's flush waits per pending batch and its close raises with
   the sender still running; :meth:`Producer.flush` has one deadline in all and
   :meth:`Producer.close` stops the sender when it runs out.
8. *A refused record.* One record the broker refuses for itself makes kafka-python's idempotent
   producer fatal for good, and leaves a transactional one with a sequence gap; the producer
   bumps the epoch instead, or reopens the transactional client after the abort.
9. *Sockets of failed connection attempts.* kafka-python leaves the socket of each failed
   connect open until the garbage collector finds it; :mod:`messaging.sockets` closes it.

kafka-python is pinned to 3.0.x in pyproject.toml: 2, 4, 5, 6, 7, 8 and 9 read its internals.
"""

from messaging.admin import Admin, TopicSpec, ensure_topics, wait_until_ready
from messaging.config import client_config
from messaging.consumer import Consumer, RebalanceHandler
from messaging.errors import (
    DeadlineError,
    FatalError,
    FencedError,
    MessagingError,
    RefusedError,
    RetriableError,
    UndecodableError,
)
from messaging.producer import Producer
from messaging.sockets import close_failed_sockets
from messaging.types import GroupMembership, Record, TopicPartition

close_failed_sockets()

__all__ = [
    "Admin",
    "Consumer",
    "DeadlineError",
    "FatalError",
    "FencedError",
    "GroupMembership",
    "MessagingError",
    "Producer",
    "RebalanceHandler",
    "Record",
    "RefusedError",
    "RetriableError",
    "TopicPartition",
    "TopicSpec",
    "UndecodableError",
    "client_config",
    "ensure_topics",
    "wait_until_ready",
]
