"""The camera benchmark (issue 10, Performance): how many 720p25 H.264 cameras at a 10 s check
interval Pantau's probes sustain on this machine under 1.5 cores, beside three baselines
measured in the same run: a naive probe that decodes every frame with OpenCV, a bare PyAV loop
(the floor: demux every packet, decode one keyframe per interval), and the same loop reading in
bursts as Pantau's probe does (streams.probe.PACE_WAITED_SECONDS). `make bench` runs it; the
numbers in docs/benchmarks.md come from it.

  .venv/bin/pytest -m bench -s -p no:cacheprovider tests/bench/test_camera_bench.py

Each flavour runs in its own process (tests/bench/camera_probes.py) against the test server's
/bench mount (one 720p25 ~2 Mbit/s file encoded once, looped without re-encoding, shared
media), so its CPU time and RSS are its own; the server runs in its own process and its CPU is
reported beside each flavour's. A flavour's figures count only if every camera was served:
packets at 25 fps for the whole window, not falling behind the camera's clock, and judged every
interval (a starved probe looks cheap). PANTAU_BENCH_CAMERAS sets the count (default 200).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.rtsp import SCRIPT, SYSTEM_PYTHON, RtspServer

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
PROBES = str(Path(__file__).with_name("camera_probes.py"))
CAMERAS = int(os.environ.get("PANTAU_BENCH_CAMERAS", "200"))
NAIVE_CAMERAS = 6  # enough for a per-camera figure; each costs about a quarter of a core
INTERVAL = 10.0  # seconds, every camera's check interval
FPS = 25
BUDGET_CORES = 1.5
TARGET_CAMERAS = 200
TARGET_RATIO = 20.0  # CPU per camera-second, naive / Pantau
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# (flavour, cameras, stagger, warm-up deadline, settle, window) in seconds. The window opens when
# every camera is warm (has packets; Pantau's: has reported online) plus the settle time.
RUNS = (
    ("naive", NAIVE_CAMERAS, 2.0, 30.0, 3.0, 30.0),
    ("bare", CAMERAS, 10.0, 60.0, 5.0, 40.0),
    ("bare-paced", CAMERAS, 10.0, 60.0, 5.0, 40.0),
    ("pantau", CAMERAS, 10.0, 90.0, 5.0, 60.0),
)
LABELS = {
    "naive": "naive: OpenCV, every frame decoded",
    "bare": "bare PyAV loop: every packet demuxed, one keyframe decoded per interval",
    "bare-paced": "the bare loop reading in bursts (0.3 s pace once caught up)",
    "pantau": "**Pantau: streams.probe.run_camera + streams.health.Judge**",
}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime, stime


def process_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Run:
    """One flavour's measured window, and what the test server spent in the same window."""

    flavour: str
    result: dict[str, Any]
    server_cpu_seconds: float
    server_rss: int
    problems: list[str] = field(default_factory=list)
    dropped_by_server: list[int] = field(default_factory=list)

    @property
    def cameras(self) -> int:
        return int(self.result["cameras"])

    @property
    def seconds(self) -> float:
        start, end = self.result["window"]
        return float(end - start)

    @property
    def cores(self) -> float:
        return float(self.result["cpu_seconds"]) / self.seconds

    @property
    def ms_per_camera_second(self) -> float:
        return self.cores / self.cameras * 1000

    @property
    def rss_per_camera_mb(self) -> float:
        return (self.result["rss"] - self.result["idle_rss"]) / self.cameras / 2**20

    @property
    def server_cores(self) -> float:
        return self.server_cpu_seconds / self.seconds

    def packets_per_camera_second(self) -> float:
        cameras = self.result["per_camera"]
        if self.flavour == "pantau":  # the probe counts per interval: its reports' own counts
            reports = [r for c in cameras for r in c["reports"]]
            covered = sum(r["ended_at"] - r["started_at"] for r in reports)
            return sum(r["packets"] for r in reports) / covered if covered else 0.0
        return sum(c["packets"] for c in cameras) / self.cameras / self.seconds


def check_served(run: Run) -> None:
    """Every camera got its packets at the camera's rate all through the window and was judged
    every interval; each shortfall is noted in run.problems (the figures then do not count)."""
    start, end = run.result["window"]
    want = FPS * run.seconds
    for number, camera in enumerate(run.result["per_camera"]):
        name = f"{run.flavour} camera {number}"
        # The test server (GStreamer 1.22) now and then closes a client after a "Parse error" on
        # what the client sent; that is the server's doing, not the probe's: counted apart.
        if camera["errors"] == ["ended"] or any(r["reason"] == "ended" for r in camera["reports"]):
            run.dropped_by_server.append(number)
            continue
        if camera["errors"]:
            run.problems.append(f"{name}: {camera['errors'][:3]}")
        if run.flavour == "pantau":
            reports = camera["reports"]
            ends = [r["ended_at"] for r in reports]
            covered = sum(r["ended_at"] - r["started_at"] for r in reports)
            packets = sum(r["packets"] for r in reports)
            if covered == 0 or packets < 0.95 * FPS * covered:
                run.problems.append(f"{name}: {packets} packets in {covered:.1f}s of reports")
            for r in reports:
                if not r["online"] or r["fps"] is None or abs(r["fps"] - FPS) > 0.1 * FPS:
                    run.problems.append(f"{name}: report online={r['online']} fps={r['fps']}")
                if r["samples"] < 1 or r["jpeg_bytes"] == 0:
                    run.problems.append(f"{name}: {r['samples']} samples, no snapshot")
                # Judged late is not lagging unless it nears the next interval (a busy machine
                # delays the judging thread by a few seconds, but nothing piles up).
                if r["judged_at"] - r["ended_at"] > INTERVAL / 2:
                    late = r["judged_at"] - r["ended_at"]
                    run.problems.append(f"{name}: judged {late:.1f}s after its interval")
            # One report per interval, none missing: gaps between the window's bounds and the
            # reports' ends stay within an interval (+ a little scheduling slack).
            times = [start, *ends, end]
            gap = max(b - a for a, b in itertools.pairwise(times))
            if gap > INTERVAL * 1.2:
                run.problems.append(f"{name}: {gap:.1f}s without a report")
        else:
            if camera["packets"] < 0.95 * want:
                run.problems.append(f"{name}: {camera['packets']} packets, {want:.0f} expected")
            behind_start, behind_end = camera["behind"]
            if behind_start is None or behind_end is None or behind_end - behind_start > 1.0:
                run.problems.append(
                    f"{name}: fell behind the camera's clock ({behind_start} -> {behind_end} s)"
                )
            # Decoding waits for the next keyframe (every 2 s in the bench file).
            times = [start, *camera["judged"], end]
            gap = max(b - a for a, b in itertools.pairwise(times))
            if gap > INTERVAL + 2.5:
                run.problems.append(f"{name}: {gap:.1f}s without a judged frame")


def measure(
    server: RtspServer,
    flavour: str,
    cameras: int,
    stagger: float,
    warmup: float,
    settle: float,
    window: float,
) -> Run:
    command = [
        sys.executable,
        PROBES,
        flavour,
        server.url("bench"),
        str(cameras),
        f"--interval={INTERVAL}",
        f"--stagger={stagger}",
        f"--warmup={warmup}",
        f"--settle={settle}",
        f"--window={window}",
    ]
    print(f"  {flavour}: {cameras} cameras, window {window:.0f}s", flush=True)
    pid = server.process.pid
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            lines = iter(proc.stdout.readline, "")
            assert next(lines).strip() == "ready", f"{flavour} did not start"
            assert next(lines).strip() == "window"
            server_start = process_cpu_seconds(pid)
            assert next(lines).strip() == "done"
            server_cpu = process_cpu_seconds(pid) - server_start
            server_rss = process_rss_bytes(pid)
            result = json.loads(next(lines))
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    run = Run(flavour, result, server_cpu, server_rss)
    check_served(run)
    print(
        f"    all warm after {result['warm_seconds']:.1f}s; {run.cores:.2f} cores, "
        f"{run.ms_per_camera_second:.2f} ms per camera-second, server {run.server_cores:.2f} "
        f"cores; {len(run.problems)} problems",
        flush=True,
    )
    return run


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("camera-bench") / "bench.ts"
    subprocess.run(
        [SYSTEM_PYTHON, str(SCRIPT), "--make-bench-file", str(path), "--seconds", "20"],
        check=True,
        timeout=300,
    )
    return path


@pytest.fixture
def bench_server(rtsp_server_factory: Callable[..., RtspServer], bench_file: Path) -> RtspServer:
    return rtsp_server_factory(bench_file=bench_file, auth="")


def stream_facts(path: Path) -> str:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        seconds = (container.duration or 1) / 1e6
        kbps = path.stat().st_size * 8 / seconds / 1000
        return (
            f"{stream.codec_context.name} {stream.codec_context.width}x"
            f"{stream.codec_context.height} {float(stream.average_rate or 0):.0f} fps, "
            f"{kbps:,.0f} kbit/s (MPEG-TS), {seconds:.0f} s looped"
        )


def report(runs: dict[str, Run], facts: str, load: tuple[float, ...]) -> str:
    naive = runs["naive"].ms_per_camera_second
    bare = runs["bare"].ms_per_camera_second
    lines = [
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} before and {os.getloadavg()[0]:.1f} after (which counts the benchmark's "
        f"own threads); /bench: {facts}; check "
        f"interval {INTERVAL:.0f} s.",
        "",
        "| probe | cameras | window | probe CPU | per camera-second | RSS per camera "
        "| test server CPU | packets/s per camera | naive / this | this / bare |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for flavour, run in runs.items():
        lines.append(
            f"| {LABELS[flavour]} | {run.cameras} | {run.seconds:.0f} s | {run.cores:.2f} cores "
            f"| {run.ms_per_camera_second:.2f} ms | {run.rss_per_camera_mb:.1f} MB "
            f"| {run.server_cores:.2f} cores ({run.server_cores / run.cameras * 1000:.2f} ms "
            f"per client-second) | {run.packets_per_camera_second():.1f} "
            f"| {naive / run.ms_per_camera_second:.1f}x | {run.ms_per_camera_second / bare:.2f} |"
        )
    lines.append("")
    for flavour, run in runs.items():
        capacity = math.floor(BUDGET_CORES / run.ms_per_camera_second * 1000)
        lines.append(
            f"- {flavour} at {BUDGET_CORES} cores, extrapolated from its CPU per camera-second: "
            f"{capacity} cameras."
        )
    if pantau := runs.get("pantau"):
        states = Counter(r["state"] for c in pantau.result["per_camera"] for r in c["reports"])
        lines.append(
            f"- Pantau's probes over the window: {sum(states.values())} interval reports, "
            "verdicts "
            + ", ".join(f"{state} {n}" for state, n in states.most_common())
            + f"; reports dropped at the hand-off: {pantau.result['dropped_reports']}."
        )
        reports = [r for c in pantau.result["per_camera"] for r in c["reports"]]
        if reports:
            fps = statistics.mean(r["fps"] or 0 for r in reports)
            kbps = statistics.mean(r["bitrate_kbps"] or 0 for r in reports)
            late = max(r["judged_at"] - r["ended_at"] for r in reports)
            jpeg = statistics.mean(r["jpeg_bytes"] for r in reports)
            lines.append(
                f"- Pantau's reports: fps {fps:.1f} and {kbps:,.0f} kbit/s on average, "
                f"{statistics.mean(r['samples'] for r in reports):.1f} samples and a "
                f"{jpeg / 1024:.0f} KiB snapshot each, judged at most {late:.2f} s after their "
                "interval ended."
            )
    for run in runs.values():
        if run.flavour.startswith("bare"):
            missing = [c.get("missing", 0) for c in run.result["per_camera"]]
            lines.append(
                f"- {run.flavour}: frames missing by their timestamps over the window: "
                f"{sum(missing)} ({max(missing)} at most for one camera)."
            )
    lines += [
        f"- Test server peak: {max(r.server_cores for r in runs.values()):.2f} cores, RSS "
        f"{max(r.server_rss for r in runs.values()) / 2**20:.0f} MB.",
    ]
    for run in runs.values():
        if run.dropped_by_server:
            lines.append(
                f"- {run.flavour}: {len(run.dropped_by_server)} cameras disconnected by the test "
                "server during the window (left out of the checks, not of the CPU figures)."
            )
        if run.problems:
            lines.append(
                f"- {run.flavour}: NOT SERVED ({len(run.problems)} problems): "
                + "; ".join(run.problems[:5])
            )
    return "\n".join(lines)


@pytest.mark.timeout(900)
def test_camera_probes(bench_server: RtspServer, bench_file: Path) -> None:
    load = os.getloadavg()
    print(f"\ncamera benchmark, {os.cpu_count()} cores, load average {load[0]:.1f}", flush=True)
    runs = {run[0]: measure(bench_server, *run) for run in RUNS}
    text = report(runs, stream_facts(bench_file), load)
    print("\n" + text, flush=True)
    for run in runs.values():
        assert not run.problems, f"{run.flavour} was not served: {run.problems[:10]}\n{text}"
        assert len(run.dropped_by_server) <= run.cameras * 0.02, text
    pantau = runs["pantau"]
    ratio = runs["naive"].ms_per_camera_second / pantau.ms_per_camera_second
    assert pantau.cameras >= TARGET_CAMERAS, text
    assert pantau.cores < BUDGET_CORES, text
    assert ratio >= TARGET_RATIO, text
