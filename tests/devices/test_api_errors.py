"""One error shape for every 4xx, and a schema that says what the handlers accept (issue 13).
The fuzzer (tests/pantau/test_api_contract.py) finds the breaks; these pin down each answer."""

from __future__ import annotations

import psycopg

from devices.models import DEVICE_TYPES, KECAMATAN_REFS, PILLAR_IDS
from tests.devices.conftest import Api

WL = {"device_id": "wl-setu-01", "name": "Pintu air", "device_type": "water_level"}


def _shape(body: dict[str, object]) -> None:
    assert set(body) == {"detail", "problems"}, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert isinstance(body["problems"], list)


async def test_validation_errors_come_in_the_one_shape_and_name_the_expected(api: Api) -> None:
    async with api.client("admin") as http:
        limit = await http.get("/api/v1/devices", params={"limit": 0, "status": "alive"})
        assert limit.status_code == 422
        _shape(limit.json())
        problems = {p["field"]: p["message"] for p in limit.json()["problems"]}
        assert problems["limit"].startswith("expected greater than or equal to 1")
        assert problems["status"].startswith("expected one of 'active', 'maintenance'")
        assert "limit: expected" in limit.json()["detail"]

        missing = await http.post("/api/v1/devices", json={"device_id": "x-1"})
        assert missing.status_code == 422
        _shape(missing.json())
        fields = {p["field"]: p["message"] for p in missing.json()["problems"]}
        assert fields["name"] == "required: expected a value"
        assert set(fields) == {"name", "device_type", "kecamatan"}

        bad_id = await http.get("/api/v1/devices/bad id!")
        assert bad_id.status_code == 422
        [problem] = bad_id.json()["problems"]
        assert problem["field"] == "device_id"
        assert problem["message"].startswith("expected an id of letters, digits")


async def test_unparsable_body_is_400_and_nul_text_is_422_not_a_server_error(api: Api) -> None:
    async with api.client("admin") as http:
        garbage = await http.post(
            "/api/v1/devices",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert garbage.status_code == 400
        _shape(garbage.json())
        assert garbage.json()["detail"].startswith("the request body is not valid JSON")

        for name in ("Pos\x00air", "   ", "\u3000"):
            nul = await http.post("/api/v1/devices", json={**WL, "kecamatan": "setu", "name": name})
            assert nul.status_code == 422, (name, nul.text)
            [problem] = nul.json()["problems"]
            assert problem["field"] == "name"
            assert "visible text" in problem["message"]
        meta = await http.post(
            "/api/v1/devices",
            json={**WL, "kecamatan": "setu", "metadata": {"note": "a\x00b"}},
        )
        assert meta.status_code == 422, meta.text
        token = await http.post("/api/v1/tokens", json={"name": "a\x00", "role": "operator"})
        assert token.status_code == 422, token.text
        far = await http.get("/api/v1/devices", params={"offset": 2**65})
        assert far.status_code == 422
        assert far.json()["problems"][0]["field"] == "offset"
        token_id = await http.delete(f"/api/v1/tokens/{2**64}")
        assert token_id.status_code == 422
        # Spaces at the ends of a name are dropped, as a technician means it.
        ok = await http.post("/api/v1/devices", json={**WL, "kecamatan": "Setu", "name": " Pos "})
        assert ok.status_code == 201, ok.text
        assert ok.json()["device"]["name"] == "Pos"
        assert ok.json()["device"]["kecamatan"] == "setu"


async def test_if_match_is_required_and_checked_in_the_one_shape(api: Api) -> None:
    async with api.client("technician") as http:
        await http.post("/api/v1/devices", json={**WL, "kecamatan": "setu"})
        blind = await http.patch("/api/v1/devices/wl-setu-01", json={"name": "B"})
        assert blind.status_code == 428
        _shape(blind.json())
        assert "If-Match is required" in blind.json()["detail"]
        wrong = await http.post(
            "/api/v1/devices/wl-setu-01/retire", headers={"If-Match": "yesterday"}
        )
        assert wrong.status_code == 422
        assert wrong.json()["problems"][0]["field"] == "If-Match"
        empty = await http.patch(
            "/api/v1/devices/wl-setu-01", json={"address_note": None}, headers={"If-Match": '"1"'}
        )
        assert empty.status_code == 422
        assert empty.json()["problems"][0]["field"] == "address_note"


async def test_401_403_404_405_409_come_in_the_one_shape(api: Api) -> None:
    async with api.client(None) as anonymous:
        refused = await anonymous.get("/api/v1/devices")
        assert refused.status_code == 401
        _shape(refused.json())
    async with api.client("operator") as http:
        low = await http.post("/api/v1/devices", json={**WL, "kecamatan": "setu"})
        assert low.status_code == 403
        _shape(low.json())
        nowhere = await http.get("/api/v1/nothing-here")
        assert nowhere.status_code == 404
        _shape(nowhere.json())
        method = await http.put("/api/v1/devices")
        assert method.status_code == 405
        _shape(method.json())
        assert method.headers["allow"] == "GET, POST"
        assert "expected GET or POST" in method.json()["detail"]
    me = await api.token("admin", "me")
    async with api.client(None) as http:
        http.headers["Authorization"] = f"Bearer {me.token}"
        own = await http.delete(f"/api/v1/tokens/{me.id}")
        assert own.status_code == 409
        _shape(own.json())
        assert (await http.get("/api/v1/tokens")).status_code == 200  # still signed in


async def test_the_schema_documents_what_each_operation_answers(api: Api) -> None:
    async with api.client(None) as http:
        schema = (await http.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    ids = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            ids.append(operation["operationId"])
            responses = operation["responses"]
            if operation.get("security"):
                assert "401" in responses, (method, path)
            if path.startswith("/api/"):
                assert "503" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith("4"):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ErrorBody", (method, path, status)
    assert len(ids) == len(set(ids))
    patch = schema["paths"]["/api/v1/devices/{device_id}"]["patch"]
    [if_match] = [p for p in patch["parameters"] if p["in"] == "header"]
    assert if_match["required"] is True
    assert {"404", "412", "422", "428", "403"} <= set(patch["responses"])
    export = schema["paths"]["/api/v1/devices/export"]["get"]["responses"]["200"]["content"]
    assert "application/json" not in export
    assert "text/csv" in export
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "text/html" in schema["paths"]["/m/"]["get"]["responses"]["200"]["content"]
    links = schema["paths"]["/api/v1/devices"]["post"]["responses"]["201"]["links"]
    assert links["PatchDevice"]["operationId"] == "patch_device"


async def test_the_schemas_enums_are_the_seeded_reference_data(api: Api) -> None:
    async with await psycopg.AsyncConnection.connect(api.db) as conn:
        types = [r[0] for r in await (await conn.execute("SELECT id FROM device_types")).fetchall()]
        kec = await (await conn.execute("SELECT id, name FROM kecamatan")).fetchall()
        pillars = [r[0] for r in await (await conn.execute("SELECT id FROM pillars")).fetchall()]
    assert sorted(types) == sorted(DEVICE_TYPES)
    assert sorted({k for row in kec for k in row}) == sorted(KECAMATAN_REFS)
    assert sorted(pillars) == sorted(PILLAR_IDS)
