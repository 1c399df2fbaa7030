"""How the wall looks: state colours that read from across the room, the words of the codes the
`wall` views return, and the named levels (Siaga, ISPU, BMKG) drawn as thresholds. The words
are those of the views' own functions (wall.state_label, wall.severity_label, ...); the
thresholds are the migrations' alarm levels: tests hold both to the database."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

# Grafana's palette, chosen to read on the dark theme at three metres: up green, late amber,
# down red, paused/maintenance blue, unknown grey; a dark kecamatan (area outage) deep red.
GREEN = "green"
AMBER = "orange"
RED = "red"
BLUE = "blue"
GREY = "#8e8e8e"
DARK_RED = "dark-red"
DIM = "#5a5a5a"  # a kecamatan without devices
YELLOW = "yellow"
BLACK = "#000000"
TEXT = "text"

# Text sizes in px for a 1080p screen seen from across the room.
STAT_VALUE_SIZE = 64
STAT_TITLE_SIZE = 22
BAR_VALUE_SIZE = 28
BAR_TITLE_SIZE = 20

# state code -> (word as wall.state_label() says it, colour)
STATES: dict[str, tuple[str, str]] = {
    "up": ("Normal", GREEN),
    "late": ("Terlambat", AMBER),
    "down": ("Mati", RED),
    "paused": ("Pemeliharaan", BLUE),
    "unknown": ("Belum ada data", GREY),
    "area": ("Gangguan wilayah", DARK_RED),
    "empty": ("Tanpa perangkat", DIM),
}
# severity code -> (word as wall.severity_label() says it, colour)
SEVERITIES: dict[str, tuple[str, str]] = {
    "critical": ("Kritis", RED),
    "warning": ("Peringatan", AMBER),
    "info": ("Info", BLUE),
}
# outage kind -> word
KINDS: dict[str, tuple[str, str]] = {
    "area": ("Wilayah", DARK_RED),
    "device": ("Perangkat", RED),
    "alarm": ("Alarm", AMBER),
}
# the camera probe's verdict on the picture (camera_health.state) -> word, colour
PICTURES: dict[str, tuple[str, str]] = {
    "ok": ("Baik", GREEN),
    "frozen": ("Beku", RED),
    "black": ("Hitam", RED),
    "covered": ("Tertutup", RED),
    "blurred": ("Buram", AMBER),
    "offline": ("Luring", RED),
}
# ISPU (P.14/MENLHK/2020) category of PM2.5 -> colour, as wall.ispu_colour() names it
ISPU_COLOURS: dict[str, str] = {
    "Baik": GREEN,
    "Sedang": BLUE,
    "Tidak Sehat": YELLOW,
    "Sangat Tidak Sehat": RED,
    "Berbahaya": BLACK,
}
# 1 / 0 gauges of the pipeline (connected, leader, up)
UP_DOWN: dict[str, tuple[str, str]] = {
    "1": ("Terhubung", GREEN),
    "0": ("Terputus", RED),
}

# Thresholds as (lower bound, colour, the level's name); the first bound is None (-inf).
# Water level, cm: the water_level type's Siaga levels (migration 0010, KP2C at P2C); a gauge
# with its own levels shows them in the Kecamatan dashboard's table.
SIAGA: tuple[tuple[float | None, str, str], ...] = (
    (None, GREEN, "Normal"),
    (350, YELLOW, "Siaga 3"),
    (450, AMBER, "Siaga 2"),
    (550, RED, "Siaga 1"),
)
# PM2.5, ug/m3: ISPU's categories (their lower bounds, as alarm_levels has them).
ISPU_PM25: tuple[tuple[float | None, str, str], ...] = (
    (None, GREEN, "Baik"),
    (15.6, BLUE, "Sedang"),
    (55.5, YELLOW, "Tidak Sehat"),
    (150.5, RED, "Sangat Tidak Sehat"),
    (250.5, BLACK, "Berbahaya"),
)
# Rain over one hour, mm: BMKG's intensity classes (wall.rain_class_hour).
BMKG_HOUR: tuple[tuple[float | None, str, str], ...] = (
    (None, GREEN, "Tidak hujan / sangat ringan"),
    (1, BLUE, "Ringan"),
    (5, YELLOW, "Sedang"),
    (10, AMBER, "Lebat"),
    (20, RED, "Sangat lebat"),
)
# Availability, 0..1: below 95 % red, below 99 % amber.
AVAILABILITY: tuple[tuple[float | None, str, str], ...] = (
    (None, RED, "di bawah 95 %"),
    (0.95, AMBER, "95-99 %"),
    (0.99, GREEN, "99 % atau lebih"),
)
# A snapshot's age, s: older than 2 min amber, than 10 min red.
SNAPSHOT_AGE: tuple[tuple[float | None, str, str], ...] = (
    (None, GREEN, "baru"),
    (120, AMBER, "lebih dari 2 menit"),
    (600, RED, "lebih dari 10 menit"),
)


def thresholds(steps: tuple[tuple[float | None, str, str], ...]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=colour) for value, colour, _ in steps])
    )


def fixed_colour(colour: str) -> db.FieldColor:
    return db.FieldColor().mode(dm.FieldColorModeId.FIXED).fixed_color(colour)


def by_thresholds() -> db.FieldColor:
    return db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS)


def value_mapping(words: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    """A code -> (word, colour) table as one value mapping, in a stable order."""
    return [
        dm.ValueMap(
            options={
                code: dm.ValueMappingResult(text=word, color=colour, index=i)
                for i, (code, (word, colour)) in enumerate(words.items())
            }
        )
    ]


def colour_mapping(colours: dict[str, str]) -> list[dm.ValueMapping]:
    """Words that keep their text and get a colour (the ISPU categories)."""
    return [
        dm.ValueMap(
            options={
                word: dm.ValueMappingResult(color=colour, index=i)
                for i, (word, colour) in enumerate(colours.items())
            }
        )
    ]
