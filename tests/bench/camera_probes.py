"""The camera benchmark's probe processes: one flavour of probe on N cameras, in a process of its
own so that its CPU time and RSS are its own (tests/bench/test_camera_bench.py starts them).

  python tests/bench/camera_probes.py FLAVOUR URL CAMERAS [--interval 10] [--stagger 10]
                                      [--warmup 60] [--settle 5] [--window 60]
                                      [--pace SECONDS]

FLAVOUR is
  naive   what one would write first: cv2.VideoCapture on the URL, read() (decode) every frame,
          judge one frame per interval;
  bare    the floor: a PyAV loop that demuxes every packet and decodes one keyframe per interval
          (skip_frame NONKEY, one thread), nothing else;
  bare-paced  the same loop reading in bursts, as Pantau's probe does: once it has caught up
          with the stream (a read that waited, for a packet at the live edge by its timestamp:
          see PACE_WAITED_SECONDS), it sleeps --pace seconds (BARE_PACE), so the kernel's socket
          buffer gathers a burst that the next reads take without waiting;
  pantau  Pantau's probes: streams.probe.run_camera per camera (a thread each, as the service
          runs them), every IntervalReport judged by a streams.health.Judge per camera in the
          probe's thread, whose verdict sets the probe's sampling (as the service does).

Every camera opens the same URL (the test server's /bench: one file looped, shared media), the
opens spread over --stagger seconds. Once every camera is warm (it has packets; Pantau's: its
judge has learned its baseline and no longer watches it, i.e. it is sampled once per interval),
or at the --warmup deadline, and --settle seconds more, the process measures a window of --window
seconds. It prints, one per line: `ready` (imports done, no camera yet),
`window` (the window starts; the parent samples the server's CPU then), `done` (the window
ended), then one JSON object: CPU seconds of this process over the window (all threads), RSS
before any camera and at the window's end, and per camera what arrived in the window, so the
parent can check that no camera was starved (a starved probe looks cheap) and that each was
judged every interval.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import queue
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH_FPS = 25  # the bench file's frame rate


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


@dataclass
class Camera:
    """What one camera's probe saw; written by its own thread only (plus the judge thread)."""

    # naive: frames read; bare: packets demuxed (pantau: the reports' own counts). When a frame
    # was judged (naive, bare); the reports and their verdicts (pantau).
    packets: int = 0
    # The stream's own clock: the first packet's pts and arrival, the last packet's pts (raw
    # units of `time_base` seconds). Arrival time minus stream time grows when a probe falls
    # behind the camera.
    first_pts: int | None = None
    first_arrival: float = 0.0
    last_pts: int = 0
    time_base: float = 0.0
    missing: int = 0
    frames_judged: list[float] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    opening_at: float | None = None
    opened_at: float | None = None

    def seen(self, pts: int | None, time_base: float) -> None:
        self.packets += 1
        if pts is None:
            return
        if self.first_pts is None:
            self.first_pts, self.first_arrival, self.time_base = pts, time.time(), time_base
        else:
            # frames that never arrived: a timestamp step of more than one frame (no B-frames)
            step = (pts - self.last_pts) * time_base * BENCH_FPS
            if step > 1.5:
                self.missing += round(step) - 1
        self.last_pts = pts

    def snapshot(self, now: float) -> tuple[int, float | None, int]:
        """Packets so far, how far (seconds) the probe is behind the camera's clock, and frames
        missing so far."""
        if self.first_pts is None:
            return self.packets, None, self.missing
        stream_seconds = (self.last_pts - self.first_pts) * self.time_base
        return self.packets, (now - self.first_arrival) - stream_seconds, self.missing


class Window:
    """The measured window's bounds, and each camera's packets and delay at each bound."""

    def __init__(self, cameras: list[Camera]) -> None:
        self.cameras = cameras
        self.start = self.end = 0.0
        self.cpu_start = self.cpu_end = 0.0
        self.rss = 0
        self.dropped = 0
        self.warm_seconds = 0.0
        self.at_start: list[tuple[int, float | None, int]] = []
        self.at_end: list[tuple[int, float | None, int]] = []

    def open(self) -> None:
        self.start = time.time()
        self.at_start = [c.snapshot(self.start) for c in self.cameras]
        self.cpu_start = cpu_seconds()

    def close(self) -> None:
        self.cpu_end = cpu_seconds()
        self.end = time.time()
        self.at_end = [c.snapshot(self.end) for c in self.cameras]
        self.rss = rss_bytes()


def naive_camera(url: str, camera: Camera, interval: float, stop: threading.Event) -> None:
    import cv2
    import numpy as np

    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            camera.errors.append("not opened")
            return
        camera.opened_at = time.time()
        next_judge = time.monotonic()
        while not stop.is_set():
            ok, frame = capture.read()
            if not ok:
                camera.errors.append("ended")  # the stream ended (or broke): OpenCV cannot tell
                return
            camera.seen(round(capture.get(cv2.CAP_PROP_POS_MSEC)), 0.001)
            if time.monotonic() >= next_judge:
                # One frame per interval judged, as a user would: luma, contrast, sharpness.
                gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                float(np.mean(gray))
                float(np.std(gray))
                float(cv2.Laplacian(gray, cv2.CV_64F).var())
                camera.frames_judged.append(time.time())
                next_judge += interval
    finally:
        capture.release()


# bare-paced: caught up as streams.probe judges it (see its PACE_WAITED_SECONDS): the read waited
# for the network and its packet is within PACE_MARGIN_SECONDS of the live edge (the least lag of
# arrival behind the packet's own timestamp, this interval and the last); it then sleeps BARE_PACE
# seconds (Pantau's default pace).
PACE_WAITED_SECONDS = 0.01
PACE_MARGIN_SECONDS = 0.1
BARE_PACE = 0.3


def bare_camera(
    url: str, camera: Camera, interval: float, stop: threading.Event, pace: float = 0.0
) -> None:
    import av

    try:
        container = av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10.0, None))
    except av.FFmpegError as exc:
        camera.errors.append(type(exc).__name__)
        return
    try:
        stream = container.streams.video[0]
        codec = stream.codec_context
        codec.skip_frame = "NONKEY"
        codec.thread_count = 1
        codec.thread_type = "NONE"
        camera.opened_at = time.time()
        time_base = float(stream.time_base or 0)
        next_decode = time.monotonic()
        edge = low = math.inf
        renew = time.monotonic() + interval
        demuxed = container.demux(stream)
        while True:
            read_at = time.monotonic()
            packet = next(demuxed, None)
            if packet is None:
                camera.errors.append("ended")  # the server closed the stream
                break
            if stop.is_set():
                break
            if pace and packet.pts is not None:
                now = time.monotonic()
                lag = now - packet.pts * time_base
                if lag < low:
                    low = lag
                    edge = min(edge, lag)
                if now >= renew:
                    edge, low, renew = low, math.inf, now + interval
                waited = now - read_at > PACE_WAITED_SECONDS
                if waited and lag < edge + PACE_MARGIN_SECONDS and stop.wait(pace):
                    break
            if packet.size == 0:
                continue
            camera.seen(packet.pts, time_base)
            if packet.is_keyframe and time.monotonic() >= next_decode:
                for _frame in codec.decode(packet):
                    camera.frames_judged.append(time.time())
                next_decode += interval
    except av.FFmpegError as exc:
        camera.errors.append(type(exc).__name__)
    finally:
        container.close()


def run_simple(
    flavour: str, url: str, cameras: list[Camera], args: argparse.Namespace, window: Window
) -> None:
    if flavour == "naive":
        # OpenCV's FFmpeg backend would try UDP first; the server and the other flavours use TCP.
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    target: Callable[[str, Camera, float, threading.Event], None] = bare_camera
    if flavour == "naive":
        target = naive_camera
    elif flavour == "bare-paced":
        target = functools.partial(bare_camera, pace=BARE_PACE if args.pace is None else args.pace)
    stop = threading.Event()
    threads = []
    for i, camera in enumerate(cameras):
        thread = threading.Thread(
            target=delayed,
            args=(i * args.stagger / len(cameras), stop, target, url, camera, args.interval),
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    measure(window, args, lambda camera: camera.first_pts is not None)
    stop.set()
    for thread in threads:
        thread.join(5)


def delayed(
    delay: float,
    stop: threading.Event,
    target: Callable[[str, Camera, float, threading.Event], None],
    url: str,
    camera: Camera,
    interval: float,
) -> None:
    if not stop.wait(delay):
        camera.opening_at = time.time()
        target(url, camera, interval, stop)


def run_pantau(url: str, cameras: list[Camera], args: argparse.Namespace, window: Window) -> None:
    sys.path.insert(0, str(ROOT))
    from prometheus_client import CollectorRegistry

    from streams.health import Judge
    from streams.probe import ProbeMetrics, run_camera
    from streams.report import CameraConfig, IntervalReport, Verdict
    from streams.settings import StreamsSettings

    paced = {} if args.pace is None else {"read_pace_seconds": args.pace}
    settings = StreamsSettings(stagger_seconds=args.stagger, **paced)
    metrics = ProbeMetrics(CollectorRegistry())
    gate = threading.Semaphore(settings.open_concurrency)
    stop = threading.Event()
    # As in the service, each probe thread judges its own reports (its verdict sets the probe's
    # next sampling) and hands them over through a bounded queue, here to one recording thread; a
    # full queue would show as a lagging camera (its reports missing), and is counted.
    reports: queue.Queue[tuple[IntervalReport, Verdict, float] | None] = queue.Queue(
        maxsize=4 * len(cameras)
    )
    dropped = [0]
    index = {f"bench-{i:04d}": i for i in range(len(cameras))}
    configs = [
        CameraConfig(device_id=f"bench-{i:04d}", rtsp_url=url, probe_interval_seconds=args.interval)
        for i in range(len(cameras))
    ]
    judges = {config.device_id: Judge(config.thresholds) for config in configs}

    def emit(report: IntervalReport) -> Verdict:
        verdict = judges[report.device_id].judge(report)
        try:
            reports.put_nowait((report, verdict, time.time()))
        except queue.Full:
            dropped[0] += 1
        return verdict

    def record_all() -> None:
        while (item := reports.get()) is not None:
            report, verdict, judged_at = item
            camera = cameras[index[report.device_id]]
            camera.reports.append(
                {
                    "started_at": report.started_at,
                    "ended_at": report.ended_at,
                    "judged_at": judged_at,
                    "online": report.online,
                    "reason": report.reason,
                    "packets": report.packets,
                    "fps": report.fps,
                    "bitrate_kbps": report.bitrate_kbps,
                    "samples": len(report.samples),
                    "jpeg_bytes": len(report.jpeg or b""),
                    "state": verdict.state,
                    "watch": verdict.watch,
                    "width": report.width,
                    "height": report.height,
                }
            )

    judging = threading.Thread(target=record_all, daemon=True)
    judging.start()
    threads = []
    for i, config in enumerate(configs):
        thread = threading.Thread(
            target=run_camera,
            args=(config, settings, emit, stop, gate, metrics),
            kwargs={"first_delay": i * args.stagger / len(cameras)},
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    # warm: the camera's judge has learned its baseline (the steady state, one sample per
    # interval while healthy); its first intervals are sampled at the full rate
    measure(window, args, lambda c: any(r["online"] and not r["watch"] for r in c.reports))
    stop.set()
    for thread in threads:
        thread.join(settings.stall_timeout_seconds + 5)
    reports.put(None)
    judging.join(10)
    window.dropped = dropped[0]


def measure(window: Window, args: argparse.Namespace, warm: Callable[[Camera], bool]) -> None:
    """The window opens once every camera is warm (with --settle seconds to spare), or at the
    --warmup deadline regardless (the cameras still cold then show as not served)."""
    began = time.monotonic()
    deadline = began + args.warmup
    while time.monotonic() < deadline and not all(warm(c) for c in window.cameras):
        time.sleep(0.5)
    window.warm_seconds = time.monotonic() - began
    time.sleep(args.settle)
    window.open()
    print("window", flush=True)
    time.sleep(args.window)
    window.close()
    print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flavour", choices=["naive", "bare", "bare-paced", "pantau"])
    parser.add_argument("url")
    parser.add_argument("cameras", type=int)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--stagger", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument(
        "--pace", type=float, help="seconds slept once caught up (bare-paced, pantau's setting)"
    )
    args = parser.parse_args()
    if args.flavour == "naive":
        import cv2  # noqa: F401 - loaded before the idle RSS is taken, as the others are
        import numpy
    else:
        import av  # noqa: F401
        import numpy  # noqa: F401

        if args.flavour == "pantau":
            sys.path.insert(0, str(ROOT))
            import streams.health
            import streams.probe  # noqa: F401
    idle_rss = rss_bytes()
    print("ready", flush=True)
    cameras = [Camera() for _ in range(args.cameras)]
    window = Window(cameras)
    if args.flavour == "pantau":
        run_pantau(args.url, cameras, args, window)
    else:
        run_simple(args.flavour, args.url, cameras, args, window)
    result = {
        "flavour": args.flavour,
        "cameras": args.cameras,
        "interval": args.interval,
        "window": [window.start, window.end],
        "cpu_seconds": window.cpu_end - window.cpu_start,
        "idle_rss": idle_rss,
        "rss": window.rss,
        "dropped_reports": window.dropped,
        "warm_seconds": window.warm_seconds,
        "per_camera": [
            {
                "packets": end[0] - start[0],
                "behind": [start[1], end[1]],
                "missing": end[2] - start[2],
                "open_seconds": (
                    camera.opened_at - camera.opening_at
                    if camera.opened_at and camera.opening_at
                    else None
                ),
                "judged": [t for t in camera.frames_judged if window.start <= t <= window.end],
                "reports": [
                    r for r in camera.reports if window.start <= r["ended_at"] <= window.end
                ],
                "errors": camera.errors,
            }
            for camera, start, end in zip(cameras, window.at_start, window.at_end, strict=True)
        ],
    }
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # daemon threads may still be closing their connections


if __name__ == "__main__":
    main()
