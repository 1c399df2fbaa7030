"""The judge: one camera's interval reports against its own rolling baseline -> a Verdict.

A picture is judged from its samples (decoded keyframes, see streams/probe.py), never from one
sample alone: black, covered and blurred need `bad_samples` consecutive bad samples, frozen needs
`frozen_samples` consecutive unchanged samples (counted in keyframes, not seconds: "smart codec"
cameras stretch the keyframe interval). Contrast, edges and sharpness are judged relative to the
camera's own baseline, which adapts slowly and only from healthy samples, so dusk, the IR cut
filter switching to a bright grey picture and rain pass without an alarm while a lens cap does not.
An offline report is offline at once: the connection is gone, there is nothing to debounce.
Recovery is immediate too: one good sample ends a black, covered, frozen or blurred state.

Each verdict also says whether the camera is watched (`Verdict.watch`): while it is, the probe
decodes `samples_per_interval` keyframes per interval, otherwise one (the issue's "one frame per
interval"; see streams/probe.py). A camera is watched until its baseline is learned, while a run
of bad or unchanged samples is pending, while a bad state is held, and while its bitrate has
collapsed. So the first bad sample of a healthy camera (one per interval) doubles its samples
from the next interval on, and bad_samples = frozen_samples = 3 are reached in two intervals
(1 + 2 samples), as with two samples every interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from streams.report import IntervalReport, Sample, State, Thresholds, Verdict

# The change between two samples: the share of BLOCK x BLOCK blocks whose mean absolute luma
# difference exceeds BLOCK_NOISE levels. Re-encoding an identical picture moves a block by well
# under a level; an OSD clock ticking on a frozen picture changes only the few blocks of its
# digits (0.3-3 % of a 320 px wide picture), so it does not count as change.
BLOCK = 16
BLOCK_NOISE = 3.0
# A change at or below the camera's noise floor is "still". The floor is half the camera's
# typical change (its baseline), clamped to [STILL_MIN, STILL_MAX]; STILL_MAX before a baseline.
STILL_MIN = 0.01
STILL_MAX = 0.05
# Interval bitrate at or below this share of the baseline bitrate is the collapse a frozen encoder
# shows (its P-frames become empty). With a bitrate baseline and no collapse, a still picture must
# stay still twice as long before it is frozen: that is a live static scene more often than not.
BITRATE_COLLAPSE = 0.5
# Before a camera has a baseline (BASELINE_MIN healthy samples), covered is judged on absolute
# floors: a lens cap or a bag gives a flat picture (luma std below ~10, almost no edges); a dark
# night street keeps lights and edges (std 30+, edges 3 %+ on the test cameras' /night).
COVERED_CONTRAST = 15.0
COVERED_EDGES = 0.01
# Blurred: the Laplacian's variance per unit of picture variance (scale free, so brightness and
# contrast changes at dusk do not read as blur) below this share of the baseline.
BLURRED_RATIO = 0.2
BASELINE_MIN = 5
# The baseline learns at most this fast: 1/50 per healthy sample, ~4 minutes at two samples per
# 10 s interval. Dusk takes ~20 minutes at Bekasi's latitude, a lens cap a second.
LEARN_RATE = 0.02


def block_change(previous: npt.NDArray[np.uint8], current: npt.NDArray[np.uint8]) -> float:
    """Share (0-1) of BLOCK-sized blocks whose mean absolute difference exceeds BLOCK_NOISE."""
    diff = cv2.absdiff(previous, current)
    height = diff.shape[0] - diff.shape[0] % BLOCK
    width = diff.shape[1] - diff.shape[1] % BLOCK
    if height == 0 or width == 0:
        return float(np.mean(diff) > BLOCK_NOISE)
    blocks = cv2.resize(
        diff[:height, :width], (width // BLOCK, height // BLOCK), interpolation=cv2.INTER_AREA
    )  # INTER_AREA on an exact ratio: block means
    return float(np.count_nonzero(blocks > BLOCK_NOISE)) / blocks.size


def _detail(sample: Sample) -> float:
    """Sharpness per unit of variance: scale free (a darker picture is not a blurred one)."""
    return sample.sharpness / (sample.contrast * sample.contrast + 1.0)


@dataclass
class _Mean:
    """A slowly adapting mean: a running mean for the first samples, then an EWMA."""

    value: float = 0.0
    count: int = 0

    def learn(self, value: float) -> None:
        self.count += 1
        rate = max(1.0 / self.count, LEARN_RATE)
        self.value += rate * (value - self.value)

    @property
    def ready(self) -> bool:
        return self.count >= BASELINE_MIN


class Judge:
    """One camera's judge: keeps the rolling baseline and the runs of bad samples."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.contrast = _Mean()
        self.edges = _Mean()
        self.detail = _Mean()
        self.change = _Mean()
        self.bitrate = _Mean()
        self._previous: npt.NDArray[np.uint8] | None = None
        self._black = 0
        self._covered = 0
        self._blurred = 0
        self._still = 0
        self._state: State = "ok"
        self._why: str | None = None
        self._last_change: float | None = None

    def judge(self, report: IntervalReport) -> Verdict:
        if not report.online:
            self._reset()
            self._state, self._why = "offline", report.reason or "error"
            return Verdict(state="offline", reason=self._why, watch=True)
        if self._state == "offline":
            self._state, self._why = "ok", None
        collapsed = self._collapsed(report.bitrate_kbps)
        healthy_interval = bool(report.samples)
        for sample in report.samples:
            healthy_interval &= self._add(sample, collapsed)
        if healthy_interval and self._state == "ok" and report.bitrate_kbps is not None:
            self.bitrate.learn(report.bitrate_kbps)
        watch = self.watching(collapsed)
        if not report.samples:  # no keyframe this interval: the state stands, no new measures
            return Verdict(state=self._state, reason=self._why, watch=watch)
        last = report.samples[-1]
        return Verdict(
            state=self._state,
            reason=self._why,
            luma=last.luma,
            contrast=last.contrast,
            edge_density=last.edge_density,
            sharpness=last.sharpness,
            change=self._last_change,
            watch=watch,
        )

    def watching(self, collapsed: bool | None = None) -> bool:
        """Whether the camera needs a closer look than one sample per interval: no baseline yet
        (a new camera: everything is judged on the absolute floors, the first two intervals must
        be enough), a bad or unchanged sample whose run is pending, a bad state held (also
        blurred), or a collapsed bitrate (a frozen encoder's first sign)."""
        return (
            self._state != "ok"
            or self._black > 0
            or self._covered > 0
            or self._blurred > 0
            or self._still > 0
            or collapsed is True
            or not self.change.ready
        )

    def _reset(self) -> None:
        """A new connection starts new runs (its first sample is not compared to an old one)."""
        self._previous = None
        self._black = self._covered = self._blurred = self._still = 0
        self._last_change = None

    def _collapsed(self, bitrate: float | None) -> bool | None:
        """True: the bitrate collapsed; False: it did not; None: nothing to compare with."""
        if bitrate is None or not self.bitrate.ready:
            return None
        return bitrate <= BITRATE_COLLAPSE * self.bitrate.value

    def _add(self, sample: Sample, collapsed: bool | None) -> bool:
        """Count one sample into the runs and set the state; True if it is healthy throughout."""
        t = self.thresholds
        black = sample.luma <= t.black_luma
        if self.contrast.ready and self.edges.ready:
            covered = (
                sample.contrast < t.covered_ratio * self.contrast.value
                and sample.edge_density < t.covered_ratio * self.edges.value
            )
        else:
            covered = sample.contrast < COVERED_CONTRAST and sample.edge_density < COVERED_EDGES
        covered &= not black
        detail = _detail(sample)
        blurred = self.detail.ready and detail < BLURRED_RATIO * self.detail.value
        change: float | None = None
        still = False
        if self._previous is not None and self._previous.shape == sample.gray.shape:
            change = block_change(self._previous, sample.gray)
            still = change <= self._still_floor()
        self._previous = sample.gray
        self._last_change = change

        self._black = self._black + 1 if black else 0
        self._covered = self._covered + 1 if covered else 0
        self._blurred = self._blurred + 1 if blurred else 0
        self._still = self._still + 1 if still else 0
        frozen_after = t.frozen_samples * (2 if collapsed is False else 1)

        if self._black >= t.bad_samples:
            self._state, self._why = "black", f"mean luma {sample.luma:.1f} <= {t.black_luma:g}"
        elif self._covered >= t.bad_samples:
            self._state, self._why = "covered", self._covered_why(sample)
        elif self._still >= frozen_after:
            bitrate = "bitrate collapsed" if collapsed else "bitrate not collapsed"
            if collapsed is None:
                bitrate = "no bitrate baseline"
            self._state = "frozen"
            self._why = f"no change over {self._still} samples ({bitrate})"
        elif self._blurred >= t.bad_samples:
            self._state = "blurred"
            self._why = f"sharpness {detail / max(self.detail.value, 1e-9):.0%} of its baseline"
        elif not (black or covered or still or blurred):
            self._state, self._why = "ok", None
        # else: a bad sample whose run is still short keeps the current state (debounce)

        healthy = self._state == "ok" and not (black or covered or still or blurred)
        if healthy:
            self.contrast.learn(sample.contrast)
            self.edges.learn(sample.edge_density)
            self.detail.learn(detail)
            if change is not None:
                self.change.learn(change)
        return healthy

    def _still_floor(self) -> float:
        if not self.change.ready:
            return STILL_MAX
        return min(STILL_MAX, max(STILL_MIN, 0.5 * self.change.value))

    def _covered_why(self, sample: Sample) -> str:
        if self.contrast.ready and self.edges.ready:
            return (
                f"contrast {sample.contrast:.1f} and edges {sample.edge_density:.3f} below "
                f"{self.thresholds.covered_ratio:.0%} of the baseline ({self.contrast.value:.1f}, "
                f"{self.edges.value:.3f})"
            )
        return (
            f"contrast {sample.contrast:.1f} < {COVERED_CONTRAST:g} and edges "
            f"{sample.edge_density:.3f} < {COVERED_EDGES:g} (no baseline yet)"
        )
