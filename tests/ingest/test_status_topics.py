"""Status and last-will topics: a device that says `offline` is down at once, `online` and its
readings bring it back; such messages are statuses, never readings, and an unknown value is
quarantined as a broken status payload.

The decoder and the mapping are tested alone (hypothesis for the values), the writer against a
real PostgreSQL (how a status is dated against readings), and the whole path through a real
Mosquitto, a real `pantau run` (its detector included) and a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import socket
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import ValidationError

from devices import registry
from devices.models import DeviceIn
from ingest.batch import Message, Processor, StatusReport
from ingest.decoders import BAD_STATUS, MISSING_FIELD, Limits, StatusDecoder
from ingest.spool import Spool
from ingest.writer import Writer
from pantau.embedded import MosquittoBroker, PostgresCluster
from pantau.mappings import STATUS_OFFLINE, STATUS_ONLINE, MappingSettings, default_mappings
from tests.fixtures.mqtt import Publisher
from tests.fixtures.pantau_proc import PantauProcess, wait_for

NOW = datetime.now(UTC).replace(microsecond=0)
STATUS = MappingSettings(name="st", topic="bekasi/{kecamatan}/{device}/status", format="status")
JSON_STATUS = MappingSettings(
    name="js",
    topic="vendor/{device}/state",
    format="status",
    path="$.status",
    offline=["mati", "offline"],
    online=["hidup", "online"],
    cause="power_cut",
)
CAPTURED = {"kecamatan": "setu", "device": "wl-setu-01"}


def decode(mapping: MappingSettings, payload: bytes) -> Any:
    return StatusDecoder(mapping, Limits()).decode(payload, CAPTURED, NOW)


# --- the decoder and the mapping ----------------------------------------------------------------


def _cased(word: str) -> st.SearchStrategy[str]:
    """`word` in any mix of upper and lower case, with blanks around it."""
    letters = st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in word))
    blanks = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])
    return st.tuples(blanks, letters, blanks).map(lambda t: t[0] + "".join(t[1]) + t[2])


@given(st.sampled_from(STATUS_ONLINE + STATUS_OFFLINE).flatmap(_cased))
def test_default_values_are_matched_whatever_their_case(text: str) -> None:
    decoded = decode(STATUS, text.encode())
    assert decoded.problems == []
    assert decoded.readings == []
    up = text.strip().lower() in STATUS_ONLINE
    assert decoded.status == ("wl-setu-01", up, None if up else "offline")


@given(st.text(max_size=40))
def test_any_other_text_is_a_broken_status_never_a_reading(text: str) -> None:
    decoded = decode(STATUS, text.encode())
    assert decoded.readings == []
    folded = text.strip().casefold()
    if not folded:  # a retained status being cleared: says nothing
        assert (decoded.status, decoded.problems) == (None, [])
    elif folded in STATUS_ONLINE + STATUS_OFFLINE:
        assert decoded.status is not None
    elif folded[:1] == '"':  # a JSON string: its value decides
        assert (decoded.status is None) != (decoded.problems == [])
    else:
        assert decoded.status is None
        assert [p.reason for p in decoded.problems] == [BAD_STATUS]


@given(st.binary(max_size=64))
def test_no_payload_escapes_the_decoder(payload: bytes) -> None:
    for mapping in (STATUS, JSON_STATUS):
        decoded = decode(mapping, payload)
        assert decoded.readings == []
        assert (decoded.status is None) or not decoded.problems


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b'{"status": "MATI"}', ("wl-setu-01", False, "power_cut")),
        (b'{"status": "hidup", "rssi": -70}', ("wl-setu-01", True, None)),
        (b'{"status": "offline"}', ("wl-setu-01", False, "power_cut")),
    ],
)
def test_json_status_with_a_path(payload: bytes, status: tuple[str, bool, str | None]) -> None:
    assert decode(JSON_STATUS, payload).status == status


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b'{"state": "offline"}', MISSING_FIELD, "$.status not in payload"),
        (b'{"status": "rebooting"}', BAD_STATUS, "'rebooting' is neither online"),
        (b'{"status": {"v": 1}}', BAD_STATUS, "neither online"),
        (b"offline", "malformed_payload", "not JSON"),
    ],
)
def test_broken_json_status_is_explained(payload: bytes, reason: str, detail: str) -> None:
    decoded = decode(JSON_STATUS, payload)
    assert decoded.status is None
    assert decoded.problems[0].reason == reason
    assert detail in decoded.problems[0].detail


def test_numbers_booleans_and_json_strings_without_a_path() -> None:
    assert decode(STATUS, b"1").status == ("wl-setu-01", True, None)
    assert decode(STATUS, b"0").status == ("wl-setu-01", False, "offline")
    assert decode(STATUS, b'"Lost"').status == ("wl-setu-01", False, "offline")
    assert decode(STATUS, b"2").problems[0].reason == BAD_STATUS
    flags = MappingSettings(name="f", topic="x/{device}", format="status", path="$.up")
    assert decode(flags, b'{"up": true}').status == ("wl-setu-01", True, None)
    assert decode(flags, b'{"up": false}').status == ("wl-setu-01", False, "offline")
    assert decode(flags, b'{"up": 1.0}').status == ("wl-setu-01", True, None)
    assert decode(flags, b'{"up": null}').problems[0].reason == BAD_STATUS


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"online": ["on", "x"], "offline": ["X"]}, r"\['x'\] are in both online and offline"),
        ({"values": "$.r"}, "format 'status' reads no readings"),
        ({"path": "status"}, "path = 'status'.*JSON path"),
        ({"online": []}, "non-empty values"),
        ({"cause": "Power Cut"}, "cause"),
        ({"device": "$.id"}, "give the status's path too"),
        ({"format": "number", "metric": "x", "online": ["on"]}, "only a mapping of format"),
    ],
)
def test_bad_status_mappings_are_explained(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MappingSettings.model_validate(
            {"name": "s", "topic": "t/{device}/status", "format": "status", **fields}
        )


def test_the_default_status_topic_comes_before_the_number_topic() -> None:
    processor = Processor.from_settings(default_mappings(), 300, 7)
    batch = processor.batch(
        [
            Message("bekasi/setu/wl-setu-01/status", b"offline", NOW, mid=1, qos=1),
            Message("bekasi/setu/wl-setu-01/water_level_cm", b"120", NOW, mid=2, qos=1),
            Message("bekasi/setu/wl-setu-01/status", b"bogus", NOW, mid=3, qos=1),
        ]
    )
    assert [r[2] for r in batch.readings] == ["water_level_cm"]  # no metric "status"
    assert batch.statuses == [StatusReport("wl-setu-01", False, "offline", NOW, 0)]
    assert [(q.reason, q.mapping, q.source) for q in batch.quarantine] == [
        (BAD_STATUS, "bekasi-status", "wl-setu-01")
    ]
    assert batch.acks == [(1, 1, 0), (2, 1, 0), (3, 1, 0)]  # all three owed once durable
    # The reading came after the status: it wins.
    assert batch.last_statuses() == [(batch.statuses[0], True)]


def test_statuses_survive_the_spool(tmp_path: Path) -> None:
    processor = Processor.from_settings(default_mappings(), 300, 7)
    batch = processor.batch(
        [
            Message("bekasi/setu/wl-setu-01/water_level_cm", b"120", NOW, mid=1, qos=1),
            Message("bekasi/setu/wl-setu-01/status", b"OFFLINE", NOW, mid=2, qos=1),
            Message("bekasi/setu/wl-setu-02/status", b"up", NOW, mid=3, qos=1),
        ]
    )
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    spool.append(batch)
    [segment] = spool.segments()
    [back] = list(spool.read(segment))
    spool.close()
    assert back.statuses == batch.statuses
    assert back.last_statuses() == [
        (StatusReport("wl-setu-01", False, "offline", NOW, 1), False),
        (StatusReport("wl-setu-02", True, None, NOW, 2), False),
    ]


# --- the writer against PostgreSQL ---------------------------------------------------------------


async def _register(url: str, *devices: str, interval: int = 60) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for device in devices:
            await registry.create_device(
                conn,
                DeviceIn.model_validate(
                    {
                        "device_id": device,
                        "name": f"Pos {device}",
                        "device_type": "water_level",
                        "kecamatan": "setu",
                        "expected_interval_seconds": interval,
                    }
                ),
                "test",
            )


def register(url: str, *devices: str, interval: int = 60) -> None:
    asyncio.run(_register(url, *devices, interval=interval))


def one(url: str, sql: str, *args: object) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchone()


# The detector's rule: a report counts when it is not older than the last arrival.
_REPORTED_DOWN = """
SELECT l.reported_state, l.reported_cause,
       l.reported_state = 'down'
           AND (s.last_received_at IS NULL OR l.reported_at >= s.last_received_at)
FROM device_liveness l LEFT JOIN device_last_seen s USING (device_id)
WHERE l.device_id = %s
"""


def test_a_status_after_readings_wins_and_readings_after_a_status_win(migrated_db: str) -> None:
    url = migrated_db
    register(url, "wl-a", "wl-b", "wl-c")
    processor = Processor.from_settings(default_mappings(), 300, 7)
    writer = Writer(url)
    now = datetime.now(UTC)
    try:
        # A reading, then offline, in one batch: down (the reading is stamped with now()).
        result = writer.write(
            processor.batch(
                [
                    Message("bekasi/setu/wl-a/water_level_cm", b"100", now, mid=1, qos=1),
                    Message("bekasi/setu/wl-a/status", b"offline", now, mid=2, qos=1),
                    # offline, then a reading: the device spoke after its status
                    Message("bekasi/setu/wl-b/status", b"offline", now, mid=3, qos=1),
                    Message("bekasi/setu/wl-b/water_level_cm", b"100", now, mid=4, qos=1),
                    # a device not in the registry: ignored, not quarantined
                    Message("bekasi/setu/wl-x/status", b"offline", now, mid=5, qos=1),
                ]
            )
        )
        assert result.statuses_kept == 2
        assert result.quarantined == []
        assert one(url, _REPORTED_DOWN, "wl-a") == ("down", "offline", True)
        assert one(url, _REPORTED_DOWN, "wl-b") == ("down", "offline", False)
        assert one(url, "SELECT count(*) FROM device_liveness WHERE device_id = 'wl-x'") == (0,)
        # A reading committed a moment ago, then offline in the next batch: still down.
        writer.write(processor.batch([Message("bekasi/setu/wl-c/level", b"1", now, mid=6)]))
        writer.write(processor.batch([Message("bekasi/setu/wl-c/status", b"down", now, mid=7)]))
        assert one(url, _REPORTED_DOWN, "wl-c") == ("down", "offline", True)
        # A status with no reading since keeps its arrival time exactly.
        later = now + timedelta(seconds=30)
        writer.write(processor.batch([Message("bekasi/setu/wl-c/status", b"1", later, mid=8)]))
        assert one(
            url, "SELECT reported_state, reported_at FROM device_liveness WHERE device_id = 'wl-c'"
        ) == ("up", later)
        # An older status (a redelivery, a quarantine replay) does not replace a newer one.
        writer.write(processor.batch([Message("bekasi/setu/wl-c/status", b"0", now, mid=9)]))
        assert one(url, _REPORTED_DOWN, "wl-c")[0] == "up"
        assert one(url, "SELECT count(*) FROM readings WHERE metric = 'status'") == (0,)
    finally:
        writer.close()


# --- the whole path: Mosquitto, `pantau run`, PostgreSQL -----------------------------------------

VENDOR_TOML = textwrap.dedent(
    """
    [[ingest.mappings]]
    name = "vendor-status"
    topic = "vendor/{device}/state"
    format = "status"
    path = "$.status"
    online = ["hidup", "online"]
    offline = ["mati", "offline"]
    cause = "power_cut"

    [[ingest.mappings]]
    name = "bekasi-status"
    topic = "bekasi/{kecamatan}/{device}/status"
    format = "status"

    [[ingest.mappings]]
    name = "bekasi-number"
    topic = "bekasi/{kecamatan}/{device}/{metric}"
    format = "number"
    """
)


class Stack:
    def __init__(
        self, url: str, broker: MosquittoBroker, pantau: PantauProcess, publisher: Publisher
    ) -> None:
        self.url = url
        self.broker = broker
        self.pantau = pantau
        self.publisher = publisher

    def publish(self, topic: str, payload: str | bytes) -> None:
        self.publisher.wait(self.publisher.publish([(topic, payload)]))

    def liveness(self, device: str) -> tuple[str, str | None] | None:
        return one(
            self.url, "SELECT state, cause FROM device_liveness WHERE device_id = %s", device
        )

    def open_outages(self, device: str) -> list[str]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT cause FROM outages WHERE device_id = %s AND ended_at IS NULL", (device,)
            ).fetchall()
        return [r[0] for r in rows]

    def wait_state(self, device: str, state: str, cause: str | None, timeout: float = 10) -> None:
        wait_for(
            f"{device} {state} ({cause})",
            lambda: self.liveness(device) == (state, cause) or self.liveness(device),
            timeout,
        )

    def reading(self, device: str, value: float = 100) -> None:
        self.publish(f"bekasi/setu/{device}/water_level_cm", str(value))

    def status_metric(self, state: str) -> float:
        return self.pantau.metric(f'pantau_ingest_status_messages_total{{state="{state}"}}')


@pytest.fixture(scope="module")
def stack(
    postgres_cluster: PostgresCluster, mosquitto: MosquittoBroker, tmp_path_factory: Any
) -> Iterator[Stack]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_cluster.create_database(name)
    url = postgres_cluster.dsn(name)
    workdir: Path = tmp_path_factory.mktemp("status")
    (workdir / "pantau.toml").write_text(VENDOR_TOML)
    pantau = PantauProcess(
        {
            "PANTAU_DATABASE__URL": url,
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(mosquitto.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-status-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(workdir / "spool"),
            "PANTAU_OUTAGES__DETECTOR_INTERVAL_SECONDS": "1",
            "PANTAU_OUTAGES__RECOVERY_FACTOR": "0",
            "PANTAU_OUTAGES__RECOVERY_MIN_SECONDS": "0",
        },
        workdir,
    )
    pantau.start()
    result: Stack | None = None
    try:
        pantau.wait_ready()
        result = Stack(url, mosquitto, pantau, Publisher(mosquitto.port))
        yield result
    finally:
        if result is not None:
            result.publisher.close()
        pantau.stop()
        postgres_cluster.drop_database(name)


def _device(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_offline_marks_the_device_down_at_once_and_online_brings_it_back(stack: Stack) -> None:
    device = _device("wl-st")
    register(stack.url, device)
    stack.reading(device)
    stack.wait_state(device, "up", None)
    offline_before = stack.status_metric("offline")

    stack.publish(f"bekasi/setu/{device}/status", "offline")
    stack.wait_state(device, "down", "offline", timeout=5)  # not 4 x 60 s of silence
    assert stack.open_outages(device) == ["offline"]
    wait_for("the offline counted", lambda: stack.status_metric("offline") > offline_before, 5)

    stack.publish(f"bekasi/setu/{device}/status", "ONLINE")
    stack.reading(device, 101)
    stack.wait_state(device, "up", None)
    assert stack.open_outages(device) == []
    assert one(stack.url, "SELECT count(*) FROM outages WHERE device_id = %s", device) == (1,)
    assert one(stack.url, "SELECT count(*) FROM quarantine WHERE topic LIKE %s", f"%{device}%") == (
        0,
    )
    assert one(
        stack.url, "SELECT array_agg(DISTINCT metric) FROM readings WHERE device_id = %s", device
    ) == (["water_level_cm"],)


def test_a_last_will_marks_the_device_down(stack: Stack) -> None:
    device = _device("wl-lw")
    register(stack.url, device)
    topic = f"bekasi/setu/{device}/status"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=device, protocol=MQTTProtocolVersion.MQTTv311
    )
    client.will_set(topic, "offline", qos=1, retain=True)
    client.connect("127.0.0.1", stack.broker.port, keepalive=60)
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    try:
        info = client.publish(topic, "online", qos=1, retain=True)
        reading = client.publish(f"bekasi/setu/{device}/water_level_cm", "88", qos=1)
        while not (info.is_published() and reading.is_published()):
            client.loop(0.1)
        stack.wait_state(device, "up", None)
        # The device vanishes without a DISCONNECT (power cut): the broker sends its will.
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()
    stack.wait_state(device, "down", "offline", timeout=5)
    assert stack.open_outages(device) == ["offline"]
    # Back: it says so and reports.
    stack.publish(topic, "online")
    stack.reading(device, 90)
    stack.wait_state(device, "up", None)
    # Clearing the retained will (an empty payload) says nothing: the device stays up.
    cleared = stack.publisher.client.publish(topic, b"", qos=1, retain=True)
    stack.publisher.wait([cleared])
    stack.reading(device, 91)
    wait_for(
        "the reading after the empty status",
        lambda: (
            one(
                stack.url,
                "SELECT array_agg(value ORDER BY time) FROM readings WHERE device_id = %s",
                device,
            )
            == ([88.0, 90.0, 91.0],)
            or one(stack.url, "SELECT array_agg(value) FROM readings WHERE device_id = %s", device)
        ),
        10,
    )
    assert stack.liveness(device) == ("up", None)
    assert one(stack.url, "SELECT count(*) FROM quarantine WHERE topic = %s", topic) == (0,)


def test_json_status_with_a_path_and_its_own_cause(stack: Stack) -> None:
    device = _device("wl-js")
    register(stack.url, device)
    stack.reading(device)
    stack.wait_state(device, "up", None)
    stack.publish(f"vendor/{device}/state", orjson.dumps({"status": "MATI", "battery": 3.1}))
    stack.wait_state(device, "down", "power_cut", timeout=5)
    assert stack.open_outages(device) == ["power_cut"]
    assert one(stack.url, "SELECT count(*) FROM readings WHERE device_id = %s", device) == (1,)


def test_an_unknown_status_value_is_quarantined(stack: Stack) -> None:
    device = _device("wl-uk")
    register(stack.url, device)
    stack.reading(device)
    stack.wait_state(device, "up", None)
    stack.publish(f"bekasi/setu/{device}/status", "rebooting")
    stack.publish(f"vendor/{device}/state", '{"state": "mati"}')

    def quarantined() -> object:
        with psycopg.connect(stack.url) as conn:
            rows = conn.execute(
                "SELECT reason, mapping, convert_from(payload, 'UTF8'), detail FROM quarantine"
                " WHERE topic LIKE %s ORDER BY id",
                (f"%{device}%",),
            ).fetchall()
        return len(rows) == 2 or rows

    wait_for("both in quarantine", quarantined, 10)
    with psycopg.connect(stack.url) as conn:
        rows = conn.execute(
            "SELECT reason, mapping, convert_from(payload, 'UTF8'), detail FROM quarantine"
            " WHERE topic LIKE %s ORDER BY id",
            (f"%{device}%",),
        ).fetchall()
    assert [r[:3] for r in rows] == [
        (BAD_STATUS, "bekasi-status", "rebooting"),
        (MISSING_FIELD, "vendor-status", '{"state": "mati"}'),
    ]
    assert "'rebooting' is neither online (online, 1, true, up) nor offline" in rows[0][3]
    assert stack.liveness(device) == ("up", None)  # a broken status says nothing


def test_a_status_sent_while_the_database_is_down_is_spooled_and_applied(
    private_postgres: PostgresCluster, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Acknowledged once spooled (the database is away), written when it returns."""
    cluster = private_postgres
    pantau = PantauProcess(
        {
            "PANTAU_DATABASE__URL": cluster.dsn(),
            "PANTAU_MQTT__HOST": "127.0.0.1",
            "PANTAU_MQTT__PORT": str(mosquitto.port),
            "PANTAU_MQTT__CLIENT_ID": f"pantau-status-{uuid.uuid4().hex[:6]}",
            "PANTAU_INGEST__SPOOL_DIR": str(tmp_path / "spool"),
            "PANTAU_INGEST__DATABASE_RETRY_SECONDS": "0.5",
            "PANTAU_INGEST__DATABASE_RETRY_MAX_SECONDS": "1",
            "PANTAU_OUTAGES__DETECTOR_INTERVAL_SECONDS": "1",
        },
        tmp_path,
    )
    pantau.start()
    publisher = Publisher(mosquitto.port)
    try:
        pantau.wait_ready()
        stack = Stack(cluster.dsn(), mosquitto, pantau, publisher)
        device = _device("wl-sp")
        register(stack.url, device)
        stack.reading(device)
        stack.wait_state(device, "up", None)
        acked = pantau.metric("pantau_mqtt_messages_acknowledged_total")
        offline = 'pantau_ingest_status_messages_total{state="offline"}'
        counted = pantau.metric(offline)  # retained statuses of other tests may count too
        cluster.stop("fast")
        stack.publish(f"bekasi/setu/{device}/status", "lost")
        wait_for(
            "the status spooled and acknowledged",
            lambda: (
                pantau.metric("pantau_ingest_spool_bytes") > 0
                and pantau.metric("pantau_mqtt_messages_acknowledged_total") > acked
            ),
            30,
        )
        assert pantau.metric(offline) == counted  # spooled, not yet written
        cluster.start()
        stack.wait_state(device, "down", "offline", timeout=30)
        assert stack.open_outages(device) == ["offline"]
        assert pantau.metric(offline) == counted + 1
        wait_for("the spool empty", lambda: pantau.metric("pantau_ingest_spool_bytes") == 0, 10)
    finally:
        publisher.close()
        pantau.stop()
