import os
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ingest.batch import Message, Processor
from ingest.simulator import (
    KECAMATAN,
    KINDS,
    Incidents,
    Simulator,
    Weather,
    build_devices,
    messages,
    report_interval_seconds,
    sample,
)
from pantau.embedded import MosquittoBroker, PostgresCluster
from pantau.mappings import default_mappings
from pantau.settings import EmbeddedSettings
from tests.fixtures.pantau_proc import PantauProcess, ingest_env, wait_for


def at_wib(hour: float, day: int = 25) -> float:
    """Epoch seconds of a Wednesday (2026-11-25) at `hour` WIB."""
    return datetime(2026, 11, day, tzinfo=UTC).timestamp() + (hour - 7) * 3600


def dry() -> Weather:
    return Weather(random.Random(1))


def test_every_simulated_message_decodes_with_the_default_mappings() -> None:
    devices = build_devices(230)
    processor = Processor.from_settings(default_mappings(), 300, 7)
    now = datetime.now(UTC)
    batch = processor.batch(
        Message(topic, payload, now)
        for device in devices
        for topic, payload in messages(
            device, sample(device, dry(), now.timestamp()), now.timestamp()
        )
    )
    assert batch.quarantine == []
    assert {d.kecamatan for d in devices} == {k[0] for k in KECAMATAN}
    assert {d.fmt for d in devices} == {"number", "json", "senml"}
    assert {d.kind for d in devices} == {"wl", "rg", "aq", "tc", "sl"}
    assert len({d.device_id for d in devices}) == 230
    assert {r[1] for r in batch.readings} == {d.device_id for d in devices}


def test_simulated_devices_fit_the_registry(migrated_db: str) -> None:
    """`pantau dev` registers them: each kind is a seeded device type with the same metrics,
    each kecamatan a seeded one."""
    import psycopg

    with psycopg.connect(migrated_db) as conn:
        metrics: dict[str, set[str]] = {}
        for device_type, metric in conn.execute(
            "SELECT device_type, metric FROM device_type_metrics"
        ).fetchall():
            metrics.setdefault(device_type, set()).add(metric)
        kecamatan = {row[0] for row in conn.execute("SELECT id FROM kecamatan").fetchall()}
    devices = build_devices(230)
    for device in devices:
        assert set(KINDS[device.kind]) == metrics[device.device_type]
        assert device.kecamatan_id in kecamatan


def test_report_interval_is_one_round_at_the_rate() -> None:
    devices = build_devices(60)
    messages_per_round = sum(len(list(messages(d, sample(d, dry(), 0.0), 0.0))) for d in devices)
    assert messages_per_round > 60  # bare-number devices send one message per metric
    assert report_interval_seconds(devices, 12) == -(-messages_per_round // 12)
    assert report_interval_seconds(devices, 10_000) == 1


def test_positions_inside_the_regency() -> None:
    for device in build_devices(100):
        assert -6.45 <= device.latitude <= -5.95
        assert 106.97 <= device.longitude <= 107.30


def test_street_lights_burn_at_night() -> None:
    lights = [d for d in build_devices(200) if d.kind == "sl"]
    night = [sample(d, dry(), at_wib(21))["lamp_on"] for d in lights]
    noon = [sample(d, dry(), at_wib(12))["lamp_on"] for d in lights]
    assert sum(night) >= len(lights) - 2  # a lamp may have failed
    assert sum(noon) == 0


def test_rush_hour_traffic() -> None:
    counters = [d for d in build_devices(200) if d.kind == "tc"]
    rush = sum(sample(d, dry(), at_wib(7.5))["vehicles"] for d in counters)
    night = sum(sample(d, dry(), at_wib(3))["vehicles"] for d in counters)
    assert rush > 5 * night


def test_tide_is_felt_on_the_coast_not_inland() -> None:
    devices = [d for d in build_devices(400) if d.kind == "wl"]
    coast = next(d for d in devices if d.kecamatan == "Muaragembong")
    inland = next(d for d in devices if d.kecamatan == "Bojongmangu")

    def tidal_range(device) -> float:  # type: ignore[no-untyped-def]
        levels = [sample(device, dry(), at_wib(h / 2))["water_level_cm"] for h in range(26)]
        return max(levels) - min(levels)

    assert tidal_range(coast) > 60
    assert tidal_range(inland) < 15


def test_rain_raises_rivers_and_washes_out_dust() -> None:
    devices = build_devices(200)
    river = next(d for d in devices if d.kind == "wl")
    dust = next(d for d in devices if d.kind == "aq")
    wet = dry()
    wet.wetness = 20.0
    now = at_wib(14)
    assert (
        sample(river, wet, now)["water_level_cm"] > sample(river, dry(), now)["water_level_cm"] + 50
    )
    assert sample(dust, wet, now)["pm25_ugm3"] < sample(dust, dry(), now)["pm25_ugm3"]


def test_simulate_command_publishes(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    received: list[str] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *a: c.subscribe(
        [("bekasi/#", 1), ("bekasi-json/#", 1), ("bekasi-senml/#", 1)]
    )
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, m: received.append(m.topic)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    assert subscribed.wait(10)
    env = {
        "PATH": os.environ["PATH"],
        "PANTAU_MQTT__HOST": "127.0.0.1",
        "PANTAU_MQTT__PORT": str(mosquitto.port),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pantau",
            "simulate",
            "--devices",
            "30",
            "--rate",
            "200",
            "--duration",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sent = int(result.stdout.strip().split()[-2])
    # The rate is a ceiling (a loaded machine publishes fewer), and each one arrives (QoS 1).
    assert 20 <= sent <= 210
    deadline = time.monotonic() + 15
    while len(received) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    assert len(received) >= sent, f"{len(received)} of {sent} messages arrived"
    assert {t.split("/")[0] for t in received} == {"bekasi", "bekasi-json", "bekasi-senml"}


def test_simulate_rejects_unknown_format(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pantau", "simulate", "--format", "xml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )
    assert result.returncode == 2
    assert "--format 'xml': expected mixed, number, json or senml" in result.stderr


def test_incidents_silence_devices_darken_a_kecamatan_and_raise_a_river() -> None:
    """`make run`'s schedule (defaults of [embedded]): over an hour, a device falls silent
    every few minutes for 1-3 minutes; most of one kecamatan goes dark for ~2 minutes within
    the first 3 minutes and every ~10; a river gauge rises over Siaga 3 (350 cm) and falls."""
    devices = build_devices(60)
    start = at_wib(9)
    incidents = Incidents.from_settings(EmbeddedSettings(), devices, start)
    hour = incidents.schedule(start + 3600)
    assert hour == Incidents.from_settings(EmbeddedSettings(), devices, start).schedule(
        start + 3600
    )  # deterministic for a seed
    silences = [i for i in hour if i.kind == "silence"]
    areas = [i for i in hour if i.kind == "area"]
    floods = [i for i in hour if i.kind == "flood"]
    assert 15 <= len(silences) <= 30
    assert all(len(i.device_ids) == 1 and 60 <= i.ends - i.starts <= 180 for i in silences)
    assert silences[0].starts - start <= 180
    assert 5 <= len(areas) <= 8
    assert areas[0].starts - start < 180
    for area in areas:
        members = {d.device_id for d in devices if d.kecamatan == area.kecamatan}
        assert len(area.device_ids) >= 3
        assert area.device_ids <= members
        assert len(area.device_ids) > len(members) / 2
        assert 100 <= area.ends - area.starts <= 140
    assert floods[0].starts - start < 180
    assert 5 <= len(floods) <= 8

    # Replayed in time as the simulator does: silent devices send nothing; the flooded gauge
    # reads over 350 cm for minutes, and normal (~150) before and after.
    flood = floods[0]
    [river] = [d for d in devices if d.device_id in flood.device_ids]
    levels: list[tuple[float, float]] = []
    silent_seen: set[str] = set()
    for t in range(int(start), int(start + 1800), 5):
        for device in devices:
            if incidents.silent(device, t):
                silent_seen.add(device.device_id)
        level = incidents.adjust(river, sample(river, dry(), t), t)["water_level_cm"]
        levels.append((t, level))
    over = [t for t, level in levels if level > 350]
    assert over
    assert flood.starts < min(over)
    assert max(over) < flood.ends
    assert max(over) - min(over) >= 120
    assert all(level < 300 for t, level in levels if not flood.active(t))
    assert [i.kind for i in incidents.started] == [
        i.kind for i in hour if i.starts < start + 1800 - 5
    ]
    in_first_half = set().union(
        *(i.device_ids for i in hour if i.kind != "flood" and i.starts < start + 1795)
    )
    assert silent_seen == in_first_half


def test_incidents_off_when_every_is_zero() -> None:
    devices = build_devices(60)
    none = Incidents(devices, 0.0, silence_every=0, area_every=0, flood_every=0)
    assert none.schedule(86400) == []
    only_floods = Incidents(devices, 0.0, silence_every=0, area_every=0)
    assert {i.kind for i in only_floods.schedule(86400)} == {"flood"}


def test_simulated_silence_becomes_an_outage(
    migrated_db: str, postgres_cluster: PostgresCluster, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A short real run: the simulator against a real broker, `pantau run` writing and judging,
    and a device the schedule silences shows as a device outage in the database."""
    import asyncio

    import psycopg

    from devices import registry
    from devices.models import DeviceIn

    devices = build_devices(6)
    rate = 8.0
    interval = report_interval_seconds(devices, rate)

    async def register() -> None:
        async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
            for sim in devices:
                await registry.create_device(
                    conn,
                    DeviceIn.model_validate(
                        {
                            "device_id": sim.device_id,
                            "name": sim.device_id,
                            "device_type": sim.device_type,
                            "kecamatan": sim.kecamatan_id,
                            "expected_interval_seconds": interval,
                            "payload_format": sim.fmt,
                        }
                    ),
                    "test",
                )

    env = ingest_env(
        postgres_cluster,
        mosquitto,
        tmp_path / "spool",
        "simulated-outage",
        PANTAU_DATABASE__URL=migrated_db,
        PANTAU_OUTAGES__DETECTOR_INTERVAL_SECONDS="1",
    )
    pantau = PantauProcess(env, tmp_path)
    simulator = Simulator(devices, host="127.0.0.1", port=mosquitto.port, rate=rate)
    stop = threading.Event()
    publishing = threading.Thread(target=simulator.run, args=(stop,))
    pantau.start()
    try:
        pantau.wait_ready()
        publishing.start()

        def arrivals() -> object:
            with psycopg.connect(migrated_db) as conn:
                row = conn.execute("SELECT count(*) FROM device_last_seen").fetchone()
            return (row is not None and row[0] == len(devices)) or row

        # Registered once they report, so none is judged on a start that took long.
        wait_for("every simulated device reports", arrivals, timeout=30)
        asyncio.run(register())
        incidents = Incidents(
            devices,
            time.time(),
            seed=3,
            silence_every=15,
            area_every=0,
            flood_every=0,
            silence_seconds=(90, 90),
        )
        [first] = incidents.schedule(incidents.start + 15)
        simulator.incidents = incidents  # the publishing thread picks it up at its next turn
        [silenced] = first.device_ids

        def outage() -> object:
            with psycopg.connect(migrated_db) as conn:
                rows = conn.execute(
                    "SELECT device_id, cause, started_at FROM outages WHERE kind = 'device'"
                ).fetchall()
            return (
                any(
                    d == silenced and c == "silent" and t.timestamp() >= first.starts - interval
                    for d, c, t in rows
                )
                or rows
            )

        wait_for("the silenced device's outage", outage, timeout=15 + 10 * interval + 30)
        assert simulator.sent > 0
    finally:
        stop.set()
        if publishing.is_alive():
            publishing.join(15)
        pantau.stop()
