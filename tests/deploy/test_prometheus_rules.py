"""Pantau's own alert rules (deploy/prometheus/rules/pantau.yml), checked and unit-tested with
Prometheus's promtool (Debian package `prometheus`), and held to the metrics Pantau exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ingest.metrics import IngestMetrics
from pantau import metrics
from pantau.supervisor import Backoff, Supervisor

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/pantau.yml"
CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
UNIT_TESTS = ROOT / "tests/deploy/prometheus/pantau_test.yml"

# Added by the outages work (issue 9); the rules use them before Pantau exports them.
ISSUE_9_METRICS = frozenset(
    {
        "pantau_outage_detector_leader",
        "pantau_outage_detector_last_pass_timestamp_seconds",
        "pantau_alert_outbox_pending",
        "pantau_alert_deliveries_total",
    }
)
ANNOTATIONS = ("summary", "summary_id", "description", "runbook")
_METRIC = re.compile(r"\bpantau_[a-z0-9_]+")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is missing: install the Debian package `prometheus` "
            "(deploy/debian-packages.sh test, as root)"
        )
    return path


def _run(promtool: str, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _rules(text: str) -> dict[str, str]:
    """Each alert's name and the text of its rule (the file has no other kind of entry; there is
    no YAML parser among Pantau's dependencies, and promtool checks the YAML itself)."""
    parts = re.split(r"^ {6}- alert: (\S+)\n", text, flags=re.MULTILINE)
    pairs = zip(parts[1::2], parts[2::2], strict=True)
    return {name: body.split("\n      # ---")[0] for name, body in pairs}


def _field(rule: str, key: str) -> str:
    """A top-level field of a rule (`expr`, `for`), inline or a `>-` block."""
    m = re.search(rf"^ {{8}}{key}: (.*)\n((?: {{10}}.*\n|\n)*)", rule, flags=re.MULTILINE)
    assert m is not None, f"no {key}: in\n{rule}"
    inline, block = m.groups()
    return block if inline.strip() in (">-", ">", "|") else inline


def _exported() -> set[str]:
    """The sample names of every series Pantau's registries hold: the process-wide ones, the
    database worker's, the ingestion pipeline's and the supervisor's (built, nothing started).
    A rule on a metric of another module needs that module's metrics built here too."""
    registry = metrics.build_registry()
    metrics.database_up(registry)
    metrics.database_schema_ready(registry)
    IngestMetrics.create(registry)
    Supervisor([], registry=registry, backoff=Backoff(), shutdown_timeout=1.0)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(_rules(RULES.read_text()))
    assert f"SUCCESS: {count} rules found" in result.stdout, result.stdout


def test_config_loads_the_rules_and_passes_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool checks the rule files the config names: ours must be among them.
    assert "rules/pantau.yml" in result.stdout, result.stdout
    text = CONFIG.read_text()
    assert "alertmanager:9093" in text
    assert '"pantau:8080"' in text


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = _run(promtool, "test", "rules", UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_unit_tests_fail_for_every_rule_that_loses_its_for(promtool: str, tmp_path: Path) -> None:
    """The unit tests bite: with every `for:` cut to 0s, each alert's quiet case fails."""
    copy = tmp_path / "repo"
    (copy / RULES.parent.relative_to(ROOT)).mkdir(parents=True)
    (copy / UNIT_TESTS.parent.relative_to(ROOT)).mkdir(parents=True)
    text = RULES.read_text()
    rushed = re.sub(r"^( {8}for: ).*$", r"\g<1>0s", text, flags=re.MULTILINE)
    assert rushed != text
    (copy / RULES.relative_to(ROOT)).write_text(rushed)
    shutil.copy(UNIT_TESTS, copy / UNIT_TESTS.relative_to(ROOT))
    result = _run(promtool, "test", "rules", UNIT_TESTS.relative_to(ROOT), cwd=copy)
    assert result.returncode != 0, result.stdout
    failed = set(re.findall(r"alertname: (\w+),", result.stdout + result.stderr))
    assert failed == set(_rules(text)), result.stdout + result.stderr


def test_every_rule_has_for_severity_component_and_annotations() -> None:
    rules = _rules(RULES.read_text())
    assert len(rules) >= 13, sorted(rules)
    for name, rule in rules.items():
        assert re.search(r"^ {8}for: \d+[smh]$", rule, flags=re.MULTILINE), name
        assert re.search(r"^ {10}severity: (critical|warning)$", rule, flags=re.MULTILINE), name
        assert re.search(r"^ {10}component: [a-z]+$", rule, flags=re.MULTILINE), name
        for key in ANNOTATIONS:
            assert re.search(rf"^ {{10}}{key}: \S", rule, flags=re.MULTILINE), (name, key)


def test_every_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    """promtool compares a firing alert's labels and annotations in full, so a firing case
    checks them all; a quiet case expects no alert at some evaluation time."""
    firing: set[str] = set()
    quiet: set[str] = set()
    cases = re.split(r"^ {6}- eval_time: ", UNIT_TESTS.read_text(), flags=re.MULTILINE)[1:]
    for case in cases:
        m = re.search(r"^ {8}alertname: (\S+)\n {8}exp_alerts:(.*)$", case, flags=re.MULTILINE)
        assert m is not None, case
        name, rest = m.groups()
        if rest.strip() == "[]":
            quiet.add(name)
        else:
            assert "exp_annotations:" in case, name
            firing.add(name)
    rules = set(_rules(RULES.read_text()))
    assert rules - firing == set(), "rules without a firing case"
    assert rules - quiet == set(), "rules without a quiet case"
    assert (firing | quiet) - rules == set(), "cases of alerts that do not exist"


def test_rules_use_only_metrics_pantau_exports() -> None:
    exported = _exported()
    assert "pantau_ingest_readings_written_total" in exported  # the registries were built
    for name, rule in _rules(RULES.read_text()).items():
        expr = _field(rule, "expr")
        used = set(_METRIC.findall(expr))
        assert used or expr.startswith('up{job="pantau"}'), (name, expr)
        assert used - exported - ISSUE_9_METRICS == set(), name
        # Metrics the annotations tell the on-call to look at must exist too.
        mentioned = set(_METRIC.findall(rule)) - used
        assert mentioned - exported - ISSUE_9_METRICS == set(), name
