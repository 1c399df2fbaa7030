"""Baseline clients for the ingestion benchmark, run as their own processes.

  python tests/bench/clients.py bare PORT COUNT [5]    count QoS 1 messages (the broker ceiling),
                                                        MQTT 3.1.1 or (with 5) MQTT 5
  python tests/bench/clients.py naive PORT SECONDS DSN  INSERT each message's readings (what a
                                                        user would write first)
  python tests/bench/clients.py paced PORT RATE SECONDS publish 1-reading messages stamped with
                                                        the time they are sent, at RATE per second

Each prints one JSON line: {"messages": n, "readings": n, "seconds": s}.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TOPIC = "bench/#"


def bare(port: int, count: int, protocol: mqtt.MQTTProtocolVersion) -> None:
    done = threading.Event()
    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if state["n"] == 0:
            state["first"] = time.perf_counter()
        state["n"] += 1
        if state["n"] >= count:
            state["last"] = time.perf_counter()
            done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bare-{uuid.uuid4().hex[:6]}", protocol=protocol
    )
    client.on_connect = lambda c, *a: c.subscribe(TOPIC, qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    print("ready", flush=True)
    done.wait(600)
    client.loop_stop()
    seconds = state["last"] - state["first"]
    print(
        json.dumps({"messages": state["n"], "readings": state["n"], "seconds": seconds}), flush=True
    )


def naive(port: int, seconds: float, dsn: str) -> None:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    state = {"messages": 0, "readings": 0, "first": 0.0}
    stop = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if state["messages"] == 0:
            state["first"] = time.perf_counter()
        doc = json.loads(msg.payload)
        when = datetime.fromtimestamp(doc["ts"] / 1000, UTC)
        device = msg.topic.rsplit("/", 1)[-1]
        for metric, value in doc["readings"].items():
            conn.execute(
                "INSERT INTO readings (time, device_id, metric, value) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (when, device, metric, value),
            )
            state["readings"] += 1
        state["messages"] += 1
        if time.perf_counter() - state["first"] >= seconds:
            stop.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"naive-{uuid.uuid4().hex[:6]}")
    client.on_connect = lambda c, *a: c.subscribe(TOPIC, qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    print("ready", flush=True)
    stop.wait(600)
    client.disconnect()
    client.loop_stop()
    elapsed = time.perf_counter() - state["first"]
    print(
        json.dumps(
            {"messages": state["messages"], "readings": state["readings"], "seconds": elapsed}
        ),
        flush=True,
    )


def paced(port: int, rate: float, seconds: float) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paced-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    print("ready", flush=True)
    pad = "x" * 120
    started = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - started < seconds:
        due = int((now - started) * rate)
        while sent < due:
            ts = time.time_ns() // 1000  # microseconds: unique per device, no dedup
            payload = json.dumps({"ts": ts, "readings": {"water_level_cm": sent % 500}, "pad": pad})
            client.publish(f"bench/paced-{sent % 50}", payload, qos=1)
            sent += 1
        time.sleep(0.001)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"messages": sent, "readings": sent, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "bare":
        version = mqtt.MQTTv5 if sys.argv[4:] == ["5"] else mqtt.MQTTv311
        bare(int(sys.argv[2]), int(sys.argv[3]), version)
    elif mode == "naive":
        naive(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
    elif mode == "paced":
        paced(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}: expected bare, naive or paced")
