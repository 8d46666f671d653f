"""The Kafka clients have one home: only the ``messaging`` package imports kafka-python or
confluent-kafka."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("common", "schemas", "corpus", "model", "worker", "trainer", "tagstream")
CLIENTS = ("kafka", "confluent_kafka")


def kafka_imports(path: Path) -> list[str]:
    """Each import of a Kafka client (``import kafka...``, ``from confluent_kafka... import``)
    in ``path``, as ``file:line``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name.split(".")[0] in CLIENTS for name in names):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_module_of_the_product_outside_messaging_imports_a_kafka_client() -> None:
    offenders = [
        hit
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
        for hit in kafka_imports(path)
    ]
    assert offenders == [], f"a Kafka client imported outside messaging/: {offenders}"


def test_the_check_sees_both_forms_of_import(tmp_path: Path) -> None:
    probe = ROOT / "tests" / "foundation" / "_kafka_probe.py"
    probe.write_text(
        "import kafka.errors\nfrom kafka import KafkaConsumer\nimport kafkaesque\n"
        "from confluent_kafka import Producer\nimport confluent_kafka.admin\n"
    )
    try:
        assert kafka_imports(probe) == [
            "tests/foundation/_kafka_probe.py:1",
            "tests/foundation/_kafka_probe.py:2",
            "tests/foundation/_kafka_probe.py:4",
            "tests/foundation/_kafka_probe.py:5",
        ]
    finally:
        probe.unlink()


def test_the_boundary_package_does_not_shadow_kafka_python() -> None:
    import kafka  # noqa: PLC0415

    assert not (ROOT / "kafka").exists()
    assert Path(kafka.__file__).parent.parent != ROOT
