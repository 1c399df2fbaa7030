"""The registry's shapes: what a technician sends, what the registry returns.

The input models are the API's contract (issue 13): every value the schema allows is one the
registry accepts, so reference fields are enums of the seeded reference data (kept equal to
the migration's rows by a test), text is free of control characters, and a field that cannot
be null is not nullable in the schema (leaving it out keeps it as it is).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
)
from pydantic.json_schema import WithJsonSchema

from pantau.ids import DEVICE_ID_PATTERN
from pantau.openapi import MULTILINE, NO_CONTROLS, VISIBLE, Problem, not_given, one_line
from pantau.regency import KECAMATAN, LATITUDE, LONGITUDE, PILLARS

__all__ = ["Problem"]  # re-exported: the registry's modules name it from here

Status = Literal["active", "maintenance", "retired"]
PayloadFormat = Literal["number", "json", "senml"]
# The reference data as the schema's enums: the seeded device types (migration 0003, kept equal
# by a test) and the regency's kecamatan and pillars. The registry checks them against its
# tables, with an error that lists the choices; a kecamatan is named by its id or its name, the
# name matched without regard to case.
DEVICE_TYPES = (
    "air_quality",
    "camera",
    "rain_gauge",
    "street_light",
    "traffic_counter",
    "waste_bin",
    "water_level",
    "weather",
)
KECAMATAN_REFS = tuple(sorted({k.id for k in KECAMATAN} | {k.name for k in KECAMATAN}))
PILLAR_IDS = tuple(p[0] for p in PILLARS)
_GIVEN = StringConstraints(min_length=1)  # "" is not "no filter": the enum does not hold it
DeviceTypeId = Annotated[
    str, _GIVEN, WithJsonSchema({"type": "string", "enum": list(DEVICE_TYPES)})
]
KecamatanRef = Annotated[
    str, _GIVEN, WithJsonSchema({"type": "string", "enum": list(KECAMATAN_REFS)})
]
PillarId = Annotated[str, _GIVEN, WithJsonSchema({"type": "string", "enum": list(PILLAR_IDS)})]
# Text a person reads: no control characters, something visible in a name, spaces tidied.
Name = Annotated[str, StringConstraints(max_length=200, pattern=VISIBLE), AfterValidator(one_line)]
Note = Annotated[  # an address may run over lines, as a spreadsheet cell does
    str, StringConstraints(max_length=500, pattern=MULTILINE), AfterValidator(str.strip)
]
Installer = Annotated[
    str, StringConstraints(max_length=200, pattern=NO_CONTROLS), AfterValidator(str.strip)
]
Topic = Annotated[
    str, StringConstraints(max_length=300, pattern=r"^[^+#\u0000-\u001f\u007f-\u009f]*$")
]
MetadataText = Annotated[str, StringConstraints(max_length=500, pattern=NO_CONTROLS)]
MetadataKey = Annotated[str, StringConstraints(max_length=64, pattern=VISIBLE)]
Metadata = Annotated[
    # strict members: "0000" is text (and its length counts), never the number 0
    dict[MetadataKey, MetadataText | StrictInt | StrictFloat | StrictBool | None],
    Field(max_length=50),
    # pydantic states the key rule as patternProperties, which leaves other keys free
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": 50,
            "propertyNames": {"type": "string", "maxLength": 64, "pattern": VISIBLE},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "maxLength": 500, "pattern": NO_CONTROLS},
                    {"type": "number"},
                    {"type": "boolean"},
                    {"type": "null"},
                ]
            },
        }
    ),
]


def _date_text(value: object) -> object:
    """A date comes as YYYY-MM-DD text (the schema's `format: date`), not as a number of
    seconds, which pydantic would also take."""
    if isinstance(value, str | date):
        return value
    raise ValueError("expected a date as YYYY-MM-DD, e.g. 2026-11-01")


InstallDate = Annotated[date, BeforeValidator(_date_text)]


def _whole(value: object) -> object:
    """JSON Schema's integer includes 733.0; a fraction or text is left to the int check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


MAX_INTERVAL = 86400 * 7
# The schema written out: with a BeforeValidator pydantic emits `gt`/`le`, not JSON Schema's names.
Seconds = Annotated[
    int,
    BeforeValidator(_whole),
    Field(gt=0, le=MAX_INTERVAL, strict=True),
    WithJsonSchema({"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_INTERVAL}),
]

# Fields a device row carries, in export column order.
FIELDS = (
    "device_id",
    "name",
    "device_type",
    "kecamatan",
    "pillar",
    "latitude",
    "longitude",
    "address_note",
    "install_date",
    "installed_by",
    "status",
    "expected_interval_seconds",
    "payload_format",
    "topic",
)


def _position_rules(schema: dict[str, Any]) -> None:
    """What the registry checks of a position, in the schema: latitude and longitude come
    together, both numbers or both null, inside the regency unless `allow_outside` is true."""

    def null(field: str) -> dict[str, Any]:
        return {"required": [field], "properties": {field: {"type": "null"}}}

    def within(low: float, high: float) -> dict[str, Any]:
        return {"anyOf": [{"type": "null"}, {"type": "number", "minimum": low, "maximum": high}]}

    schema["dependentRequired"] = {"latitude": ["longitude"], "longitude": ["latitude"]}
    schema["allOf"] = [
        {"if": null("latitude"), "then": {"properties": {"longitude": {"type": "null"}}}},
        {"if": null("longitude"), "then": {"properties": {"latitude": {"type": "null"}}}},
        {
            "if": {
                "not": {
                    "required": ["allow_outside"],
                    "properties": {"allow_outside": {"const": True}},
                }
            },
            "then": {
                "properties": {"latitude": within(*LATITUDE), "longitude": within(*LONGITUDE)}
            },
        },
    ]


class _Editable(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_position_rules)

    # Not nullable, and None only as "not given" (never validated, and left out of the schema by
    # `not_given`): an explicit null is refused, as the schema says.
    name: Name = not_given(examples=["Pintu air Kali CBL"])
    device_type: DeviceTypeId = not_given(examples=["water_level"])
    kecamatan: KecamatanRef = not_given(examples=["setu"], description="id or name")
    pillar: PillarId | None = Field(None, description="null: the device type's pillar")
    # strict: a JSON number, not "1.5" or true (pydantic's lax mode takes those; the schema
    # does not). Files and the CLI, which hold text, validate with strict=False.
    latitude: float | None = Field(None, ge=-90, le=90, examples=[-6.35], strict=True)
    longitude: float | None = Field(None, ge=-180, le=180, examples=[107.03], strict=True)
    address_note: Note = not_given(description='"" clears it')
    install_date: InstallDate | None = None
    installed_by: Installer = not_given()
    status: Status = not_given()
    expected_interval_seconds: Seconds | None = Field(
        None,
        description="left out: the device type's; null: learned from the device's reporting "
        "(the type's until then)",
    )
    payload_format: PayloadFormat = not_given()
    topic: Topic | None = Field(
        None, description="without wildcards (+, #); null or empty: from the format"
    )
    metadata: Metadata | None = Field(
        None, description="a flat object of text (up to 500 characters), numbers and booleans"
    )
    allow_outside: bool = Field(
        False,
        description="accept a position outside the regency's extent (edge cases)",
        strict=True,
    )


class DeviceIn(_Editable):
    """A new device. Required: id, name, type, kecamatan."""

    device_id: str = Field(pattern=DEVICE_ID_PATTERN, examples=["wl-setu-01"])
    name: Name = Field(examples=["Pintu air Kali CBL"])
    device_type: DeviceTypeId = Field(examples=["water_level"])
    kecamatan: KecamatanRef = Field(examples=["setu"], description="id or name")


class DevicePatch(_Editable):
    """The fields to change; those left out stay as they are."""


class Device(BaseModel):
    device_id: str
    name: str
    device_type: str
    kecamatan: str
    pillar: str
    latitude: float | None
    longitude: float | None
    address_note: str
    install_date: date | None
    installed_by: str
    status: Status
    expected_interval_seconds: int | None = Field(description="null: learned from its reporting")
    payload_format: PayloadFormat
    topic: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int
    mqtt_username: str | None
    last_reading_at: datetime | None = None

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


class Credentials(BaseModel):
    """What a device needs to publish: shown once, at registration."""

    host: str
    port: int
    username: str
    password: str = Field(description="shown this once; the broker keeps only a hash")
    topic: str
    payload_format: PayloadFormat


class Setup(BaseModel):
    """For the technician on site: what to put on the device."""

    snippet: str = Field(description="broker address, credentials, topic, an example payload")
    qr_svg: str = Field(description="the snippet as a QR code (inline SVG)")


class Registered(BaseModel):
    device: Device
    credentials: Credentials | None = Field(
        None, description="null when no broker with dynamic security is configured"
    )
    setup: Setup
    warning: str | None = Field(
        None, description="e.g. the device is in maintenance: its credentials work once active"
    )


class MetricSpec(BaseModel):
    metric: str
    unit: str
    valid_min: float | None
    valid_max: float | None
    warn_low: float | None
    warn_high: float | None
    alarm_low: float | None
    alarm_high: float | None
    label_id: str | None = Field(None, description="the metric's name in Bahasa Indonesia")
    example: float | None = Field(None, description="a realistic value, for setup examples")


class DeviceType(BaseModel):
    id: str
    name: str
    name_id: str
    pillar: str
    expected_interval_seconds: int
    metrics: list[MetricSpec]


class KecamatanOut(BaseModel):
    id: str
    name: str
    latitude: float
    longitude: float


class PillarOut(BaseModel):
    id: str
    name: str
    name_id: str


class PendingDevice(BaseModel):
    device_id: str
    first_seen_at: datetime
    last_reading_at: datetime
    last_received_at: datetime
    metrics: list[str] = Field(default_factory=list, description="sent in its last hour")
    device_type: str | None = Field(None, description="the one type with all those metrics")
    kecamatan: str | None = Field(None, description="a kecamatan id found in the device id")
    adopt: str = Field("", description="the `pantau devices add` line that registers it")


class Reading(BaseModel):
    metric: str
    time: datetime
    value: float


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
