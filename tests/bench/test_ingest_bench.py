"""The ingestion benchmark (`make bench`): publishers → Mosquitto → Pantau → PostgreSQL, beside
the baselines measured in the same run on the same machine. Prints a Markdown report; the numbers
in docs/benchmarks.md come from it.

  .venv/bin/pytest -m bench -s tests/bench/test_ingest_bench.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from pantau.embedded import MosquittoBroker, PostgresCluster, free_port
from tests.fixtures.servers import throwaway_postgres

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = str(Path(__file__).with_name("clients.py"))
TOPIC = "bench/#"
PUBLISHERS = 4
MESSAGES_10 = 160_000  # 1.6 million readings
MESSAGES_1 = 240_000
PAD_1 = "x" * 150  # 1-reading messages are ~200 bytes too
CONFIG = """
[[ingest.mappings]]
name = "bench"
topic = "bench/{device}"
format = "json"
time = "$.ts"
values = "$.readings"
"""


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, value: str, ratio: str = "") -> None:
        self.rows.append((what, value, ratio))
        print(f"  {what}: {value} {ratio}", flush=True)

    def markdown(self) -> str:
        lines = ["| measurement | result | ratio |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in self.rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes])


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PostgresCluster, MosquittoBroker, Path]]:
    # Durable settings, as in production: fsync and synchronous commit stay on.
    options = ("-c shared_buffers=256MB", "-c max_wal_size=4GB")
    base = Path(tempfile.mkdtemp(prefix="pantau-bench-"))
    base.chmod(0o755)
    with throwaway_postgres(options) as cluster:
        broker = MosquittoBroker(base / "mqtt", port=free_port())
        broker.start()
        yield cluster, broker, base
        broker.stop()
    shutil.rmtree(base, ignore_errors=True)


def payload_lines(per_message: int, count: int, start_ms: int) -> list[str]:
    lines = []
    for i in range(count):
        if per_message == 1:
            doc = {
                "ts": start_ms + i,
                "readings": {"water_level_cm": round(100 + i % 97 * 0.37, 2)},
                "pad": PAD_1,
            }
        else:
            doc = {
                "ts": start_ms + i,
                "readings": {f"r{j}": round(i % 89 * 1.7 + j, 2) for j in range(per_message)},
            }
        lines.append(json.dumps(doc, separators=(",", ":")))
    return lines


def write_loads(base: Path, per_message: int, messages: int, tag: str) -> list[Path]:
    per_proc = messages // PUBLISHERS
    start_ms = int(time.time() * 1000) - 86_400_000
    files = []
    for p in range(PUBLISHERS):
        path = base / f"load-{tag}-{p}.txt"
        path.write_text("\n".join(payload_lines(per_message, per_proc, start_ms)) + "\n")
        files.append(path)
    return files


def start_publishers(port: int, files: list[Path], tag: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for p, path in enumerate(files):
        with path.open("rb") as fh:
            procs.append(
                subprocess.Popen(
                    [
                        "mosquitto_pub",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-q",
                        "1",
                        "-l",
                        "-t",
                        f"bench/{tag}-{p}",
                        "-i",
                        f"pub-{tag}-{p}",
                    ],
                    stdin=fh,
                )
            )
    return procs


def wait_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        assert proc.wait(600) == 0


def client(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, CLIENTS, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def result_of(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=600)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


class Pantau:
    def __init__(
        self,
        cluster: PostgresCluster,
        broker: MosquittoBroker,
        base: Path,
        tag: str,
        processes: int = 1,
    ) -> None:
        self.port = free_port()
        (base / "pantau.toml").write_text(CONFIG)
        env = {
            "PATH": os.environ["PATH"],
            "PANTAU_DATABASE__URL": cluster.dsn(),
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(broker.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-bench-{tag}",
            "PANTAU_HTTP__PORT": str(self.port),
            "PANTAU_INGEST__SPOOL_DIR": str(base / f"spool-{tag}"),
            "PANTAU_INGEST__PROCESSES": str(processes),
            "PANTAU_LOG__FORMAT": "text",
        }
        self.log = (base / f"pantau-{tag}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pantau", "run"],
            env=env,
            cwd=base,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("pantau did not start")

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text

    def value(self, name: str) -> float:
        """The sample's value, summed over the ingest processes' `process` labels if any."""
        pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
        return sum(float(v) for v in re.findall(pattern, self.metrics(), re.MULTILINE))

    def wait_written(self, total: float, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while (written := self.value("pantau_ingest_readings_written_total")) < total:
            assert time.monotonic() < deadline, f"only {written} of {total} written"
            time.sleep(0.25)  # polling /metrics costs Pantau CPU: not too often
        return time.perf_counter()

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024  # type: ignore[index]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def quantile(text: str, name: str, q: float) -> float:
    """A quantile from a Prometheus histogram, interpolated inside its bucket."""
    buckets = [
        (float(le), float(v))
        for le, v in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.MULTILINE)
    ]
    total = buckets[-1][1]
    previous_le, previous_count = 0.0, 0.0
    for le, count in buckets:
        if count >= q * total:
            if le == float("inf"):
                return previous_le
            share = (q * total - previous_count) / max(count - previous_count, 1)
            return previous_le + share * (le - previous_le)
        previous_le, previous_count = le, count
    return previous_le


def fresh_readings(cluster: PostgresCluster, name: str) -> str:
    """A database with only the readings schema, for the COPY and naive baselines."""
    cluster.create_database(name)
    dsn = cluster.dsn(name)
    import asyncio

    from pantau import migrate
    from pantau.settings import StorageSettings
    from pantau.storage import PlainStorage

    async def setup() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate.migrate(conn, "plain")
            await PlainStorage(StorageSettings()).maintain(conn, datetime.now(UTC).date())

    asyncio.run(setup())
    return dsn


def bare_copy(dsn: str, rows: int) -> float:
    start = datetime.now(UTC).timestamp() - 86_400
    data = [
        (datetime.fromtimestamp(start + i / 1000, UTC), f"copy-{i % 8}", f"r{i % 10}", float(i))
        for i in range(rows)
    ]
    with psycopg.connect(dsn) as conn:
        t0 = time.perf_counter()
        for i in range(0, rows, 5000):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(
                    "COPY readings (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["timestamptz", "text", "text", "float8"])
                for row in data[i : i + 5000]:
                    copy.write_row(row)
        return rows / (time.perf_counter() - t0)


def test_ingestion(servers: tuple[PostgresCluster, MosquittoBroker, Path]) -> None:
    cluster, broker, base = servers
    report = Report()
    cores = os.cpu_count()
    print(
        f"\ningestion benchmark on {cores} cores, {PUBLISHERS} mosquitto_pub publishers", flush=True
    )

    # The broker ceiling: a bare paho subscriber counting QoS 1 messages, MQTT 3.1.1 (paho's
    # default, as in the calibration) and MQTT 5 (what Pantau speaks).
    files_1 = write_loads(base, 1, MESSAGES_1, "one")
    bare_rates = {}
    for version in ("3.1.1", "5"):
        bare_client = client(
            "bare", str(broker.port), str(MESSAGES_1), *(["5"] if version == "5" else [])
        )
        wait_all(start_publishers(broker.port, files_1, "bare"))
        bare = result_of(bare_client)
        bare_rates[version] = bare["messages"] / bare["seconds"]
        report.add(
            f"bare paho subscriber, QoS 1, MQTT {version} (broker ceiling)",
            f"{bare_rates[version]:,.0f} messages/s",
        )
    bare_rate = bare_rates["5"]

    # The database ceiling: binary COPY of the same kind of rows, 5000-row transactions.
    copy_rate = bare_copy(fresh_readings(cluster, "bench_copy"), 1_000_000)
    report.add(
        "bare binary COPY, 5000-row transactions (database ceiling)", f"{copy_rate:,.0f} rows/s"
    )

    # What a user would write first: one INSERT per reading, autocommit, as messages arrive.
    naive_client = client("naive", str(broker.port), "15", fresh_readings(cluster, "bench_naive"))
    publishers = start_publishers(broker.port, write_loads(base, 10, 40_000, "naive"), "naive")
    naive = result_of(naive_client)
    for proc in publishers:
        proc.kill()
    naive_rate = naive["readings"] / naive["seconds"]
    report.add(
        "naive subscriber, INSERT per reading, 10 readings/message", f"{naive_rate:,.0f} readings/s"
    )
    time.sleep(2)  # let the broker drop the naive client's backlog

    # Pantau, 10 readings per message.
    pantau = Pantau(cluster, broker, base, "ten")
    files_10 = write_loads(base, 10, MESSAGES_10, "ten")
    t0 = time.perf_counter()
    wait_all(start_publishers(broker.port, files_10, "ten"))
    published = time.perf_counter()
    done = pantau.wait_written(MESSAGES_10 * 10)
    rate_10 = MESSAGES_10 * 10 / (done - t0)
    report.add(
        "Pantau, 10 readings/message, committed",
        f"{rate_10:,.0f} readings/s",
        f"{rate_10 / naive_rate:.0f}x naive; {rate_10 / copy_rate:.2f} of bare COPY",
    )
    report.notes.append(
        f"publishers finished after {published - t0:.1f}s, Pantau committed the last "
        f"reading {done - published:.1f}s later"
    )
    rss_10 = pantau.peak_rss_mb()
    pantau.stop()

    # Pantau, 1 reading per message.
    pantau = Pantau(cluster, broker, base, "one")
    t0 = time.perf_counter()
    wait_all(start_publishers(broker.port, files_1, "one"))
    done = pantau.wait_written(MESSAGES_1)
    rate_1 = MESSAGES_1 / (done - t0)
    report.add(
        "Pantau, 1 reading/message, committed",
        f"{rate_1:,.0f} messages/s",
        f"{rate_1 / bare_rate:.2f} of the bare MQTT 5 subscriber, "
        f"{rate_1 / bare_rates['3.1.1']:.2f} of the 3.1.1 one",
    )
    rss_1 = pantau.peak_rss_mb()
    pantau.stop()

    # Lag at a steady 5,000 messages/s.
    pantau = Pantau(cluster, broker, base, "lag")
    before = pantau.value("pantau_ingest_readings_written_total")
    paced = result_of(client("paced", str(broker.port), "5000", "20"))
    pantau.wait_written(before + paced["messages"])
    text = pantau.metrics()
    p50 = quantile(text, "pantau_ingest_lag_seconds", 0.5)
    p99 = quantile(text, "pantau_ingest_lag_seconds", 0.99)
    report.add("ingest lag at 5,000 messages/s, p50", f"{p50 * 1000:.0f} ms")
    report.add("ingest lag at 5,000 messages/s, p99", f"{p99 * 1000:.0f} ms")
    rss_lag = pantau.peak_rss_mb()
    pantau.stop()
    report.add("Pantau peak RSS", f"{max(rss_10, rss_1, rss_lag):.0f} MB")

    print("\n" + report.markdown(), flush=True)
    (ROOT / "docs" / "benchmark-latest.md").write_text(
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cores} cores:\n\n{report.markdown()}\n"
    )
    assert rate_10 > 0


def drop_session(broker: MosquittoBroker, ident: str) -> None:
    """Remove a persistent session (docs/deploy.md: a retired instance), so that the broker does
    not go on queueing the next phases' messages for it."""
    where = ["-h", "127.0.0.1", "-p", str(broker.port)]
    subprocess.run(
        ["mosquitto_sub", *where, "-V", "5", "-i", ident, "-x", "0", "-E", "-t", TOPIC],
        check=True,
        timeout=30,
    )


def mosquitto_sub_rate(broker: MosquittoBroker, files: list[Path], count: int) -> float:
    """The C client `mosquitto_sub`, MQTT 5, QoS 1, counting `count` messages: the broker's true
    ceiling (paho's Python parsing is not in it). Timed as the bare paho client is, from its
    first message to its last (%U: the receive time of each, written to a file)."""
    ident = f"msub-{uuid.uuid4().hex[:6]}"
    common = ["-h", "127.0.0.1", "-p", str(broker.port), "-V", "5", "-q", "1", "-i", ident]
    session = ["-c", "-x", "600", "-t", TOPIC]
    # A persistent session with the subscription first, so that nothing published is missed.
    subprocess.run(["mosquitto_sub", *common, *session, "-E"], check=True, timeout=30)
    out = files[0].with_name(f"{ident}.txt")
    with out.open("wb") as fh:
        sub = subprocess.Popen(
            ["mosquitto_sub", *common, *session, "-C", str(count), "-F", "%U"], stdout=fh
        )
        wait_all(start_publishers(broker.port, files, "msub"))
        assert sub.wait(600) == 0
    drop_session(broker, ident)
    times = out.read_text().split()
    assert len(times) == count
    return count / (float(times[-1]) - float(times[0]))


def test_ingest_processes(servers: tuple[PostgresCluster, MosquittoBroker, Path]) -> None:
    """`ingest.processes` 1 vs 2 in the same run, 1 reading per message (the case bound by MQTT
    parsing), beside the C client mosquitto_sub (the broker's ceiling) and the bare paho client
    (the ceiling of one Python process)."""
    cluster, broker, base = servers
    report = Report()
    cores = os.cpu_count()
    print(f"\ningest processes benchmark on {cores} cores, {PUBLISHERS} publishers", flush=True)
    for left in ("ten", "one", "lag"):  # test_ingestion's sessions, if it ran before
        drop_session(broker, f"pantau-bench-{left}")
    files = write_loads(base, 1, MESSAGES_1, "proc")

    msub = mosquitto_sub_rate(broker, files, MESSAGES_1)
    report.add("mosquitto_sub (C), QoS 1, MQTT 5 (broker ceiling)", f"{msub:,.0f} messages/s")
    paho = client("bare", str(broker.port), str(MESSAGES_1), "5")
    wait_all(start_publishers(broker.port, files, "paho"))
    bare = result_of(paho)
    paho_rate = bare["messages"] / bare["seconds"]
    report.add(
        "bare paho subscriber, QoS 1, MQTT 5 (one Python process)",
        f"{paho_rate:,.0f} messages/s",
        f"{paho_rate / msub:.2f} of mosquitto_sub",
    )
    rates = {}
    for processes in (1, 2):
        tag = f"proc{processes}"
        pantau = Pantau(cluster, broker, base, tag, processes=processes)
        before = pantau.value("pantau_ingest_readings_written_total")
        t0 = time.perf_counter()
        wait_all(start_publishers(broker.port, files, tag))
        done = pantau.wait_written(before + MESSAGES_1)
        rates[processes] = MESSAGES_1 / (done - t0)
        pantau.stop()
        for ident in [f"pantau-bench-{tag}"] + [f"pantau-bench-{tag}-{i}" for i in range(2)]:
            drop_session(broker, ident)
        report.add(
            f"Pantau, ingest.processes = {processes}, 1 reading/message, committed",
            f"{rates[processes]:,.0f} messages/s",
            f"{rates[processes] / msub:.2f} of mosquitto_sub, "
            f"{rates[processes] / paho_rate:.2f} of bare paho",
        )
    report.add("2 processes / 1 process", f"{rates[2] / rates[1]:.2f}x")
    print("\n" + report.markdown(), flush=True)
    assert rates[1] > 0
    assert rates[2] > 0
