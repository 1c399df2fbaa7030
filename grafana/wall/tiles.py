"""The kecamatan tile map: a hand-laid grid that roughly follows the regency's geography (north up,
west left, from each kecamatan's latitude and longitude in the `kecamatan` table), so an operator
finds Muaragembong at the top and Cibarusah and Bojongmangu at the bottom without reading names.

A real map would give the big kecamatan big shapes and squeeze the small ones; tiles of one size
keep every name and count legible from across the room. A kecamatan missing from the grid (another
regency's table) gets a place in a row below it rather than no tile.
"""

from __future__ import annotations

from dataclasses import dataclass

COLUMNS = 6

# id: (row, column), north to south, west to east.
GRID: dict[str, tuple[int, int]] = {
    "muaragembong": (0, 1),
    "sukawangi": (0, 2),
    "cabangbungin": (0, 3),
    "tarumajaya": (1, 0),
    "babelan": (1, 1),
    "sukatani": (1, 3),
    "sukakarya": (1, 4),
    "pebayuran": (1, 5),
    "tambun-utara": (2, 1),
    "tambelang": (2, 2),
    "karangbahagia": (2, 3),
    "kedungwaringin": (2, 5),
    "tambun-selatan": (3, 0),
    "cibitung": (3, 1),
    "cikarang-barat": (3, 2),
    "cikarang-utara": (3, 3),
    "cikarang-timur": (3, 4),
    "setu": (4, 0),
    "cikarang-selatan": (4, 2),
    "cikarang-pusat": (4, 3),
    "cibarusah": (5, 1),
    "serang-baru": (5, 2),
    "bojongmangu": (5, 3),
}
ROWS = 1 + max(row for row, _ in GRID.values())

# Where a long one-word name may break on a narrow tile: at the words it is made of
# (Muara Gembong, Karang Bahagia, ...), with a soft hyphen the browser shows only when it breaks.
_BREAKS = {
    "muaragembong": ("Muara", "gembong"),
    "cabangbungin": ("Cabang", "bungin"),
    "karangbahagia": ("Karang", "bahagia"),
    "kedungwaringin": ("Kedung", "waringin"),
    "bojongmangu": ("Bojong", "mangu"),
    "tarumajaya": ("Taruma", "jaya"),
}


@dataclass(frozen=True)
class Place:
    row: int
    column: int
    label: str  # the name, with soft hyphens where it may break


def place(kecamatan_id: str, name: str, extra: int) -> Place:
    """The tile of a kecamatan; `extra` numbers the ones the grid does not know (0, 1, ...)."""
    label = name
    parts = _BREAKS.get(kecamatan_id)
    if parts and name.lower() == "".join(parts).lower():
        label = name[: len(parts[0])] + "\u00ad" + name[len(parts[0]) :]
    if kecamatan_id in GRID:
        row, column = GRID[kecamatan_id]
    else:
        row, column = ROWS + extra // COLUMNS, extra % COLUMNS
    return Place(row, column, label)
