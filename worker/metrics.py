"""Prometheus metrics of one worker, in a registry of its own (served by ``common.health``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from model.encoder import UNK_ID

PREFIX = "tagstream_worker"
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COUNTS = tuple(float(2**i) for i in range(13))
TOKENS = tuple(float(2**i) for i in range(6, 21))
LENGTHS = (8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 384.0, 512.0, 1024.0, 2048.0)
MAX_SOURCES = 50
"""Distinct ``source`` labels before the rest count as ``other`` (bounded cardinality)."""
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
            "New model versions refused until the next promote (integrity or format failure, "
            "or transient failures past the retry limit)",
            registry=r,
        )
        self.inference_process_restarts = Counter(
            f"{PREFIX}_inference_process_restarts",
            "Times the inference process was started again after it died or hung",
            registry=r,
        )
        self.model_load_retries = Counter(
            f"{PREFIX}_model_load_retries",
            "New model versions tried again after a transient failure (Redis, memory)",
            registry=r,
        )
        self.model_behind_alias_seconds = Gauge(
            f"{PREFIX}_model_behind_alias_seconds",
            "How long the model serving has not been the one the alias points at (0: it is)",
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
        self._shadow(r)
        self._inputs(r)

    def _inputs(self, r: CollectorRegistry) -> None:
        """Input drift: what the articles look like to the model."""
        self.article_tokens = Histogram(
            f"{PREFIX}_article_tokens",
            "Tokens per scored article (after truncation to the model's max_tokens)",
            buckets=LENGTHS,
            registry=r,
        )
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens of scored articles", registry=r)
        self.unknown_tokens = Counter(
            f"{PREFIX}_unknown_tokens",
            "Tokens outside the model's vocabulary ([UNK]) in scored articles",
            registry=r,
        )
        self.sources = Counter(
            f"{PREFIX}_articles_by_source",
            f"Scored articles by their source field (the first {MAX_SOURCES} seen; then other)",
            ["source"],
            registry=r,
        )
        self._sources_seen: set[str] = set()

    def observe_inputs(self, token_ids: list[tuple[int, ...]], sources: list[str]) -> None:
        """Count a batch's scored articles for the input-drift metrics."""
        tokens = unknown = 0
        for ids in token_ids:
            self.article_tokens.observe(len(ids))
            tokens += len(ids)
            unknown += ids.count(UNK_ID)
        self.tokens.inc(tokens)
        self.unknown_tokens.inc(unknown)
        for source in sources:
            if source not in self._sources_seen and len(self._sources_seen) < MAX_SOURCES:
                self._sources_seen.add(source)
            self.sources.labels(source if source in self._sources_seen else "other").inc()

    def _shadow(self, r: CollectorRegistry) -> None:
        """Shadow scoring with the canary version (``worker.shadow``)."""
        self.shadow_version = Gauge(
            f"{PREFIX}_shadow_model_version", "Version scoring as the shadow (0: none)", registry=r
        )
        self.shadow_articles = Counter(
            f"{PREFIX}_shadow_articles", "Articles scored by the shadow model", registry=r
        )
        self.shadow_agreements = Counter(
            f"{PREFIX}_shadow_agreements",
            "Shadow-scored articles given the same label set as production",
            registry=r,
        )
        self.shadow_flips = Counter(
            f"{PREFIX}_shadow_label_flips",
            "Shadow-scored articles on which the shadow and production differ about a label",
            ["label"],
            registry=r,
        )
        self.shadow_skipped = Counter(
            f"{PREFIX}_shadow_skipped",
            "Sampled articles left unscored to keep the shadow within its time budget",
            registry=r,
        )
        self.shadow_failures = Counter(
            f"{PREFIX}_shadow_failures",
            "Shadow scores or shadow records that failed (production is unaffected)",
            registry=r,
        )
        self.shadow_seconds = Histogram(
            f"{PREFIX}_shadow_seconds", "Time of one shadow pass", buckets=SECONDS, registry=r
        )
