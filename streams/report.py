"""What crosses between a camera's probe thread, its judge and the service that stores results:
plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

# Why a camera is offline. refused: nothing listens; auth: 401/403; not_found: no such path (404);
# timeout: no answer while opening; no_video: the stream has no video track; stalled: connected but
# no packet for stall_timeout_seconds; ended: the server ended the stream; error: anything else.
OfflineReason = Literal[
    "refused", "auth", "not_found", "timeout", "no_video", "stalled", "ended", "error"
]
# The judged state of a check interval; every state but `ok` (and `blurred`, recorded only) is a
# cause the outage detector opens a camera outage for.
State = Literal["ok", "frozen", "black", "covered", "blurred", "offline"]
DOWN_STATES: frozenset[str] = frozenset({"frozen", "black", "covered", "offline"})


@dataclass(frozen=True)
class Thresholds:
    """How one camera is judged: the `[streams]` defaults, overridden per camera."""

    black_luma: float = 20.0
    covered_ratio: float = 0.25
    frozen_samples: int = 3
    bad_samples: int = 3


@dataclass(frozen=True)
class CameraConfig:
    """One camera as the probes see it (a row of `cameras` joined with its device)."""

    device_id: str
    rtsp_url: str = field(repr=False)  # may hold credentials: never in a repr, a log or an error
    probe_interval_seconds: float = 10.0
    thresholds: Thresholds = Thresholds()
    version: int = 1


@dataclass(frozen=True)
class Sample:
    """One decoded keyframe, measured. `gray` is the frame scaled to the analysis width (uint8)."""

    at: float  # time.time() when decoded
    pts_seconds: float | None  # the frame's own timestamp in the stream
    luma: float  # mean, 0-255
    contrast: float  # standard deviation of luma
    edge_density: float  # share of pixels on an edge, 0-1
    sharpness: float  # variance of the Laplacian
    gray: npt.NDArray[np.uint8] = field(repr=False, compare=False)


@dataclass(frozen=True)
class IntervalReport:
    """What one camera's probe saw during one check interval."""

    device_id: str
    started_at: float  # time.time()
    ended_at: float
    online: bool
    reason: OfflineReason | None = None  # set when offline
    connect_seconds: float | None = None  # of the connection this interval used, when it opened
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # from packet timestamps
    bitrate_kbps: float | None = None  # from packet sizes
    packets: int = 0
    keyframes: int = 0
    decode_errors: int = 0
    samples: tuple[Sample, ...] = ()
    jpeg: bytes | None = field(default=None, repr=False)  # snapshot of the last sample


@dataclass(frozen=True)
class Verdict:
    """The judge's conclusion for one interval, with the measures behind it."""

    state: State
    reason: str | None = None  # the offline reason, or what made the picture bad
    luma: float | None = None
    contrast: float | None = None
    edge_density: float | None = None
    sharpness: float | None = None
    change: float | None = None  # share of the picture that changed against the last sample
    # The judge wants a closer look: the probe decodes samples_per_interval keyframes in the next
    # interval instead of one (see Judge.watching).
    watch: bool = False

    @property
    def down(self) -> bool:
        return self.state in DOWN_STATES

    @property
    def cause(self) -> str:
        """The outage cause: `offline:<reason>` for a connection, else the state."""
        if self.state == "offline":
            return f"offline:{self.reason or 'error'}"
        return self.state
