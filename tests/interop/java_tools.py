"""Apache Kafka's own command-line clients, from the jars the local stack already caches.

They are independent of kafka-python and of tagstream: a worker that interoperates with them
interoperates with the Java clients that production producers and consumers use.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from tagstream.stack import kafka_libs

TOOLS = "org.apache.kafka.tools"
JVM = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


def _java(main: str, *args: str, stdin: str | None = None, timeout_s: float = 120) -> str:
    command = ["java", *JVM, "-cp", f"{kafka_libs()}/*", main, *args]
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{main} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result.stdout


def console_produce(
    bootstrap: str, topic: str, records: list[tuple[str, str]], *, codec: str
) -> None:
    """Send ``(key, value)`` lines with ``ConsoleProducer``, compressed with ``codec``.

    Keys and values are separated by a tab; values must not contain one or a newline.
    """
    lines = "".join(f"{key}\t{value}\n" for key, value in records)
    _java(
        f"{TOOLS}.ConsoleProducer",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--compression-codec",
        codec,
        "--request-required-acks",
        "all",
        "--reader-property",
        "parse.key=true",
        "--reader-property",
        "key.separator=\t",
        # Many records to one batch, so each codec really compresses a batch of several.
        "--command-property",
        "linger.ms=50",
        stdin=lines,
    )


def console_consume(bootstrap: str, topic: str, count: int, *, timeout_s: float = 60) -> list[str]:
    """Read ``count`` values from the start of ``topic`` with ``ConsoleConsumer``, committed
    transactions only (``read_committed``)."""
    out = _java(
        f"{TOOLS}.consumer.ConsoleConsumer",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--isolation-level",
        "read_committed",
        "--max-messages",
        str(count),
        "--timeout-ms",
        str(int(timeout_s * 1000)),
        timeout_s=timeout_s + 60,
    )
    return [line for line in out.splitlines() if line.startswith("{")]


@dataclass(frozen=True)
class GroupPartition:
    """One row of ``ConsumerGroupCommand --describe``."""

    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None


def describe_group(bootstrap: str, group: str) -> list[GroupPartition]:
    """The group's committed offsets and lag per partition, as Kafka's own tool reports them."""
    out = _java(
        f"{TOOLS}.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server",
        bootstrap,
        "--describe",
        "--group",
        group,
    )
    rows = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[0] != group:
            continue
        _, topic, partition, committed, end, lag = fields[:6]
        rows.append(
            GroupPartition(
                topic,
                int(partition),
                None if committed == "-" else int(committed),
                int(end),
                None if lag == "-" else int(lag),
            )
        )
    if not rows:
        raise AssertionError(f"no partitions in the description of {group}:\n{out}")
    return rows
