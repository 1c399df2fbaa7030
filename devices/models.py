"""The registry's shapes: what a technician sends, what the registry returns."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pantau.ids import DEVICE_ID_PATTERN

Status = Literal["active", "maintenance", "retired"]
PayloadFormat = Literal["number", "json", "senml"]

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


class _Editable(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(None, min_length=1, max_length=200, examples=["Pintu air Kali CBL"])
    device_type: str | None = Field(None, examples=["water_level"])
    kecamatan: str | None = Field(None, examples=["setu"], description="id or name")
    pillar: str | None = Field(None, description="default: the device type's pillar")
    latitude: float | None = Field(None, ge=-90, le=90, examples=[-6.35])
    longitude: float | None = Field(None, ge=-180, le=180, examples=[107.03])
    address_note: str | None = Field(None, max_length=500)
    install_date: date | None = None
    installed_by: str | None = Field(None, max_length=200)
    status: Status | None = None
    expected_interval_seconds: int | None = Field(
        None, gt=0, le=86400 * 7, description="default: the device type's"
    )
    payload_format: PayloadFormat | None = None
    topic: str | None = Field(None, max_length=300, description="default: from the format")
    metadata: dict[str, Any] | None = None
    allow_outside: bool = Field(
        False, description="accept a position outside the regency's extent (edge cases)"
    )

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, value: str | None) -> str | None:
        if value is not None and any(c in value for c in "+#\x00"):
            raise ValueError("expected a topic without wildcards (+, #)")
        return value


class DeviceIn(_Editable):
    """A new device. Required: id, name, type, kecamatan."""

    device_id: str = Field(pattern=DEVICE_ID_PATTERN, examples=["wl-setu-01"])
    name: str = Field(min_length=1, max_length=200, examples=["Pintu air Kali CBL"])
    device_type: str = Field(examples=["water_level"])
    kecamatan: str = Field(examples=["setu"], description="id or name")


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
    expected_interval_seconds: int
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


class Problem(BaseModel):
    """One thing wrong with a request or an import row."""

    row: int | None = Field(None, description="the import row (1 = first data row)")
    line: int | None = Field(
        None, description="the file's own line (CSV) or sheet row (XLSX), the header's being 1"
    )
    field: str
    message: str


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
