"""The Pipeline dashboard's PromQL: every metric it names is one a running Pantau exports (its
/metrics, scraped here from a real `pantau run`), and promtool parses every expression."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from grafana.panels import PanelQuery, panel_queries
from pantau.embedded import MosquittoBroker, PostgresCluster
from tests.fixtures.pantau_proc import PantauProcess, ingest_env

PROMQL = [q for q in panel_queries() if q.datasource == "prometheus"]
_METRIC = re.compile(r"\b(pantau_[a-z0-9_]+)")
_SUFFIXES = {
    "counter": ("", "_total", "_created"),
    "gauge": ("",),
    "histogram": ("", "_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("", "_info"),
}


@pytest.fixture(scope="module")
def exported(
    postgres_cluster: PostgresCluster,
    mosquitto: MosquittoBroker,
    tmp_path_factory: pytest.TempPathFactory,
) -> set[str]:
    """The series names a `pantau run` with every worker exposes at /metrics."""
    workdir = tmp_path_factory.mktemp("pantau-metrics")
    postgres_cluster.create_database("metrics")
    pantau = PantauProcess(
        ingest_env(postgres_cluster, mosquitto, workdir / "spool", "metrics")
        | {"PANTAU_DATABASE__URL": postgres_cluster.dsn("metrics")},
        workdir,
    )
    pantau.start()
    try:
        pantau.wait_ready(timeout=60)
        text = httpx.get(f"http://127.0.0.1:{pantau.port}/metrics", timeout=10).text
    finally:
        pantau.stop()
        postgres_cluster.drop_database("metrics")
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names.update(name.removesuffix("_total") + s for s in _SUFFIXES.get(kind, ("",)))
    names.update(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, flags=re.MULTILINE))
    return names


def test_every_metric_the_pipeline_dashboard_names_is_exported(exported: set[str]) -> None:
    assert "pantau_ingest_readings_written_total" in exported  # the scrape worked
    assert "pantau_camera_probes" in exported  # the camera workers' metrics too
    used = {m for q in PROMQL for m in _METRIC.findall(q.text)}
    assert len(used) >= 12, used
    assert used - exported == set()
    # Each query names Pantau's job, as deploy/prometheus/prometheus.yml scrapes it.
    for q in PROMQL:
        assert 'job="pantau"' in q.text, q.text


def _rule(q: PanelQuery, n: int) -> str:
    expr = q.text.replace("$__rate_interval", "1m")  # Grafana's variable, set before sending
    return f"      - record: grafana:check_{n}\n        expr: '{expr}'\n"


def test_promtool_parses_every_expression(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install the Debian package `prometheus`")
    assert all("'" not in q.text for q in PROMQL)  # quoted below as YAML single-quoted scalars
    rules = tmp_path / "grafana.yml"
    rules.write_text(
        "groups:\n  - name: grafana-panels\n    rules:\n"
        + "".join(_rule(q, n) for n, q in enumerate(PROMQL))
    )
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(PROMQL)} rules found" in done.stdout
