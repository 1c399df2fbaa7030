"""The judge on synthetic pictures: moving scenes, dusk and the IR switch, rain, a frozen picture
with a ticking OSD clock, black, a covered lens, blur; debouncing and the baseline."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.health import Judge
from streams.probe import measure_gray
from streams.report import IntervalReport, Thresholds, Verdict

W, H = 320, 180
Gray = npt.NDArray[np.uint8]


def canvas(seed: int) -> npt.NDArray[np.float32]:
    """A street-like scene three pictures wide: rectangles of many tones with sharp edges."""
    rng = np.random.default_rng(seed)
    img = np.full((H + 40, W * 3), 110, np.float32)
    for _ in range(120):
        x, y = int(rng.integers(0, W * 3 - 20)), int(rng.integers(0, H + 20))
        w, h = int(rng.integers(8, 60)), int(rng.integers(8, 50))
        img[y : y + h, x : x + w] = rng.uniform(20, 230)
    return np.asarray(cv2.GaussianBlur(img, (3, 3), 0.8), dtype=np.float32)


def view(
    img: npt.NDArray[np.float32],
    x: int,
    rng: np.random.Generator,
    noise: float = 2.0,
    clock: int | None = None,
) -> Gray:
    """The camera's picture at pan offset x, with sensor noise and optionally an OSD clock."""
    out = np.clip(img[20 : 20 + H, x : x + W] + rng.normal(0, noise, (H, W)), 0, 255)
    picture = np.ascontiguousarray(out, dtype=np.uint8)
    if clock is not None:
        text = f"2026-12-01 15:40:{clock % 60:02d}"
        cv2.putText(picture, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
    return picture


def report(pictures: list[Gray], bitrate: float = 400.0) -> IntervalReport:
    samples = tuple(measure_gray(p, float(i), None) for i, p in enumerate(pictures))
    return IntervalReport("cam", 0.0, 10.0, online=True, bitrate_kbps=bitrate, samples=samples)


def judge_each(judge: Judge, pictures: list[Gray], bitrate: float = 400.0) -> list[Verdict]:
    """One sample per report: the verdict after every sample."""
    return [judge.judge(report([p], bitrate)) for p in pictures]


class Scene:
    """A healthy camera: the view pans and the clock ticks from one sample to the next."""

    def __init__(self, seed: int = 3, noise: float = 2.0) -> None:
        self.img = canvas(seed)
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.t = 0

    def moving(self, n: int, step: int = 7) -> list[Gray]:
        out = []
        for _ in range(n):
            self.t += 1
            x = (self.t * step) % (2 * W)
            out.append(view(self.img, x, self.rng, self.noise, clock=self.t * 5))
        return out

    def frozen(self, n: int) -> list[Gray]:
        """The picture stops; the OSD clock keeps ticking; re-encoding adds a little jitter."""
        x = (self.t * 7) % (2 * W)
        out = []
        for _ in range(n):
            self.t += 1
            out.append(view(self.img, x, self.rng, 0.5, clock=self.t * 5))
        return out


def learned(thresholds: Thresholds | None = None, samples: int = 30) -> tuple[Judge, Scene]:
    judge, scene = Judge(thresholds or Thresholds()), Scene()
    assert all(v.state == "ok" for v in judge_each(judge, scene.moving(samples)))
    return judge, scene


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    step=st.integers(3, 40),
    noise=st.floats(0.5, 6.0),
    per_report=st.integers(1, 4),
)
def test_a_moving_scene_is_never_flagged(
    seed: int, step: int, noise: float, per_report: int
) -> None:
    judge, scene = Judge(Thresholds()), Scene(seed, noise)
    for _ in range(12):
        verdict = judge.judge(report(scene.moving(per_report, step)))
        assert verdict.state == "ok", verdict
        assert verdict.change is None or verdict.change > 0.05


def test_the_ir_switch_and_dusk_do_not_alarm() -> None:
    judge, scene = learned()
    rng = np.random.default_rng(5)
    # dusk: the picture darkens to a third of its contrast over 40 samples (minutes in the field)
    for i in range(40):
        scale = 1.0 - 0.7 * i / 40
        dark = scene.img * scale + 5
        verdict = judge.judge(report([view(dark, (i * 9) % (2 * W), rng, clock=i)]))
        assert verdict.state == "ok", (i, verdict)
    # the IR cut filter switches: a sudden bright grey picture with the same edges
    ir = scene.img * 0.7 + 80
    for i in range(10):
        verdict = judge.judge(report([view(ir, (i * 9) % (2 * W), rng, clock=i)]))
        assert verdict.state == "ok", (i, verdict)


def test_rain_does_not_alarm() -> None:
    judge, scene = learned()
    rng = np.random.default_rng(9)
    for picture in scene.moving(12):
        wet = picture.copy()
        for _ in range(200):
            x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
            cv2.line(wet, (x, y), (x + 4, y + 15), 200, 1)
        wet = np.asarray(cv2.GaussianBlur(wet, (3, 3), 0), dtype=np.uint8)
        verdict = judge.judge(report([wet]))
        assert verdict.state == "ok", verdict


def test_a_frozen_picture_with_a_ticking_clock_is_frozen_after_frozen_samples() -> None:
    """With the bitrate collapsed, frozen_samples unchanged samples (the clock does not count)."""
    judge, scene = learned(Thresholds(frozen_samples=3))
    # the picture stops on the last moving one: each frozen sample is an unchanged one
    verdicts = judge_each(judge, scene.frozen(3), bitrate=100.0)
    assert [v.state for v in verdicts] == ["ok", "ok", "frozen"]
    assert verdicts[-1].change is not None
    assert verdicts[-1].change < 0.05
    assert verdicts[-1].cause == "frozen"
    assert verdicts[-1].down
    assert verdicts[-1].reason is not None
    assert "collapsed" in verdicts[-1].reason
    # moving again: ok at once
    assert judge.judge(report(scene.moving(1))).state == "ok"


def test_a_still_picture_whose_bitrate_holds_needs_twice_the_samples() -> None:
    """A live static scene keeps its bitrate; a frozen encoder's collapses. Without the
    collapse the judge waits twice as long before it calls the picture frozen."""
    judge, scene = learned(Thresholds(frozen_samples=3))
    states = [v.state for v in judge_each(judge, scene.frozen(6), bitrate=400.0)]
    assert states == ["ok"] * 5 + ["frozen"]


def test_two_intervals_are_enough_for_every_pattern() -> None:
    """samples_per_interval=2, frozen_samples=3, bad_samples=3, no baseline (a new camera):
    frozen, black and covered are all called at the end of the second interval."""
    rng = np.random.default_rng(2)
    scene = Scene()
    patterns: dict[str, list[Gray]] = {
        "frozen": scene.frozen(4),
        "black": [view(np.full((H + 40, W), 3, np.float32), 0, rng, 1, c) for c in range(4)],
        "covered": [
            np.asarray(
                cv2.GaussianBlur(view(np.full((H + 40, W), 30, np.float32), 0, rng, 4), (5, 5), 0),
                dtype=np.uint8,
            )
            for _ in range(4)
        ],
        "ok": Scene(11).moving(4),
    }
    for expected, pictures in patterns.items():
        judge = Judge(Thresholds(frozen_samples=3, bad_samples=3))
        first = judge.judge(report(pictures[:2]))
        second = judge.judge(report(pictures[2:]))
        assert first.state == "ok", (expected, first)
        assert second.state == expected, (expected, second)


def test_black_needs_bad_samples_in_a_row_and_recovers_at_once() -> None:
    judge, scene = learned(Thresholds(bad_samples=3, black_luma=20))
    rng = np.random.default_rng(4)
    black = [view(np.full((H + 40, W), 4, np.float32), 0, rng, 1, c) for c in range(3)]
    # one black sample (a flash of the IR switch) between healthy ones: no alarm
    assert [v.state for v in judge_each(judge, [black[0], *scene.moving(1)])] == ["ok", "ok"]
    verdicts = judge_each(judge, black)
    assert [v.state for v in verdicts] == ["ok", "ok", "black"]
    assert verdicts[-1].luma is not None
    assert verdicts[-1].luma <= 20
    assert judge.judge(report(scene.moving(1))).state == "ok"


def test_a_covered_lens_is_covered_against_the_baseline() -> None:
    judge, _scene = learned(Thresholds(bad_samples=3, covered_ratio=0.25))
    rng = np.random.default_rng(6)
    dark = np.full((H + 40, W), 45, np.float32)
    covered = [
        np.asarray(cv2.GaussianBlur(view(dark, 0, rng, 5), (5, 5), 0), dtype=np.uint8)
        for _ in range(3)
    ]
    verdicts = judge_each(judge, covered)
    assert [v.state for v in verdicts] == ["ok", "ok", "covered"]
    assert verdicts[-1].reason is not None
    assert "baseline" in verdicts[-1].reason


def test_a_dim_scene_is_not_covered_but_a_cap_on_it_is() -> None:
    """Relative to its own baseline: a camera whose picture is always dim and soft."""
    img = canvas(8) * 0.25 + 20
    rng = np.random.default_rng(8)
    judge = Judge(Thresholds(bad_samples=3))
    for i in range(20):
        verdict = judge.judge(report([view(img, i * 11, rng, 1.0, clock=i)]))
        assert verdict.state == "ok", verdict
    flat = np.full((H + 40, W), 22, np.float32)
    states = [judge.judge(report([view(flat, 0, rng, 0.8)])).state for _ in range(3)]
    assert states == ["ok", "ok", "covered"]


def test_blur_is_recorded_and_is_not_an_outage() -> None:
    judge, scene = learned(Thresholds(bad_samples=3))
    blurred = [np.asarray(cv2.GaussianBlur(p, (0, 0), 4), dtype=np.uint8) for p in scene.moving(3)]
    verdicts = judge_each(judge, blurred)
    assert [v.state for v in verdicts] == ["ok", "ok", "blurred"]
    assert not verdicts[-1].down


def test_offline_is_immediate_and_a_reconnect_starts_the_runs_again() -> None:
    judge, scene = learned(Thresholds(frozen_samples=3))
    judge_each(judge, scene.frozen(2), bitrate=100.0)  # two unchanged samples counted
    offline = judge.judge(IntervalReport("cam", 0, 10, online=False, reason="stalled"))
    assert offline.state == "offline"
    assert offline.cause == "offline:stalled"
    assert offline.down
    # back with the same frozen picture: the count starts again from the first new sample
    states = [v.state for v in judge_each(judge, scene.frozen(4), bitrate=100.0)]
    assert states == ["ok", "ok", "ok", "frozen"]


def test_an_interval_without_a_keyframe_keeps_the_state() -> None:
    judge, scene = learned(Thresholds(frozen_samples=3))
    assert judge_each(judge, scene.frozen(4), bitrate=100.0)[-1].state == "frozen"
    empty = judge.judge(IntervalReport("cam", 0, 10, online=True, bitrate_kbps=100.0))
    assert empty.state == "frozen"
    assert empty.luma is None


def test_bad_samples_do_not_teach_the_baseline() -> None:
    """A long covered spell does not become the camera's normal: it stays covered."""
    judge, _scene = learned(Thresholds(bad_samples=3))
    contrast = judge.contrast.value
    rng = np.random.default_rng(7)
    flat = np.full((H + 40, W), 40, np.float32)
    states = [judge.judge(report([view(flat, 0, rng, 1.5)])).state for _ in range(200)]
    assert states[2:] == ["covered"] * 198
    assert judge.contrast.value == pytest.approx(contrast)


# --- adaptive sampling: what the verdict's `watch` asks of the probe --------------------------


def sampled(judge: Judge, source: list[Gray], bitrate: float, watched: bool) -> Verdict:
    """One interval as the probe samples it: two pictures while watched, else one (the last)."""
    pictures = [source.pop(0), source.pop(0)] if watched else [source.pop(0)]
    return judge.judge(report(pictures, bitrate))


def test_a_new_camera_is_watched_until_its_baseline_is_learned() -> None:
    judge, scene = Judge(Thresholds()), Scene()
    watches = [judge.judge(report(scene.moving(2))).watch for _ in range(4)]
    assert watches == [True, True, False, False]  # five changes learned in the third interval
    assert judge.change.ready
    verdicts = judge_each(judge, scene.moving(10))
    assert all(v.state == "ok" and not v.watch for v in verdicts)
    offline = judge.judge(IntervalReport("cam", 0, 10, online=False, reason="ended"))
    assert offline.watch  # a new connection: its first sample has nothing to compare with


def test_one_bad_sample_is_watched_for_the_next_interval_only() -> None:
    judge, scene = learned(Thresholds(bad_samples=3, black_luma=20))
    rng = np.random.default_rng(12)
    black = view(np.full((H + 40, W), 4, np.float32), 0, rng, 1, 0)
    flash = judge.judge(report([black]))  # the IR switch's flash
    assert (flash.state, flash.watch) == ("ok", True)
    after = judge.judge(report(scene.moving(2)))
    assert (after.state, after.watch) == ("ok", False)


def test_a_collapsed_bitrate_is_watched() -> None:
    judge, scene = learned()
    verdict = judge.judge(report(scene.moving(1), bitrate=100.0))  # the baseline is 400
    assert (verdict.state, verdict.watch) == ("ok", True)
    assert not judge.judge(report(scene.moving(1), bitrate=400.0)).watch


@pytest.mark.parametrize("pattern", ["frozen", "black", "covered"])
def test_sampled_once_per_interval_a_bad_camera_is_still_caught_in_two_intervals(
    pattern: str,
) -> None:
    """A healthy camera, sampled once per interval, goes bad: its first bad sample makes the
    judge watch it, the next interval brings two samples, and 1 + 2 = bad_samples =
    frozen_samples: the state is called at the end of the second interval, as with two samples
    in every interval. Then it stays watched while the state is held, and one healthy sample
    ends it."""
    judge, scene = learned(Thresholds(frozen_samples=3, bad_samples=3))
    rng = np.random.default_rng(13)
    healthy = scene.moving(6)
    watched = False
    for _ in range(6):
        verdict = sampled(judge, healthy, 400.0, watched)
        assert (verdict.state, verdict.watch) == ("ok", False)
        watched = verdict.watch
    bad: list[Gray] = {
        "frozen": lambda: scene.frozen(8),
        "black": lambda: [
            view(np.full((H + 40, W), 4, np.float32), 0, rng, 1, c) for c in range(8)
        ],
        "covered": lambda: [
            np.asarray(
                cv2.GaussianBlur(view(np.full((H + 40, W), 45, np.float32), 0, rng, 5), (5, 5), 0),
                dtype=np.uint8,
            )
            for _ in range(8)
        ],
    }[pattern]()
    bitrate = 100.0 if pattern == "frozen" else 400.0  # a frozen encoder's bitrate collapses
    first = sampled(judge, bad, bitrate, watched)
    assert (first.state, first.watch) == ("ok", True)  # one bad sample: watched, not yet called
    second = sampled(judge, bad, bitrate, first.watch)
    assert (second.state, second.watch) == (pattern, True)
    assert sampled(judge, bad, bitrate, second.watch).state == pattern
    recovered = judge.judge(report(scene.moving(2)))
    assert recovered.state == "ok"


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), step=st.integers(3, 40), noise=st.floats(0.5, 6.0))
def test_a_moving_scene_sampled_adaptively_is_never_flagged(
    seed: int, step: int, noise: float
) -> None:
    """Once learned, a healthy moving camera is sampled once per interval and never flagged."""
    judge, scene = Judge(Thresholds()), Scene(seed, noise)
    watched = True
    counts = []
    for _ in range(15):
        pictures = scene.moving(2 if watched else 1, step)
        verdict = judge.judge(report(pictures))
        assert verdict.state == "ok", verdict
        watched = verdict.watch
        counts.append(len(pictures))
    assert counts[:3] == [2, 2, 2]
    assert counts[4:] == [1] * 11
