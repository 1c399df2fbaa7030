"""The API answers what its OpenAPI document says (issue 13): schemathesis, with every check,
against a real `pantau run` on the test's PostgreSQL and a Mosquitto with dynamic security (so
registering a device issues real credentials), with an admin token.

Every operation in `/openapi.json` is fuzzed, so an endpoint added later is covered without
touching this test. Bounded for `make test`: `MAX_EXAMPLES` per operation and `MAX_TIME` for the
examples, coverage and fuzzing phases and `STATEFUL_TIME` for the stateful one; the seed is fixed
so that a failure reproduces (`PANTAU_FUZZ_SEED` picks another, `PANTAU_FUZZ_EXAMPLES`,
`PANTAU_FUZZ_SECONDS` and `PANTAU_FUZZ_STATEFUL_SECONDS` run longer). The checks' settings,
and why each differs from schemathesis's defaults, are in `schemathesis.toml` beside this file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from pantau import auth
from pantau.embedded import MosquittoBroker, PostgresCluster
from tests.fixtures.pantau_proc import PantauProcess, ingest_env
from tests.fixtures.servers import DYNSEC_ADMIN

MAX_EXAMPLES = int(os.environ.get("PANTAU_FUZZ_EXAMPLES", "30"))
MAX_TIME = int(os.environ.get("PANTAU_FUZZ_SECONDS", "60"))
STATEFUL_TIME = int(os.environ.get("PANTAU_FUZZ_STATEFUL_SECONDS", "50"))
STATEFUL_EXAMPLES = 100  # scenarios: enough for every registry link to be taken
SEED = os.environ.get("PANTAU_FUZZ_SEED", "20261201")
CONFIG = Path(__file__).with_name("schemathesis.toml")
_DEVICE_SOURCES = {
    "POST /api/v1/devices",
    "GET /api/v1/devices/{device_id}",
    "PATCH /api/v1/devices/{device_id}",
}


def _links_followed(events: Path) -> set[tuple[str, str]]:
    """(source operation, target operation) of every link the stateful phase applied, from
    schemathesis's event stream (a transition's id reads `SOURCE -> [STATUS] LINK -> TARGET`)."""
    found: set[tuple[str, str]] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            transition = node.get("transition")
            if isinstance(transition, dict) and node.get("is_transition_applied"):
                source, _, target = str(transition["id"]).split(" -> ")
                found.add((source, target))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for line in events.read_text().splitlines():
        walk(json.loads(line))
    return found


def _schemathesis(
    base: str, token: str, cwd: Path, phases: str, seconds: int, examples: int = MAX_EXAMPLES
) -> str:
    """One schemathesis run with every check; fails the test on any failure, with the report."""
    events = cwd / f"{phases.split(',')[-1]}.ndjson"
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--no-color",
            "--config-file",
            str(CONFIG),
            "run",
            f"{base}/openapi.json",
            "--phases",
            phases,
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            str(examples),
            "--max-time",
            str(seconds),
            "--seed",
            SEED,
            "--workers",
            "1",
            "--output-truncate",
            "false",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(events),
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=seconds + 120,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20000:]
    return report


def _admin_token(db: str) -> str:
    async def create() -> str:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            return (await auth.create_token(conn, "schemathesis", "admin", "test")).token

    return asyncio.run(create())


@pytest.mark.timeout(MAX_TIME + STATEFUL_TIME + 300)
def test_every_operation_keeps_its_contract(
    postgres_cluster: PostgresCluster,
    database_url: str,
    dynsec_broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    env = ingest_env(postgres_cluster, dynsec_broker, tmp_path / "spool", "contract")
    env |= {
        "PANTAU_DATABASE__URL": database_url,
        "PANTAU_MQTT__USERNAME": DYNSEC_ADMIN[0],
        "PANTAU_MQTT__PASSWORD": DYNSEC_ADMIN[1],
        "PANTAU_MQTT__DYNSEC": "true",
        "PANTAU_LOG__LEVEL": "WARNING",
    }
    pantau = PantauProcess(env, tmp_path)
    pantau.start()
    try:
        pantau.wait_ready()
        token = _admin_token(database_url)
        base = f"http://127.0.0.1:{pantau.port}"
        # One device to read, so that reads answer 200 and not only 404 from the start (not the
        # schema's example id, which the fuzzer then registers itself).
        registered = httpx.post(
            f"{base}/api/v1/devices",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "device_id": "wl-babelan-01",
                "name": "Pintu air Babelan",
                "device_type": "water_level",
                "kecamatan": "babelan",
                "latitude": -6.13,
                "longitude": 107.03,
            },
            timeout=10,
        )
        assert registered.status_code == 201, registered.text
        # Two runs: the stateful phase gets a budget of its own, so that more operations
        # (each fuzzed in the first run) never leave it too little time to follow links.
        fuzzed = _schemathesis(base, token, tmp_path, "examples,coverage,fuzzing", MAX_TIME)
        operations = sum(
            len(methods) for methods in httpx.get(f"{base}/openapi.json").json()["paths"].values()
        )
        assert f"Tested: {operations}\n" in fuzzed, fuzzed[-3000:]  # every operation
        stateful = _schemathesis(
            base, token, tmp_path, "stateful", STATEFUL_TIME, examples=STATEFUL_EXAMPLES
        )
        assert "✅  Stateful" in stateful, stateful[-3000:]
        # The stateful phase followed the registry's links: it created a device and read it,
        # then patched, retired and renewed devices it had created or read, with their ETags.
        followed = _links_followed(tmp_path / "stateful.ndjson")
        device = "/api/v1/devices/{device_id}"
        assert ("POST /api/v1/devices", f"GET {device}") in followed, sorted(followed)
        reached = {target for source, target in followed if source in _DEVICE_SOURCES}
        wanted = {f"PATCH {device}", f"POST {device}/retire", f"POST {device}/credentials"}
        assert wanted <= reached, sorted(followed)
        server_errors = [
            line for line in pantau.log.read_text().splitlines() if "Exception in ASGI" in line
        ]
        assert not server_errors, server_errors[:3]
    finally:
        pantau.stop()
