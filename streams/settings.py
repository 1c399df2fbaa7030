"""The `[streams]` section: how cameras are probed, judged and their snapshots kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StreamsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="probe the registry's cameras (type `camera`)")
    max_cameras: int = Field(
        1000,
        ge=0,
        description="most cameras one instance probes; cameras past it are not probed and "
        "counted in pantau_camera_unprobed",
    )
    lease_seconds: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="several instances on one database split the cameras by leases of this "
        "length, renewed every third of it; a camera whose instance stopped renewing is probed "
        "by another within two of them",
    )
    open_concurrency: int = Field(
        8, ge=1, le=256, description="RTSP connections being opened at once, at most"
    )
    open_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="connecting and reading the stream's first packets"
    )
    stall_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="a connection that delivers no packet for this long is `stalled` (a socket "
        "timeout, no per-packet cost)",
    )
    read_pace_seconds: float = Field(
        0.3,
        ge=0,
        le=2.0,
        description="once a probe has caught up with its stream (a read waited for a packet at "
        "the live edge), it sleeps this long while the next packets gather in the socket, then "
        "reads them without waiting: a wake-up per pace instead of one per packet, a quarter to a "
        "third less CPU per camera (docs/benchmarks.md). Packets are read up to this much later "
        "(fps and bitrate come from their timestamps and sizes). 0: read each packet as it comes. "
        "At most a quarter of stall_timeout_seconds",
    )
    reconnect_min_seconds: float = Field(2.0, gt=0, description="first wait before reconnecting")
    reconnect_max_seconds: float = Field(
        60.0, gt=0, description="longest wait between reconnect attempts (with jitter)"
    )
    stagger_seconds: float = Field(
        10.0,
        ge=0,
        description="the first connections are spread over this long, so a restart does not open "
        "every camera at once",
    )
    samples_per_interval: int = Field(
        2,
        ge=1,
        le=10,
        description="keyframes decoded and judged per check interval (spread over it) while "
        "the judge watches a camera (new, a bad sample or state, a bitrate collapse); a healthy "
        "camera gets one",
    )
    analysis_width: int = Field(
        320, ge=64, le=1920, description="judged frames are scaled to this width"
    )
    # Default thresholds; each camera may override them (cameras table).
    black_luma: float = Field(
        20.0, ge=0, le=255, description="mean luma (0-255) at or below which a picture is black"
    )
    covered_ratio: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="contrast and edge density below this share of the camera's own baseline "
        "mean a covered lens",
    )
    frozen_samples: int = Field(
        3, ge=2, le=100, description="consecutive unchanged samples that make a picture frozen"
    )
    bad_samples: int = Field(
        3,
        ge=1,
        le=100,
        description="consecutive bad samples before a camera is judged black, covered or blurred "
        "(night, IR switching and rain pass without an alarm)",
    )
    snapshot_dir: Path = Field(
        Path("snapshots"),
        description="where the latest JPEG and the history of each camera live (a relative path "
        "is taken inside `service.state_dir` when that is set)",
    )
    snapshot_every_seconds: float = Field(
        60.0, gt=0, description="a snapshot joins a camera's history at most this often"
    )
    snapshot_history: int = Field(
        60, ge=1, le=10_000, description="snapshots kept per camera (oldest removed first)"
    )
    snapshot_max_bytes: int = Field(
        1_048_576,
        ge=16_384,
        description="largest JPEG kept; a bigger one is re-encoded smaller (counted)",
    )
    snapshot_quality: int = Field(80, ge=10, le=100, description="JPEG quality of snapshots")
    snapshot_width: int = Field(
        960,
        ge=160,
        le=3840,
        description="snapshots of wider pictures are scaled down to this width (a wall tile or a "
        "phone needs no more; a 4K camera's JPEG would cost 9 times a 720p one's)",
    )
    health_retention_days: int = Field(
        30, ge=1, description="camera_health rows older than this are deleted"
    )

    @model_validator(mode="after")
    def _ordered(self) -> StreamsSettings:
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError(
                f"reconnect_max_seconds ({self.reconnect_max_seconds}) must not be below "
                f"reconnect_min_seconds ({self.reconnect_min_seconds})"
            )
        if self.read_pace_seconds > self.stall_timeout_seconds / 4:
            raise ValueError(
                f"read_pace_seconds ({self.read_pace_seconds}) must be at most a quarter of "
                f"stall_timeout_seconds ({self.stall_timeout_seconds})"
            )
        return self
