"""Settings of the streaming worker (``TAGSTREAM_WORKER_*``).

Kafka and Redis connections are :class:`common.settings.KafkaSettings` and
:class:`common.settings.RedisSettings`; this class holds what the worker does with them.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from common.settings import settings_config
from schemas import DEFAULT_MAX_BODY_BYTES

ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
Device = Literal["auto", "cpu", "cuda"]
Runtime = Literal["auto", "torch", "onnx"]


class WorkerSettings(BaseSettings):
    """One worker process: topics, group, batching, delivery guarantee, model, observability."""

    model_config = settings_config("TAGSTREAM_WORKER_")

    # -- topics and group -------------------------------------------------------------------
    input_topic: str = Field(default="articles", min_length=1)
    output_topic: str = Field(default="articles.predictions", min_length=1)
    dlq_topic: str = Field(default="articles.dlq", min_length=1)
    group_id: str = Field(default="tagstream-workers", min_length=1)
    worker_id: str | None = Field(default=None, min_length=1, max_length=200)
    """Names this worker in results and in its transactional id; see :meth:`resolved_worker_id`."""
    group_instance_id: str | None = Field(default=None, min_length=1)
    """Static membership: a restart within ``session_timeout_ms`` keeps the assignment."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    assignor: Literal["range", "cooperative-sticky"] = "range"
    """How the group spreads partitions. ``cooperative-sticky`` (KIP-429) moves only the
    partitions that change owner in a rebalance; the others keep being worked (docs/kafka.md)."""

    # -- delivery ---------------------------------------------------------------------------
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    commit_interval_ms: int = Field(default=1000, ge=10, le=600_000)
    """At-least-once: commit acknowledged offsets at least this often..."""
    commit_every_messages: int = Field(default=5000, ge=1)
    """...or as soon as this many more messages are acknowledged."""
    transactional_id_prefix: str = Field(default="tagstream-worker", min_length=1)
    transaction_retry_backoff_ms: int = Field(default=10, ge=1, le=10_000)
    """Exactly-once: wait before retrying a transactional request (kafka-python's default is
    100 ms, which a transaction often pays once while the previous one completes)."""
    transaction_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Exactly-once: the longest wait for the broker to answer a transactional request
    (send the offsets, commit, abort); past it the worker stops rather than wait forever."""
    refused_retries: int = Field(default=2, ge=0, le=100)
    """A result the broker refuses for itself (over its topic's ``max.message.bytes``, a topic
    this worker may not write) is sent again this many times, its partition rewound each
    time; then a prediction is replaced by a dead letter saying why, a dead letter by a bare
    one (no payload); if even that is refused, the worker stops with exit status 1
    (worker/refusals.py)."""
    dlq_max_payload_bytes: int = Field(default=256 * 1024, ge=0)
    """A dead letter keeps at most this much of the original message (base64 grows it 4/3)."""

    # -- batching ---------------------------------------------------------------------------
    max_batch_size: int = Field(default=64, ge=1, le=65_536)
    max_batch_tokens: int = Field(default=32_768, ge=1)
    """Padded tokens (longest article x articles) at which a batch closes."""
    max_wait_ms: float = Field(default=20.0, ge=0, le=60_000)
    bucket_size: int = Field(default=64, ge=1)
    """On CPU a batch is run in buckets of similar lengths, at most this many articles each."""
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1)
    """A message value longer than this is dead-lettered unparsed (Kafka's own default
    ``message.max.bytes`` is about the same); at least ``max_body_bytes``."""

    # -- the loop and its queues ------------------------------------------------------------
    max_poll_records: int = Field(default=500, ge=1)
    poll_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    intake_chunks: int = Field(default=4, ge=1)
    """Polled chunks (of up to ``max_poll_records``) waiting for decoding; full -> pause."""
    batch_queue: int = Field(default=2, ge=1)
    """Encoded batches waiting for inference; full -> the assembler waits, intake fills."""
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    session_timeout_ms: int = Field(default=45_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3000, ge=100)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    """At shutdown: how long in-flight batches may take to be published and committed."""
    revoke_timeout_s: float = Field(default=10.0, gt=0)
    """On revocation: how long to wait for in-flight work before discarding it."""
    join_timeout_s: float = Field(default=90.0, gt=0)
    """Leave and rejoin the group when no assignment arrives this long after joining began
    (kafka-python 3.0.12 can lose a completed join; see docs/worker.md). Longer than
    ``session_timeout_ms``: a rebalance may wait that long for a dead member."""
    producer_linger_ms: int = Field(default=5, ge=0)
    switch_interval_ms: float | None = Field(default=None, gt=0, le=1000)
    """How often Python asks the thread holding the GIL to hand it over
    (``sys.setswitchinterval``); unset keeps Python's 5 ms. Process-wide, set by ``main``."""

    # -- inference circuit breaker (worker/breaker.py) ----------------------------------------
    breaker_window: int = Field(default=8, ge=1, le=10_000)
    """Batches the breaker looks back over. A batch fails when every article of it failed and
    the model fails on its known-good warm-up input too; such a batch is never dead-lettered
    (its partitions are rewound), whether or not the breaker opens."""
    breaker_threshold: float = Field(default=0.5, gt=0, le=1)
    """The breaker opens when at least this share of the last ``breaker_window`` batches
    failed: scoring stops, ``/healthz`` fails, the next try waits out the backoff."""
    breaker_backoff_initial_s: float = Field(default=1.0, gt=0, le=3600)
    """The first wait while open; each failed trial doubles it..."""
    breaker_backoff_max_s: float = Field(default=60.0, gt=0, le=3600)
    """...up to this. A trial that scores closes the breaker and resets the wait."""

    # -- model ------------------------------------------------------------------------------
    model_alias: Literal["production", "canary"] = "production"
    model_path: Path | None = None
    """Serve this artifact file instead of the registry alias (no hot swap)."""
    hot_swap: bool = True
    device: Device = "auto"
    runtime: Runtime = "auto"
    """What runs the network: ``onnx`` (ONNX Runtime, CPU only; one GIL-free native call per
    forward pass, and torch is never imported), ``torch``, or ``auto``: ONNX Runtime on the
    CPU, torch on CUDA (docs/worker.md)."""
    threads: int = Field(default=1, ge=1, le=256)
    inference_process: bool = False
    """Run the models' forward passes in a child process (``worker.offload``), off the
    worker's GIL; the worker keeps the encoder and the label decision."""
    inference_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """With ``inference_process``: how long one forward-pass request may take before the child
    is taken for hung, killed and started again."""
    include_scores: bool = False
    """Put every label's score in each prediction, not only the labels that passed."""
    model_load_attempts: int = Field(default=5, ge=1, le=100)
    """Hot swap: tries of a new version that fails for a transient reason (Redis timeout, out
    of memory in warm-up) before it is refused until the next promote."""
    model_retry_initial_s: float = Field(default=1.0, gt=0, le=600)
    """Hot swap: wait before the second try; it doubles per failure up to ``model_retry_max_s``."""
    model_retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    model_behind_alias_s: float = Field(default=300.0, gt=0)
    """``/readyz`` fails (and one warning is logged) once the worker has served a version other
    than the alias's for this long: the new version is refused, or still failing."""

    # -- shadow scoring ---------------------------------------------------------------------
    shadow_alias: Literal["canary"] | None = None
    """Also score with this alias's version, beside production (``worker.shadow``)."""
    shadow_share: float = Field(default=1.0, gt=0, le=1)
    """The share of articles the shadow scores (a random sample)."""
    shadow_max_delay_ms: float = Field(default=50.0, gt=0, le=60_000)
    """The most time a shadow pass may take per batch: it delays the next batch by this much."""
    shadow_topic: str | None = Field(default=None, min_length=1)
    """Publish the shadow's predictions here too (at most once, outside transactions)."""

    # -- observability ----------------------------------------------------------------------
    metrics_port: int | None = Field(default=9400, ge=0, le=65_535)
    """``/metrics``, ``/healthz``, ``/readyz``; 0 picks a free port, unset turns it off."""
    metrics_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> WorkerSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        if self.revoke_timeout_s * 1000 >= self.session_timeout_ms:
            raise ValueError("revoke_timeout_s must be shorter than session_timeout_ms")
        if self.breaker_backoff_initial_s > self.breaker_backoff_max_s:
            raise ValueError("breaker_backoff_initial_s must be at most breaker_backoff_max_s")
        if self.join_timeout_s * 1000 <= self.session_timeout_ms:
            raise ValueError("join_timeout_s must be longer than session_timeout_ms")
        if self.model_retry_max_s < self.model_retry_initial_s:
            raise ValueError("model_retry_max_s must be at least model_retry_initial_s")
        if self.max_message_bytes < self.max_body_bytes:
            raise ValueError("max_message_bytes must be at least max_body_bytes")
        return self

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    def resolved_worker_id(self) -> str:
        """``worker_id``, else ``group_instance_id``, else the host name.

        Nothing here changes when the process restarts (no pid, no random part), so the
        transactional id of a restarted worker is its predecessor's and ``init_transactions``
        fences it and aborts what it left open. Two workers on one host need their own ids:
        ``--processes`` sets ``{worker_id or host name}-{slot}`` per slot; otherwise set
        ``TAGSTREAM_WORKER_WORKER_ID`` (two workers sharing an id fence each other).
        """
        return self.worker_id or self.group_instance_id or socket.gethostname()

    def transactional_id(self) -> str:
        return f"{self.transactional_id_prefix}.{self.group_id}.{self.resolved_worker_id()}"
