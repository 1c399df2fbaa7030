"""No dependency without a use: every runtime dependency in pyproject.toml is imported by the
packages it ships."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pantau", "ingest", "devices", "streams", "grafana")
# Dependencies used without an import of ours, and why.
USED_WITHOUT_IMPORT = {
    "defusedxml": "openpyxl parses XLSX through it when it is installed (XML bombs, XXE)",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules() -> set[str]:
    found: set[str] = set()
    pattern = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found.update(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_runtime_dependency_is_imported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    modules_of: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(_normal(dist), set()).add(module)
    imported = _imported_modules()
    unused = []
    for requirement in project["dependencies"]:
        name = _normal(re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0])
        if name in USED_WITHOUT_IMPORT:
            continue
        modules = modules_of.get(name)
        assert modules, f"{name} is declared but not installed: run `make .venv/.installed`"
        if not modules & imported:
            unused.append(f"{name} (modules {sorted(modules)})")
    assert not unused, f"declared in pyproject.toml but never imported: {', '.join(unused)}"


def test_aiomqtt_is_not_pinned_either() -> None:
    pinned = {
        _normal(line.split("==")[0])
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    assert "aiomqtt" not in pinned  # dropped with its declaration (issue 8.9)
