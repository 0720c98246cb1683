"""contrib/: the Prometheus alert rules and the Grafana dashboards are valid and current.

``promtool check rules`` and ``promtool test rules`` on the alert rules; every dashboard
query parses (checked by promtool as a recording rule); the committed dashboards are what
scripts/grafana_dashboards.py writes. The metric names both use are checked against the
daemons' real /metrics in tests/test_metrics_exposition.py."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "contrib" / "prometheus" / "plantd-alerts.yml"
DASHBOARDS = ROOT / "contrib" / "grafana" / "dashboards"
METRIC_NAME = re.compile(r"\b((?:plantd|process)_[a-z_]+)")

pytestmark = pytest.mark.timeout(60)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_dashboards", ROOT / "scripts" / "grafana_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_queries() -> list[str]:
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        queries.extend(t["expr"] for p in doc["panels"] for t in p["targets"])
    return queries


def referenced_metrics() -> set[str]:
    """Every metric name the alert rules and the dashboards query."""
    text = RULES.read_text() + "\n".join(dashboard_queries())
    return set(METRIC_NAME.findall(text))


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    rendered = _generator().render()
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert committed == rendered, "run: python scripts/grafana_dashboards.py"
    for text in rendered.values():
        doc = json.loads(text)
        assert doc["uid"].startswith("plantd-") and doc["panels"]
        assert all(
            t["datasource"]["uid"] == "${datasource}" for p in doc["panels"] for t in p["targets"]
        )


def test_alert_rules_check_and_pass_their_unit_tests() -> None:
    promtool = _promtool()
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        [promtool, "test", "rules", "plantd-alerts.test.yml"],
        capture_output=True,
        text=True,
        cwd=RULES.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = []
    for i, expr in enumerate(dashboard_queries()):
        concrete = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        rules.append(
            f"      - record: plantd:dashboard_query_{i}\n        expr: {json.dumps(concrete)}"
        )
    path = tmp_path / "queries.yml"
    path.write_text("groups:\n  - name: dashboards\n    rules:\n" + "\n".join(rules) + "\n")
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
