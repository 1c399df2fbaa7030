"""The probe against the real test cameras (GStreamer's RTSP server): every pattern judged within
two check intervals, a stopped and a stalled camera offline with their reasons and back, the
offline reasons of a refused, unauthorised, missing or silent server, and no credentials in logs,
errors or metrics."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
import wave
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from streams.health import Judge
from streams.probe import (
    ProbeMetrics,
    describe,
    offline_reason,
    run_camera,
    sample_offset,
    snapshot,
)
from streams.report import CameraConfig, IntervalReport, Thresholds, Verdict
from streams.settings import StreamsSettings
from tests.fixtures.rtsp import RtspServer

INTERVAL = 2.0  # the test cameras send a keyframe every second: two samples per interval
SETTINGS = StreamsSettings(
    stall_timeout_seconds=2.0,
    open_timeout_seconds=5.0,
    reconnect_min_seconds=0.2,
    reconnect_max_seconds=1.0,
    samples_per_interval=2,
)
WRONG_PASSWORD = "salah-sandi-4471"


class Cameras:
    """Probe threads under test: their reports and verdicts, waited for with a deadline."""

    def __init__(self, settings: StreamsSettings = SETTINGS) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = ProbeMetrics(self.registry)
        self.stop = threading.Event()
        self.gate = threading.Semaphore(settings.open_concurrency)
        self.threads: list[threading.Thread] = []
        self.judges: dict[str, Judge] = {}
        # a camera's scripted watch (by its report's index) instead of its judge's
        self.scripts: dict[str, Callable[[int], bool]] = {}
        self.seen: dict[str, list[tuple[IntervalReport, Verdict]]] = defaultdict(list)
        self.changed = threading.Condition()

    def start(
        self,
        name: str,
        url: str,
        interval: float = INTERVAL,
        script: Callable[[int], bool] | None = None,
    ) -> None:
        config = CameraConfig(name, url, probe_interval_seconds=interval)
        self.judges[name] = Judge(Thresholds(frozen_samples=3, bad_samples=3))
        if script is not None:
            self.scripts[name] = script
        thread = threading.Thread(
            target=run_camera,
            args=(config, self.settings, self._emit, self.stop, self.gate, self.metrics),
            name=f"probe-{name}",
        )
        thread.start()
        self.threads.append(thread)

    def _emit(self, report: IntervalReport) -> Verdict:
        """Judge the report (its verdict sets the probe's sampling, as in the service)."""
        verdict = self.judges[report.device_id].judge(report)
        script = self.scripts.get(report.device_id)
        with self.changed:
            if script is not None:
                verdict = dataclasses.replace(
                    verdict, watch=script(len(self.seen[report.device_id]))
                )
            self.seen[report.device_id].append((report, verdict))
            self.changed.notify_all()
        return verdict

    def online(self, name: str) -> list[tuple[IntervalReport, Verdict]]:
        with self.changed:
            return [(r, v) for r, v in self.seen[name] if r.online]

    def wait(self, what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        with self.changed:
            if not self.changed.wait_for(condition, timeout):
                seen = {
                    name: [(r.online, r.reason, v.state) for r, v in items[-6:]]
                    for name, items in self.seen.items()
                }
                pytest.fail(f"not within {timeout} s: {what}; last reports: {seen}")

    def wait_for_report(
        self, name: str, after: int, condition: Callable[[IntervalReport, Verdict], bool]
    ) -> tuple[IntervalReport, Verdict]:
        """The first report of `name` past the first `after` ones that meets the condition."""
        found: list[tuple[IntervalReport, Verdict]] = []

        def check() -> bool:
            found[:] = [(r, v) for r, v in self.seen[name][after:] if condition(r, v)]
            return bool(found)

        self.wait(f"a report of {name}", check)
        return found[0]

    def count(self, name: str) -> int:
        with self.changed:
            return len(self.seen[name])

    def close(self) -> float:
        """Stop every probe; how long the slowest took to return."""
        self.stop.set()
        started = time.monotonic()
        for thread in self.threads:
            thread.join(15)
        assert not [t.name for t in self.threads if t.is_alive()]
        return time.monotonic() - started


@pytest.fixture
def cameras() -> Iterator[Cameras]:
    running = Cameras()
    try:
        yield running
    finally:
        running.close()


def metric(cameras: Cameras, name: str, labels: dict[str, str] | None = None) -> float:
    value = cameras.registry.get_sample_value(name, labels or {})
    return value or 0.0


def test_each_pattern_is_judged_within_two_intervals(
    rtsp_server: RtspServer, cameras: Cameras
) -> None:
    expected = {"moving": "ok", "night": "ok", "frozen": "frozen", "black": "black"}
    expected["covered"] = "covered"
    for name in expected:
        cameras.start(name, rtsp_server.url(name))
    cameras.wait(
        "three online reports of every pattern",
        lambda: all(len([r for r, _ in cameras.seen[n] if r.online]) >= 3 for n in expected),
    )
    for name, state in expected.items():
        seen = cameras.online(name)
        states = [v.state for _, v in seen]
        if state == "ok":
            assert set(states) == {"ok"}, (name, states)
        else:
            assert states[1:3] == [state, state], (name, states)  # the second interval is enough
        report = seen[0][0]
        assert report.codec == "h264"
        assert (report.width, report.height) == (320, 240)
        # fps from timestamps; the first interval, cut short by the connection's start on a busy
        # machine, may hold too few increasing timestamps to tell (None, never a wrong figure)
        assert report.fps is None or report.fps == pytest.approx(10, rel=0.1), (name, report.fps)
        assert report.bitrate_kbps is not None
        assert report.bitrate_kbps > 0
        assert report.connect_seconds is not None
        assert 0 < report.connect_seconds < SETTINGS.open_timeout_seconds
        for later, _ in seen[1:3]:
            assert later.fps == pytest.approx(10, rel=0.1), (name, later.fps)
            assert len(later.samples) == 2
            assert later.keyframes >= 2
            assert later.packets >= 15
            assert later.samples[0].gray.shape == (240, 320)
            assert later.jpeg is not None
            picture = cv2.imdecode(np.frombuffer(later.jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape == (240, 320, 3)
    # a frozen encoder's bitrate collapses against a moving one's
    frozen = [r.bitrate_kbps or 0 for r, _ in cameras.online("frozen")]
    moving = [r.bitrate_kbps or 0 for r, _ in cameras.online("moving")]
    assert max(frozen) < 0.6 * min(moving)
    assert metric(cameras, "pantau_camera_opens_total", {"result": "ok"}) >= 5
    assert metric(cameras, "pantau_camera_packets_total") > 0
    assert metric(cameras, "pantau_camera_bytes_total") > 0
    assert metric(cameras, "pantau_camera_keyframes_decoded_total") >= 5 * 6
    assert metric(cameras, "pantau_camera_probe_threads") == 5
    cameras.close()
    assert metric(cameras, "pantau_camera_probe_threads") == 0


def test_a_healthy_camera_is_sampled_once_per_interval_a_bad_one_twice(
    rtsp_server: RtspServer, cameras: Cameras
) -> None:
    """With the real judge: a moving camera is sampled twice per interval until its baseline is
    learned, then once (and still snapshotted every interval); a frozen, black or covered one is
    watched all along (its bad state held): two samples every interval."""
    names = ("moving", "frozen", "black", "covered")
    for name in names:
        cameras.start(name, rtsp_server.url(name))

    def settled() -> bool:
        verdicts = [v for _, v in cameras.seen["moving"] if not v.watch]
        return len(verdicts) >= 3 and all(len(cameras.online(n)) >= 6 for n in names)

    cameras.wait("the moving camera sampled once per interval, three times", settled, 40)
    moving = cameras.online("moving")
    assert all(v.state == "ok" for _, v in moving)
    first_unwatched = next(i for i, (_, v) in enumerate(moving) if not v.watch)
    assert first_unwatched >= 2  # three intervals' samples (five changes) teach the baseline
    for report, verdict in moving[1 : first_unwatched + 1]:  # the first may lose its open time
        assert len(report.samples) == 2, verdict
    for report, _ in moving[first_unwatched + 1 :]:
        assert len(report.samples) == 1
        assert report.jpeg is not None  # one snapshot per interval all the same
        # late in the interval (fresh snapshot): not before 2 s - 1.25 keyframe gaps (1 s)
        assert report.samples[0].at >= report.started_at + 0.7
    for name in names[1:]:
        seen = cameras.online(name)
        assert [v.state for _, v in seen][1:] == [name] * (len(seen) - 1), name
        assert all(v.watch for _, v in seen), name
        assert all(len(r.samples) == 2 for r, _ in seen[1:]), name


def test_the_verdict_sets_the_next_intervals_samples(
    rtsp_server: RtspServer, cameras: Cameras
) -> None:
    """The probe's side of the rule, with scripted verdicts: watched -> every slot next
    interval, else the last one; a new connection takes every slot."""
    watched_after = {2, 3, 6}
    cameras.start(
        "secure",
        rtsp_server.url("secure", rtsp_server.credentials),
        script=lambda i: i in watched_after,
    )
    cameras.wait("nine reports", lambda: len(cameras.online("secure")) >= 9)
    counts = [len(r.samples) for r, _ in cameras.online("secure")[:9]]
    assert counts[1:] == [1, 1, 2, 2, 1, 1, 2, 1]
    assert counts[0] >= 1  # the connection's first interval starts before the stream does


@pytest.mark.parametrize(
    ("watched", "gap", "offset"),
    [
        (True, 2.0, 0.0),  # watched: every slot, from the interval's start
        (False, 2.0, 5.0),  # healthy: the last slot only
        (False, 4.0, 5.0),
        (False, 6.0, 2.5),  # keyframes sparser than a slot: early enough for one to come
        (False, 15.0, 0.0),  # a "smart codec" camera: the interval's first keyframe
    ],
)
def test_the_sample_offset(watched: bool, gap: float, offset: float) -> None:
    assert sample_offset(10.0, 2, watched, gap) == pytest.approx(offset)
    assert sample_offset(10.0, 1, watched, gap) == 0.0  # one slot: always from the start


def test_a_stopped_and_a_stalled_camera_go_offline_and_come_back(
    rtsp_server: RtspServer, cameras: Cameras
) -> None:
    cameras.start("stops", rtsp_server.url("stops"))
    cameras.start("stalls", rtsp_server.url("stalls"))
    cameras.wait(
        "both online",
        lambda: all(any(r.online for r, _ in cameras.seen[n]) for n in ("stops", "stalls")),
    )
    stops_seen, stalls_seen = cameras.count("stops"), cameras.count("stalls")
    stalled_at = time.monotonic()
    try:
        rtsp_server.command("stop", "stops")
        rtsp_server.command("stall", "stalls")
        ended, verdict = cameras.wait_for_report("stops", stops_seen, lambda r, _: not r.online)
        assert (ended.reason, verdict.cause) == ("ended", "offline:ended")
        cameras.wait_for_report("stops", stops_seen, lambda r, _: r.reason == "not_found")
        stalled, verdict = cameras.wait_for_report("stalls", stalls_seen, lambda r, _: not r.online)
        assert (stalled.reason, verdict.cause) == ("stalled", "offline:stalled")
        # after stall_timeout, not before, although the server's RTCP keeps the socket busy
        assert time.monotonic() - stalled_at >= SETTINGS.stall_timeout_seconds
        assert time.monotonic() - stalled_at < SETTINGS.stall_timeout_seconds + 3
        stops_seen, stalls_seen = cameras.count("stops"), cameras.count("stalls")
    finally:
        rtsp_server.command("start", "stops")
        rtsp_server.command("resume", "stalls")
    for name, after in (("stops", stops_seen), ("stalls", stalls_seen)):
        back, verdict = cameras.wait_for_report(name, after, lambda r, _: r.online)
        assert verdict.state == "ok"
        assert back.packets > 0
    assert metric(cameras, "pantau_camera_disconnects_total", {"reason": "ended"}) >= 1
    assert metric(cameras, "pantau_camera_stalls_total") >= 1
    assert metric(cameras, "pantau_camera_opens_total", {"result": "not_found"}) >= 1
    # a probe returns within about stall_timeout of being stopped
    assert cameras.close() < SETTINGS.stall_timeout_seconds + 1.5


def wakeups(thread: threading.Thread) -> int:
    """How often the thread has blocked so far (its voluntary context switches)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return sum(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith("voluntary_ctxt_switches")
    )


def test_reading_in_bursts_keeps_fps_bitrate_and_the_stall_watch(
    rtsp_server_factory: Callable[..., RtspServer],
) -> None:
    """A probe that sleeps read_pace_seconds once caught up wakes a few times a second instead of
    for every packet, and still reports the stream's fps (timestamps) and bitrate (the same as an
    unpaced probe's of the same shared stream), sees a stall after stall_timeout, comes back, and
    stops within a pace."""
    server = rtsp_server_factory(fps=25, keyint=25)
    paced = Cameras(StreamsSettings(**{**SETTINGS.model_dump(), "read_pace_seconds": 0.5}))
    unpaced = Cameras(StreamsSettings(**{**SETTINGS.model_dump(), "read_pace_seconds": 0.0}))
    both = (paced, unpaced)
    try:
        for cameras in both:
            cameras.start("stalls", server.url("stalls"))
        for cameras in both:
            cameras.wait("two online reports", lambda c=cameras: len(c.online("stalls")) >= 2)
        counts = [len(c.online("stalls")) for c in both]
        started, before = time.monotonic(), [wakeups(c.threads[0]) for c in both]
        for cameras, seen in zip(both, counts, strict=True):
            cameras.wait(
                "four more reports",
                lambda c=cameras, n=seen: len(c.online("stalls")[n:]) >= 4,
            )
        elapsed = time.monotonic() - started
        rates = [(wakeups(c.threads[0]) - b) / elapsed for c, b in zip(both, before, strict=True)]
        # 25 packets a second: an unpaced probe blocks for nearly each; a paced one ~2-3 times
        assert rates[0] < rates[1] / 2, rates
        reports = [
            [r for r, _ in c.online("stalls")[n : n + 4]] for c, n in zip(both, counts, strict=True)
        ]
        for report in reports[0]:
            assert report.fps == pytest.approx(25, rel=0.05)
            assert report.packets >= 0.8 * 25 * INTERVAL
        # the same bytes over the same time; a pace's worth may move between two intervals
        kbps = [sum(r.bitrate_kbps or 0 for r in rs) / len(rs) for rs in reports]
        assert kbps[0] == pytest.approx(kbps[1], rel=0.1), kbps
        seen = paced.count("stalls")
        stalled_at = time.monotonic()
        server.command("stall", "stalls")
        try:
            stalled, verdict = paced.wait_for_report("stalls", seen, lambda r, _: not r.online)
            assert (stalled.reason, verdict.cause) == ("stalled", "offline:stalled")
            took = time.monotonic() - stalled_at
            # packets read up to a pace late delay the stall's report by as much, not more
            assert SETTINGS.stall_timeout_seconds <= took < SETTINGS.stall_timeout_seconds + 3
            seen = paced.count("stalls")
        finally:
            server.command("resume", "stalls")
        back, _ = paced.wait_for_report("stalls", seen, lambda r, _: r.online)
        assert back.packets > 0
        # the next report, wholly after the resume: fps from timestamps again
        paced.wait_for_report("stalls", paced.count("stalls"), lambda r, _: r.online)
        assert paced.online("stalls")[-1][0].fps == pytest.approx(25, rel=0.05)
        # stop ends a pace's sleep at once (the margin: closing the connection on a busy machine)
        assert paced.close() < 2.5
    finally:
        for cameras in both:
            cameras.close()


def test_the_pace_stays_well_below_the_stall_timeout() -> None:
    """A probe asleep for a pace must not look stalled to the watchdog."""
    with pytest.raises(ValidationError, match="read_pace_seconds"):
        StreamsSettings(stall_timeout_seconds=1.0, read_pace_seconds=0.3)
    assert (
        StreamsSettings(stall_timeout_seconds=1.2, read_pace_seconds=0.3).read_pace_seconds == 0.3
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return int(unused.getsockname()[1])


@pytest.fixture
def audio_only(tmp_path: Path) -> Path:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.zeros(8000, np.int16).tobytes())
    return path


def test_offline_reasons_and_no_credentials_anywhere(
    rtsp_server: RtspServer,
    cameras: Cameras,
    caplog: pytest.LogCaptureFixture,
    silent_port: int,
    closed_port: int,
    audio_only: Path,
) -> None:
    caplog.set_level(logging.DEBUG, logger="streams")
    assert rtsp_server.credentials is not None
    password = rtsp_server.credentials.split(":")[1]
    urls = {
        "secure": rtsp_server.url("secure", rtsp_server.credentials),
        "wrong": rtsp_server.url("secure", f"pantau:{WRONG_PASSWORD}"),
        "anonymous": rtsp_server.url("secure"),
        "missing": rtsp_server.url("no-such-camera", rtsp_server.credentials),
        "refused": f"rtsp://pantau:{WRONG_PASSWORD}@127.0.0.1:{closed_port}/x",
        "silent": f"rtsp://pantau:{WRONG_PASSWORD}@127.0.0.1:{silent_port}/x",
        "audio": str(audio_only),
    }
    for name, url in urls.items():
        cameras.start(name, url)
    expected = {
        "wrong": "auth",
        "anonymous": "auth",
        "missing": "not_found",
        "refused": "refused",
        "silent": "timeout",
        "audio": "no_video",
    }
    for name, reason in expected.items():
        _report, verdict = cameras.wait_for_report(name, 0, lambda r, _: not r.online)
        assert verdict.cause == f"offline:{reason}", name
    _secure, verdict = cameras.wait_for_report("secure", 0, lambda r, _: r.online)
    assert verdict.state == "ok"
    # offline reports keep coming, one per interval
    cameras.wait("a second report of the refused camera", lambda: cameras.count("refused") >= 2)
    cameras.close()

    exposed = [caplog.text, generate_latest(cameras.registry).decode()]
    exposed += [repr(r) for items in cameras.seen.values() for r, _ in items]
    for text in exposed:
        assert password not in text
        assert WRONG_PASSWORD not in text
    assert "camera wrong: cannot open the stream: auth" in caplog.text
    assert metric(cameras, "pantau_camera_opens_total", {"result": "auth"}) >= 2
    assert metric(cameras, "pantau_camera_opens_total", {"result": "no_video"}) >= 1


def test_an_error_is_described_without_its_url(rtsp_server: RtspServer) -> None:
    url = rtsp_server.url("secure", f"pantau:{WRONG_PASSWORD}")
    with pytest.raises(av.error.HTTPUnauthorizedError) as caught:
        av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5, None))
    assert WRONG_PASSWORD in str(caught.value)  # PyAV puts the URL in its message
    text = describe(caught.value, url)
    assert WRONG_PASSWORD not in text
    assert text.startswith("HTTPUnauthorizedError: ")


URL = f"rtsp://pantau:{WRONG_PASSWORD}@192.0.2.7/live"


@pytest.mark.parametrize(
    ("exc", "opening", "reason"),
    [
        (av.error.HTTPUnauthorizedError(-1, "401", URL), True, "auth"),
        (av.error.HTTPForbiddenError(-1, "403", URL), True, "auth"),
        (av.error.HTTPNotFoundError(-1, "404", URL), True, "not_found"),
        (av.error.ConnectionRefusedError(111, "refused", URL), True, "refused"),
        (av.error.TimeoutError(110, "timed out", URL), True, "timeout"),
        (av.error.ExitError(-1, "exit", URL), True, "timeout"),  # PyAV's open timeout
        (av.error.TimeoutError(110, "timed out", URL), False, "stalled"),
        (av.error.EOFError(-1, "eof", URL), False, "ended"),
        (av.error.ConnectionResetError(104, "reset", URL), False, "ended"),
        (av.error.InvalidDataError(-1, "invalid", URL), True, "error"),
        (av.error.HTTPServerError(-1, "5XX", URL), True, "error"),
    ],
)
def test_offline_reasons_of_pyav_errors(exc: Exception, opening: bool, reason: str) -> None:
    assert offline_reason(exc, opening=opening) == reason
    assert WRONG_PASSWORD not in describe(exc, URL)


def test_a_snapshot_is_kept_under_its_byte_bound() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(noise, format="bgr24").reformat(format="yuv420p")
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry)
    name = "pantau_camera_probe_snapshots_reencoded_total"
    jpeg = snapshot(frame, 95, 16_384, metrics)
    assert len(jpeg) <= 16_384
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    assert registry.get_sample_value(name) == 1
    assert len(snapshot(frame, 80, 4_000_000, metrics)) > 16_384  # no bound hit: full quality
    assert registry.get_sample_value(name) == 1


def test_a_snapshot_is_at_most_snapshot_width_wide() -> None:
    """A 4K camera's JPEG would cost 9 times a 720p one's: snapshots are scaled down."""
    picture = np.full((2160, 3840, 3), 90, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
    metrics = ProbeMetrics(CollectorRegistry())
    small = cv2.imdecode(
        np.frombuffer(snapshot(frame, 80, 1 << 20, metrics, None, 960), np.uint8), cv2.IMREAD_COLOR
    )
    assert small.shape == (540, 960, 3)
    narrow = av.VideoFrame.from_ndarray(picture[:240, :320], format="bgr24").reformat(
        format="yuv420p"
    )
    kept = snapshot(narrow, 80, 1 << 20, metrics, None, 960)
    assert cv2.imdecode(np.frombuffer(kept, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
