"""The test cameras themselves: each mount plays, and stop, stall and auth behave like a camera."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import pytest

from tests.fixtures.rtsp import CREDENTIALS, SCRIPT, SYSTEM_PYTHON, RtspServer

MOUNTS = ["moving", "frozen", "black", "covered", "stops", "stalls", "night"]
# Small probing: opening takes ~1 s instead of ~3 s.
FAST_OPEN = {"rtsp_transport": "tcp", "probesize": "32768", "analyzeduration": "500000"}


def open_stream(url: str, read_timeout: float | None = 5) -> Any:
    return av.open(url, options=FAST_OPEN, timeout=(5, read_timeout))


def measure(url: str, packets: int = 25) -> tuple[float, float]:
    """(fps from packet pts, mean luma of the first keyframe) of `packets` packets."""
    with open_stream(url) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        pts: list[int] = []
        luma = -1.0
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            pts.append(packet.pts)
            if packet.is_keyframe and luma < 0:
                for frame in packet.decode():
                    luma = float(np.mean(frame.to_ndarray(format="gray")))
            if len(pts) >= packets:
                break
        assert stream.time_base is not None
        span = float((max(pts) - min(pts)) * stream.time_base)
        return (len(pts) - 1) / span, luma


def packets_of(container: Any) -> Iterator[Any]:
    return (p for p in container.demux(container.streams.video[0]) if p.pts is not None)


def test_every_mount_plays_h264_at_the_configured_fps(rtsp_server: RtspServer) -> None:
    with ThreadPoolExecutor(len(MOUNTS)) as pool:
        results = dict(zip(MOUNTS, pool.map(measure, map(rtsp_server.url, MOUNTS)), strict=True))
    for name, (fps, _luma) in results.items():
        assert fps == pytest.approx(10, rel=0.1), name
    luma = {name: luma for name, (_fps, luma) in results.items()}
    assert luma["black"] < 5
    assert 20 < luma["covered"] < 45
    assert 35 < luma["night"] < 60
    assert luma["moving"] > 80


def test_secure_needs_the_credentials(rtsp_server: RtspServer) -> None:
    with pytest.raises(av.error.HTTPUnauthorizedError):
        open_stream(rtsp_server.url("secure"))
    with pytest.raises(av.error.HTTPUnauthorizedError):
        open_stream(rtsp_server.url("secure", "pantau:salah"))
    fps, _luma = measure(rtsp_server.url("secure", CREDENTIALS), packets=10)
    assert fps == pytest.approx(10, rel=0.15)


def test_stop_ends_the_stream_and_start_brings_it_back(rtsp_server: RtspServer) -> None:
    with open_stream(rtsp_server.url("stops")) as container:
        packets = packets_of(container)
        next(packets)
        rtsp_server.command("stop", "stops")
        started = time.monotonic()
        for _ in packets:  # the buffered packets, then the end
            assert time.monotonic() - started < 10, "the stream did not end"
    with pytest.raises(av.error.HTTPNotFoundError):
        open_stream(rtsp_server.url("stops"))
    rtsp_server.command("start", "stops")
    with open_stream(rtsp_server.url("stops")) as container:
        next(packets_of(container))


def test_stall_blocks_a_client_and_resume_feeds_it_again(rtsp_server: RtspServer) -> None:
    arrivals: list[float] = []
    at_resume: list[int] = []

    def read(packets: Iterator[Any]) -> None:
        for _ in packets:
            arrivals.append(time.monotonic())
            if at_resume and len(arrivals) >= at_resume[0] + 5:
                return

    with open_stream(rtsp_server.url("stalls"), read_timeout=None) as container:
        packets = packets_of(container)
        next(packets)
        rtsp_server.command("stall", "stalls")
        reader = threading.Thread(target=read, args=(packets,), daemon=True)
        try:
            reader.start()
            # Packets already on their way drain; then nothing comes, and the read blocks.
            deadline = time.monotonic() + 10
            while time.monotonic() - (arrivals[-1] if arrivals else time.monotonic()) < 1.5:
                assert time.monotonic() < deadline, "packets kept coming while stalled"
                time.sleep(0.1)
            assert reader.is_alive(), "the stalled stream ended instead of blocking"
        finally:
            at_resume.append(len(arrivals))
            rtsp_server.command("resume", "stalls")
        reader.join(10)
        assert not reader.is_alive(), f"{len(arrivals) - at_resume[0]} packets after resume"

    # With a read timeout a stall becomes an error for the client (what a probe relies on).
    with open_stream(rtsp_server.url("stalls"), read_timeout=1) as container:
        packets = packets_of(container)
        next(packets)
        rtsp_server.command("stall", "stalls")
        try:
            with pytest.raises(av.error.ExitError):
                for _ in packets:
                    pass
        finally:
            rtsp_server.command("resume", "stalls")


def test_a_closed_port_refuses(rtsp_server_factory: Callable[..., RtspServer]) -> None:
    server = rtsp_server_factory()
    url = server.url("moving")
    server.close()
    with pytest.raises(av.error.ConnectionRefusedError):
        open_stream(url)


def test_unknown_command_is_an_error(rtsp_server: RtspServer) -> None:
    with pytest.raises(RuntimeError, match="unknown mount"):
        rtsp_server.command("stop", "nowhere")


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "bench.ts"
    subprocess.run(
        [SYSTEM_PYTHON, str(SCRIPT), "--make-bench-file", str(path), "--seconds", "2"],
        check=True,
        timeout=60,
    )
    return path


def test_bench_file_loops_at_real_time(
    rtsp_server_factory: Callable[..., RtspServer], bench_file: Path
) -> None:
    server = rtsp_server_factory(bench_file=bench_file)
    with open_stream(server.url("bench")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (1280, 720)
        pts: list[int] = []
        started = time.monotonic()
        for packet in packets_of(container):  # past one loop of the 2 s file
            pts.append(packet.pts)
            if len(pts) == 1:
                started = time.monotonic()
            if len(pts) > 100:
                break
        wall = time.monotonic() - started
    assert pts == sorted(pts), "timestamps go back at the loop"
    assert stream.time_base is not None
    span = float((pts[-1] - pts[0]) * stream.time_base)
    assert (len(pts) - 1) / span == pytest.approx(25, rel=0.05)
    assert wall == pytest.approx(span, rel=0.15), "not played at real time"


def test_bench_file_serves_many_clients_at_once(
    rtsp_server_factory: Callable[..., RtspServer], bench_file: Path
) -> None:
    # FFmpeg's PLAY always asks for a range: seeking the looped file failed, and the shared
    # media then answered the other clients 503 (the camera benchmark opens 200 of them).
    server = rtsp_server_factory(bench_file=bench_file)

    def packets(_: int) -> int:
        with open_stream(server.url("bench")) as container:
            return sum(1 for _packet, _ in zip(packets_of(container), range(10), strict=False))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(packets, range(8))) == [10] * 8
