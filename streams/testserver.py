"""Test cameras: a GStreamer RTSP server with healthy and broken streams, driven over stdin.

Run with the system python3 (python3-gi, gir1.2-gst-rtsp-server-1.0); stdlib and gi only, it never
imports pantau. It prints `ready <port>` once listening, then reads one command per line on stdin
and answers `ok` or `error ...`: `stop NAME` (the mount goes away and its clients are cut off),
`start NAME`, `stall NAME` (no more data, connections stay open), `resume NAME`. It exits on
stdin EOF or SIGTERM. `--make-bench-file F.ts` encodes a 720p clip for `--bench-file` and exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import gi  # type: ignore[import-not-found, unused-ignore]

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

# Every live mount passes a valve named "gate" (closed by `stall`); the pattern part varies.
_PATTERNS = {
    "moving": "videotestsrc is-live=true pattern=smpte horizontal-speed=4",
    "frozen": "videotestsrc pattern=smpte num-buffers=1 ! imagefreeze is-live=true",
    "black": "videotestsrc is-live=true pattern=black",
    # A lens cap: sensor noise, very dark and flat (mean luma ~30), not black.
    "covered": "videotestsrc is-live=true pattern=snow "
    "! videobalance contrast=0.12 brightness=0.06",
    "stops": "videotestsrc is-live=true pattern=smpte horizontal-speed=5",
    "stalls": "videotestsrc is-live=true pattern=smpte horizontal-speed=2",
    "secure": "videotestsrc is-live=true pattern=smpte horizontal-speed=3",
    # Low light: a moving, healthy but dark picture (mean luma ~45).
    "night": "videotestsrc is-live=true pattern=smpte horizontal-speed=4 "
    "! videobalance contrast=0.38",
}


def _live_launch(pattern: str, width: int, height: int, fps: int, keyint: int) -> str:
    bitrate = max(64, width * height * fps // 2000)  # kbit/s: ~380 for 320x240 at 10 fps
    return (
        f"( {pattern} ! videoconvert ! video/x-raw,format=I420,width={width},height={height},"
        f'framerate={fps}/1 ! valve name=gate drop=false ! timeoverlay font-desc="Sans 14" '
        f"! x264enc tune=zerolatency sliced-threads=false key-int-max={keyint} "
        f"speed-preset=ultrafast bitrate={bitrate} threads=1 ! rtph264pay name=pay0 pt=96 "
        f"config-interval=-1 )"
    )


def _bench_launch(path: str) -> str:
    # No re-encoding: the file's H.264 is re-packetised. identity sync=true paces it at real time
    # and single-segment keeps timestamps growing across the loop's restarts.
    location = path.replace('"', "")
    return (
        f'( multifilesrc location="{location}" loop=true ! tsdemux ! h264parse '
        f"! identity name=pace sync=true single-segment=true ! valve name=gate drop=false "
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def _not_seekable(_pad: Any, info: Any) -> Any:
    # The looped file must look like a live camera: a client's PLAY (FFmpeg always sends Range:
    # npt=0.000-) otherwise seeks tsdemux, which fails, and the shared media answers every other
    # client 503 until it is unprepared. Answered here, the SEEKING query says "not seekable".
    if info.get_query().type == Gst.QueryType.SEEKING:
        return Gst.PadProbeReturn.HANDLED
    return Gst.PadProbeReturn.OK


class Mount:
    """One mount point: its factory and the media it currently has (shared: one at a time)."""

    def __init__(self, name: str, factory: Any) -> None:
        self.name = name
        self.factory = factory
        self.media: list[Any] = []
        self.stalled = False
        self.stopped = False
        factory.connect("media-configure", self._configure)

    def _configure(self, _factory: Any, media: Any) -> None:
        self.media.append(media)
        media.connect("unprepared", self._unprepared)
        self._set_gate(media)
        pace = media.get_element().get_by_name("pace")
        if pace is not None:
            pace.get_static_pad("sink").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, _not_seekable)

    def _unprepared(self, media: Any) -> None:
        if media in self.media:
            self.media.remove(media)

    def _set_gate(self, media: Any) -> None:
        gate = media.get_element().get_by_name("gate")
        if gate is not None:
            gate.set_property("drop", self.stalled)

    def set_stalled(self, stalled: bool) -> None:
        self.stalled = stalled
        for media in self.media:
            self._set_gate(media)


class TestServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.server = GstRtspServer.RTSPServer()
        self.server.set_service(str(args.port))
        self.mounts: dict[str, Mount] = {}
        patterns = dict(_PATTERNS)
        launches = {
            name: _live_launch(pattern, args.width, args.height, args.fps, args.keyint)
            for name, pattern in patterns.items()
        }
        if args.bench_file:
            launches["bench"] = _bench_launch(args.bench_file)
        auth = None
        if args.auth:
            user, _, password = args.auth.partition(":")
            auth = GstRtspServer.RTSPAuth()
            anonymous = GstRtspServer.RTSPToken()
            anonymous.set_string("media.factory.role", "anonymous")
            auth.set_default_token(anonymous)
            token = GstRtspServer.RTSPToken()
            token.set_string("media.factory.role", "user")
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
            self.server.set_auth(auth)
        for name, launch in launches.items():
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(launch)
            factory.set_shared(True)
            if auth is not None:
                permissions = GstRtspServer.RTSPPermissions()
                # Anonymous may see /secure (else it is a 404) but not play it: a 401 that makes
                # a client retry with its credentials.
                permissions.add_permission_for_role("anonymous", "media.factory.access", True)
                permissions.add_permission_for_role(
                    "anonymous", "media.factory.construct", name != "secure"
                )
                permissions.add_permission_for_role("user", "media.factory.access", True)
                permissions.add_permission_for_role("user", "media.factory.construct", True)
                factory.set_permissions(permissions)
            self.mounts[name] = Mount(name, factory)
            self.server.get_mount_points().add_factory(f"/{name}", factory)

    def attach(self) -> int:
        if self.server.attach(None) == 0:
            raise SystemExit(f"cannot listen on port {self.server.get_service()}")
        return int(self.server.get_bound_port())

    def command(self, line: str) -> str:
        verb, _, name = line.strip().partition(" ")
        if verb not in ("stop", "start", "stall", "resume"):
            return f"error unknown command {verb!r}"
        mount = self.mounts.get(name.strip())
        if mount is None:
            return f"error unknown mount {name.strip()!r}"
        if verb == "stop":
            if not mount.stopped:
                mount.stopped = True
                self.server.get_mount_points().remove_factory(f"/{mount.name}")
                self._disconnect(mount)
        elif verb == "start":
            if mount.stopped:
                mount.stopped = False
                self.server.get_mount_points().add_factory(f"/{mount.name}", mount.factory)
        else:
            mount.set_stalled(verb == "stall")
        return "ok"

    def _disconnect(self, mount: Mount) -> None:
        """Close every client that plays one of the mount's media (they see the stream end)."""
        media = list(mount.media)

        def plays_mount(_session: Any, session_media: Any, *_: Any) -> Any:
            if session_media.get_media() in media:
                playing.append(True)
            return GstRtspServer.RTSPFilterResult.KEEP

        def session_filter(_client: Any, session: Any, *_: Any) -> Any:
            session.filter(plays_mount, None)
            return GstRtspServer.RTSPFilterResult.KEEP

        def client_filter(_server: Any, client: Any, *_: Any) -> Any:
            playing.clear()
            client.session_filter(session_filter, None)
            if playing:
                return GstRtspServer.RTSPFilterResult.REMOVE
            return GstRtspServer.RTSPFilterResult.KEEP

        playing: list[bool] = []
        self.server.client_filter(client_filter, None)
        for each in media:
            each.unprepare()


def make_bench_file(path: str, seconds: int) -> None:
    """Encode 720p 25 fps H.264 (~2 Mbit/s) moving content into MPEG-TS once."""
    frames = seconds * 25
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=4 ! videoconvert "
        "! video/x-raw,format=I420,width=1280,height=720,framerate=25/1 "
        '! timeoverlay font-desc="Sans 28" '
        "! x264enc tune=zerolatency sliced-threads=false key-int-max=50 bitrate=2000 "
        "speed-preset=veryfast ! h264parse ! mpegtsmux ! filesink name=out"
    )
    pipeline.get_by_name("out").set_property("location", path)
    pipeline.set_state(Gst.State.PLAYING)
    message = pipeline.get_bus().timed_pop_filtered(
        Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    if message.type == Gst.MessageType.ERROR:
        error, _debug = message.parse_error()
        raise SystemExit(f"encoding failed: {error.message}")


def _flap(server: TestServer, spec: str) -> None:
    """A camera that goes away now and then (for `pantau dev`): stop/start on a timer."""
    name, up, down = spec.split(":")
    if name not in server.mounts:
        raise SystemExit(f"--flap: unknown mount {name!r}")

    def toggle() -> bool:
        stopping = not server.mounts[name].stopped
        server.command(f"{'stop' if stopping else 'start'} {name}")
        GLib.timeout_add_seconds(int(down if stopping else up), toggle)
        return False

    GLib.timeout_add_seconds(int(up), toggle)


def _stdin_reader(server: TestServer, loop: Any) -> None:
    def run(line: str, done: threading.Event) -> bool:
        try:
            answer = server.command(line)
        except Exception as exc:  # answer instead of dying: the caller's test reports it
            answer = f"error {type(exc).__name__}: {exc}"
        print(answer, flush=True)
        done.set()
        return False

    for line in sys.stdin:
        if not line.strip():
            continue
        done = threading.Event()
        GLib.idle_add(run, line, done)
        done.wait()
    GLib.idle_add(loop.quit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8554, help="0: any free port")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--keyint", type=int, default=10)
    parser.add_argument("--auth", help="USER:PASS required by /secure")
    parser.add_argument("--bench-file", help="MPEG-TS file served, looped, at /bench")
    parser.add_argument(
        "--flap",
        action="append",
        default=[],
        metavar="NAME:UP:DOWN",
        help="stop mount NAME after UP seconds, start it DOWN seconds later, and again",
    )
    parser.add_argument("--make-bench-file", help="encode the bench file here and exit")
    parser.add_argument("--seconds", type=int, default=20, help="length of the bench file")
    args = parser.parse_args(argv)
    Gst.init(None)
    if args.make_bench_file:
        make_bench_file(args.make_bench_file, args.seconds)
        return
    server = TestServer(args)
    loop = GLib.MainLoop()
    port = server.attach()
    for flap in args.flap:
        _flap(server, flap)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    threading.Thread(target=_stdin_reader, args=(server, loop), daemon=True).start()
    print(f"ready {port}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
