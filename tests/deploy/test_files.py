"""Every deployment file parses, and the Kubernetes objects carry only string values."""

from __future__ import annotations

import json

from tests.deploy.support import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    DOCS,
    GRAFANA,
    K8S,
    PROMETHEUS,
    containers,
    deploy_files,
    k8s_objects,
    yaml_documents,
)


def test_the_deployment_files_named_by_the_issue_exist() -> None:
    for path in (DOCKERFILE, COMPOSE, PROMETHEUS / "prometheus.yml", DOCS):
        assert path.is_file(), path
    assert list((GRAFANA / "dashboards").glob("*.json"))
    assert (K8S / "base" / "kustomization.yaml").is_file()


def test_every_yaml_file_parses_to_at_least_one_document() -> None:
    paths = deploy_files(".yaml", ".yml")
    assert len(paths) >= 10
    for path in paths:
        assert yaml_documents(path), f"{path.relative_to(DEPLOY)} is empty"


def test_every_json_file_parses() -> None:
    paths = deploy_files(".json")
    assert paths
    for path in paths:
        json.loads(path.read_text(encoding="utf-8"))


def test_every_kustomization_lists_files_that_exist() -> None:
    for path in deploy_files(".yaml"):
        if path.name != "kustomization.yaml":
            continue
        (document,) = yaml_documents(path)
        entries = list(document.get("resources", []))
        entries += [patch["path"] for patch in document.get("patches", []) if "path" in patch]
        for entry in entries:
            assert (path.parent / entry).exists(), f"{path.relative_to(DEPLOY)}: {entry}"


def test_kubernetes_objects_name_their_api_version_and_kind() -> None:
    objects = k8s_objects()
    assert {o["kind"] for o in objects} >= {
        "Namespace", "ConfigMap", "Secret", "Job", "Deployment", "PersistentVolumeClaim",
        "ScaledObject", "PodDisruptionBudget",
    }  # fmt: skip
    for o in objects:
        assert o["apiVersion"] and o["metadata"]["name"]


def test_configmap_and_secret_values_and_container_env_values_are_strings() -> None:
    """Kubernetes refuses numbers and booleans there: "9400" must be quoted."""
    for o in k8s_objects(patches=True):
        for key in ("data", "stringData"):
            for name, value in (o.get(key) or {}).items():
                assert isinstance(value, str), f"{o['kind']} {o['metadata']['name']}: {name}"
        template = o.get("spec", {}).get("template", {}).get("spec")
        for c in containers(template) if template else []:
            for entry in c.get("env", []):
                assert "valueFrom" in entry or isinstance(entry["value"], str), entry["name"]
