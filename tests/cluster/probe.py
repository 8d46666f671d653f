"""One ``acks=all`` idempotent send, in a process of its own, and what the cluster answered.

A client that meets a stopped node inside the test process could leave what it held (the
sockets of failed attempts, a producer whose close raised) for whichever later test collects
it (see tests/reliability/test_broker_restart.py). So the send runs in a child
process, which prints ``acknowledged`` or ``ErrorName: message`` and exits 0 either way.

Run as ``python -m tests.cluster.probe BOOTSTRAP TOPIC VALUE TIMEOUT_S``.
"""

from __future__ import annotations

import subprocess
import sys

from kafka import KafkaProducer

from common.settings import KafkaSettings
from messaging.config import client_config
from messaging.producer import close_kafka_producer

ACKNOWLEDGED = "acknowledged"


def probe_send(bootstrap: str, topic: str, value: bytes, timeout_s: float) -> str:
    """What the cluster at ``bootstrap`` answers to one send within ``timeout_s``."""
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.cluster.probe",
            bootstrap,
            topic,
            value.decode(),
            str(timeout_s),
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    return child.stdout.strip().splitlines()[-1]


def main(bootstrap: str, topic: str, value: str, timeout_s: float) -> str:
    timeout_ms = int(timeout_s * 1000)
    producer = KafkaProducer(
        **client_config(KafkaSettings(bootstrap=bootstrap)),
        acks="all",
        enable_idempotence=True,
        delivery_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms - 1000,
        max_block_ms=timeout_ms,
    )
    try:
        producer.send(topic, value=value.encode()).get(timeout=timeout_s + 5)
    except Exception as exc:  # the point: which error
        return f"{type(exc).__name__}: {exc}"
    finally:
        close_kafka_producer(producer, 5)
    return ACKNOWLEDGED


if __name__ == "__main__":
    print(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])), flush=True)
