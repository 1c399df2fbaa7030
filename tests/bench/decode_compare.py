"""Decode micro-benchmark of two checkouts in the same run, for a change to the decoders.

    .venv/bin/python tests/bench/decode_compare.py BASELINE_DIR [CANDIDATE_DIR] [--rounds 8]

BASELINE_DIR is another checkout (`git archive <commit> ingest pantau | tar -x -C DIR` is
enough); CANDIDATE_DIR defaults to this one. Each round times every case in a fresh process of
each checkout in turn (the checkout's directory comes first on sys.path), so the two share the
machine's load; the table gives microseconds per message (best of the rounds) and the ratio.
On a loaded machine read the ratio of the bests: it is the least disturbed figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# Runs inside each checkout's process: only what every version of the decoders has.
TIMER = r"""
import json, sys, time
from datetime import UTC, datetime, timedelta
from ingest.decoders import Limits, build_decoder
from pantau.mappings import MappingSettings

now = datetime.now(UTC)
ts = int(now.timestamp() * 1000)
per_message = 20000
cases = {
    "json, 10 readings ($.ts, $.readings)": (
        MappingSettings(name="j", topic="j/{device}", format="json", time="$.ts",
                        values="$.readings"),
        {"ts": ts, "readings": {f"r{j}": 1.5 + j for j in range(10)}}, {"device": "wl-1"}),
    "json, 1 reading": (
        MappingSettings(name="j", topic="j/{device}", format="json", time="$.ts",
                        values="$.readings"),
        {"ts": ts, "readings": {"water_level_cm": 132.5}}, {"device": "wl-1"}),
    "json, 3 fixed paths, device and time from the payload": (
        MappingSettings(name="v", topic="v", format="json", device="$.meta.id",
                        time="$.meta.time",
                        metrics={"a": "$.s[0].level", "b": "$.p.v", "c": "$.p.w"}),
        {"meta": {"id": "wl-1", "time": ts}, "s": [{"level": 1.5}], "p": {"v": 3.7, "w": 2}},
        {}),
    "senml, 10 records": (
        MappingSettings(name="s", topic="s/{device}", format="senml"),
        [{"bn": "x:", "bt": now.timestamp(), "n": "m0", "v": 0}]
        + [{"n": f"m{j}", "v": j} for j in range(1, 10)], {"device": "wl-1"}),
}
out = {}
for name, (mapping, doc, captured) in cases.items():
    decoder = build_decoder(mapping, Limits(max_past=timedelta(days=3650)))
    payload = json.dumps(doc).encode()
    result = decoder.decode(payload, captured, now)
    assert result.readings and not result.problems, (name, result.problems)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(per_message):
            decoder.decode(payload, captured, now)
        best = min(best, time.perf_counter() - start)
    out[name] = best / per_message * 1e6
print(json.dumps(out))
"""


def run_once(checkout: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", TIMER], cwd=checkout, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("candidate", type=Path, nargs="?", default=Path(__file__).parents[2])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    base: list[dict[str, float]] = []
    cand: list[dict[str, float]] = []
    for _ in range(args.rounds):
        base.append(run_once(args.baseline))
        cand.append(run_once(args.candidate))
    print("| case | baseline µs/message | candidate µs/message | ratio |")
    print("|---|---|---|---|")
    for case in base[0]:
        b = min(r[case] for r in base)
        c = min(r[case] for r in cand)
        print(f"| {case} | {b:.2f} | {c:.2f} | {c / b:.3f} |")


if __name__ == "__main__":
    main()
