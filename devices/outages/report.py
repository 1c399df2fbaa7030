"""The evaluation report of availability (issue 9.7) for the regent's office: a table for the
terminal, a CSV of every device, and one self-contained HTML file (charts drawn by matplotlib
as inline SVG, no script, nothing fetched), in Bahasa Indonesia with WIB times, legible printed.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from devices.outages.availability import Availability, By, DeviceAvailability
from pantau.cliapp import WIB

GROUP_TITLE: dict[By, str] = {
    "pillar": "Pilar",
    "kecamatan": "Kecamatan",
    "type": "Jenis perangkat",
}
_MONTHS = (
    "Januari",
    "Februari",
    "Maret",
    "April",
    "Mei",
    "Juni",
    "Juli",
    "Agustus",
    "September",
    "Oktober",
    "November",
    "Desember",
)
CSV_COLUMNS = (
    "group",
    "device_id",
    "name",
    "device_type",
    "kecamatan",
    "pillar",
    "status",
    "outages",
    "registered_seconds",
    "expected_seconds",
    "down_seconds",
    "availability",
)
TIMELINE_DEVICES = 15  # rows of the timeline chart (areas first, then the most down devices)


def when(t: datetime) -> str:
    """A time as an Indonesian reader writes it: 1 Desember 2026 08.00 WIB."""
    t = t.astimezone(WIB)
    return f"{t.day} {_MONTHS[t.month - 1]} {t.year} {t:%H.%M} WIB"


def percent(value: float | None) -> str:
    """99,52 % (a decimal comma); '-' when nothing was expected."""
    if value is None:
        return "-"
    return f"{value * 100:.2f}".replace(".", ",") + " %"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}".replace(".", ",")


def duration(seconds: float) -> str:
    """6 j 05 m, or 45 m."""
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    return f"{h} j {m:02d} m" if h else f"{m} m"


def _group_of(report: Availability, d: DeviceAvailability) -> str:
    if report.by == "pillar":
        return d.pillar_name or d.pillar or "(tanpa)"
    if report.by == "kecamatan":
        return d.kecamatan_name or d.kecamatan or "(tanpa)"
    return d.type_name or d.device_type or "(tanpa)"


def table(report: Availability) -> str:
    """The report for a terminal: per group, the worst devices and the pillar coverage."""
    out = [
        "Laporan ketersediaan perangkat",
        f"Periode: {when(report.start)} s.d. {when(report.end)}",
        f"Ketersediaan keseluruhan: {percent(report.availability)}"
        f" (mati {hours(report.down_seconds)} dari {hours(report.expected_seconds)} jam"
        " yang diharapkan; pemeliharaan tidak dihitung)",
        "",
        f"{GROUP_TITLE[report.by]:<28} {'Perangkat':>9} {'Diharapkan (jam)':>17}"
        f" {'Mati (jam)':>11} {'Ketersediaan':>13}",
    ]
    for g in report.groups:
        out.append(
            f"{g.label[:28]:<28} {g.devices:>9} {hours(g.expected_seconds):>17}"
            f" {hours(g.down_seconds):>11} {percent(g.availability):>13}"
        )
    out += [
        "",
        "Perangkat terburuk",
        f"{'Perangkat':<24} {'Kecamatan':<18} {'Mati':>10} {'Ket.':>9}",
    ]
    for d in report.worst:
        out.append(
            f"{d.device_id[:24]:<24} {(d.kecamatan_name or '-')[:18]:<18}"
            f" {duration(d.down_seconds):>10} {percent(d.availability):>9}"
        )
    areas = sum(1 for o in report.timeline if o.kind == "area")
    out += [
        "",
        f"Gangguan dalam periode: {len(report.timeline)} ({areas} gangguan wilayah)",
        "",
        "Cakupan per pilar",
        f"{'Pilar':<28} {'Aktif':>6} {'Melapor':>8}",
    ]
    for c in report.coverage:
        out.append(f"{c.pillar_name[:28]:<28} {c.active:>6} {c.reporting:>8}")
    return "\n".join(out) + "\n"


def to_csv(report: Availability) -> str:
    """One row per device, its group first; times in seconds, availability from 0 to 1."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for d in sorted(report.devices, key=lambda d: (_group_of(report, d), d.device_id)):
        writer.writerow(
            (
                _group_of(report, d),
                d.device_id,
                d.name,
                d.device_type or "",
                d.kecamatan or "",
                d.pillar or "",
                d.status,
                d.outages,
                f"{d.registered_seconds:g}",
                f"{d.expected_seconds:g}",
                f"{d.down_seconds:g}",
                "" if d.availability is None else f"{d.availability:.6f}",
            )
        )
    return buffer.getvalue()


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #111; margin: 24px auto;
       max-width: 1000px; font-size: 14px; line-height: 1.4; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 2px solid #333; padding-bottom: 2px; }
.lead { font-size: 16px; margin: 4px 0; }
.big { font-size: 30px; font-weight: bold; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { border: 1px solid #999; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #e8e8e8; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { color: #333; font-size: 12px; }
figure { margin: 8px 0; page-break-inside: avoid; }
figure svg { width: 100%; height: auto; }
section { page-break-inside: avoid; }
@media print { body { margin: 0; max-width: none; font-size: 11pt; }
               h2 { page-break-after: avoid; } tr { page-break-inside: avoid; } }
@page { size: A4; margin: 15mm; }
"""
_RED, _AMBER, _GREEN, _GREY = "#c0392b", "#d68910", "#1e8449", "#7f8c8d"


def _colour(value: float | None) -> str:
    if value is None:
        return _GREY
    return _GREEN if value >= 0.99 else _AMBER if value >= 0.95 else _RED


def _svg(figure: object) -> str:
    from matplotlib.figure import Figure

    if not isinstance(figure, Figure):
        raise TypeError(figure)
    buffer = io.StringIO()
    figure.savefig(
        buffer,
        format="svg",
        bbox_inches="tight",
        metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
    )
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # no XML declaration or DOCTYPE inside HTML


def _rc() -> dict[Any, Any]:
    return {"svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 10}


def _groups_chart(report: Availability) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    groups = [g for g in report.groups if g.availability is not None][::-1]
    with matplotlib.rc_context(_rc()):
        fig = Figure(figsize=(9, 0.4 * max(len(groups), 2) + 1))
        ax = fig.subplots()
        values = [(g.availability or 0.0) * 100 for g in groups]
        bars = ax.barh(
            [g.label for g in groups],
            values,
            color=[_colour(g.availability) for g in groups],
            edgecolor="#222",
        )
        low = min([*values, 100.0])
        floor = max(0.0, min(90.0, 5 * ((low - 5) // 5)))
        for bar, g in zip(bars, groups, strict=True):
            inside = bar.get_width() - floor > 0.15 * (100 - floor)
            ax.text(
                bar.get_width() - 0.01 * (100 - floor) if inside else bar.get_width() + 0.5,
                bar.get_y() + bar.get_height() / 2,
                percent(g.availability),
                va="center",
                ha="right" if inside else "left",
                color="white" if inside else "#111",
                fontweight="bold",
            )
        ax.set_xlim(floor, 100)
        ax.set_xlabel(
            "Ketersediaan (%)" + (f"; sumbu dimulai dari {floor:.0f} %" if floor > 0 else "")
        )
        ax.grid(axis="x", color="#ccc")
        ax.set_axisbelow(True)
        return _svg(fig)


def _timeline_chart(report: Availability) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    start, end = report.start, report.end
    rows: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for o in report.timeline:
        if o.kind == "area":
            rows.setdefault(f"Wilayah {o.kecamatan_name}", [])
    down = sorted((d for d in report.devices if d.down_seconds > 0), key=lambda d: -d.down_seconds)[
        :TIMELINE_DEVICES
    ]
    shown = {d.device_id for d in down}
    for d in down:
        rows.setdefault(d.device_id, [])
    for o in report.timeline:
        label = f"Wilayah {o.kecamatan_name}" if o.kind == "area" else o.device_id
        if o.kind == "device" and o.device_id not in shown:
            continue
        begin = max(o.started_at, start)
        finish = min(o.ended_at or end, end)
        if label is not None and finish > begin:
            rows[label].append((begin, finish, _RED if o.kind == "area" else _AMBER))
    with matplotlib.rc_context(_rc()):
        fig = Figure(figsize=(9, 0.35 * max(len(rows), 2) + 1.2))
        ax = fig.subplots()
        labels = list(rows)[::-1]
        for y, label in enumerate(labels):
            spans = rows[label]
            ax.broken_barh(
                [(_hours_since(start, b), (f - b).total_seconds() / 3600) for b, f, _ in spans],
                (y - 0.35, 0.7),
                facecolors=[c for _, _, c in spans],
                edgecolor="#222",
                linewidth=0.5,
            )
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(-0.7, max(len(labels), 1) - 0.3)
        ax.set_xlim(0, _hours_since(start, end))
        ticks = _ticks(start, end)
        ax.set_xticks(
            [_hours_since(start, t) for t in ticks], [_tick(t, end - start) for t in ticks]
        )
        ax.set_xlabel("Waktu (WIB)")
        ax.set_title(
            "Merah: gangguan wilayah; jingga: gangguan perangkat"
            if rows
            else "Tidak ada gangguan dalam periode",
            loc="left",
            fontsize=10,
        )
        ax.grid(axis="x", color="#ccc")
        ax.set_axisbelow(True)
        return _svg(fig)


def _hours_since(start: datetime, t: datetime) -> float:
    return (t - start).total_seconds() / 3600


_STEPS = [timedelta(hours=h) for h in (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720)]


def _ticks(start: datetime, end: datetime) -> list[datetime]:
    """At most 9 ticks on round WIB hours or days."""
    span = end - start
    step = next((s for s in _STEPS if span / s <= 8), _STEPS[-1])
    local = start.astimezone(WIB)
    t = local.replace(hour=0, minute=0, second=0, microsecond=0)
    ticks = []
    while t <= end:
        if t >= start:
            ticks.append(t)
        t += step
    return ticks


def _tick(t: datetime, span: timedelta) -> str:
    t = t.astimezone(WIB)
    if span <= timedelta(days=1):
        return f"{t:%H.%M}"
    if span <= timedelta(days=4):
        return f"{t:%d/%m %H.%M}"
    return f"{t:%d/%m}"


def _coverage_chart(report: Availability) -> str:
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    pillars = report.coverage[::-1]
    with matplotlib.rc_context(_rc()):
        fig = Figure(figsize=(9, 0.5 * max(len(pillars), 2) + 1))
        ax = fig.subplots()
        ys = range(len(pillars))
        ax.barh(
            [y + 0.2 for y in ys],
            [c.active for c in pillars],
            0.4,
            label="Aktif terdaftar",
            color="#aab7b8",
            edgecolor="#222",
        )
        ax.barh(
            [y - 0.2 for y in ys],
            [c.reporting for c in pillars],
            0.4,
            label="Melapor",
            color="#2e86c1",
            edgecolor="#222",
        )
        ax.set_yticks(list(ys), [c.pillar_name for c in pillars])
        ax.set_xlabel("Jumlah perangkat")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="lower right")
        ax.grid(axis="x", color="#ccc")
        ax.set_axisbelow(True)
        return _svg(fig)


def _rows(cells: Iterable[Iterable[tuple[str, bool]]]) -> str:
    return "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{html.escape(t)}</td>' if n else f"<td>{html.escape(t)}</td>"
            for t, n in row
        )
        + "</tr>"
        for row in cells
    )


def to_html(report: Availability, generated: datetime) -> str:
    """One HTML file: no script, no link, every chart an inline SVG."""
    e = html.escape
    title = GROUP_TITLE[report.by]
    groups = _rows(
        [
            (g.label, False),
            (str(g.devices), True),
            (hours(g.expected_seconds), True),
            (hours(g.down_seconds), True),
            (percent(g.availability), True),
        ]
        for g in report.groups
    )
    worst = _rows(
        [
            (d.device_id, False),
            (d.name, False),
            (d.type_name or "-", False),
            (d.kecamatan_name or "-", False),
            (str(d.outages), True),
            (duration(d.down_seconds), True),
            (percent(d.availability), True),
        ]
        for d in report.worst
    )
    timeline = _rows(
        [
            ("Wilayah" if o.kind == "area" else "Perangkat", False),
            (
                o.kecamatan_name if o.kind == "area" else f"{o.device_id} ({o.kecamatan_name})",
                False,
            ),
            (o.cause, False),
            (when(o.started_at), False),
            (when(o.ended_at) if o.ended_at else "masih berlangsung", False),
            (duration(o.seconds_in_period), True),
        ]
        for o in report.timeline
    )
    coverage = _rows(
        [
            (c.pillar_name, False),
            (str(c.active), True),
            (str(c.reporting), True),
            (percent(c.reporting / c.active) if c.active else "-", True),
        ]
        for c in report.coverage
    )
    areas = sum(1 for o in report.timeline if o.kind == "area")
    body = f"""<!DOCTYPE html>
<html lang="id"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Laporan ketersediaan {e(when(report.start))} s.d. {e(when(report.end))}</title>
<style>{_CSS}</style></head><body>
<h1>Laporan ketersediaan perangkat kota cerdas</h1>
<p class="lead">Kabupaten Bekasi &middot; Periode {e(when(report.start))} s.d.
{e(when(report.end))}</p>
<p class="lead">Ketersediaan keseluruhan:
<span class="big">{e(percent(report.availability))}</span></p>
<p class="note">Ketersediaan = waktu menyala dibagi waktu yang diharapkan. Waktu yang diharapkan:
bagian periode sejak perangkat terdaftar (dan sebelum dipensiunkan), dikurangi jadwal
pemeliharaan. Waktu mati: gangguan perangkat di dalam waktu yang diharapkan.
Dibuat {e(when(generated))}.</p>
<section><h2>Ketersediaan per {e(title.lower())}</h2>
<figure>{_groups_chart(report)}</figure>
<table><thead><tr><th>{e(title)}</th><th>Perangkat</th><th>Diharapkan (jam)</th>
<th>Mati (jam)</th><th>Ketersediaan</th></tr></thead><tbody>{groups}</tbody></table></section>
<section><h2>Perangkat terburuk</h2>
<table><thead><tr><th>ID</th><th>Nama</th><th>Jenis</th><th>Kecamatan</th><th>Gangguan</th>
<th>Mati</th><th>Ketersediaan</th></tr></thead><tbody>{worst}</tbody></table></section>
<section><h2>Linimasa gangguan</h2>
<p>{len(report.timeline)} gangguan dalam periode, {areas} di antaranya gangguan wilayah.</p>
<figure>{_timeline_chart(report)}</figure>
<table><thead><tr><th>Jenis</th><th>Wilayah / perangkat</th><th>Penyebab</th><th>Mulai</th>
<th>Selesai</th><th>Lama (dalam periode)</th></tr></thead><tbody>{timeline}</tbody></table>
</section>
<section><h2>Cakupan per pilar</h2>
<figure>{_coverage_chart(report)}</figure>
<table><thead><tr><th>Pilar</th><th>Aktif terdaftar</th><th>Melapor dalam periode</th>
<th>Cakupan</th></tr></thead><tbody>{coverage}</tbody></table></section>
</body></html>
"""
    return _BLANK_LINES.sub("\n", body)


_BLANK_LINES = re.compile(r"\n\s*\n")
