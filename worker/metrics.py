"""Prometheus metrics of one worker, in a registry of its own (served by ``common.health``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "tagstream_worker"
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COUNTS = tuple(float(2**i) for i in range(13))
TOKENS = tuple(float(2**i) for i in range(6, 21))
RATIOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class Metrics:
    """Every metric the worker exports; names carry their unit."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            f"{PREFIX}_messages_consumed", "Messages polled from the input topic", registry=r
        )
        self.predictions = Counter(
            f"{PREFIX}_predictions_published",
            "Predictions acknowledged by the broker (or committed in a transaction)",
            registry=r,
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters",
            "Dead letters acknowledged, by error kind",
            ["kind"],
            registry=r,
        )
        self.batches = Counter(
            f"{PREFIX}_batches", "Batches run, by why they closed", ["reason"], registry=r
        )
        self.batch_articles = Histogram(
            f"{PREFIX}_batch_articles", "Articles per batch", buckets=COUNTS, registry=r
        )
        self.batch_padded_tokens = Histogram(
            f"{PREFIX}_batch_padded_tokens",
            "Padded tokens fed to the model per batch",
            buckets=TOKENS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            f"{PREFIX}_padding_ratio",
            "Share of padding in the tokens fed to the model, per batch",
            buckets=RATIOS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            f"{PREFIX}_inference_seconds", "Model time per batch", buckets=SECONDS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            f"{PREFIX}_end_to_end_seconds",
            "From the input message timestamp to the result being published",
            buckets=SECONDS,
            registry=r,
        )
        self.lag = Gauge(
            f"{PREFIX}_consumer_lag_messages",
            "High watermark minus position, per assigned partition",
            ["topic", "partition"],
            registry=r,
        )
        self.paused_partitions = Gauge(
            f"{PREFIX}_paused_partitions", "Partitions paused for backpressure", registry=r
        )
        self.model_version = Gauge(
            f"{PREFIX}_model_version", "Version of the model serving now", registry=r
        )
        self.model_swaps = Counter(f"{PREFIX}_model_swaps", "Models swapped in", registry=r)
        self.model_refusals = Counter(
            f"{PREFIX}_model_refusals",
            "New model versions refused (failed to load, verify or warm up)",
            registry=r,
        )
        self.commits = Counter(
            f"{PREFIX}_offset_commits", "Offset commits, by outcome", ["outcome"], registry=r
        )
        self.transactions = Counter(
            f"{PREFIX}_transactions", "Transactions, by outcome", ["outcome"], registry=r
        )
        self.publish_failures = Counter(
            f"{PREFIX}_publish_failures", "Results the broker did not acknowledge", registry=r
        )
        self.refused_replacements = Counter(
            f"{PREFIX}_refused_results_replaced",
            "Results the broker kept refusing, replaced by a smaller record, by replacement",
            ["replacement"],
            registry=r,
        )
        self.rewinds = Counter(
            f"{PREFIX}_partition_rewinds",
            "Partitions sought back to their last acknowledged offset after a failed publish or a "
            "batch the model failed on as a whole",
            registry=r,
        )
        self.rebalances = Counter(
            f"{PREFIX}_rebalance_events",
            "Partitions assigned, revoked or lost, by event",
            ["event"],
            registry=r,
        )
        self.undecodable = Counter(
            f"{PREFIX}_undecodable_batches",
            "Fetched record batches that could not be decoded; their partition stays paused",
            ["topic", "partition"],
            registry=r,
        )
        self.rejoins = Counter(
            f"{PREFIX}_forced_rejoins",
            "Times the worker left and rejoined the group because a join never completed",
            registry=r,
        )
        self.systemic_failures = Counter(
            f"{PREFIX}_inference_systemic_failures",
            "Batches not answered because the model failed on known-good input too; their "
            "partitions were rewound",
            registry=r,
        )
        self.breaker_trips = Counter(
            f"{PREFIX}_inference_breaker_trips",
            "Times the inference circuit breaker opened from closed",
            registry=r,
        )
        self.breaker_open = Gauge(
            f"{PREFIX}_inference_breaker_open",
            "1 while the inference circuit breaker is open or half-open (/healthz fails)",
            registry=r,
        )
        self.discarded = Counter(
            f"{PREFIX}_messages_discarded",
            "In-flight messages dropped uncommitted (revocation or rewind); they are read again",
            registry=r,
        )
