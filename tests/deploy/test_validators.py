"""The deploy files pass the real validators, beside this suite's own static checks.

- deploy/k8s: each kustomization rendered by ``kustomize build``, then
  ``kubernetes-validate --strict`` against Kubernetes ``K8S_VERSION`` (unknown fields fail).
  Custom resources (KEDA, Prometheus Operator) have no schema there: the kinds left
  unvalidated are named here, so a new one fails until it is named too.
- deploy/compose.yaml: ``check-jsonschema`` with the Compose Specification's schema.
- deploy/prometheus: ``promtool check config`` (which also checks the rule files it names)
  and ``promtool check rules``.

``deploy/local/setup.sh`` installs the tools: the Python ones with the dev extra into the
project's virtualenv, kustomize built from its Go module into the cache and linked into
the virtualenv, promtool from Debian's ``prometheus`` package. A missing tool fails the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.support import COMPOSE, K8S, PROMETHEUS, yaml_documents

K8S_VERSION = "1.33.0"
KEDA = {"ScaledObject", "TriggerAuthentication"}
CUSTOM_KINDS = {"base": KEDA, "gpu": KEDA, "monitoring": {"PodMonitor"}}
"""The custom resources of each part of deploy/k8s, which kubernetes-validate has no schema
for (their fields are checked by test_k8s.py)."""


def tool(name: str) -> str:
    """A validator from the project's virtualenv, else from the PATH; missing fails."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed (not in {beside.parent}, not on the PATH): "
            "run `make setup` (deploy/local/setup.sh)",
            pytrace=False,
        )
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def rendered(part: str, out: Path) -> Path:
    """``deploy/k8s/<part>`` as the cluster would get it: kustomize's output, or the plain
    files of a part without a kustomization."""
    directory = K8S / part
    path = out / f"{part}.yaml"
    if not (directory / "kustomization.yaml").is_file():
        path.write_text("\n---\n".join(p.read_text() for p in sorted(directory.glob("*.yaml"))))
        return path
    build = run(tool("kustomize"), "build", str(directory))
    assert build.returncode == 0, f"kustomize build {directory}:\n{build.stderr}"
    path.write_text(build.stdout)
    return path


@pytest.mark.parametrize("part", sorted(CUSTOM_KINDS))
def test_the_rendered_kubernetes_manifests_are_valid_for_kubernetes_1_33(
    part: str, tmp_path: Path
) -> None:
    manifests = rendered(part, tmp_path)
    objects = [doc for doc in yaml_documents(manifests) if isinstance(doc, dict)]
    result = run(
        tool("kubernetes-validate"), "--strict", "--kubernetes-version", K8S_VERSION, str(manifests)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.findall(r"passed for resource (\S+)", output)
    unvalidated = set(re.findall(r"Couldn't find schema for kind (\S+)", output))
    assert unvalidated == CUSTOM_KINDS[part], output
    expected = [o for o in objects if o["kind"] not in CUSTOM_KINDS[part]]
    assert len(passed) == len(expected), output


def test_compose_yaml_follows_the_compose_specification() -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_config_and_the_rule_files_it_names_pass_promtool() -> None:
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_the_alert_rules_pass_promtool() -> None:
    result = run(tool("promtool"), "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
