"""The `[outages]` section: liveness thresholds, area outages, alert receivers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="the receiver's name")
    url: str = Field(pattern=r"^https?://", description="where the JSON events are POSTed")
    secret: SecretStr = Field(
        description="HMAC-SHA256 key: X-Pantau-Signature is sha256=HMAC(secret, timestamp.body)"
    )
    timeout_seconds: float = Field(10.0, gt=0)


class OutagesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    detector_interval_seconds: float = Field(
        5.0, gt=0, le=60, description="how often the detector judges every device"
    )
    late_factor: float = Field(
        2.0, gt=1, description="a device is late after this many expected intervals of silence"
    )
    down_factor: float = Field(
        4.0, gt=1, description="and down (an outage) after this many; must be above late_factor"
    )
    recovery_factor: float = Field(
        3.0,
        ge=0,
        description="a device that is down and reports again must keep reporting for this many "
        "intervals before its outage ends (flapping damped)",
    )
    recovery_min_seconds: float = Field(30.0, ge=0, description="and for at least this long")
    area_min_devices: int = Field(
        3, ge=2, description="an area outage needs at least this many devices of a kecamatan down"
    )
    area_share: float = Field(
        0.5, gt=0, le=1, description="and at least this share of its active devices"
    )
    area_clear_share: float = Field(
        0.25, ge=0, le=1, description="it ends when the share down falls below this"
    )
    alertmanager_urls: list[str] = Field(
        default_factory=list,
        description="Alertmanager base URLs, every replica (e.g. http://am1:9093); alerts go to "
        "/api/v2/alerts of each",
    )
    alertmanager_resend_seconds: float = Field(
        60.0, ge=5, le=180, description="active alerts are re-sent this often, with an endsAt lease"
    )
    webhooks: list[WebhookSettings] = Field(
        default_factory=list,
        description="generic receivers: [[outages.webhooks]] with name, url, secret "
        "(HMAC-SHA256), timeout_seconds",
    )
    delivery_max_backoff_seconds: float = Field(
        300.0, gt=0, description="longest wait between two attempts to deliver one event"
    )

    @model_validator(mode="after")
    def _ordered(self) -> OutagesSettings:
        if self.down_factor <= self.late_factor:
            raise ValueError(
                f"down_factor ({self.down_factor}) must be above late_factor ({self.late_factor})"
            )
        if self.area_clear_share > self.area_share:
            raise ValueError(
                f"area_clear_share ({self.area_clear_share}) must not be above area_share "
                f"({self.area_share})"
            )
        return self

    def receivers(self) -> list[str]:
        """The outbox's receiver names: 'alertmanager' when any URL is set, each webhook's name."""
        names = ["alertmanager"] if self.alertmanager_urls else []
        return names + [w.name for w in self.webhooks]
