"""One camera's probe: a thread holding a persistent RTSP connection with PyAV.

It demuxes every packet (counting sizes, timestamps and keyframes, nothing else: this loop runs
for hundreds of cameras) and decodes only the few keyframes it samples. Each interval ends in one
IntervalReport, also while the camera is offline, and the judge's verdict on it (what `emit`
returns) sets the next interval's sampling:

- **Adaptive sampling.** While the judge watches the camera (`Verdict.watch`: a new connection,
  no baseline yet, a bad or unchanged sample pending, a bad state held, a bitrate collapse) the
  interval takes `samples_per_interval` samples, the first keyframes at or after slots spread
  over it (at 0, 1/n, ... of the interval). While the camera looks healthy it takes one: the
  issue's "one frame per interval", late in the interval so that the snapshot is as fresh as
  with every slot (see sample_offset). An `emit` that returns no verdict gets every slot.

The costly parts are chosen for their cost:

- No PyAV read timeout (its interrupt callback takes the GIL on every socket read: two to three
  times the CPU of the whole loop, measured): `timeout=(open, None)` bounds the open only. A
  silent connection ends by ffmpeg's own socket timeout (the RTSP demuxer's `timeout` option,
  in microseconds; ffmpeg 8 removed `stimeout`), free per packet; a stream that stalls while
  RTCP keeps its socket busy is reported by a shared watchdog thread (_Watchdog).
- Keyframes only (`skip_frame = NONKEY`) on one thread with slice threading off: sliced
  decoding of some IDR frames gives a half green picture. Without the deblocking filter
  (`skip_loop_filter`): a third of a keyframe's decoding time.
- swscale contexts kept per probe (VideoReformatters, one thread each), one per kind of
  conversion so that none is rebuilt (`frame.reformat` makes a new one per frame; one context
  alternating between two conversions is rebuilt at each call): samples in grey at the analysis
  width, snapshots scaled in YUV 4:2:0 then converted to BGR at their own size (SnapshotScaler).
- Reading in bursts (`read_pace_seconds`, see PACE_WAITED_SECONDS): once the loop has caught up
  with the stream it sleeps a pace, then reads what gathered in the socket meanwhile: a wake-up
  per pace instead of one per packet.
- fps from packet timestamps (a wall-clock counter shows 5 fps on a frozen camera), bitrate from
  packet sizes over the wall time of the interval (see _Interval): neither depends on when a
  packet is read.

Never log or raise the camera's URL (it holds credentials; PyAV's exception messages carry it).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import av.error
import cv2
import numpy as np
import numpy.typing as npt
from av.video.reformatter import VideoReformatter
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.report import CameraConfig, IntervalReport, OfflineReason, Sample, Verdict
from streams.settings import StreamsSettings
from streams.urls import redact, redact_text

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

log = logging.getLogger(__name__)

OPEN_RESULTS = ("ok", "refused", "auth", "not_found", "timeout", "no_video", "error")
# find_stream_info reads this long before the open returns (ffmpeg's default is 5 s). The codec
# and size come from the SDP's parameter sets; fps we measure ourselves.
ANALYZE_MICROSECONDS = 1_000_000
# Two packets further apart than this (or timestamps that run backwards) start a new segment of
# the fps measure instead of counting as one long frame: a camera or server restarting its clock.
PTS_GAP_SECONDS = 5.0
# Waiting for the open gate or a backoff wakes this often at most to look at `stop`.
WAKE_SECONDS = 0.5
# The stall watchdog looks at every streaming probe this often.
WATCH_SECONDS = 0.5
# Reading in bursts (read_pace_seconds). A thread blocking in the demuxer for every packet (25 a
# second a camera, hundreds of cameras) costs a wake-up, a GIL handover and a poll each time, most
# of the loop's CPU. So once the probe has caught up with the stream it sleeps a pace, while the
# next packets wait in the kernel's socket buffer, to be read one after the other without waiting.
# Caught up: the read waited (took more than PACE_WAITED_SECONDS: the socket had nothing) and its
# packet is at the live edge, read less than PACE_MARGIN_SECONDS later behind its own timestamp
# than the least such lag seen this interval and the last (so that a camera clock drifting
# against ours moves the edge along). Both, because either alone misleads: a read also waits for
# the GIL while packets are queued (a probe sleeping then would fall behind), and the packets
# buffered while the stream was opened come faster than their timestamps, each a new least lag
# (a probe sleeping on those would never catch up with its backlog).
PACE_WAITED_SECONDS = 0.01
PACE_MARGIN_SECONDS = 0.1


class ProbeMetrics:
    """The probes' Prometheus series (no per-camera labels: hundreds of cameras, URLs secret)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.opens = Counter(
            "pantau_camera_opens_total",
            "RTSP connection attempts, by result (ok or the offline reason)",
            ["result"],
            registry=registry,
        )
        for result in OPEN_RESULTS:
            self.opens.labels(result)
        self.open_seconds = Histogram(
            "pantau_camera_open_seconds",
            "Time to open a camera's stream (connect, describe, setup, first packets), when it "
            "opened",
            buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20),
            registry=registry,
        )
        self.disconnects = Counter(
            "pantau_camera_disconnects_total",
            "Open connections lost, by reason (stalled, ended, error)",
            ["reason"],
            registry=registry,
        )
        self.stalls = Counter(
            "pantau_camera_stalls_total",
            "Open connections that delivered no video packet for stall_timeout_seconds",
            registry=registry,
        )
        self.packets = Counter(
            "pantau_camera_packets_total", "Video packets demuxed", registry=registry
        )
        self.bytes = Counter(
            "pantau_camera_bytes_total", "Bytes of video packets demuxed", registry=registry
        )
        self.keyframes_decoded = Counter(
            "pantau_camera_keyframes_decoded_total",
            "Keyframes decoded and measured (samples)",
            registry=registry,
        )
        self.decode_errors = Counter(
            "pantau_camera_decode_errors_total",
            "Keyframes that failed to decode or gave no picture",
            registry=registry,
        )
        self.snapshots_reencoded = Counter(
            "pantau_camera_probe_snapshots_reencoded_total",
            "Snapshots re-encoded smaller because they exceeded snapshot_max_bytes",
            registry=registry,
        )
        self.threads = Gauge(
            "pantau_camera_probe_threads", "Camera probe threads running", registry=registry
        )


# Hands a report over and returns the judge's verdict on it (None: every sample slot is taken).
Emit = Callable[[IntervalReport], Verdict | None]


def run_camera(
    config: CameraConfig,
    settings: StreamsSettings,
    emit: Emit,
    stop: threading.Event,
    open_gate: threading.Semaphore,
    metrics: ProbeMetrics,
    first_delay: float = 0.0,
) -> None:
    """Probe one camera until `stop` is set (returns within about stall_timeout of it)."""
    metrics.threads.inc()
    try:
        if stop.wait(first_delay):
            return
        _Probe(config, settings, emit, stop, open_gate, metrics).run()
    finally:
        metrics.threads.dec()


def offline_reason(exc: BaseException, *, opening: bool) -> OfflineReason:
    """The reason a PyAV error means, while opening or while reading an open stream."""
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return "auth"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "not_found"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    code = getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError | av.error.ExitError) or code in (
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    ):
        return "timeout" if opening else "stalled"
    if not opening and isinstance(
        exc, EOFError | ConnectionResetError | BrokenPipeError | ConnectionAbortedError
    ):
        return "ended"
    return "error"


def describe(exc: BaseException, url: str) -> str:
    """An exception's type and message for a log line, without the URL it may carry."""
    # an FFmpegError's str() ends with the URL it was opening: take its strerror alone
    text = (exc.strerror or "") if isinstance(exc, av.error.FFmpegError) else str(exc)
    text = redact_text(text.replace(url, redact(url))) if url else redact_text(text)
    return f"{type(exc).__name__}: {text}".rstrip(": ")


def _size(frame: VideoFrame, max_width: int) -> tuple[int, int]:
    """The frame's size at most max_width wide: aspect kept, even height."""
    width = min(max_width, frame.width)
    return width, max(2, round(frame.height * width / frame.width / 2) * 2)


def scaled(
    frame: VideoFrame, max_width: int, pixels: str, scaler: VideoReformatter | None
) -> npt.NDArray[np.uint8]:
    """The frame at most max_width wide (aspect kept, even height) in `pixels` (gray, bgr24)."""
    width, height = _size(frame, max_width)
    # AREA: a proper downscale, and half the time of the default bicubic on 720p; one thread
    # (hundreds of probes run at once)
    out = (scaler or VideoReformatter()).reformat(
        frame, width=width, height=height, format=pixels, interpolation="AREA", threads=1
    )
    return np.ascontiguousarray(out.to_ndarray(), dtype=np.uint8)


class SnapshotScaler:
    """A snapshot's picture in BGR at most max_width wide, in two swscale steps with a context
    each: scaled in YUV 4:2:0, then converted at the small size. swscale's one step (scale and
    convert to bgr24 together) costs 2-4 times as much: 2.1-2.9 ms against 0.6-1.6 ms for a 720p
    keyframe to 960 px (best and median of 150), for the same colours (swscale's conversion both
    ways; they differ only at sharp colour edges, by the order of scaling)."""

    def __init__(self) -> None:
        self._scale = VideoReformatter()
        self._convert = VideoReformatter()

    def bgr(self, frame: VideoFrame, max_width: int) -> npt.NDArray[np.uint8]:
        width, height = _size(frame, max_width)
        if (width, height) != (frame.width, frame.height):
            frame = self._scale.reformat(
                frame,
                width=width,
                height=height,
                format="yuv420p",
                interpolation="AREA",
                threads=1,
            )
        out = self._convert.reformat(frame, format="bgr24", threads=1)
        return np.ascontiguousarray(out.to_ndarray(), dtype=np.uint8)


def measure(
    frame: VideoFrame, analysis_width: int, at: float, scaler: VideoReformatter | None = None
) -> Sample:
    """Scale a decoded frame to the analysis width in gray and measure it."""
    gray = scaled(frame, analysis_width, "gray", scaler)
    pts, time_base = frame.pts, frame.time_base
    seconds = float(pts * time_base) if pts is not None and time_base else None
    return measure_gray(gray, at, seconds)


def measure_gray(gray: npt.NDArray[np.uint8], at: float, pts_seconds: float | None) -> Sample:
    """The judge's measures of a gray picture: brightness, contrast, edges, sharpness."""
    mean, std = cv2.meanStdDev(gray)
    edges = cv2.Canny(gray, 50, 150)
    return Sample(
        at=at,
        pts_seconds=pts_seconds,
        luma=float(mean[0, 0]),
        contrast=float(std[0, 0]),
        edge_density=cv2.countNonZero(edges) / edges.size,
        sharpness=float(cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))[1][0, 0] ** 2),
        gray=gray,
    )


def snapshot(
    frame: VideoFrame,
    quality: int,
    max_bytes: int,
    metrics: ProbeMetrics,
    scaler: SnapshotScaler | None = None,
    max_width: int = 3840,
) -> bytes:
    """The frame as a JPEG at most max_width wide and of at most max_bytes: lower quality
    first, then half the size."""
    picture = (scaler or SnapshotScaler()).bgr(frame, max_width)
    encoded = _jpeg(picture, quality)
    if len(encoded) > max_bytes:
        metrics.snapshots_reencoded.inc()
    while len(encoded) > max_bytes:
        if quality > 30:
            quality = max(30, quality - 20)
        else:
            half = (picture.shape[1] // 2, picture.shape[0] // 2)
            picture = np.asarray(
                cv2.resize(picture, half, interpolation=cv2.INTER_AREA), dtype=np.uint8
            )
        encoded = _jpeg(picture, quality)
    return encoded


def _jpeg(picture: npt.NDArray[np.uint8], quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


class _Watchdog:
    """One thread for every probe of the process: reports a stream that stalled.

    FFmpeg's socket timeout alone does not see every stall: a camera whose encoder hangs often
    keeps sending RTCP reports (GStreamer's RTSP server does, every ~5 s), and every one of them
    re-arms the timeout while the demuxer waits for a video packet that never comes. PyAV's
    read timeout would see it but runs Python under the GIL on every socket read (measured: two
    to three times the CPU of the whole probe). So the packet loop only stores the time of its
    last packet (one attribute, nothing else) and this thread looks at all of them twice a
    second. The probe thread stays blocked in the demuxer meanwhile, with its connection open:
    it goes on when packets flow again, or leaves when the socket timeout ends the connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probes: set[_Probe] = set()
        self._thread: threading.Thread | None = None

    def watch(self, probe: _Probe) -> None:
        with self._lock:
            self._probes.add(probe)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="camera-stall-watchdog", daemon=True
                )
                self._thread.start()

    def unwatch(self, probe: _Probe) -> None:
        with self._lock:
            self._probes.discard(probe)

    def _run(self) -> None:
        while True:
            with self._lock:
                probes = list(self._probes)
                if not probes:  # nothing to watch: the thread ends, the next watch starts one
                    self._thread = None
                    return
            now = time.monotonic()
            for probe in probes:
                try:
                    probe.check_stall(now)
                except Exception:
                    log.exception("camera %s: stall check failed", probe.device)
            time.sleep(WATCH_SECONDS)


_WATCHDOG = _Watchdog()


class _Interval:
    """What one check interval has seen so far.

    Bitrate is bytes over the interval's wall time, not over its packets' timestamp span: the
    timestamps lie exactly where it matters (a frozen or restarting encoder repeats or resets
    them, a bursty one delivers a backlog whose span is not the time it took), while bytes per
    wall second is what crossed the network (reading in bursts moves at most a pace's bytes from
    one interval to the next: 3 % of a 10 s interval at 0.3 s). fps is the other way round:
    frames per second of timestamp, summed over segments of steadily increasing timestamps.
    """

    __slots__ = (
        "bytes",
        "decode_errors",
        "frame",
        "keyframes",
        "packets",
        "samples",
        "started_at",
        "started_mono",
    )

    def __init__(self) -> None:
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.decode_errors = 0
        self.samples: list[Sample] = []
        self.frame: VideoFrame | None = None


# A healthy camera's one sample waits for a keyframe this many keyframe gaps before the interval's
# end at most: the keyframe comes in time even a quarter of a gap late.
KEYFRAME_MARGIN = 1.25


def sample_offset(period: float, slots: int, watched: bool, keyframe_gap: float) -> float:
    """Seconds into the interval of its first sample slot: 0 while the camera is watched (every
    slot taken); else the last slot (the second half of the interval with two slots), or earlier
    by as much as the camera's keyframes need to bring one before the interval ends (a "smart
    codec" camera with a keyframe every 10-20 s: the first keyframe of the interval)."""
    if watched:
        return 0.0
    return max(0.0, period - max(period / slots, KEYFRAME_MARGIN * keyframe_gap))


class _Probe:
    def __init__(
        self,
        config: CameraConfig,
        settings: StreamsSettings,
        emit: Emit,
        stop: threading.Event,
        open_gate: threading.Semaphore,
        metrics: ProbeMetrics,
    ) -> None:
        self.config = config
        self.settings = settings
        self._emit = emit
        self.stop = stop
        self.gate = open_gate
        self.metrics = metrics
        self.device = config.device_id
        self.period = config.probe_interval_seconds
        # this thread's swscale contexts, reused: samples', snapshots'
        self.scaler = VideoReformatter()
        self.snapshot_scaler = SnapshotScaler()
        self.reason: OfflineReason | None = None  # why the camera is offline now, once known
        # Stall watch (see _Watchdog): the last packet's time, set by the packet loop; the
        # watchdog's stall report, cleared by the next packet. The lock orders both threads'
        # reports.
        self.lock = threading.RLock()
        self.last_packet = 0.0
        self.stalled = False
        self.interval = _Interval()
        self.options = {
            "rtsp_transport": "tcp",
            "timeout": str(int(settings.stall_timeout_seconds * 1_000_000)),
            "analyzeduration": str(ANALYZE_MICROSECONDS),
            "allowed_media_types": "video",
        }

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                opened = self._open()
                if opened is None:
                    if self.stop.is_set():
                        return
                    failures += 1
                else:
                    container, connect_seconds = opened
                    failures = 1  # a lost connection is retried after the shortest wait
                    try:
                        self._stream(container, connect_seconds)
                    finally:
                        container.close()
                    if self.stop.is_set():
                        return
            except Exception:  # a bug of ours must not end the camera's probing for good
                log.exception("camera %s: probe failed, retrying", self.device)
                failures += 1
                self.reason = "error"
                self._report_offline()
            self._wait(self._backoff(failures))

    # --- connecting ---------------------------------------------------------------------

    def _open(self) -> tuple[InputContainer, float] | None:
        """Open the stream (bounded by the gate); None when it failed (reason set) or stopped."""
        while not self.gate.acquire(timeout=self._wake_in()):
            if self.stop.is_set():
                return None
            self._tick_offline()
        try:
            if self.stop.is_set():
                return None
            interval = _Interval()
            try:
                container = av.open(
                    self.config.rtsp_url,
                    options=self.options,
                    timeout=(self.settings.open_timeout_seconds, None),
                )
            except Exception as exc:
                reason = offline_reason(exc, opening=True)
                waited = time.monotonic() - interval.started_mono
                if (
                    isinstance(exc, av.error.InvalidDataError)
                    and waited >= 0.9 * self.settings.stall_timeout_seconds
                ):
                    # A server that never answers the RTSP request: ffmpeg's socket timeout
                    # ends the read and the missing reply is reported as invalid data.
                    reason = "timeout"
                self._failed(reason, exc)
                return None
        finally:
            self.gate.release()
        connect_seconds = time.monotonic() - interval.started_mono
        if not container.streams.video:
            container.close()
            self._failed("no_video", None)
            return None
        self.metrics.opens.labels("ok").inc()
        self.metrics.open_seconds.observe(connect_seconds)
        if self.reason is not None:
            log.info("camera %s: online again after %s", self.device, self.reason)
        self.reason = None
        self.interval = interval  # the interval starts with the open: its packets count in it
        return container, connect_seconds

    def _failed(self, reason: OfflineReason, exc: BaseException | None) -> None:
        self.metrics.opens.labels(reason).inc()
        detail = describe(exc, self.config.rtsp_url) if exc is not None else "no video stream"
        level = logging.DEBUG if reason == self.reason else logging.INFO
        log.log(level, "camera %s: cannot open the stream: %s (%s)", self.device, reason, detail)
        first = self.reason is None
        self.reason = reason
        if first:
            self._report_offline()  # the judge hears of it now, then once per interval

    def _backoff(self, failures: int) -> float:
        low = self.settings.reconnect_min_seconds
        delay = min(self.settings.reconnect_max_seconds, low * 2 ** max(0, failures - 1))
        return float(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter, not a secret)

    def _wake_in(self) -> float:
        until = self.interval.started_mono + self.period - time.monotonic()
        return max(0.01, min(WAKE_SECONDS, until))

    def _wait(self, seconds: float) -> None:
        """Wait (reporting offline intervals as they end) until seconds passed or stopped."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, self._wake_in()))
            self._tick_offline()

    def _tick_offline(self) -> None:
        if time.monotonic() >= self.interval.started_mono + self.period:
            if self.reason is None:
                self.interval = _Interval()
            else:
                self._report_offline()

    def _report_offline(self) -> None:
        seen, self.interval = self.interval, _Interval()
        self._send(
            IntervalReport(
                device_id=self.device,
                started_at=seen.started_at,
                ended_at=self.interval.started_at,
                online=False,
                reason=self.reason or "error",
                packets=seen.packets,
                keyframes=seen.keyframes,
                decode_errors=seen.decode_errors,
            )
        )

    def _send(self, report: IntervalReport) -> Verdict | None:
        try:
            with self.lock:  # the watchdog may report for this camera too: one at a time
                return self._emit(report)
        except Exception:
            log.exception("camera %s: the report could not be handed over", self.device)
            return None

    # --- the packet loop ----------------------------------------------------------------

    def _stream(self, container: InputContainer, connect_seconds: float) -> None:
        stream: VideoStream = container.streams.video[0]
        codec = stream.codec_context
        codec.skip_frame = "NONKEY"
        codec.thread_type = "NONE"
        codec.thread_count = 1
        # The deblocking filter is a third of a keyframe's decoding; judging a 320 px picture and
        # a wall tile do not need it.
        codec.options = {"skip_loop_filter": "all"}
        time_base = stream.time_base or Fraction(1, 90_000)
        gap = int(PTS_GAP_SECONDS / time_base)
        period = self.period
        slots = self.settings.samples_per_interval
        step = period / slots
        # Sampling (see the module's docstring): `wanted` samples, the first at `offset` seconds
        # into the interval, the next ones a slot apart; a new connection is watched (the judge
        # has not seen it).
        watched = True
        keyframe_gap, last_keyframe = 0.0, time.monotonic()
        last_key_pts: int | None = None  # the gap by timestamps: reading in bursts blurs arrivals
        wanted, offset = slots, 0.0
        interval = self.interval
        boundary = interval.started_mono + period
        next_sample = interval.started_mono
        packets = size = keyframes = 0
        # fps: timestamp span and frames over segments of increasing timestamps
        top: int | None = None
        span = frames = 0
        monotonic = time.monotonic
        reason: OfflineReason = "ended"
        # reading in bursts (PACE_WAITED_SECONDS): the least lag this interval and the last
        pace = self.settings.read_pace_seconds
        seconds_per_tick = float(time_base)
        edge = low = math.inf
        self.last_packet = monotonic()
        _WATCHDOG.watch(self)
        try:
            demuxed = container.demux(stream)
            while True:
                read_at = monotonic()
                packet = next(demuxed, None)
                if packet is None:
                    break
                now = self.last_packet = monotonic()
                if self.stalled:  # the watchdog reported a stall: a fresh interval from here
                    self._resumed()
                    interval = self.interval
                    boundary = interval.started_mono + period
                    watched, wanted, offset = True, slots, 0.0
                    next_sample = interval.started_mono
                    packets = size = keyframes = span = frames = 0
                    top = None
                packets += 1
                size += packet.size
                pts = packet.pts
                caught_up = False
                if pts is not None:
                    if top is None or pts < top - gap or pts > top + gap:
                        top = pts  # a new segment: no span, no frame counted
                        edge = low = math.inf  # nor the old clock's live edge
                    else:
                        frames += 1
                        if pts > top:
                            span += pts - top
                            top = pts
                    if pace:
                        lag = now - pts * seconds_per_tick
                        if lag < low:
                            low = lag
                            edge = min(edge, lag)
                        caught_up = (
                            lag < edge + PACE_MARGIN_SECONDS and now - read_at > PACE_WAITED_SECONDS
                        )
                if packet.is_keyframe:
                    keyframes += 1
                    if (
                        pts is not None
                        and last_key_pts is not None
                        and 0 < pts - last_key_pts <= gap
                    ):
                        keyframe_gap = (pts - last_key_pts) * seconds_per_tick
                    else:
                        keyframe_gap = now - last_keyframe
                    last_keyframe, last_key_pts = now, pts
                    if now >= next_sample and len(interval.samples) < wanted:
                        self._sample(codec, packet, interval)
                        next_sample = interval.started_mono + offset + step * len(interval.samples)
                        now = monotonic()
                    if self.stop.is_set():
                        return
                if now >= boundary:
                    interval.packets, interval.bytes, interval.keyframes = packets, size, keyframes
                    fps = frames / float(span * time_base) if span else None
                    verdict = self._report_online(stream, interval, connect_seconds, fps)
                    if self.stop.is_set():
                        return
                    watched = verdict is None or verdict.watch
                    wanted = slots if watched else 1
                    offset = sample_offset(period, slots, watched, keyframe_gap)
                    interval = self.interval = _Interval()
                    boundary = interval.started_mono + period
                    next_sample = interval.started_mono + offset
                    packets = size = keyframes = span = frames = 0
                    edge, low = low, math.inf
                if caught_up and self.stop.wait(pace):
                    return
        except Exception as exc:
            reason = offline_reason(exc, opening=False)
            log.info(
                "camera %s: stream lost: %s (%s)",
                self.device,
                reason,
                describe(exc, self.config.rtsp_url),
            )
        else:
            log.info("camera %s: stream lost: the server ended it", self.device)
        finally:
            _WATCHDOG.unwatch(self)
        if self.stop.is_set():
            return
        interval.packets, interval.bytes, interval.keyframes = packets, size, keyframes
        self._count(interval)
        self.metrics.disconnects.labels(reason).inc()
        with self.lock:
            reported, self.stalled = self.stalled, False
            self.reason = reason
            if reported and reason == "stalled":  # the watchdog has said so already
                self.interval = _Interval()
            else:
                self._report_offline()

    def check_stall(self, now: float) -> None:
        """The watchdog's look at a streaming probe (its own thread): report a stall once no
        packet came for stall_timeout, then once per interval while it lasts."""
        with self.lock:
            if not self.stalled:
                if now - self.last_packet < self.settings.stall_timeout_seconds:
                    return
                self.stalled = True
                self.reason = "stalled"
                self.metrics.stalls.inc()
                log.info(
                    "camera %s: stream stalled: no packet for %.1f s (the connection stays open)",
                    self.device,
                    now - self.last_packet,
                )
                self._report_offline()
            elif now >= self.interval.started_mono + self.period:
                self._report_offline()

    def _resumed(self) -> None:
        with self.lock:
            self.stalled = False
            self.reason = None
            self.interval = _Interval()
        log.info("camera %s: online again after stalled (packets flow again)", self.device)

    def _sample(
        self, codec: av.VideoCodecContext, packet: av.Packet[Any], interval: _Interval
    ) -> None:
        try:
            frames = codec.decode(packet)
        except av.error.FFmpegError as exc:
            interval.decode_errors += 1
            log.debug("camera %s: keyframe not decoded: %s", self.device, describe(exc, ""))
            return
        if not frames:  # a decoder with a reorder delay holds the picture back: let it go
            with contextlib.suppress(av.error.FFmpegError):
                frames = codec.decode(None)
            codec.flush_buffers()
        if not frames:
            interval.decode_errors += 1
            return
        frame = frames[-1]
        interval.samples.append(
            measure(frame, self.settings.analysis_width, time.time(), self.scaler)
        )
        interval.frame = frame

    def _report_online(
        self,
        stream: VideoStream,
        interval: _Interval,
        connect_seconds: float,
        fps: float | None,
    ) -> Verdict | None:
        self._count(interval)
        jpeg = None
        if interval.frame is not None:
            jpeg = snapshot(
                interval.frame,
                self.settings.snapshot_quality,
                self.settings.snapshot_max_bytes,
                self.metrics,
                self.snapshot_scaler,
                self.settings.snapshot_width,
            )
        ended_at = time.time()
        wall = max(ended_at - interval.started_at, 1e-3)
        codec = stream.codec_context
        width = interval.frame.width if interval.frame is not None else codec.width
        height = interval.frame.height if interval.frame is not None else codec.height
        return self._send(
            IntervalReport(
                device_id=self.device,
                started_at=interval.started_at,
                ended_at=ended_at,
                online=True,
                connect_seconds=connect_seconds,
                codec=codec.name,
                width=width or None,
                height=height or None,
                fps=fps,
                bitrate_kbps=interval.bytes * 8 / 1000 / wall,
                packets=interval.packets,
                keyframes=interval.keyframes,
                decode_errors=interval.decode_errors,
                samples=tuple(interval.samples),
                jpeg=jpeg,
            )
        )

    def _count(self, interval: _Interval) -> None:
        self.metrics.packets.inc(interval.packets)
        self.metrics.bytes.inc(interval.bytes)
        self.metrics.keyframes_decoded.inc(len(interval.samples))
        self.metrics.decode_errors.inc(interval.decode_errors)
