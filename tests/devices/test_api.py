import asyncio
import time

import orjson
import psycopg

from pantau.embedded import MosquittoBroker
from tests.devices.conftest import Api

WL = {
    "device_id": "wl-setu-01",
    "name": "Pintu air Kali CBL",
    "device_type": "water_level",
    "kecamatan": "setu",
    "latitude": -6.351,
    "longitude": 107.034,
}


async def test_no_token_no_data_but_health_and_metrics(api: Api) -> None:
    async with api.client(None) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        for path in ("/api/v1/devices", "/api/v1/device-types", "/api/v1/tokens", "/api/v1/audit"):
            response = await http.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        bad = await http.get("/api/v1/devices", headers={"Authorization": "Bearer pt_nope"})
        assert bad.status_code == 401
        assert bad.json()["detail"] == "unknown or revoked API token"


async def test_roles(api: Api) -> None:
    async with api.client("operator") as op, api.client("technician") as tech:
        assert (await op.get("/api/v1/devices")).status_code == 200
        refused = await op.post("/api/v1/devices", json=WL)
        assert refused.status_code == 403
        assert refused.json()["detail"] == "this needs the technician role; your token has operator"
        assert (await tech.post("/api/v1/devices", json=WL)).status_code == 201
        assert (await tech.get("/api/v1/audit")).status_code == 403
        assert (await tech.get("/api/v1/tokens")).status_code == 403


async def test_register_with_defaults_and_read_back(api: Api) -> None:
    async with api.client("technician") as http:
        created = await http.post("/api/v1/devices", json={**WL, "kecamatan": "Setu"})
        assert created.status_code == 201, created.text
        assert created.headers["etag"] == '"1"'
        assert created.headers["location"] == "/api/v1/devices/wl-setu-01"
        body = created.json()
        assert body["credentials"] is None  # no broker client management configured here
        device = body["device"]
        assert device["kecamatan"] == "setu"
        assert device["pillar"] == "environment"  # from the device type
        assert device["expected_interval_seconds"] == 60
        assert device["payload_format"] == "json"
        assert device["topic"] == "bekasi-json/setu/wl-setu-01"
        assert device["status"] == "active"
        again = await http.post("/api/v1/devices", json=WL)
        assert again.status_code == 409
        read = await http.get("/api/v1/devices/wl-setu-01")
        assert read.headers["etag"] == '"1"'
        assert read.json()["name"] == "Pintu air Kali CBL"
        assert (await http.get("/api/v1/devices/nope")).status_code == 404


async def test_bad_input_names_every_problem(api: Api) -> None:
    async with api.client("technician") as http:
        response = await http.post(
            "/api/v1/devices",
            json={
                **WL,
                "device_type": "toaster",
                "kecamatan": "Jakarta",
                "latitude": -6.2,
                "longitude": 106.8,
            },
        )
        assert response.status_code == 422
        fields = {p["field"]: p["message"] for p in response.json()["problems"]}
        assert "'toaster' is not a device type" in fields["device_type"]
        assert "'Jakarta' is not a kecamatan" in fields["kecamatan"]
        outside = await http.post(
            "/api/v1/devices", json={**WL, "latitude": -6.2, "longitude": 106.8}
        )
        assert outside.status_code == 422
        assert "outside Kabupaten Bekasi" in outside.json()["problems"][0]["message"]
        edge = await http.post(
            "/api/v1/devices",
            json={**WL, "latitude": -6.2, "longitude": 106.96, "allow_outside": True},
        )
        assert edge.status_code == 201
        shape = await http.post("/api/v1/devices", json={"device_id": "bad id!", "name": ""})
        assert shape.status_code == 422


async def test_concurrent_edits_never_overwrite(api: Api) -> None:
    async with api.client("technician") as alice, api.client("technician") as budi:
        await alice.post("/api/v1/devices", json=WL)
        etag_a = (await alice.get("/api/v1/devices/wl-setu-01")).headers["etag"]
        etag_b = (await budi.get("/api/v1/devices/wl-setu-01")).headers["etag"]
        first = await alice.patch(
            "/api/v1/devices/wl-setu-01", json={"name": "Pintu air A"}, headers={"If-Match": etag_a}
        )
        assert first.status_code == 200
        assert first.headers["etag"] == '"2"'
        second = await budi.patch(
            "/api/v1/devices/wl-setu-01", json={"name": "Pintu air B"}, headers={"If-Match": etag_b}
        )
        assert second.status_code == 412
        assert "changed since you read it" in second.json()["detail"]
        blind = await budi.patch("/api/v1/devices/wl-setu-01", json={"name": "Pintu air B"})
        assert blind.status_code == 428
        assert (await budi.get("/api/v1/devices/wl-setu-01")).json()["name"] == "Pintu air A"


async def test_edit_moves_the_default_topic_and_retire(api: Api) -> None:
    async with api.client("technician") as http:
        await http.post("/api/v1/devices", json=WL)
        moved = await http.patch(
            "/api/v1/devices/wl-setu-01",
            json={"kecamatan": "babelan", "payload_format": "senml"},
            headers={"If-Match": '"1"'},
        )
        assert moved.json()["topic"] == "bekasi-senml/babelan/wl-setu-01"
        retired = await http.post("/api/v1/devices/wl-setu-01/retire", headers={"If-Match": '"2"'})
        assert retired.status_code == 200
        assert retired.json()["status"] == "retired"
        assert retired.headers["etag"] == '"3"'
        emptied = await http.patch(
            "/api/v1/devices/wl-setu-01", json={"name": None}, headers={"If-Match": '"3"'}
        )
        assert emptied.status_code == 422


async def test_filters(api: Api) -> None:
    async with api.client("technician") as http:
        await http.post("/api/v1/devices", json=WL)
        await http.post(
            "/api/v1/devices",
            json={
                **WL,
                "device_id": "aq-babelan-01",
                "name": "Udara Babelan",
                "device_type": "air_quality",
                "kecamatan": "babelan",
                "latitude": -6.13,
                "longitude": 107.03,
            },
        )
        await http.post(
            "/api/v1/devices",
            json={
                **WL,
                "device_id": "sl-setu-01",
                "name": "Lampu Setu",
                "device_type": "street_light",
                "status": "maintenance",
            },
        )

        async def ids(**params: str) -> list[str]:
            return [
                d["device_id"] for d in (await http.get("/api/v1/devices", params=params)).json()
            ]

        assert await ids() == ["aq-babelan-01", "sl-setu-01", "wl-setu-01"]
        assert await ids(kecamatan="setu") == ["sl-setu-01", "wl-setu-01"]
        assert await ids(type="air_quality") == ["aq-babelan-01"]
        assert await ids(status="maintenance") == ["sl-setu-01"]
        assert await ids(pillar="living") == ["sl-setu-01"]
        assert await ids(q="udara") == ["aq-babelan-01"]
        # What `devices add` takes, filters take: a kecamatan's name as well as its id.
        assert await ids(kecamatan="Setu") == ["sl-setu-01", "wl-setu-01"]
        assert await ids(kecamatan="cikarang pusat") == []

        async def problems(**params: str) -> dict[str, str]:
            response = await http.get("/api/v1/devices", params=params)
            assert response.status_code == 422, response.text
            return {p["field"]: p["message"] for p in response.json()["problems"]}

        # An unknown value is an error listing the choices, never a silent empty list.
        wrong = await problems(kecamatan="Jakarta", type="toaster")
        assert wrong["kecamatan"].startswith("'Jakarta' is not a kecamatan of the regency")
        assert "babelan, bojongmangu" in wrong["kecamatan"]
        assert "tarumajaya" in wrong["kecamatan"]
        assert wrong["type"] == (  # named as the query parameter the caller sent
            "'toaster' is not a device type; expected one of air_quality, camera, "
            "rain_gauge, street_light, traffic_counter, waste_bin, water_level, weather"
        )
        assert (await problems(status="broken"))["status"] == (
            "expected one of 'active', 'maintenance' or 'retired' (got 'broken')"
        )
        assert "expected one of branding, economy" in (await problems(pillar="sport"))["pillar"]


async def test_retiring_a_retired_device_says_so(api: Api) -> None:
    async with api.client("technician") as http:
        await http.post("/api/v1/devices", json=WL)
        retired = await http.post("/api/v1/devices/wl-setu-01/retire", headers={"If-Match": '"1"'})
        assert retired.status_code == 200
        again = await http.post("/api/v1/devices/wl-setu-01/retire", headers={"If-Match": '"2"'})
        assert again.status_code == 409
        assert again.json()["detail"].startswith("device 'wl-setu-01' is already retired (since ")
        assert again.json()["detail"].endswith(" WIB): nothing was changed")
        device = await http.get("/api/v1/devices/wl-setu-01")
        assert device.headers["etag"] == '"2"'  # no new version, no second audit entry


async def test_audit_log_records_who_and_what(api: Api) -> None:
    async with api.client("technician") as tech, api.client("admin") as admin:
        await tech.post("/api/v1/devices", json=WL)
        await tech.patch(
            "/api/v1/devices/wl-setu-01", json={"name": "Baru"}, headers={"If-Match": '"1"'}
        )
        entries = (
            await admin.get("/api/v1/audit", params={"entity": "device", "entity_id": "wl-setu-01"})
        ).json()
    assert [e["action"] for e in entries] == ["update", "create"]
    assert all(e["actor"].endswith(":technician for tests") for e in entries)
    assert entries[0]["before"]["name"] == "Pintu air Kali CBL"
    assert entries[0]["after"]["name"] == "Baru"
    assert entries[1]["before"] is None


async def test_tokens_are_created_listed_and_revoked(api: Api) -> None:
    async with api.client("admin") as admin:
        created = await admin.post(
            "/api/v1/tokens", json={"name": "Budi, teknisi Setu", "role": "technician"}
        )
        assert created.status_code == 201
        token = created.json()["token"]
        listed = (await admin.get("/api/v1/tokens")).json()
        assert "Budi, teknisi Setu" in [t["name"] for t in listed]
        assert token not in str(listed)
        async with __import__("httpx").AsyncClient(
            base_url=api.url, headers={"Authorization": f"Bearer {token}"}
        ) as budi:
            assert (await budi.get("/api/v1/devices")).status_code == 200
            assert (await admin.delete(f"/api/v1/tokens/{created.json()['id']}")).status_code == 204
            assert (await budi.get("/api/v1/devices")).status_code == 401
        assert (
            await admin.post("/api/v1/tokens", json={"name": "x", "role": "root"})
        ).status_code == 422
    async with await psycopg.AsyncConnection.connect(api.db) as conn:
        stored = await (await conn.execute("SELECT token_hash FROM api_tokens")).fetchall()
    assert token not in str(stored)  # only hashes are stored


async def test_import_is_all_or_nothing_with_row_numbers(api: Api) -> None:
    csv_text = (
        "device_id,name,device_type,kecamatan,latitude,longitude,install_date\n"
        "wl-setu-01,Pintu air,water_level,Setu,-6.35,107.03,2026-11-01\n"
        "rg-setu-01,Penakar,rain_gauge,Atlantis,-6.35,107.03,2026-11-01\n"
        "wl-setu-01,Dua kali,water_level,setu,-6.35,107.03,2026-11-01\n"
        "aq-x,Udara,air_quality,setu,-7.5,107.03,kemarin\n"
    )
    async with api.client("technician") as http:
        bad = await http.post(
            "/api/v1/devices/import", content=csv_text, headers={"Content-Type": "text/csv"}
        )
        assert bad.status_code == 422
        problems = {(p["row"], p["field"]) for p in bad.json()["problems"]}
        assert problems == {(2, "kecamatan"), (3, "device_id"), (4, "install_date")}
        assert (await http.get("/api/v1/devices")).json() == []  # nothing imported
        good = [*csv_text.splitlines()[:2], "rg-setu-01,Penakar,rain_gauge,setu,-6.35,107.03,"]
        done = await http.post(
            "/api/v1/devices/import", content="\n".join(good), headers={"Content-Type": "text/csv"}
        )
        assert done.json() == {"created": 2, "updated": 0, "unchanged": 0}
        exported = await http.get("/api/v1/devices/export", params={"format": "geojson"})
        assert exported.headers["content-type"] == "application/geo+json"
        collection = exported.json()
        assert [f["geometry"]["coordinates"] for f in collection["features"]] == [
            [107.03, -6.35]
        ] * 2
        collection["features"][0]["properties"]["name"] = "Penakar hujan Setu"
        again = await http.post(
            "/api/v1/devices/import",
            content=orjson.dumps(collection),
            headers={"Content-Type": "application/geo+json"},
        )
        assert again.json() == {"created": 0, "updated": 1, "unchanged": 1}
        assert (await http.get("/api/v1/devices/rg-setu-01")).json()["name"] == "Penakar hujan Setu"
        csv_out = (await http.get("/api/v1/devices/export")).text
        assert csv_out.splitlines()[0].startswith(
            "device_id,name,device_type,kecamatan,pillar,latitude"
        )
        assert "rg-setu-01,Penakar hujan Setu,rain_gauge,setu,environment,-6.35,107.03" in csv_out
        wrong = await http.post(
            "/api/v1/devices/import", content="x", headers={"Content-Type": "text/plain"}
        )
        assert wrong.status_code == 415
        assert "expected text/csv or application/geo+json" in wrong.json()["detail"]


async def test_pending_devices_and_latest_readings(api: Api, settings) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures.mqtt import Publisher

    publisher = Publisher(settings.mqtt.port)
    ts = int(time.time() * 1000)
    publisher.wait(
        publisher.publish(
            [
                (
                    "bekasi-json/setu/wl-setu-01",
                    orjson.dumps({"ts": ts, "readings": {"water_level_cm": 120.5}}),
                )
            ]
        )
    )
    publisher.close()
    async with api.client("technician") as http:
        for _ in range(100):
            pending = (await http.get("/api/v1/devices/pending")).json()
            if pending:
                break
            await asyncio.sleep(0.1)
        assert [p["device_id"] for p in pending] == ["wl-setu-01"]
        assert pending[0]["metrics"] == ["water_level_cm"]
        assert pending[0]["device_type"] == "water_level"
        assert pending[0]["adopt"] == (
            "pantau devices add --id wl-setu-01 --name wl-setu-01 --type water_level"
            " --kecamatan setu"
        )
        await http.post("/api/v1/devices", json=WL)  # adopt it
        assert (await http.get("/api/v1/devices/pending")).json() == []
        latest = (await http.get("/api/v1/devices/wl-setu-01/readings/latest")).json()
        assert [(r["metric"], r["value"]) for r in latest] == [("water_level_cm", 120.5)]
        device = (await http.get("/api/v1/devices/wl-setu-01")).json()
        assert device["last_reading_at"] is not None


async def test_reference_lists(api: Api) -> None:
    async with api.client("operator") as http:
        kec = (await http.get("/api/v1/kecamatan")).json()
        types = (await http.get("/api/v1/device-types")).json()
        pillars = (await http.get("/api/v1/pillars")).json()
    assert len(kec) == 23
    assert {p["id"] for p in pillars} == {
        "governance",
        "branding",
        "economy",
        "society",
        "environment",
        "living",
    }
    assert {t["id"] for t in types} >= {
        "water_level",
        "rain_gauge",
        "air_quality",
        "weather",
        "traffic_counter",
        "street_light",
        "waste_bin",
        "camera",
    }
    aq = next(t for t in types if t["id"] == "air_quality")
    assert {m["metric"] for m in aq["metrics"]} == {"pm25_ugm3", "pm10_ugm3"}


async def test_seeded_kecamatan_match_the_regency_module(api: Api) -> None:
    from pantau.regency import KECAMATAN

    async with api.client("operator") as http:
        seeded = {
            (k["id"], k["name"], k["latitude"], k["longitude"])
            for k in (await http.get("/api/v1/kecamatan")).json()
        }
    assert seeded == {(k.id, k.name, k.latitude, k.longitude) for k in KECAMATAN}


async def test_credentials_of_a_device_in_maintenance_work_once_it_is_active(
    dynsec_api: Api, dynsec_broker: MosquittoBroker
) -> None:
    from tests.devices.test_credentials import Device as MqttDevice
    from tests.devices.test_credentials import reading

    async with dynsec_api.client("technician") as http:
        created = await http.post("/api/v1/devices", json={**WL, "status": "maintenance"})
        assert created.status_code == 201, created.text
        assert created.json()["warning"] == (
            "device 'wl-setu-01' is in maintenance: these credentials work once it is active "
            "again (pantau devices edit wl-setu-01 --status active)"
        )
        renewed = await http.post("/api/v1/devices/wl-setu-01/credentials")
        assert renewed.status_code == 201, renewed.text
        assert "is in maintenance" in renewed.json()["warning"]
        creds = renewed.json()["credentials"]

        early = MqttDevice(dynsec_broker.port, creds["username"], creds["password"])
        assert await asyncio.to_thread(early.disconnected.wait, 10)
        assert early.refused, "a device in maintenance must not connect yet"
        assert not early.connected.is_set()
        early.close()

        active = await http.patch(
            "/api/v1/devices/wl-setu-01",
            json={"status": "active"},
            headers={"If-Match": (await http.get("/api/v1/devices/wl-setu-01")).headers["etag"]},
        )
        assert active.status_code == 200, active.text
        device = MqttDevice(dynsec_broker.port, creds["username"], creds["password"])
        assert await asyncio.to_thread(device.connected.wait, 10)
        assert device.publish(creds["topic"], reading(88.0)) == "Success"
        device.close()
        assert (await http.post("/api/v1/devices/wl-setu-01/credentials")).json()["warning"] is None
