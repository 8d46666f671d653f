"""A real Prometheus for the demo: a configuration for the services it started, and queries.

The demo starts Debian's ``prometheus`` (installed by set-up) with a configuration written for
the run: one job per service at the ports the demo gave them, scraped every 2 s, with the
project's alert rules (``deploy/prometheus/alerts.yml``) loaded. Its data lives in the run's
directory and goes with it.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from common.errors import TagstreamError

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"


def binary() -> str:
    """The ``prometheus`` executable; set-up installs Debian's package."""
    found = shutil.which("prometheus")
    if found is None:
        raise TagstreamError("prometheus is not installed: run `make setup`")
    return found


def write_config(directory: Path, targets: dict[str, int], *, scrape_s: int = 2) -> Path:
    """``prometheus.yml`` scraping ``targets`` (job name -> port on 127.0.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    rules = directory / "alerts.yml"
    rules.write_bytes(RULES.read_bytes())
    config = {
        "global": {"scrape_interval": f"{scrape_s}s", "evaluation_interval": f"{scrape_s}s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": name,
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                "metrics_path": "/metrics",
            }
            for name, port in sorted(targets.items())
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    return path


def argv(config: Path, port: int, data: Path) -> list[str]:
    return [
        binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
    ]


def query(port: int, expr: str, *, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The result vector of an instant query (empty when Prometheus does not answer)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return []
    if body.get("status") != "success":
        return []
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_ready(port: int, timeout_s: float = 60.0) -> bool:
    """Whether Prometheus answered ``/-/ready`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False
