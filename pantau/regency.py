"""Facts about the regency Pantau serves: its kecamatan, its extent, the smart-city pillars.

Kabupaten Bekasi is the first; another regency changes this module and its seed migration.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kecamatan:
    id: str
    name: str
    latitude: float  # a representative point
    longitude: float
    coast: float  # 0 on the coast .. 1 far inland (the simulator's tide)


def _k(name: str, lat: float, lon: float, coast: float) -> Kecamatan:
    return Kecamatan(name.lower().replace(" ", "-"), name, lat, lon, coast)


KECAMATAN: tuple[Kecamatan, ...] = (
    _k("Babelan", -6.1333, 107.0333, 0.25),
    _k("Bojongmangu", -6.4333, 107.1667, 1.0),
    _k("Cabangbungin", -6.0667, 107.1333, 0.15),
    _k("Cibarusah", -6.4333, 107.0833, 1.0),
    _k("Cibitung", -6.2667, 107.0833, 0.6),
    _k("Cikarang Barat", -6.2667, 107.1000, 0.6),
    _k("Cikarang Pusat", -6.3500, 107.1500, 0.75),
    _k("Cikarang Selatan", -6.3500, 107.1000, 0.8),
    _k("Cikarang Timur", -6.2833, 107.1833, 0.65),
    _k("Cikarang Utara", -6.2833, 107.1333, 0.6),
    _k("Karangbahagia", -6.1833, 107.1167, 0.4),
    _k("Kedungwaringin", -6.2333, 107.2333, 0.55),
    _k("Muaragembong", -5.9833, 107.0333, 0.0),
    _k("Pebayuran", -6.1500, 107.2833, 0.35),
    _k("Serang Baru", -6.3833, 107.1000, 0.9),
    _k("Setu", -6.3500, 107.0333, 0.85),
    _k("Sukakarya", -6.1000, 107.1833, 0.25),
    _k("Sukatani", -6.1667, 107.1500, 0.35),
    _k("Sukawangi", -6.0333, 107.1000, 0.1),
    _k("Tambelang", -6.1667, 107.0833, 0.4),
    _k("Tambun Selatan", -6.2667, 107.0500, 0.6),
    _k("Tambun Utara", -6.2000, 107.0667, 0.5),
    _k("Tarumajaya", -6.1000, 106.9833, 0.15),
)

# The regency's rough extent: positions outside it are refused unless overridden.
LATITUDE = (-6.45, -5.95)
LONGITUDE = (106.97, 107.30)

# id, English name, Bahasa Indonesia name
PILLARS: tuple[tuple[str, str, str], ...] = (
    ("governance", "Smart governance", "Tata kelola cerdas"),
    ("branding", "Smart branding", "Branding cerdas"),
    ("economy", "Smart economy", "Ekonomi cerdas"),
    ("society", "Smart society", "Masyarakat cerdas"),
    ("environment", "Smart environment", "Lingkungan cerdas"),
    ("living", "Smart living", "Kehidupan cerdas"),
)


def inside(latitude: float, longitude: float) -> bool:
    return LATITUDE[0] <= latitude <= LATITUDE[1] and LONGITUDE[0] <= longitude <= LONGITUDE[1]
